//! git's delta format (`gitformat-pack`, "Deltified representation"): a base size, a result size,
//! then copy-from-base and insert-literal instructions.
//!
//! The input comes from the network, so every size and range is checked before use: a hostile
//! delta yields an error, never a panic. Nothing here holds a whole object: the instructions are
//! read from a stream, the base may be a file region read in pieces, and the result goes to a
//! writer, so a few bytes of delta that claim a gigabyte cost disk and time (both bounded by the
//! caller), not memory.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;

#[derive(Debug)]
pub enum DeltaError {
    /// The delta itself is wrong.
    Bad(String),
    /// Reading the instructions or the base, or writing the result, failed.
    Io(io::Error),
}

impl From<io::Error> for DeltaError {
    fn from(e: io::Error) -> DeltaError {
        DeltaError::Io(e)
    }
}

fn bad(why: impl Into<String>) -> DeltaError {
    DeltaError::Bad(why.into())
}

/// What a delta applies to: bytes in memory, or `len` bytes of a file at `offset`.
pub enum Source<'a> {
    Memory(&'a [u8]),
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(data) => data.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Writes `length` bytes from `offset` (checked to lie within the source) to `out`.
    fn copy(
        &self,
        offset: u64,
        length: u64,
        out: &mut dyn Write,
        scratch: &mut [u8],
    ) -> Result<(), DeltaError> {
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= self.len())
            .ok_or_else(|| bad("copy outside the base"))?;
        match self {
            // Within the slice's length, so these fit in usize.
            Source::Memory(data) => out.write_all(&data[offset as usize..end as usize])?,
            Source::File {
                file, offset: at, ..
            } => {
                let mut position = offset;
                while position < end {
                    let piece = usize::try_from(end - position)
                        .map_or(scratch.len(), |left| left.min(scratch.len()));
                    file.read_exact_at(&mut scratch[..piece], at + position)?;
                    out.write_all(&scratch[..piece])?;
                    position += piece as u64;
                }
            }
        }
        Ok(())
    }
}

/// The two sizes a delta starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub base: u64,
    pub result: u64,
}

fn byte(delta: &mut impl BufRead, what: &str) -> Result<u8, DeltaError> {
    let mut one = [0u8];
    match delta.read_exact(&mut one) {
        Ok(()) => Ok(one[0]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(bad(format!("truncated {what}"))),
        Err(e) => Err(e.into()),
    }
}

/// Reads one little-endian base-128 size.
fn read_size(delta: &mut impl BufRead) -> Result<u64, DeltaError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = byte(delta, "size")?;
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

/// Reads the sizes at the start of a delta, so the caller can check the result size against
/// its limits and choose where the result goes before applying the rest.
pub fn read_sizes(delta: &mut impl BufRead) -> Result<Sizes, DeltaError> {
    Ok(Sizes {
        base: read_size(delta)?,
        result: read_size(delta)?,
    })
}

/// Applies the instructions left in `delta` (after [`read_sizes`]) to `base`, writing exactly
/// `sizes.result` bytes to `out`, or failing before writing past it.
pub fn apply(
    sizes: Sizes,
    base: &Source,
    delta: &mut impl BufRead,
    out: &mut dyn Write,
) -> Result<(), DeltaError> {
    if sizes.base != base.len() {
        return Err(bad(format!(
            "base is {} bytes, delta expects {}",
            base.len(),
            sizes.base
        )));
    }
    let mut scratch = vec![
        0u8;
        if matches!(base, Source::File { .. }) {
            64 << 10
        } else {
            0
        }
    ];
    let mut written: u64 = 0;
    while !delta.fill_buf()?.is_empty() {
        let op = byte(delta, "instruction")?;
        let length = if op & 0x80 != 0 {
            // Copy: bits 0-3 say which offset bytes follow, bits 4-6 which size bytes.
            let mut fields = [0u32; 2];
            for bit in 0..7 {
                if op & (1 << bit) != 0 {
                    let (field, shift) = if bit < 4 {
                        (0, bit * 8)
                    } else {
                        (1, (bit - 4) * 8)
                    };
                    fields[field] |= u32::from(byte(delta, "copy")?) << shift;
                }
            }
            let length = match fields[1] {
                0 => 0x10000,
                n => u64::from(n),
            };
            check_room(written, length, sizes.result)?;
            base.copy(u64::from(fields[0]), length, out, &mut scratch)?;
            length
        } else if op != 0 {
            let length = usize::from(op);
            check_room(written, length as u64, sizes.result)?;
            let mut literal = [0u8; 0x7f];
            delta.read_exact(&mut literal[..length]).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    bad("truncated insert")
                } else {
                    e.into()
                }
            })?;
            out.write_all(&literal[..length])?;
            length as u64
        } else {
            return Err(bad("reserved instruction 0"));
        };
        written += length;
    }
    if written != sizes.result {
        return Err(bad(format!(
            "result is {written} bytes, delta declared {}",
            sizes.result
        )));
    }
    Ok(())
}

fn check_room(written: u64, length: u64, size: u64) -> Result<(), DeltaError> {
    if written + length > size {
        return Err(bad("result larger than declared"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a whole in-memory delta, as the pack does for small objects.
    fn apply_all(base: &[u8], mut delta: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
        let sizes = read_sizes(&mut delta)?;
        if sizes.result > limit {
            return Err(bad("over the limit"));
        }
        let mut out = Vec::new();
        apply(sizes, &Source::Memory(base), &mut delta, &mut out)?;
        Ok(out)
    }

    #[test]
    fn copies_and_inserts() {
        let base = b"hello, world";
        // base 12, result 13: copy 0..7 ("hello, "), insert "there", copy 7.. would be "world".
        let delta = [
            12, 13, 0x90, 7, // copy offset 0 (no offset bytes), size 7
            5, b't', b'h', b'e', b'r', b'e', 0x91, 11, 1, // copy offset 11, size 1
        ];
        assert_eq!(apply_all(base, &delta, 100).unwrap(), b"hello, thered");
        assert_eq!(
            read_sizes(&mut &delta[..]).unwrap(),
            Sizes {
                base: 12,
                result: 13
            }
        );
    }

    #[test]
    fn size_zero_copy_means_65536() {
        let base = vec![7u8; 0x10000];
        let delta = [0x80, 0x80, 4, 0x80, 0x80, 4, 0x80];
        assert_eq!(apply_all(&base, &delta, u64::MAX).unwrap(), base);
    }

    #[test]
    fn a_file_base_is_read_in_pieces() {
        let path = std::env::temp_dir().join(format!("initbox-delta-{}", std::process::id()));
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, [&b"skip"[..], &content].concat()).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // base 200000, result 140000: copy 70000 bytes from 130000, twice.
        let mut delta = vec![0xc0, 0x9a, 0x0c, 0xe0, 0xc5, 0x08];
        delta.extend([0xf7, 0xd0, 0xfb, 0x01, 0x70, 0x11, 0x01].repeat(2));
        let mut out = Vec::new();
        let mut reader = &delta[..];
        let sizes = read_sizes(&mut reader).unwrap();
        let base = Source::File {
            file: &file,
            offset: 4,
            len: content.len() as u64,
        };
        apply(sizes, &base, &mut reader, &mut out).unwrap();
        assert_eq!(out, content[130_000..].repeat(2));
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
            assert!(apply_all(base, delta, 1 << 30).is_err(), "{delta:?}");
        }
    }
}
