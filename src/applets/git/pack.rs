//! The packfile (`gitformat-pack`): parsed as it streams in, stored in an unlinked temporary
//! file, and read back object by object.
//!
//! Memory stays bounded whatever the server sends (issue 9 #9). While the pack streams in, each
//! object is inflated in 64 KiB pieces only to find where it ends and to hash it; what is kept is
//! an index of 32 bytes an object: where its header starts (its data ends where the next object
//! starts) and, sorted, its id; kind, size and delta base are read back from the file on demand.
//! Deltas are resolved afterwards by inflating their bases from the file (a small cache keeps
//! recent results, since delta chains share bases). A large blob, whole or rebuilt from a delta,
//! never sits in memory: it goes to the spill area past the pack's end in the same file, deltas
//! read it back from there in pieces, and its SHA-1 is computed as it is written. Every object's
//! id is its computed SHA-1, so an object whose content was altered is simply not found under the
//! id that refers to it, which the caller reports as an integrity failure. The trailing SHA-1 of
//! the whole pack is checked too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use sha1::{Digest, Sha1 as Context};

use super::delta::{self, DeltaError, Source};
use super::progress::Progress;
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
/// Blobs larger than this, when a delta needs them as a base or rebuilds them, are written to
/// the spill area instead of memory.
const SPILL_OVER: u64 = 1 << 20;
/// A pack may hold at most this many objects: the index costs memory per object, and the
/// header's count is refused up front rather than trusted (issue 9 #9).
pub const MAX_OBJECTS: u32 = 1_000_000;
/// Resolved delta bases kept in memory.
const CACHE_BYTES: usize = 8 << 20;
const CHUNK: usize = 64 << 10;
/// Longer delta chains than git ever writes (its default is 50) are refused.
const MAX_CHAIN: usize = 10_000;
/// The longest object header: a 10-byte size and a 20-byte REF_DELTA base.
const MAX_HEADER: usize = 32;

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

/// The object id from a finished SHA-1.
fn finish(hasher: Context) -> Oid {
    hasher.finalize().into()
}

fn object_hasher(kind: Kind, size: u64) -> Context {
    let mut hasher = Context::new();
    hasher.update(format!("{} {size}\0", kind.name()).as_bytes());
    hasher
}

#[derive(Clone, Copy, Debug)]
enum Base {
    Whole(Kind),
    Offset(u64),
    Id(Oid),
}

/// An object's header, as read back from the file.
#[derive(Debug)]
struct Header {
    base: Base,
    /// Inflated size: the object, or the delta instructions.
    size: u64,
    /// Where the zlib data starts and ends in the file.
    data: u64,
    end: u64,
}

/// An object's content once resolved.
enum Data {
    Memory(Rc<Vec<u8>>),
    /// `len` bytes of the spill area at `offset`, whose object id was computed as they were
    /// written. Valid until the next object is loaded.
    Spilled {
        offset: u64,
        len: u64,
        id: Oid,
    },
}

pub struct Pack {
    file: File,
    /// Pack offset of each object's header, in pack order: an object's data ends where the next
    /// object starts, the last one's at `end`.
    offsets: Vec<u64>,
    /// Where the objects end and the trailer starts; the spill area follows the trailer.
    end: u64,
    /// (id, index in `offsets`), sorted by id up to `sorted`: ids found while resolving deltas
    /// are appended, then sorted in after each round.
    ids: Vec<(Oid, u32)>,
    sorted: usize,
    deltas: usize,
    cache: HashMap<u32, Object>,
    cached_bytes: usize,
    inflater: Box<InflateState>,
    /// Compressed data read from the file, and inflated data on its way to a file.
    input: Vec<u8>,
    output: Vec<u8>,
    /// The pack of the blobs a filtered fetch left out, fetched by id after it.
    more: Option<Box<Pack>>,
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

/// An error reading back or spilling to the temporary pack file. Its content was checked as it
/// arrived, so data that no longer inflates means the file was damaged since.
fn stored(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        malformed("corrupt object data in the stored pack")
    } else {
        Error::io("cannot use the temporary pack file", &e)
    }
}

