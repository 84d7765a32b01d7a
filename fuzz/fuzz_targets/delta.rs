//! git's delta applier: on arbitrary base and delta it never panics, fails only as a bad delta
//! (never I/O, with the base and result in memory), and what it writes is exactly the size the
//! delta declares. A delta encoded here from fuzz-chosen copy and insert instructions
//! (`gitformat-pack`, "Deltified representation") applies to exactly the bytes those
//! instructions describe, from a base in memory and from the same base read from a file alike.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use initbox::applets::git::delta::{apply, read_sizes, DeltaError, Source};
use libfuzzer_sys::fuzz_target;

/// Applies a delta held in memory, refusing a declared result over `limit` first, as the pack
/// does.
fn apply_all(base: &Source, mut delta: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let checked = |e: DeltaError| match e {
        DeltaError::Bad(why) => why,
        DeltaError::Io(e) if matches!(base, Source::File { .. }) => e.to_string(),
        DeltaError::Io(e) => panic!("an I/O error without I/O: {e}"),
    };
    let sizes = read_sizes(&mut delta).map_err(checked)?;
    if sizes.result > limit {
        return Err("over the limit".into());
    }
    let mut out = Vec::new();
    apply(sizes, base, &mut delta, &mut out).map_err(checked)?;
    assert_eq!(out.len() as u64, sizes.result, "not the declared size");
    Ok(out)
}

/// `base` at offset 7 of an unlinked temporary file, as the pack's spill area holds large bases.
fn in_file(base: &[u8]) -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("initbox-fuzz-delta-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    });
    file.set_len(0).unwrap();
    file.write_all_at(base, 7).unwrap();
    file
}

fn push_size(out: &mut Vec<u8>, mut size: u64) {
    while size >= 0x80 {
        out.push(0x80 | (size & 0x7f) as u8);
        size >>= 7;
    }
    out.push(size as u8);
}

/// A copy instruction: only the non-zero offset and size bytes are present, and a size of
/// 0x10000 is written as no size bytes at all.
fn push_copy(out: &mut Vec<u8>, offset: u32, size: u32) {
    let size = if size == 0x10000 { 0 } else { size };
    let mut op = 0x80u8;
    let mut fields = Vec::new();
    for (bit, byte) in offset.to_le_bytes().into_iter().enumerate() {
        if byte != 0 {
            op |= 1 << bit;
            fields.push(byte);
        }
    }
    for (bit, byte) in size.to_le_bytes().into_iter().take(3).enumerate() {
        if byte != 0 {
            op |= 1 << (bit + 4);
            fields.push(byte);
        }
    }
    out.push(op);
    out.extend(fields);
}

fn arbitrary(data: &[u8], limit: u64) {
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (base, delta) = data.split_at(split);
    if let Ok(out) = apply_all(&Source::Memory(base), delta, limit) {
        assert!(out.len() as u64 <= limit);
    }
}

fn differential(data: &[u8], limit: u64) {
    let Some((&base_len, mut data)) = data.split_first() else {
        return;
    };
    // Bases past 64 KiB exercise three-byte offsets.
    let base: Vec<u8> = (0..usize::from(base_len) * 300)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let mut instructions = Vec::new();
    let mut expected = Vec::new();
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        if op & 0x80 != 0 && !base.is_empty() {
            let Some((field, rest)) = data.split_first_chunk::<4>() else {
                break;
            };
            data = rest;
            let offset = u32::from_le_bytes(*field) as usize % base.len();
            let size = match op & 3 {
                0 => 0x10000,
                1 => usize::from(op & 0x7c) + 1,
                _ => u32::from_le_bytes(*field) as usize % 0x10000 + 1,
            }
            .min(base.len() - offset);
            push_copy(&mut instructions, offset as u32, size as u32);
            expected.extend_from_slice(&base[offset..offset + size]);
        } else {
            let size = usize::from(op & 0x7f).max(1).min(data.len());
            if size == 0 {
                break;
            }
            let (literal, rest) = data.split_at(size);
            data = rest;
            instructions.push(size as u8);
            instructions.extend_from_slice(literal);
            expected.extend_from_slice(literal);
        }
    }
    let mut delta = Vec::new();
    push_size(&mut delta, base.len() as u64);
    push_size(&mut delta, expected.len() as u64);
    delta.extend_from_slice(&instructions);
    let memory = Source::Memory(&base);
    match apply_all(&memory, &delta, limit) {
        Ok(out) => assert!(out == expected, "a valid delta applied wrongly"),
        Err(_) if expected.len() as u64 > limit => {}
        Err(e) => panic!("a valid delta was refused: {e}"),
    }
    assert!(apply_all(&memory, &delta, u64::MAX).unwrap() == expected);
    let file = Source::File {
        file: in_file(&base),
        offset: 7,
        len: base.len() as u64,
    };
    assert!(
        apply_all(&file, &delta, u64::MAX).unwrap() == expected,
        "file base differs"
    );
    // One byte short of the instructions, or a different base, is an error, never a panic.
    if !instructions.is_empty() {
        assert!(apply_all(&memory, &delta[..delta.len() - 1], u64::MAX).is_err());
    }
    let half = Source::Memory(&base[..base.len() / 2]);
    assert!(apply_all(&half, &delta, u64::MAX).is_err() || base.is_empty());
}

fuzz_target!(|data: &[u8]| {
    // The limit comes from the last bytes, so the fuzzer can reach both sides of it.
    let limit = match data {
        [.., a, b] => u64::from(u16::from_le_bytes([*a, *b])) * 16,
        _ => u64::MAX,
    };
    arbitrary(data, limit);
    arbitrary(data, u64::MAX);
    differential(data, limit);
});
