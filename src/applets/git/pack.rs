//! The packfile (`gitformat-pack`): parsed as it streams in, stored in an unlinked temporary
//! file, and read back object by object.
//!
//! Memory stays bounded by the largest object, not the pack: while the pack streams in, each
//! object is inflated in 64 KiB pieces only to find where it ends and to hash it; what is kept is
//! an index of offsets. Deltas are resolved afterwards by inflating their bases from the file (a
//! small cache keeps recent results, since delta chains share bases). Every object's id is its
//! computed SHA-1, so an object whose content was altered is simply not found under the id that
//! refers to it, which the caller reports as an integrity failure. The trailing SHA-1 of the whole
//! pack is checked too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY as SHA1};

use super::delta;
use crate::error::Error;
use crate::supervisor::Deadline;

pub type Oid = [u8; 20];
/// An object's kind and content (shared with the delta cache).
pub type Object = (Kind, Rc<Vec<u8>>);

/// Objects larger than this are refused (a hostile header cannot make us allocate more).
pub const MAX_OBJECT: u64 = 4 << 30;
/// Deltified objects may not exceed this once resolved: git itself does not deltify files over
/// `core.bigFileThreshold` (512 MiB), and a few bytes of delta can claim gigabytes.
const MAX_DELTA_RESULT: u64 = 1 << 30;
/// Commits, trees and tags larger than this are refused before they are inflated: they are
/// held in memory whole, and no honest one comes near (a tree this size lists ~200,000 files in
/// one directory). Blobs are not limited by it (issue 9 #9).
pub const MAX_METADATA: u64 = 8 << 20;
/// A pack may hold at most this many objects: the index costs memory per object, and the
/// header's count is refused up front rather than trusted (issue 9 #9).
pub const MAX_OBJECTS: u32 = 1_000_000;
/// Resolved delta bases kept in memory.
const CACHE_BYTES: usize = 8 << 20;
const CHUNK: usize = 64 << 10;
/// Longer delta chains than git ever writes (its default is 50) are refused.
const MAX_CHAIN: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }
}

pub fn hex(id: &Oid) -> String {
    crate::hex::encode(id)
}

pub fn parse_hex(text: &str) -> Option<Oid> {
    crate::hex::decode(text)
}

/// The id git gives an object: SHA-1 of "KIND SIZE\0" and the content.
pub fn object_id(kind: Kind, data: &[u8]) -> Oid {
    let mut hasher = object_hasher(kind, data.len() as u64);
    hasher.update(data);
    finish(hasher)
}

/// The object id from a finished SHA-1 (git's object names are SHA-1, hence ring's legacy
/// algorithm, which costs nothing: ring is linked for TLS anyway).
fn finish(hasher: Context) -> Oid {
    let mut oid = [0u8; 20];
    oid.copy_from_slice(hasher.finish().as_ref());
    oid
}

fn object_hasher(kind: Kind, size: u64) -> Context {
    let mut hasher = Context::new(&SHA1);
    hasher.update(format!("{} {size}\0", kind.name()).as_bytes());
    hasher
}

#[derive(Clone, Copy, Debug)]
enum Base {
    Whole(Kind),
    Offset(u64),
    Id(Oid),
}

#[derive(Debug)]
struct Entry {
    /// Where the zlib data starts and ends in the file.
    data_offset: u64,
    data_end: u64,
    /// Inflated size: the object, or the delta instructions.
    size: u64,
    base: Base,
    /// Known once resolved.
    kind: Option<Kind>,
}

pub struct Pack {
    file: File,
    entries: Vec<Entry>,
    /// Pack offset of each entry's header, sorted (entries are in pack order).
    offsets: Vec<u64>,
    by_id: HashMap<Oid, u32>,
    cache: HashMap<usize, Rc<Vec<u8>>>,
    cached_bytes: usize,
    inflater: Box<InflateState>,
}

