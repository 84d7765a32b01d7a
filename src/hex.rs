//! Lower-case hex for digests and object ids (fetch's SHA-256, git's SHA-1), in one place.

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `2 * N` hex digits (either case) as `N` bytes. Anything else, including signs and
/// non-ASCII text that `from_str_radix` or byte slicing would trip over, is `None`.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let value = |digit: u8| (digit as char).to_digit(16).map(|v| v as u8);
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x9f, 0xab, 0xff];
        assert_eq!(encode(&bytes), "009fabff");
        assert_eq!(decode::<4>("009FABff"), Some(bytes));
    }

    /// Regression: `--sha256` with multi-byte characters panicked on a char boundary, and a
    /// `+` sign was taken as part of a digit pair.
    #[test]
    fn refuses_what_is_not_exactly_hex() {
        assert_eq!(decode::<2>("abc"), None);
        assert_eq!(decode::<2>("+f+f"), None);
        assert_eq!(decode::<2>("a€b"), None);
        assert_eq!(decode::<2>("zzzz"), None);
    }
}