fn bad_delta(e: DeltaError) -> Error {
    match e {
        DeltaError::Bad(why) => malformed(format!("bad delta: {why}")),
        DeltaError::Io(e) => stored(e),
    }
}

/// Parses an object header (`gitformat-pack`: type and size, then a delta's base) of the object
/// at pack offset `offset`, taking its bytes from `next`.
fn parse_header(
    offset: u64,
    mut next: impl FnMut() -> Result<u8, Error>,
) -> Result<(Base, u64), Error> {
    let first = next()?;
    let kind_bits = (first >> 4) & 7;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = next()?;
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
            let mut byte = next()?;
            let mut distance = u64::from(byte & 0x7f);
            while byte & 0x80 != 0 {
                byte = next()?;
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
        7 => {
            let mut id = [0u8; 20];
            for slot in &mut id {
                *slot = next()?;
            }
            Base::Id(id)
        }
        other => return Err(malformed(format!("unknown object type {other}"))),
    };
    Ok((base, size))
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
    progress: &'a mut Progress,
    /// Objects received so far, for progress lines.
    objects: u32,
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
                    self.progress
                        .receiving(self.position + n as u64, self.objects);
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

    /// Reads the 12-byte pack header and returns the object count it claims.
    fn pack_header(&mut self) -> Result<u32, Error> {
        let mut header = [0u8; 12];
        for slot in &mut header {
            *slot = self.byte()?;
        }
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
        Ok(count)
    }

    /// Inflates one object's zlib data to check its size and find its end, hashing the content
    /// when `hasher` is given.
    fn object(
        &mut self,
        state: &mut InflateState,
        out: &mut [u8],
        size: u64,
        mut hasher: Option<Context>,
    ) -> Result<Option<Oid>, Error> {
        let mut inflated: u64 = 0;
        state.reset(DataFormat::Zlib);
        loop {
            if !self.fill()? {
                return Err(malformed("the pack ended inside an object"));
            }
            let result = inflate(state, self.available(), out, MZFlush::None);
            self.consume(result.bytes_consumed)?;
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
        Ok(hasher.map(finish))
    }

    /// Checks the pack's trailing SHA-1 and that nothing follows it.
    fn trailer(&mut self) -> Result<(), Error> {
        let computed: Oid = finish(self.hasher.clone());
        let mut trailer = [0u8; 20];
        for slot in &mut trailer {
            *slot = self
                .byte()
                .map_err(|_| malformed("the pack ended before its checksum"))?;
        }
        if self.fill()? {
            return Err(malformed("data after the pack checksum"));
        }
        if computed != trailer {
            return Err(Error::Integrity(format!(
                "pack checksum mismatch: the pack says {}, its content hashes to {}",
                hex(&trailer),
                hex(&computed)
            )));
        }
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write the temporary pack file", &e))
    }
}

/// Receives a pack from `reader` into `file` (an unlinked temporary) and indexes it.
pub fn receive(
    reader: impl Read,
    file: File,
    deadline: &Deadline,
    progress: &mut Progress,
    read_error: &dyn Fn(io::Error) -> Error,
) -> Result<Pack, Error> {
    let mut input = Input {
        reader,
        buf: vec![0; CHUNK],
        start: 0,
        end: 0,
        position: 0,
        out: BufWriter::with_capacity(CHUNK, &file),
        hasher: Context::new(),
        read_error,
        progress,
        objects: 0,
    };
    let count = input.pack_header()?;
    // Nothing is reserved from the header's count: the index grows with objects received.
    let mut offsets = Vec::new();
    let mut ids = Vec::new();
    let mut deltas = Vec::new();
    let mut state = InflateState::new_boxed(DataFormat::Zlib);
    let mut out = vec![0u8; CHUNK];
    for index in 0..count {
        if index % 256 == 0 {
            deadline.check("receiving the pack")?;
        }
        let offset = input.position;
        let (base, size) = parse_header(offset, || input.byte())?;
        let hasher = match base {
            Base::Whole(kind) => Some(object_hasher(kind, size)),
            _ => None,
        };
        match input.object(&mut state, &mut out, size, hasher)? {
            Some(id) => ids.push((id, index)),
            None => deltas.push(index),
        }
        offsets.push(offset);
        input.objects = index + 1;
    }
    let end = input.position;
    // The trailer is not hashed into itself: `trailer` takes the SHA-1 before consuming it.
    input.trailer()?;
    drop(input);
    let mut pack = Pack {
        file,
        offsets,
        end,
        ids,
        sorted: 0,
        deltas: deltas.len(),
        cache: HashMap::new(),
        cached_bytes: 0,
        inflater: state,
        input: out,
        output: vec![0u8; CHUNK],
        more: None,
    };
    pack.resolve_deltas(deltas, deadline)?;
    Ok(pack)
}

/// One stored object's inflated content, read from the pack file in pieces.
struct Inflated<'a> {
    file: &'a File,
    state: &'a mut InflateState,
    input: &'a mut [u8],
    start: usize,
    filled: usize,
    position: u64,
    end: u64,
    size: u64,
    produced: u64,
    done: bool,
}