/// A commit, tree or tag over [`MAX_METADATA`].
fn too_large(kind_bits: u8, size: u64) -> Error {
    let kind = match kind_bits {
        1 => "commit",
        2 => "tree",
        _ => "tag",
    };
    Error::Remote(format!(
        "a {kind} of {size} bytes is larger than the {} MiB limit for commits, trees and tags",
        MAX_METADATA >> 20
    ))
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::Remote(format!("malformed pack from the server: {why}"))
}

/// The bytes of the stream, buffered, written to the file and hashed as they are consumed.
struct Input<'a, R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    position: u64,
    out: BufWriter<&'a File>,
    hasher: Context,
    read_error: &'a dyn Fn(io::Error) -> Error,
}

impl<R: Read> Input<'_, R> {
    /// At least one byte available, or end of stream (false).
    fn fill(&mut self) -> Result<bool, Error> {
        if self.start < self.end {
            return Ok(true);
        }
        self.start = 0;
        self.end = 0;
        loop {
            match self.reader.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((self.read_error)(e)),
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) -> Result<(), Error> {
        let bytes = &self.buf[self.start..self.start + n];
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("cannot write the temporary pack file", &e))?;
        self.start += n;
        self.position += n as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Error> {
        if !self.fill()? {
            return Err(malformed("the pack ended early"));
        }
        let byte = self.buf[self.start];
        self.consume(1)?;
        Ok(byte)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        for slot in &mut out {
            *slot = self.byte()?;
        }
        Ok(out)
    }
}

