//! The pack parser: arbitrary bytes, and valid packs built from fuzz-chosen objects then
//! corrupted, never panic and fail only as the server's fault (Remote, 76) or a checksum mismatch
//! (Integrity, 79), never Internal or I/O. A valid pack parses and every object comes back with
//! its kind, content and id; whatever a corrupted pack yields still matches the id asked for.
#![no_main]

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::OnceLock;

use initbox::applets::git::pack::{object_id, receive, Kind, Oid, Pack};
use initbox::applets::git::progress::Progress;
use initbox::error::Error;
use initbox::supervisor::Deadline;
use libfuzzer_sys::fuzz_target;
use miniz_oxide::deflate::compress_to_vec_zlib;
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY as SHA1};

/// One unlinked temporary file, emptied for each run.
fn temp_file() -> File {
    static FILE: OnceLock<File> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("initbox-fuzz-pack-{}", std::process::id()));
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
    (&*file).seek(SeekFrom::Start(0)).unwrap();
    file.try_clone().unwrap()
}

fn parse(bytes: &[u8]) -> Result<Pack, Error> {
    let mut progress = Progress::default();
    let result = receive(
        bytes,
        temp_file(),
        &Deadline::after(None),
        &mut progress,
        &|e| Error::io("reading a byte slice", &e),
    );
    if let Err(e) = &result {
        check_error(e);
    }
    result
}

fn check_error(e: &Error) {
    assert!(
        matches!(e.exit_code(), 76 | 79),
        "not a Remote or Integrity error: {} ({e})",
        e.exit_code()
    );
}

fn header(kind: u8, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

fn push_size(out: &mut Vec<u8>, mut size: usize) {
    while size >= 0x80 {
        out.push(0x80 | (size & 0x7f) as u8);
        size >>= 7;
    }
    out.push(size as u8);
}

/// What the pack holds: each object's kind, content and id.
struct Expected {
    kind: Kind,
    data: Vec<u8>,
    id: Oid,
}

/// Builds a pack per `gitformat-pack` from the input: whole objects, and OFS_DELTA / REF_DELTA
/// objects that keep a prefix of an earlier object and append a literal.
fn build(data: &mut &[u8]) -> (Vec<u8>, Vec<Expected>) {
    let mut objects: Vec<Expected> = Vec::new();
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    while let Some((&op, rest)) = data.split_first() {
        *data = rest;
        if op == 0xff || objects.len() >= 64 {
            break;
        }
        let len = usize::from(op >> 3).min(data.len());
        let (literal, rest) = data.split_at(len);
        *data = rest;
        let here = 12 + body.len();
        let kind_code = op & 7;
        if kind_code < 4 || objects.is_empty() {
            let kind = [Kind::Commit, Kind::Tree, Kind::Blob, Kind::Tag][usize::from(op & 3)];
            // Some content repeats, so zlib streams are not all stored blocks.
            let content = literal.repeat(usize::from(op & 0x18) + 1);
            body.extend(header((op & 3) + 1, content.len()));
            body.extend(compress_to_vec_zlib(&content, 6));
            objects.push(Expected {
                kind,
                id: object_id(kind, &content),
                data: content,
            });
        } else {
            let base_index = usize::from(op) % objects.len();
            let base = &objects[base_index];
            let keep = literal.len().min(base.data.len());
            let mut content = base.data[..keep].to_vec();
            content.extend_from_slice(literal);
            let mut delta = Vec::new();
            push_size(&mut delta, base.data.len());
            push_size(&mut delta, content.len());
            if keep > 0 {
                delta.extend([0x90, keep as u8]);
            }
            if !literal.is_empty() {
                delta.push(literal.len() as u8);
                delta.extend_from_slice(literal);
            }
            if kind_code < 6 {
                let mut distance = (here - offsets[base_index]) as u64;
                let mut bytes = vec![(distance & 0x7f) as u8];
                distance >>= 7;
                while distance > 0 {
                    distance -= 1;
                    bytes.push(0x80 | (distance & 0x7f) as u8);
                    distance >>= 7;
                }
                bytes.reverse();
                body.extend(header(6, delta.len()));
                body.extend(bytes);
            } else {
                body.extend(header(7, delta.len()));
                body.extend_from_slice(&base.id);
            }
            body.extend(compress_to_vec_zlib(&delta, 6));
            let kind = base.kind;
            objects.push(Expected {
                kind,
                id: object_id(kind, &content),
                data: content,
            });
        }
        offsets.push(here);
    }
    let mut pack = b"PACK".to_vec();
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
    pack.extend(body);
    with_trailer(&mut pack);
    (pack, objects)
}

fn with_trailer(pack: &mut Vec<u8>) {
    let sum = digest(&SHA1, pack);
    pack.extend_from_slice(sum.as_ref());
}

/// Every object that comes back has the id it was asked for; a blob written out matches too.
fn check_objects(pack: &mut Pack, objects: &[Expected], exact: bool) {
    for object in objects {
        match pack.get(&object.id) {
            Ok(Some((kind, data))) => {
                assert_eq!(object_id(kind, &data), object.id, "content under a wrong id");
                if exact {
                    assert_eq!(kind, object.kind);
                    assert!(data[..] == object.data[..]);
                }
            }
            Ok(None) => assert!(!exact, "an object of a valid pack is missing"),
            Err(e) => {
                assert!(!exact, "a valid pack's object failed: {e}");
                check_error(&e);
            }
        }
        let mut written = Vec::new();
        match pack.write_blob(&object.id, &mut written) {
            Ok(Some(size)) => {
                assert_eq!(size, written.len() as u64);
                assert_eq!(object_id(Kind::Blob, &written), object.id);
            }
            Ok(None) => assert!(!exact || object.kind != Kind::Blob),
            Err(e) => {
                assert!(!exact, "a valid pack's blob failed: {e}");
                check_error(&e);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(pack) = parse(data) {
        assert!(pack.delta_count() <= pack.object_count());
    }

    let mut rest = data;
    let (valid, objects) = build(&mut rest);
    let mut pack = parse(&valid).unwrap_or_else(|e| panic!("a valid pack was refused: {e}"));
    assert_eq!(pack.object_count(), objects.len());
    check_objects(&mut pack, &objects, true);
    drop(pack);

    // Corrupt it: each three bytes are a position and an xor mask (0: truncate there); an odd
    // first byte recomputes the trailer, so the damage reaches the object and delta parsers.
    let Some((&mode, mutations)) = rest.split_first() else {
        return;
    };
    let mut corrupt = valid[..valid.len() - 20].to_vec();
    for mutation in mutations.chunks_exact(3) {
        if corrupt.is_empty() {
            break;
        }
        let at = usize::from(u16::from_le_bytes([mutation[0], mutation[1]])) % corrupt.len();
        match mutation[2] {
            0 => corrupt.truncate(at),
            mask => corrupt[at] ^= mask,
        }
    }
    if mode & 1 == 1 {
        with_trailer(&mut corrupt);
    } else {
        corrupt.extend_from_slice(&valid[valid.len() - 20..]);
    }
    if let Ok(mut pack) = parse(&corrupt) {
        check_objects(&mut pack, &objects, corrupt == valid);
    }
});