impl<'a> Inflated<'a> {
    fn new(
        file: &'a File,
        state: &'a mut InflateState,
        input: &'a mut [u8],
        header: &Header,
    ) -> Inflated<'a> {
        state.reset(DataFormat::Zlib);
        Inflated {
            file,
            state,
            input,
            start: 0,
            filled: 0,
            position: header.data,
            end: header.end,
            size: header.size,
            produced: 0,
            done: false,
        }
    }
}

impl Read for Inflated<'_> {
    /// Fails with `InvalidData` when the stored zlib data does not inflate to the object's size.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.done && !buf.is_empty() {
            if self.start == self.filled && self.position < self.end {
                let want = usize::try_from(self.end - self.position)
                    .map_or(self.input.len(), |left| left.min(self.input.len()));
                self.file
                    .read_exact_at(&mut self.input[..want], self.position)?;
                self.position += want as u64;
                (self.start, self.filled) = (0, want);
            }
            let result = inflate(
                self.state,
                &self.input[self.start..self.filled],
                buf,
                MZFlush::None,
            );
            self.start += result.bytes_consumed;
            self.produced += result.bytes_written as u64;
            let progress = result.bytes_consumed > 0 || result.bytes_written > 0;
            let corrupt = match result.status {
                Ok(MZStatus::StreamEnd) => {
                    self.done = true;
                    self.produced != self.size
                }
                Ok(_) => !progress || self.produced > self.size,
                Err(_) => true,
            };
            if corrupt {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt zlib data",
                ));
            }
            if result.bytes_written > 0 {
                return Ok(result.bytes_written);
            }
        }
        Ok(0)
    }
}

/// A region of the pack file, read in order.
struct Region<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want =
            usize::try_from(self.end - self.position).map_or(buf.len(), |left| left.min(buf.len()));
        self.file.read_exact_at(&mut buf[..want], self.position)?;
        self.position += want as u64;
        Ok(want)
    }
}

/// Writes to the spill area, hashing as it goes.
struct Spill<'a> {
    file: &'a File,
    position: u64,
    hasher: Context,
}