/// Receives a pack from `reader` into `file` (an unlinked temporary) and indexes it.
pub fn receive(
    reader: impl Read,
    file: File,
    deadline: &Deadline,
    read_error: &dyn Fn(io::Error) -> Error,
) -> Result<Pack, Error> {
    let mut input = Input {
        reader,
        buf: vec![0; CHUNK],
        start: 0,
        end: 0,
        position: 0,
        out: BufWriter::with_capacity(CHUNK, &file),
        hasher: Context::new(&SHA1),
        read_error,
    };
    let header: [u8; 12] = input.bytes()?;
    if &header[..4] != b"PACK" {
        return Err(malformed("no PACK signature"));
    }
    let version = u32::from_be_bytes(header[4..8].try_into().unwrap());
    if version != 2 && version != 3 {
        return Err(malformed(format!("unsupported pack version {version}")));
    }
    let count = u32::from_be_bytes(header[8..12].try_into().unwrap());
    if count > MAX_OBJECTS {
        return Err(malformed(format!(
            "the pack claims {count} objects, over the limit of {MAX_OBJECTS}"
        )));
    }
    // Nothing is reserved from the header's count: the index grows with objects received.
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut by_id = HashMap::new();
    let mut state = InflateState::new_boxed(DataFormat::Zlib);
    let mut out = vec![0u8; CHUNK];
    for index in 0..count {
        if index % 256 == 0 {
            deadline.check("receiving the pack")?;
        }
        let offset = input.position;
        let first = input.byte()?;
        let kind_bits = (first >> 4) & 7;
        let mut size = u64::from(first & 0x0f);
        let mut shift = 4;
        let mut byte = first;
        while byte & 0x80 != 0 {
            byte = input.byte()?;
            if shift > 57 {
                return Err(malformed("object size too large"));
            }
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
        }
        if size > MAX_OBJECT {
            return Err(malformed(format!("object of {size} bytes is too large")));
        }
        if matches!(kind_bits, 1 | 2 | 4) && size > MAX_METADATA {
            return Err(too_large(kind_bits, size));
        }
        let base = match kind_bits {
            1 => Base::Whole(Kind::Commit),
            2 => Base::Whole(Kind::Tree),
            3 => Base::Whole(Kind::Blob),
            4 => Base::Whole(Kind::Tag),
            6 => {
                // Offset encoding of gitformat-pack: big-endian base-128, plus one per extra byte.
                let mut byte = input.byte()?;
                let mut distance = u64::from(byte & 0x7f);
                while byte & 0x80 != 0 {
                    byte = input.byte()?;
                    distance = distance
                        .checked_add(1)
                        .and_then(|d| d.checked_mul(128))
                        .ok_or_else(|| malformed("delta base offset too large"))?
                        | u64::from(byte & 0x7f);
                }
                let base = offset
                    .checked_sub(distance)
                    .filter(|_| distance > 0)
                    .ok_or_else(|| malformed("delta base offset outside the pack"))?;
                Base::Offset(base)
            }
            7 => Base::Id(input.bytes()?),
            other => return Err(malformed(format!("unknown object type {other}"))),
        };
        let data_offset = input.position;
        let mut hasher = match base {
            Base::Whole(kind) => Some(object_hasher(kind, size)),
            _ => None,
        };
        let mut inflated: u64 = 0;
        state.reset(DataFormat::Zlib);
        loop {
            if !input.fill()? {
                return Err(malformed("the pack ended inside an object"));
            }
            let result = inflate(&mut state, input.available(), &mut out, MZFlush::None);
            input.consume(result.bytes_consumed)?;
            let produced = &out[..result.bytes_written];
            inflated += produced.len() as u64;
            if inflated > size {
                return Err(malformed("object larger than its header says"));
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(produced);
            }
            match result.status {
                Ok(MZStatus::StreamEnd) => break,
                Ok(_) | Err(MZError::Buf) => {}
                Err(_) => return Err(malformed("corrupt zlib data")),
            }
        }
        if inflated != size {
            return Err(malformed("object smaller than its header says"));
        }
        let kind = match base {
            Base::Whole(kind) => Some(kind),
            _ => None,
        };
        if let Some(hasher) = hasher {
            // At most MAX_OBJECTS entries: the index fits in a u32.
            by_id.insert(finish(hasher), entries.len() as u32);
        }
        offsets.push(offset);
        entries.push(Entry {
            data_offset,
            data_end: input.position,
            size,
            base,
            kind,
        });
    }
    let computed: Oid = finish(input.hasher.clone());
    let mut trailer = [0u8; 20];
    for slot in &mut trailer {
        if !input.fill()? {
            return Err(malformed("the pack ended before its checksum"));
        }
        *slot = input.buf[input.start];
        input.start += 1;
    }
    if input.fill()? {
        return Err(malformed("data after the pack checksum"));
    }
    if computed != trailer {
        return Err(Error::Integrity(format!(
            "pack checksum mismatch: the pack says {}, its content hashes to {}",
            hex(&trailer),
            hex(&computed)
        )));
    }
    input
        .out
        .flush()
        .map_err(|e| Error::io("cannot write the temporary pack file", &e))?;
    drop(input);
    let mut pack = Pack {
        file,
        entries,
        offsets,
        by_id,
        cache: HashMap::new(),
        cached_bytes: 0,
        inflater: state,
    };
    pack.resolve_deltas(deadline)?;
    Ok(pack)
}

