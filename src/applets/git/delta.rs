//! git's delta format (`gitformat-pack`, "Deltified representation"): a base size, a result size,
//! then copy-from-base and insert-literal instructions.
//!
//! The input comes from the network, so every size and range is checked before use: a hostile
//! delta yields an error, never a panic or an allocation larger than the declared result (which is
//! itself capped by the caller).

#[derive(Debug, PartialEq, Eq)]
pub struct DeltaError(pub String);

fn bad(why: impl Into<String>) -> DeltaError {
    DeltaError(why.into())
}

/// Reads the little-endian base-128 size at the start of a delta.
fn read_size(delta: &[u8], at: &mut usize) -> Result<u64, DeltaError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *delta.get(*at).ok_or_else(|| bad("truncated size"))?;
        *at += 1;
        if shift > 56 {
            return Err(bad("size too large"));
        }
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// The result size a delta declares, to check it against a limit before applying it.
pub fn result_size(delta: &[u8]) -> Result<u64, DeltaError> {
    let mut at = 0;
    read_size(delta, &mut at)?;
    read_size(delta, &mut at)
}

/// Applies `delta` to `base`; the result may not exceed `limit` bytes.
pub fn apply(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
    let mut at = 0;
    let base_size = read_size(delta, &mut at)?;
    if base_size != base.len() as u64 {
        return Err(bad(format!(
            "base is {} bytes, delta expects {base_size}",
            base.len()
        )));
    }
    let size = read_size(delta, &mut at)?;
    if size > limit {
        return Err(bad(format!("result of {size} bytes is over the limit")));
    }
    let size = usize::try_from(size).map_err(|_| bad("result too large"))?;
    // The declared size is only a claim: memory grows with what the instructions really produce.
    let mut out = Vec::with_capacity(size.min(16 << 20));
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        if op & 0x80 != 0 {
            // Copy: bits 0-3 say which offset bytes follow, bits 4-6 which size bytes.
            let mut fields = [0u32; 2];
            for (bit, field, shift) in (0..7).map(|bit| {
                if bit < 4 {
                    (bit, 0, bit * 8)
                } else {
                    (bit, 1, (bit - 4) * 8)
                }
            }) {
                if op & (1 << bit) != 0 {
                    let byte = *delta.get(at).ok_or_else(|| bad("truncated copy"))?;
                    at += 1;
                    fields[field] |= u32::from(byte) << shift;
                }
            }
            let offset = fields[0] as usize;
            let length = match fields[1] {
                0 => 0x10000,
                n => n as usize,
            };
            let end = offset
                .checked_add(length)
                .filter(|&end| end <= base.len())
                .ok_or_else(|| bad("copy outside the base"))?;
            if out.len() + length > size {
                return Err(bad("result larger than declared"));
            }
            out.extend_from_slice(&base[offset..end]);
        } else if op != 0 {
            let length = op as usize;
            let literal = delta
                .get(at..at + length)
                .ok_or_else(|| bad("truncated insert"))?;
            at += length;
            if out.len() + length > size {
                return Err(bad("result larger than declared"));
            }
            out.extend_from_slice(literal);
        } else {
            return Err(bad("reserved instruction 0"));
        }
    }
    if out.len() != size {
        return Err(bad(format!(
            "result is {} bytes, delta declared {size}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_inserts() {
        let base = b"hello, world";
        // base 12, result 13: copy 0..7 ("hello, "), insert "there", copy 7.. would be "world".
        let delta = [
            12, 13, 0x90, 7, // copy offset 0 (no offset bytes), size 7
            5, b't', b'h', b'e', b'r', b'e', 0x91, 11, 1, // copy offset 11, size 1
        ];
        assert_eq!(apply(base, &delta, 100).unwrap(), b"hello, thered");
        assert_eq!(result_size(&delta).unwrap(), 13);
    }

    #[test]
    fn size_zero_copy_means_65536() {
        let base = vec![7u8; 0x10000];
        let delta = [0x80, 0x80, 4, 0x80, 0x80, 4, 0x80];
        assert_eq!(apply(&base, &delta, u64::MAX).unwrap(), base);
    }

    #[test]
    fn hostile_deltas_are_errors() {
        let base = b"abc";
        for delta in [
            &[][..],                // no sizes
            &[4, 1, 1, b'x'],       // wrong base size
            &[3, 1, 0],             // reserved op
            &[3, 2, 5, b'x'],       // truncated insert
            &[3, 1, 0x91, 2, 5],    // copy past the base
            &[3, 1, 0x91, 0xff],    // truncated copy
            &[3, 5, 1, b'x'],       // result shorter than declared
            &[3, 1, 2, b'x', b'y'], // result longer than declared
            &[
                3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // huge
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            ],
        ] {
            assert!(apply(base, delta, 1 << 30).is_err(), "{delta:?}");
        }
        assert!(apply(base, &[3, 10, 0x90, 3], 5).is_err(), "over the limit");
    }
}