impl Write for Spill<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.position)?;
        self.hasher.update(&buf[..n]);
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a `kind` object of `len` bytes at `offset` of the spill area, through `write`.
fn spill(
    file: &File,
    offset: u64,
    kind: Kind,
    len: u64,
    write: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<Data, Error> {
    let mut out = BufWriter::with_capacity(
        CHUNK,
        Spill {
            file,
            position: offset,
            hasher: object_hasher(kind, len),
        },
    );
    write(&mut out)?;
    let spilled = out.into_inner().map_err(|e| stored(e.into_error()))?;
    Ok(Data::Spilled {
        offset,
        len,
        id: finish(spilled.hasher),
    })
}

/// Copies `reader` to `out` through `buffer`, returning the bytes copied.
fn pump(
    reader: &mut impl Read,
    out: &mut dyn Write,
    buffer: &mut [u8],
    write_error: fn(io::Error) -> Error,
) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stored(e)),
        };
        out.write_all(&buffer[..n]).map_err(write_error)?;
        total += n as u64;
    }
}

impl Pack {
    /// Objects stored as deltas (OFS_DELTA or REF_DELTA).
    pub fn delta_count(&self) -> usize {
        self.deltas + self.more.as_ref().map_or(0, |more| more.delta_count())
    }

    /// Objects in the pack.
    pub fn object_count(&self) -> usize {
        self.offsets.len() + self.more.as_ref().map_or(0, |more| more.object_count())
    }

    /// Adds the objects of `more` (the blobs fetched after a filtered fetch) to this pack's.
    pub fn attach(&mut self, more: Pack) {
        match &mut self.more {
            Some(pack) => pack.attach(more),
            None => self.more = Some(Box::new(more)),
        }
    }

    /// Computes the id of every delta object. REF_DELTA bases may come later in the pack, or be
    /// deltas resolved in the same round, so this repeats until nothing more resolves.
    fn resolve_deltas(&mut self, mut pending: Vec<u32>, deadline: &Deadline) -> Result<(), Error> {
        self.sort_ids();
        while !pending.is_empty() {
            let before = pending.len();
            let mut kept = 0;
            for at in 0..before {
                let index = pending[at];
                deadline.check("resolving deltas")?;
                match self.load(index)? {
                    Some((kind, data)) => {
                        let id = match data {
                            Data::Memory(data) => object_id(kind, &data),
                            Data::Spilled { id, .. } => id,
                        };
                        // A delta may rebuild an object the pack already holds, even its own
                        // base: the id keeps pointing at the first, or the base would become
                        // the delta itself and the chain a cycle.
                        if self.find(&id).is_none() {
                            self.ids.push((id, index));
                        }
                    }
                    None => {
                        pending[kept] = index;
                        kept += 1;
                    }
                }
            }
            if kept == before {
                return Err(malformed(format!(
                    "{kept} delta(s) refer to objects not in the pack"
                )));
            }
            pending.truncate(kept);
            self.sort_ids();
        }
        self.cache.clear();
        self.cached_bytes = 0;
        Ok(())
    }

    /// Sorts the ids added since the last call in. Of one id found twice, either entry will
    /// do: both hold the same content, and neither's chain goes through the other.
    fn sort_ids(&mut self) {
        self.ids.sort_unstable_by_key(|entry| entry.0);
        self.ids.dedup_by(|a, b| a.0 == b.0);
        self.sorted = self.ids.len();
    }

    /// The index of the object with this id, among those sorted in.
    fn find(&self, id: &Oid) -> Option<u32> {
        let known = &self.ids[..self.sorted];
        known
            .binary_search_by(|(probe, _)| probe.cmp(id))
            .ok()
            .map(|at| known[at].1)
    }

    /// Reads the header of object `index` back from the file.
    fn header(&self, index: u32) -> Result<Header, Error> {
        let offset = self.offsets[index as usize];
        let end = self
            .offsets
            .get(index as usize + 1)
            .copied()
            .unwrap_or(self.end);
        let mut bytes = [0u8; MAX_HEADER];
        let len = usize::try_from(end - offset).map_or(MAX_HEADER, |len| len.min(MAX_HEADER));
        self.file
            .read_exact_at(&mut bytes[..len], offset)
            .map_err(stored)?;
        let mut at = 0;
        let (base, size) = parse_header(offset, || {
            let byte = bytes[..len]
                .get(at)
                .copied()
                .ok_or_else(|| malformed("corrupt object header in the stored pack"))?;
            at += 1;
            Ok(byte)
        })?;
        Ok(Header {
            base,
            size,
            data: offset + at as u64,
            end,
        })
    }