impl Pack {
    /// Objects stored as deltas (OFS_DELTA or REF_DELTA).
    pub fn delta_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !matches!(e.base, Base::Whole(_)))
            .count()
    }

    /// Objects in the pack.
    pub fn object_count(&self) -> usize {
        self.entries.len()
    }

    /// Computes the id of every delta object. REF_DELTA bases may come later in the pack, so
    /// this repeats until nothing more resolves.
    fn resolve_deltas(&mut self, deadline: &Deadline) -> Result<(), Error> {
        let mut pending: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].kind.is_none())
            .collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut still = Vec::new();
            for index in pending {
                deadline.check("resolving deltas")?;
                match self.load(index)? {
                    Some((kind, data)) => {
                        // A delta may rebuild an object the pack already holds, even its own
                        // base: the id keeps pointing at the first, or the base would become
                        // the delta itself and the chain a cycle.
                        self.by_id
                            .entry(object_id(kind, &data))
                            .or_insert(index as u32);
                    }
                    None => still.push(index),
                }
            }
            if still.len() == before {
                return Err(malformed(format!(
                    "{} delta(s) refer to objects not in the pack",
                    still.len()
                )));
            }
            pending = still;
        }
        self.cache.clear();
        self.cached_bytes = 0;
        Ok(())
    }

    /// The object with this id: `None` when the pack does not hold it.
    pub fn get(&mut self, id: &Oid) -> Result<Option<Object>, Error> {
        match self.by_id.get(id) {
            Some(&index) => self.load(index as usize),
            None => Ok(None),
        }
    }

    /// Writes a blob to `out` and returns its size, or `None` when the pack lacks it (or it is
    /// not a blob). A whole (non-delta) blob is inflated piece by piece, so a large file never
    /// sits in memory.
    pub fn write_blob(&mut self, id: &Oid, out: &mut impl Write) -> Result<Option<u64>, Error> {
        let Some(index) = self.by_id.get(id).map(|&i| i as usize) else {
            return Ok(None);
        };
        let write_error = |e: io::Error| Error::io("cannot write a checked-out file", &e);
        let entry = &self.entries[index];
        if !matches!(entry.base, Base::Whole(Kind::Blob)) {
            return match self.load(index)? {
                Some((Kind::Blob, data)) => {
                    out.write_all(&data).map_err(write_error)?;
                    Ok(Some(data.len() as u64))
                }
                _ => Ok(None),
            };
        }
        self.inflate_stream(index, out, write_error).map(Some)
    }

    /// Inflates entry `index` from the file into `out` in 64 KiB pieces, compressed and
    /// inflated alike: neither the object nor its zlib stream (which a hostile server may pad
    /// with empty blocks) is ever held whole.
    fn inflate_stream(
        &mut self,
        index: usize,
        out: &mut dyn Write,
        write_error: fn(io::Error) -> Error,
    ) -> Result<u64, Error> {
        let entry = &self.entries[index];
        let (mut position, end, size) = (entry.data_offset, entry.data_end, entry.size);
        let mut input = vec![0u8; CHUNK];
        let mut output = vec![0u8; CHUNK];
        let mut written: u64 = 0;
        self.inflater.reset(DataFormat::Zlib);
        let (mut start, mut filled) = (0, 0);
        loop {
            if start == filled && position < end {
                let want = usize::try_from(end - position).map_or(CHUNK, |left| left.min(CHUNK));
                self.file
                    .read_exact_at(&mut input[..want], position)
                    .map_err(|e| Error::io("cannot read the temporary pack file", &e))?;
                position += want as u64;
                (start, filled) = (0, want);
            }
            let result = inflate(
                &mut self.inflater,
                &input[start..filled],
                &mut output,
                MZFlush::None,
            );
            start += result.bytes_consumed;
            written += result.bytes_written as u64;
            if written > size {
                return Err(malformed("corrupt object data in the stored pack"));
            }
            out.write_all(&output[..result.bytes_written])
                .map_err(write_error)?;
            match result.status {
                Ok(MZStatus::StreamEnd) if written == size => return Ok(size),
                Ok(_) if result.bytes_consumed > 0 || result.bytes_written > 0 => {}
                _ => return Err(malformed("corrupt object data in the stored pack")),
            }
        }
    }

    /// The content of entry `index`, with its delta chain applied; `None` when a REF_DELTA base
    /// is not known yet.
    fn load(&mut self, index: usize) -> Result<Option<Object>, Error> {
        // Walk down to a whole object (or a cached one), then apply the deltas back up.
        let mut chain = Vec::new();
        let mut current = index;
        let (kind, mut data) = loop {
            if let Some(data) = self.cache.get(&current) {
                if let Some(kind) = self.entries[current].kind {
                    break (kind, Rc::clone(data));
                }
            }
            if chain.len() > MAX_CHAIN {
                return Err(malformed("delta chain too long (or a cycle)"));
            }
            let entry = &self.entries[current];
            match entry.base {
                Base::Whole(kind) => {
                    let data = self.inflate_entry(current)?;
                    break (kind, Rc::new(data));
                }
                Base::Offset(offset) => {
                    chain.push(current);
                    current = self
                        .offsets
                        .binary_search(&offset)
                        .map_err(|_| malformed("delta base offset is not an object"))?;
                }
                Base::Id(id) => {
                    chain.push(current);
                    match self.by_id.get(&id) {
                        Some(&base) => current = base as usize,
                        None => return Ok(None),
                    }
                }
            }
        };
        while let Some(next) = chain.pop() {
            let instructions = self.inflate_entry(next)?;
            let limit = if kind == Kind::Blob {
                MAX_DELTA_RESULT
            } else {
                MAX_METADATA
            };
            let result = delta::apply(&data, &instructions, limit)
                .map_err(|e| malformed(format!("bad delta: {}", e.0)))?;
            self.entries[next].kind = Some(kind);
            data = Rc::new(result);
            // Delta results are the expensive ones to rebuild, and often the next delta's base.
            self.remember(next, &data);
        }
        Ok(Some((kind, data)))
    }

    fn remember(&mut self, index: usize, data: &Rc<Vec<u8>>) {
        if data.len() > CACHE_BYTES / 4 {
            return;
        }
        if self.cached_bytes + data.len() > CACHE_BYTES {
            self.cache.clear();
            self.cached_bytes = 0;
        }
        if self.cache.insert(index, Rc::clone(data)).is_none() {
            self.cached_bytes += data.len();
        }
    }

    /// Inflates one entry into memory; callers keep its size within the in-memory limits.
    fn inflate_entry(&mut self, index: usize) -> Result<Vec<u8>, Error> {
        let size =
            usize::try_from(self.entries[index].size).map_err(|_| malformed("object too large"))?;
        let mut out = Vec::with_capacity(size);
        self.inflate_stream(index, &mut out, |e| {
            Error::io("cannot hold an object in memory", &e)
        })?;
        Ok(out)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use miniz_oxide::deflate::compress_to_vec_zlib;

    fn varint_header(kind: u8, size: usize) -> Vec<u8> {
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

    pub enum Obj<'a> {
        Whole(Kind, &'a [u8]),
        Ofs(usize, Vec<u8>),
        Ref(Oid, Vec<u8>),
    }

    /// Builds a pack by hand; `Ofs(n, delta)` refers to the n-th object.
    pub fn build(objects: &[Obj]) -> Vec<u8> {
        let mut pack = b"PACK".to_vec();
        pack.extend_from_slice(&2u32.to_be_bytes());
        pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
        let mut offsets = Vec::new();
        for object in objects {
            offsets.push(pack.len());
            match object {
                Obj::Whole(kind, data) => {
                    let code = match kind {
                        Kind::Commit => 1,
                        Kind::Tree => 2,
                        Kind::Blob => 3,
                        Kind::Tag => 4,
                    };
                    pack.extend(varint_header(code, data.len()));
                    pack.extend(compress_to_vec_zlib(data, 6));
                }
                Obj::Ofs(base, delta) => {
                    let here = pack.len();
                    pack.extend(varint_header(6, delta.len()));
                    let mut distance = (here - offsets[*base]) as u64;
                    let mut bytes = vec![(distance & 0x7f) as u8];
                    distance >>= 7;
                    while distance > 0 {
                        distance -= 1;
                        bytes.push(0x80 | (distance & 0x7f) as u8);
                        distance >>= 7;
                    }
                    bytes.reverse();
                    pack.extend(bytes);
                    pack.extend(compress_to_vec_zlib(delta, 6));
                }
                Obj::Ref(base, delta) => {
                    pack.extend(varint_header(7, delta.len()));
                    pack.extend_from_slice(base);
                    pack.extend(compress_to_vec_zlib(delta, 6));
                }
            }
        }
        let sum: Oid = finish({
            let mut context = Context::new(&SHA1);
            context.update(&pack);
            context
        });
        pack.extend_from_slice(&sum);
        pack
    }

    fn receive_bytes(bytes: &[u8]) -> Result<Pack, Error> {
        let file = tempfile();
        receive(bytes, file, &Deadline::after(None), &|e| {
            Error::io("reading", &e)
        })
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "initbox-pack-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn whole_and_delta_objects_resolve_to_their_ids() {
        let base = b"hello, world".repeat(1000);
        let target = [&base[..7], b"there"].concat();
        // base size 12000 (two varint bytes), result 12.
        let delta = vec![0xe0, 0x5d, 12, 0x90, 7, 5, b't', b'h', b'e', b'r', b'e'];
        let base_id = object_id(Kind::Blob, &base);
        let bytes = build(&[
            Obj::Ref(base_id, delta.clone()), // base comes later
            Obj::Whole(Kind::Blob, &base),
            Obj::Ofs(1, delta.clone()),
            Obj::Whole(Kind::Commit, b"tree x\n"),
        ]);
        let mut pack = receive_bytes(&bytes).unwrap();
        assert_eq!(pack.object_count(), 4);
        let (kind, data) = pack.get(&object_id(Kind::Blob, &target)).unwrap().unwrap();
        assert_eq!((kind, &data[..]), (Kind::Blob, &target[..]));
        let (_, data) = pack.get(&base_id).unwrap().unwrap();
        assert_eq!(&data[..], &base[..]);
        assert!(pack
            .get(&object_id(Kind::Commit, b"tree x\n"))
            .unwrap()
            .is_some());
        assert!(pack.get(&[0; 20]).unwrap().is_none());
    }

    #[test]
    fn delta_that_rebuilds_its_own_base_is_not_a_cycle() {
        // Found by fuzzing: a REF_DELTA whose result equals its base took over the base's id,
        // so loading that id followed the delta to itself until "delta chain too long".
        let base_id = object_id(Kind::Blob, b"abc");
        let same = vec![3, 3, 0x90, 3];
        let bytes = build(&[
            Obj::Whole(Kind::Blob, b"abc"),
            Obj::Ref(base_id, same.clone()),
            Obj::Ref(base_id, vec![3, 4, 0x90, 3, 1, b'd']),
            Obj::Ofs(1, same),
        ]);
        let mut pack = receive_bytes(&bytes).unwrap();
        let (_, data) = pack.get(&base_id).unwrap().unwrap();
        assert_eq!(&data[..], b"abc");
        let (_, data) = pack.get(&object_id(Kind::Blob, b"abcd")).unwrap().unwrap();
        assert_eq!(&data[..], b"abcd");
    }

    #[test]
    fn wrong_trailer_is_an_integrity_error() {
        let mut bytes = build(&[Obj::Whole(Kind::Blob, b"abc")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(receive_bytes(&bytes).err().unwrap().exit_code(), 79);
    }

    #[test]
    fn malformed_packs_are_remote_errors() {
        let good = build(&[Obj::Whole(Kind::Blob, b"some content here")]);
        let mut cases: Vec<Vec<u8>> = vec![
            b"JUNK".to_vec(),
            good[..good.len() - 5].to_vec(),
            good[..20].to_vec(),
            [&good[..], b"x"].concat(),
            build(&[Obj::Ref([1; 20], vec![3, 1, 1, b'x'])]),
            build(&[
                Obj::Whole(Kind::Blob, b"abc"),
                Obj::Ofs(0, vec![9, 1, 1, b'x']),
            ]),
        ];
        let mut corrupt = good.clone();
        corrupt[16] ^= 0x55;
        cases.push(corrupt);
        for (i, bytes) in cases.iter().enumerate() {
            match receive_bytes(bytes) {
                Err(e) if e.exit_code() == 76 || e.exit_code() == 79 => {}
                Err(e) => panic!("case {i}: {e}"),
                Ok(_) => panic!("case {i} accepted"),
            }
        }
    }
}