    /// The object with this id: `None` when the pack does not hold it. Only commits, trees, tags
    /// and small blobs (symlink targets, `.gitmodules`) are asked for: a large blob is refused.
    pub fn get(&mut self, id: &Oid) -> Result<Option<Object>, Error> {
        let Some(index) = self.find(id) else {
            return match &mut self.more {
                Some(more) => more.get(id),
                None => Ok(None),
            };
        };
        let too_large = |size: u64| {
            Err(Error::Remote(format!(
                "blob {} of {size} bytes is too large to be held in memory (a symlink target or \
                 .gitmodules is read whole, up to {SPILL_OVER} bytes)",
                hex(id)
            )))
        };
        let header = self.header(index)?;
        if matches!(header.base, Base::Whole(Kind::Blob)) && header.size > SPILL_OVER {
            return too_large(header.size);
        }
        match self.load(index)? {
            Some((kind, Data::Memory(data))) => Ok(Some((kind, data))),
            Some((_, Data::Spilled { len, .. })) => too_large(len),
            None => Ok(None),
        }
    }

    /// Writes a blob to `out` and returns its size, or `None` when the pack lacks it (or it is
    /// not a blob). A whole blob is inflated piece by piece and a large rebuilt one copied from
    /// the spill area, so a large file never sits in memory.
    pub fn write_blob(&mut self, id: &Oid, out: &mut impl Write) -> Result<Option<u64>, Error> {
        let Some(index) = self.find(id) else {
            return match &mut self.more {
                Some(more) => more.write_blob(id, out),
                None => Ok(None),
            };
        };
        let write_error = |e: io::Error| Error::io("cannot write a checked-out file", &e);
        let header = self.header(index)?;
        match header.base {
            Base::Whole(Kind::Blob) => {
                let mut reader =
                    Inflated::new(&self.file, &mut self.inflater, &mut self.input, &header);
                return pump(&mut reader, out, &mut self.output, write_error).map(Some);
            }
            Base::Whole(_) => return Ok(None),
            Base::Offset(_) | Base::Id(_) => {}
        }
        match self.load(index)? {
            Some((Kind::Blob, Data::Memory(data))) => {
                out.write_all(&data).map_err(write_error)?;
                Ok(Some(data.len() as u64))
            }
            Some((Kind::Blob, Data::Spilled { offset, len, .. })) => {
                let mut region = Region {
                    file: &self.file,
                    position: offset,
                    end: offset + len,
                };
                pump(&mut region, out, &mut self.output, write_error).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The content of object `index`, with its delta chain applied; `None` when a REF_DELTA
    /// base is not known yet.
    fn load(&mut self, index: u32) -> Result<Option<(Kind, Data)>, Error> {
        // Walk down to a whole object (or a cached one), then apply the deltas back up.
        let mut chain = Vec::new();
        let mut current = index;
        let (kind, mut data) = loop {
            if let Some((kind, data)) = self.cache.get(&current) {
                break (*kind, Data::Memory(Rc::clone(data)));
            }
            if chain.len() > MAX_CHAIN {
                return Err(malformed("delta chain too long (or a cycle)"));
            }
            let header = self.header(current)?;
            let base = match header.base {
                Base::Whole(kind) => break (kind, self.load_whole(&header, kind)?),
                Base::Offset(offset) => self
                    .offsets
                    .binary_search(&offset)
                    .map_err(|_| malformed("delta base offset is not an object"))?
                    as u32,
                Base::Id(id) => match self.find(&id) {
                    Some(base) => base,
                    None => return Ok(None),
                },
            };
            chain.push((current, header));
            current = base;
        };
        while let Some((delta, header)) = chain.pop() {
            data = self.apply_delta(&header, kind, &data)?;
            if let Data::Memory(result) = &data {
                // Delta results are the expensive ones to rebuild, and often the next delta's
                // base.
                self.remember(delta, kind, result);
            }
        }
        Ok(Some((kind, data)))
    }

    /// A whole object: in memory, or a large blob inflated into the spill area.
    fn load_whole(&mut self, header: &Header, kind: Kind) -> Result<Data, Error> {
        let mut reader = Inflated::new(&self.file, &mut self.inflater, &mut self.input, header);
        if kind != Kind::Blob || header.size <= SPILL_OVER {
            // Within MAX_METADATA or SPILL_OVER, so it fits in usize.
            let mut out = Vec::with_capacity(header.size as usize);
            reader.read_to_end(&mut out).map_err(stored)?;
            return Ok(Data::Memory(Rc::new(out)));
        }
        let output = &mut self.output;
        spill(&self.file, self.end + 20, kind, header.size, |out| {
            pump(&mut reader, out, output, stored).map(drop)
        })
    }

    /// Applies the delta `header` describes to `base`, a `kind` object. The result is in memory
    /// unless it is a large blob.
    fn apply_delta(&mut self, header: &Header, kind: Kind, base: &Data) -> Result<Data, Error> {
        let file = &self.file;
        let mut instructions = BufReader::new(Inflated::new(
            file,
            &mut self.inflater,
            &mut self.input,
            header,
        ));
        let sizes = delta::read_sizes(&mut instructions).map_err(bad_delta)?;
        let limit = if kind == Kind::Blob {
            MAX_DELTA_RESULT
        } else {
            MAX_METADATA
        };
        if sizes.result > limit {
            return Err(malformed(format!(
                "bad delta: a {} of {} bytes is over the limit",
                kind.name(),
                sizes.result
            )));
        }
        let source = match base {
            Data::Memory(data) => Source::Memory(data),
            Data::Spilled { offset, len, .. } => Source::File {
                file,
                offset: *offset,
                len: *len,
            },
        };
        if kind != Kind::Blob || sizes.result <= SPILL_OVER {
            // Within the limits checked above, so it fits in usize.
            let mut out = Vec::with_capacity(sizes.result as usize);
            delta::apply(sizes, &source, &mut instructions, &mut out).map_err(bad_delta)?;
            return Ok(Data::Memory(Rc::new(out)));
        }
        // The result goes before its base in the spill area when it fits there, after it
        // otherwise: however long the chain, the area holds two objects at most.
        let start = self.end + 20;
        let offset = match base {
            Data::Spilled { offset, len, .. } if offset - start < sizes.result => offset + len,
            _ => start,
        };
        spill(file, offset, kind, sizes.result, |out| {
            delta::apply(sizes, &source, &mut instructions, out).map_err(bad_delta)
        })
    }

    fn remember(&mut self, index: u32, kind: Kind, data: &Rc<Vec<u8>>) {
        if data.len() > CACHE_BYTES / 4 {
            return;
        }
        if self.cached_bytes + data.len() > CACHE_BYTES {
            self.cache.clear();
            self.cached_bytes = 0;
        }
        if self.cache.insert(index, (kind, Rc::clone(data))).is_none() {
            self.cached_bytes += data.len();
        }
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
            let mut context = Context::new();
            context.update(&pack);
            context
        });
        pack.extend_from_slice(&sum);
        pack
    }

    fn receive_bytes(bytes: &[u8]) -> Result<Pack, Error> {
        let file = tempfile();
        receive(
            bytes,
            file,
            &Deadline::after(None),
            &mut Progress::default(),
            &|e| Error::io("reading", &e),
        )
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
