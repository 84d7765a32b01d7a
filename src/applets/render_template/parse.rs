//! The template language of `render-template`: a streaming, one-pass expander of the POSIX shell
//! parameter-expansion forms that envsubst users write.
//!
//! `render` reads its input in fixed-size chunks and writes as it goes, so memory stays bounded
//! (one chunk plus at most one unfinished reference, capped at [`MAX_REFERENCE`]) whatever the input
//! size. A reference split across two chunks is carried over to the next read. Text between
//! references is found with `memchr` and copied in one piece into the output buffer, which is
//! written in pieces of at least [`CHUNK`] bytes. Substituted values are written, never scanned
//! again, so a value containing `$` arrives intact. Line and column are found only for errors.
//!
//! Forms, as in POSIX `sh` (XCU 2.6.2), where "null" means set but empty:
//!
//! | form              | VAR set, not null | VAR set, null | VAR unset          |
//! |-------------------|-------------------|---------------|--------------------|
//! | `$VAR`, `${VAR}`  | value             | empty         | error (strict)     |
//! | `${VAR:-word}`    | value             | word          | word               |
//! | `${VAR-word}`     | value             | empty         | word               |
//! | `${VAR:=word}`    | value             | word, assigned| word, assigned     |
//! | `${VAR=word}`     | value             | empty         | word, assigned     |
//! | `${VAR:?msg}`     | value             | error msg     | error msg          |
//! | `${VAR?msg}`      | value             | empty         | error msg          |
//! | `${VAR:+word}`    | word              | empty         | empty              |
//! | `${VAR+word}`     | word              | word          | empty              |
//!
//! `word` runs to the matching `}` and may hold references itself; it is expanded only when used.
//! `$$` is a literal `$`. Anything else after `$` (`$1`, `$ `, a `$` at the end) is copied as is.
//! `${` always starts a reference: not followed by a name (`${}`, `${1}`, `${#A}`, `${` at the end)
//! it is an error ("bad substitution", as bash says), unless `--only`/`--prefix` select names, as
//! it then names nothing selected and is copied. Braced names may contain dots, to address nested
//! `--values` keys (`${db.host}`).
//!
//! Errors (unset variable in strict mode, `:?`, syntax) do not stop the scan: every error of a
//! template is counted, the first [`MAX_ERRORS`] kept with their line and column, and the caller
//! decides not to keep the output.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};

/// How much is read at a time.
pub const CHUNK: usize = 64 * 1024;
/// The longest reference (from `$` to its `}`) accepted; longer is an error, which bounds memory.
pub const MAX_REFERENCE: usize = 64 * 1024;
/// Errors listed per template; past this they are only counted, which keeps memory fixed on a
/// huge template full of unset names.
pub const MAX_ERRORS: usize = 100;
/// How deeply defaults may nest (`${A:-${B:-${C}}}` is 3), which bounds the stack.
pub const MAX_NESTING: usize = 32;
/// The longest expansion of one default, assigned or alternative word; longer is an error.
/// Together with [`MAX_ASSIGNED`] this keeps a small template from building huge values out of
/// its own (`${B:=$A$A$A...}${C:=$B$B$B...}` grows geometrically): memory stays bounded by
/// these, not by what the template asks for.
pub const MAX_WORD: usize = 1024 * 1024;
/// The most bytes `${VAR:=word}` and `${VAR=word}` may assign in one template, in all.
pub const MAX_ASSIGNED: usize = 16 * 1024 * 1024;

/// Where something is in a template: 1-based line, and column counted in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };

    /// The position after `text`.
    fn advance(&mut self, text: &[u8]) {
        match memchr::memrchr(b'\n', text) {
            Some(last) => {
                self.line += memchr::memchr_iter(b'\n', text).count() as u64;
                self.column = 1 + characters(&text[last + 1..]);
            }
            None => self.column += characters(text),
        }
    }
}

/// UTF-8 characters in `text`: bytes that are not continuation bytes (invalid UTF-8 counts bytes).
fn characters(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| (b as i8) >= -0x40).count() as u64
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub position: Position,
    pub message: String,
}

/// The errors of one template: the first [`MAX_ERRORS`] in full, and how many there were in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    pub listed: Vec<TemplateError>,
    pub total: usize,
}

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Which names are substituted; others are copied as written (GNU envsubst's SHELL-FORMAT).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Substitute an unset variable with nothing instead of reporting it.
    pub allow_unset: bool,
    /// `--only`: these names.
    pub only: Vec<String>,
    /// `--prefix`: names starting with one of these.
    pub prefixes: Vec<String>,
}

impl Options {
    fn selects_all(&self) -> bool {
        self.only.is_empty() && self.prefixes.is_empty()
    }

    fn selects(&self, name: &str) -> bool {
        self.selects_all()
            || self.only.iter().any(|n| n == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// The hash of a name: eight bytes per multiply (a folded 64x64->128-bit product, as foldhash
/// and wyhash do), where FNV-1a took one multiply per byte. Names are short and come from the
/// pod's own environment and values files (no one to aim at collisions), and SipHash took a
/// sixth of the render time.
fn hash_name(name: &[u8]) -> u64 {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    let mut hash = fold_multiply(SEED ^ name.len() as u64, SEED.rotate_left(17));
    let mut words = name.chunks_exact(8);
    for word in words.by_ref() {
        hash = fold_multiply(hash ^ load(word), SEED);
    }
    fold_multiply(hash ^ pack(words.remainder()), SEED)
}

fn fold_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Eight bytes as a number: one load.
fn load(word: &[u8]) -> u64 {
    u64::from_le_bytes(word.try_into().unwrap_or_default())
}

/// Up to eight bytes as a number, without a `memcpy` call for the variable length.
fn pack(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0, |word, &byte| (word << 8) | u64::from(byte))
}

/// Whether two names are equal, compared eight bytes at a time: a slice comparison calls
/// `memcmp`, which musl implements as a byte loop.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a_words, mut b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    a_words
        .by_ref()
        .zip(b_words.by_ref())
        .all(|(a, b)| load(a) == load(b))
        && pack(a_words.remainder()) == pack(b_words.remainder())
}

/// The table is keyed by the hashes of the names, which are their own hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_name(bytes);
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A name and its value.
type Entry = (Box<str>, Vec<u8>);

/// The variables a template sees. `${VAR:=word}` assigns into it, as the shell does, so later
/// references (in the same or a later template) see the value.
#[derive(Clone, Debug, Default)]
pub struct Values {
    /// By the hash of the name, the names with that hash and their values: one, unless hashes
    /// collide. A lookup hashes the name once and compares it without `memcmp`.
    map: HashMap<u64, Vec<Entry>, BuildHasherDefault<Prehashed>>,
}

impl Values {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let entries = self.map.get(&hash_name(name.as_bytes()))?;
        let (_, value) = entries
            .iter()
            .find(|(known, _)| same_name(known.as_bytes(), name.as_bytes()))?;
        Some(value)
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = name.into();
        let entries = self.map.entry(hash_name(name.as_bytes())).or_default();
        match entries
            .iter_mut()
            .find(|(known, _)| same_name(known.as_bytes(), name.as_bytes()))
        {
            Some((_, old)) => *old = value.into(),
            None => entries.push((name.into_boxed_str(), value.into())),
        }
    }

    /// Adds a JSON object's members: strings as they are, numbers and booleans as JSON writes
    /// them, nested members as `a.b.c` (array items as `a.0`), and every object or array also
    /// whole, as compact JSON, under its own key. `null` leaves a key unset.
    pub fn merge_json(&mut self, value: &serde_json::Value) -> Result<(), String> {
        match value {
            serde_json::Value::Object(_) => {
                self.flatten(String::new(), value);
                Ok(())
            }
            _ => Err("the top level must be a JSON object ({\"name\": \"value\"})".into()),
        }
    }

    fn flatten(&mut self, key: String, value: &serde_json::Value) {
        let join = |child: &str| {
            if key.is_empty() {
                child.to_string()
            } else {
                format!("{key}.{child}")
            }
        };
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::String(text) => self.set(key, text.as_bytes()),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                self.set(key, value.to_string())
            }
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.flatten(join(&index.to_string()), item);
                }
                if !key.is_empty() {
                    self.set(key, value.to_string());
                }
            }
            serde_json::Value::Object(members) => {
                for (name, member) in members {
                    self.flatten(join(name), member);
                }
                if !key.is_empty() {
                    self.set(key, value.to_string());
                }
            }
        }
    }
}

/// Renders `input` into `output`. Returns the template errors found (none: the output is
/// complete and right); an `Err` is an I/O error of `input` or `output`.
pub fn render(
    mut input: impl Read,
    output: &mut impl Write,
    values: &mut Values,
    options: &Options,
) -> io::Result<Errors> {
    let mut renderer = Renderer {
        values,
        options,
        buffer: 0,
        errors: Errors::default(),
        offsets: Vec::new(),
        depth: 0,
        assigned: 0,
        closings: Closings::default(),
    };
    let mut output = Output::new(output);
    // Of the first byte of `pending`.
    let mut position = Position::START;
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK + MAX_REFERENCE);
    loop {
        let kept = pending.len();
        pending.resize(kept + CHUNK, 0);
        let read = loop {
            match input.read(&mut pending[kept..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        pending.truncate(kept + read);
        let end = read == 0;
        // What was learnt about the braces of the last buffer does not hold for this one.
        renderer.closings.clear();
        renderer.buffer = pending.as_ptr() as usize;
        let consumed = renderer.expand(&pending, end, &mut output)?;
        renderer.locate_errors(&pending, position);
        if end {
            output.finish()?;
            return Ok(renderer.errors);
        }
        position.advance(&pending[..consumed]);
        pending.drain(..consumed);
    }
}

/// Where the output is assembled: the many small pieces of a template (text between references,
/// values) are copied into one buffer, written out in pieces of at least [`CHUNK`] bytes. A piece
/// as large as that goes straight from where it is (the read buffer, a value).
struct Output<'w, W: Write> {
    bytes: Box<[u8]>,
    filled: usize,
    writer: &'w mut W,
}

impl<'w, W: Write> Output<'w, W> {
    fn new(writer: &'w mut W) -> Self {
        Output {
            bytes: vec![0; 2 * CHUNK].into_boxed_slice(),
            filled: 0,
            writer,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        let filled = std::mem::take(&mut self.filled);
        self.writer.write_all(&self.bytes[..filled])
    }

    fn finish(&mut self) -> io::Result<()> {
        self.drain()?;
        self.writer.flush()
    }
}

impl<W: Write> Write for Output<'_, W> {
    fn write(&mut self, piece: &[u8]) -> io::Result<usize> {
        self.write_all(piece)?;
        Ok(piece.len())
    }

    #[inline]
    fn write_all(&mut self, piece: &[u8]) -> io::Result<()> {
        if piece.len() >= CHUNK {
            self.drain()?;
            return self.writer.write_all(piece);
        }
        // Fits: fewer than CHUNK bytes are held between calls, and the buffer holds twice that.
        let end = self.filled + piece.len();
        copy(&mut self.bytes[self.filled..end], piece);
        self.filled = end;
        if end >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `from` into `to` (of the same length). The pieces of a template are mostly a few bytes
/// long, and musl's `memcpy` (a `rep movsq` after byte moves) costs more for those than the copy
/// itself: up to 32 bytes are moved as two overlapping fixed-size words, which compile to plain
/// loads and stores.
#[inline]
fn copy(to: &mut [u8], from: &[u8]) {
    let n = from.len();
    match n {
        0 => {}
        1..=3 => {
            to[0] = from[0];
            to[n / 2] = from[n / 2];
            to[n - 1] = from[n - 1];
        }
        4..=7 => {
            to[..4].copy_from_slice(&from[..4]);
            to[n - 4..].copy_from_slice(&from[n - 4..]);
        }
        8..=15 => {
            to[..8].copy_from_slice(&from[..8]);
            to[n - 8..].copy_from_slice(&from[n - 8..]);
        }
        16..=32 => {
            to[..16].copy_from_slice(&from[..16]);
            to[n - 16..].copy_from_slice(&from[n - 16..]);
        }
        _ => to.copy_from_slice(from),
    }
}

/// A complete in-memory template, for tests and fuzzing; returns the listed errors.
pub fn render_bytes(
    template: &[u8],
    values: &mut Values,
    options: &Options,
) -> (Vec<u8>, Vec<TemplateError>) {
    let mut output = Vec::new();
    let errors = render(template, &mut output, values, options)
        .unwrap_or_else(|e| unreachable!("in-memory I/O failed: {e}"));
    (output, errors.listed)
}

/// What the scan of one reference found.
enum Step {
    /// The reference may continue past the end of the buffer: read more first.
    NeedMore,
    /// This many bytes were handled (written, or reported as an error).
    Consumed(usize),
}

/// The operator of `${VAR<op>word}`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operator {
    Default,
    Assign,
    Error,
    Alternative,
}

struct Renderer<'a> {
    values: &'a mut Values,
    options: &'a Options,
    /// Address of the buffer being expanded: every text and word is a part of it, so where a
    /// part starts is its offset in the buffer.
    buffer: usize,
    errors: Errors,
    /// Offsets in the buffer of the errors listed while expanding it, the last ones of
    /// `errors.listed`, whose positions are found when the buffer is done. Positions are needed
    /// only for errors, so they are not tracked while copying (that was a sixth of the time).
    offsets: Vec<usize>,
    depth: usize,
    /// Bytes assigned by `:=` and `=` so far, against [`MAX_ASSIGNED`].
    assigned: usize,
    closings: Closings,
}

/// The expansion of a word, which keeps at most [`MAX_WORD`] bytes and notes if there was more.
#[derive(Default)]
struct Word {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Write for Word {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.overflowed || self.bytes.len() + buf.len() > MAX_WORD {
            self.overflowed = true;
        } else {
            self.bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What each byte may be in a name, as bits: [`START`], [`PLAIN`] (in `$NAME`) and [`BRACED`] (in
/// `${NAME}`, which also allows '.'). One load per byte where the range tests took eight
/// instructions, in the loop that ran most.
const NAME_BYTES: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphabetic() || b == b'_' {
            table[byte] = START | PLAIN | BRACED;
        } else if b.is_ascii_digit() {
            table[byte] = PLAIN | BRACED;
        } else if b == b'.' {
            table[byte] = BRACED;
        }
        byte += 1;
    }
    table
};
const START: u8 = 1;
const PLAIN: u8 = 2;
const BRACED: u8 = 4;

fn is_name_start(byte: u8) -> bool {
    NAME_BYTES[usize::from(byte)] & START != 0
}

impl Renderer<'_> {
    /// Expands `text` into `output`, returning how much of it was handled; the rest (an
    /// unfinished reference) is to be offered again with more input. With `end`, all is handled.
    fn expand(&mut self, text: &[u8], end: bool, output: &mut impl Write) -> io::Result<usize> {
        let mut done = 0;
        loop {
            let Some(offset) = memchr::memchr(b'$', &text[done..]) else {
                output.write_all(&text[done..])?;
                return Ok(text.len());
            };
            let dollar = done + offset;
            output.write_all(&text[done..dollar])?;
            match self.reference(&text[dollar..], end, output)? {
                Step::NeedMore => return Ok(dollar),
                Step::Consumed(length) => done = dollar + length,
            }
        }
    }

    /// Lists an error found at the start of `at`, a part of the buffer.
    fn error(&mut self, at: &[u8], message: String) {
        self.errors.total += 1;
        if self.errors.listed.len() < MAX_ERRORS {
            self.offsets.push(at.as_ptr() as usize - self.buffer);
            self.errors.listed.push(TemplateError {
                position: Position::START,
                message,
            });
        }
    }

    /// Gives the errors listed while expanding `text`, which starts at `start`, their positions.
    fn locate_errors(&mut self, text: &[u8], start: Position) {
        let first = self.errors.listed.len() - self.offsets.len();
        let mut order: Vec<usize> = (0..self.offsets.len()).collect();
        order.sort_by_key(|&index| self.offsets[index]);
        let (mut position, mut at) = (start, 0);
        for index in order {
            let offset = self.offsets[index];
            position.advance(&text[at..offset]);
            at = offset;
            self.errors.listed[first + index].position = position;
        }
        self.offsets.clear();
    }

    /// Handles the reference at the start of `text` (which starts with `$`).
    fn reference(&mut self, text: &[u8], end: bool, output: &mut impl Write) -> io::Result<Step> {
        // Waiting for more input is allowed while the reference is within its size bound; past it,
        // the text so far is judged as if the input ended there.
        let can_wait = !end && text.len() <= MAX_REFERENCE;
        let Some(&next) = text.get(1) else {
            if !end {
                return Ok(Step::NeedMore);
            }
            output.write_all(b"$")?;
            return Ok(Step::Consumed(1));
        };
        if next == b'$' {
            output.write_all(b"$")?;
            return Ok(Step::Consumed(2));
        }
        if is_name_start(next) {
            let length = 1 + name_length(&text[1..], false);
            if length == text.len() && can_wait {
                return Ok(Step::NeedMore);
            }
            let name = ascii(&text[1..length]);
            if !self.options.selects(name) {
                output.write_all(&text[..length])?;
            } else {
                self.plain(name, text, output)?;
            }
            return Ok(Step::Consumed(length));
        }
        if next != b'{' {
            output.write_all(b"$")?;
            return Ok(Step::Consumed(1));
        }

        // `${` starts a reference: a name must follow (bash: "bad substitution").
        let first = match text.get(2) {
            Some(&first) => Some(first),
            None if !end => return Ok(Step::NeedMore),
            None => None,
        };
        if !first.is_some_and(is_name_start) {
            self.bad_substitution(text, first, output)?;
            return Ok(Step::Consumed(2));
        }
        let name_end = 2 + name_length(&text[2..], true);
        let name = ascii(&text[2..name_end]);
        let selected = self.options.selects(name);
        let (operator, colon, word_start) = match text.get(name_end..) {
            Some([b'}', ..]) => {
                let length = name_end + 1;
                if selected {
                    self.plain(name, text, output)?;
                } else {
                    output.write_all(&text[..length])?;
                }
                return Ok(Step::Consumed(length));
            }
            Some([b':', op, ..]) if operator(*op).is_some() => (
                operator(*op).unwrap_or(Operator::Default),
                true,
                name_end + 2,
            ),
            Some([op, ..]) if operator(*op).is_some() => (
                operator(*op).unwrap_or(Operator::Default),
                false,
                name_end + 1,
            ),
            Some([] | [b':']) if can_wait => return Ok(Step::NeedMore),
            rest => {
                if !selected {
                    output.write_all(&text[..name_end])?;
                    return Ok(Step::Consumed(name_end));
                }
                let found = match rest {
                    Some([byte, ..]) => found_text(*byte),
                    _ => "the end of the template".into(),
                };
                let message = format!(
                    "in '${{{name}': expected '}}' or one of :- - := = :? ? :+ + after the \
                     name, found {found}"
                );
                self.error(text, message);
                return Ok(Step::Consumed(name_end));
            }
        };
        let Some(word_end) = self.closing_brace(text, word_start) else {
            if can_wait {
                return Ok(Step::NeedMore);
            }
            if !selected {
                output.write_all(&text[..name_end])?;
                return Ok(Step::Consumed(name_end));
            }
            let message = if end {
                format!("'${{{name}' is not closed: missing '}}'")
            } else {
                format!(
                    "'${{{name}' is not closed within {} KiB: missing '}}'",
                    MAX_REFERENCE / 1024
                )
            };
            self.error(text, message);
            return Ok(Step::Consumed(name_end));
        };
        let length = word_end + 1;
        if !selected {
            output.write_all(&text[..length])?;
            return Ok(Step::Consumed(length));
        }
        let word = &text[word_start..word_end];
        let value = self.values.get(name).map(<[u8]>::to_vec);
        let use_word = match (&value, colon) {
            (None, _) => true,
            (Some(value), true) => value.is_empty(),
            (Some(_), false) => false,
        };
        match operator {
            Operator::Default | Operator::Assign if use_word => {
                let expanded = self.expand_word(word)?;
                if operator == Operator::Assign {
                    if self.assigned + expanded.len() > MAX_ASSIGNED {
                        let message = format!(
                            "{name}: the template assigns more than {} MiB in all",
                            MAX_ASSIGNED >> 20
                        );
                        self.error(text, message);
                    } else {
                        self.assigned += expanded.len();
                        self.values.set(name, expanded.as_slice());
                    }
                }
                output.write_all(&expanded)?;
            }
            Operator::Error if use_word => {
                let message = self.expand_word(word)?;
                let message = if message.is_empty() {
                    if value.is_some() {
                        "is empty".to_string()
                    } else {
                        "is not set".to_string()
                    }
                } else {
                    String::from_utf8_lossy(&message).into_owned()
                };
                self.error(text, format!("{name}: {message}"));
            }
            Operator::Alternative if use_word => {}
            Operator::Alternative => {
                let expanded = self.expand_word(word)?;
                output.write_all(&expanded)?;
            }
            Operator::Default | Operator::Assign | Operator::Error => {
                output.write_all(value.as_deref().unwrap_or_default())?;
            }
        }
        Ok(Step::Consumed(length))
    }

    /// `${` not followed by a name. When every name is substituted it can only be a mistake;
    /// with `--only` or `--prefix` it is not a selected name, so it is copied like the others.
    fn bad_substitution(
        &mut self,
        text: &[u8],
        found: Option<u8>,
        output: &mut impl Write,
    ) -> io::Result<()> {
        if !self.options.selects_all() {
            return output.write_all(b"${");
        }
        let found = found.map_or_else(|| "the end of the template".into(), found_text);
        let message = format!(
            "bad substitution: '${{' must be followed by a name, found {found} \
             (write '$${{' for a literal '${{')"
        );
        self.error(text, message);
        Ok(())
    }

    /// The offset in `text` (which starts with `${`) of the `}` that closes the word starting at
    /// `word_start`. A reference left unclosed makes the scan learn where every `${` after it
    /// closes, so the references it contains are not scanned to the end of the buffer again.
    fn closing_brace(&mut self, text: &[u8], word_start: usize) -> Option<usize> {
        if self.depth == 0 {
            if let Some(known) = self.closings.get(text) {
                return known;
            }
        }
        let found = matching_brace(&text[word_start..]).map(|at| word_start + at);
        if found.is_none() && self.depth == 0 {
            self.closings.learn(text);
        }
        found
    }

    /// `$NAME` or `${NAME}` at the start of `text`: the value, or in strict mode an error when
    /// unset.
    fn plain(&mut self, name: &str, text: &[u8], output: &mut impl Write) -> io::Result<()> {
        match self.values.get(name) {
            Some(value) => output.write_all(value),
            None => {
                if !self.options.allow_unset {
                    self.error(
                        text,
                        format!(
                            "{name} is not set (set it, give a default as ${{{name}:-default}}, \
                             or pass --allow-unset)"
                        ),
                    );
                }
                Ok(())
            }
        }
    }

    /// Expands a default or alternative word, which is complete (its `}` was found).
    fn expand_word(&mut self, word: &[u8]) -> io::Result<Vec<u8>> {
        if self.depth >= MAX_NESTING {
            self.error(
                word,
                format!("references nest deeper than {MAX_NESTING} levels"),
            );
            return Ok(Vec::new());
        }
        let mut expanded = Word::default();
        self.depth += 1;
        let result = self.expand(word, true, &mut expanded);
        self.depth -= 1;
        result?;
        if expanded.overflowed {
            let message = format!("this word expands to more than {} MiB", MAX_WORD >> 20);
            self.error(word, message);
            return Ok(Vec::new());
        }
        Ok(expanded.bytes)
    }
}

fn operator(byte: u8) -> Option<Operator> {
    match byte {
        b'-' => Some(Operator::Default),
        b'=' => Some(Operator::Assign),
        b'?' => Some(Operator::Error),
        b'+' => Some(Operator::Alternative),
        _ => None,
    }
}

fn name_length(text: &[u8], braced: bool) -> usize {
    let allowed = if braced { BRACED } else { PLAIN };
    text.iter()
        .position(|&b| NAME_BYTES[usize::from(b)] & allowed == 0)
        .unwrap_or(text.len())
}

/// A name as text. Callers pass only bytes that `name_length` accepts (ASCII), so the check
/// cannot fail; it stays because unchecked conversion would be the crate's only `unsafe` outside
/// the syscall and resolver modules.
fn ascii(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

fn found_text(byte: u8) -> String {
    match byte {
        b'\n' => "a line break".into(),
        b' ' => "a space".into(),
        b if b.is_ascii_graphic() => format!("'{}'", b as char),
        b => format!("byte 0x{b:02x}"),
    }
}

/// The offset of the `}` that closes a word, skipping `$$` and nested `${...}`; `None` when the
/// text ends first.
fn matching_brace(word: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    for (at, brace) in Braces::new(word) {
        match brace {
            Brace::Open => depth += 1,
            Brace::Close if depth == 0 => return Some(at),
            Brace::Close => depth -= 1,
        }
    }
    None
}

enum Brace {
    /// `${`
    Open,
    /// `}`
    Close,
}

/// The `${` and `}` of a text with their offsets, in order; `$$` is a literal `$`, so `$${`
/// opens nothing. (A `$` at the very end opens nothing yet: more input may follow.)
struct Braces<'a> {
    text: &'a [u8],
    at: usize,
}

impl Braces<'_> {
    fn new(text: &[u8]) -> Braces<'_> {
        Braces { text, at: 0 }
    }
}

impl Iterator for Braces<'_> {
    type Item = (usize, Brace);

    fn next(&mut self) -> Option<(usize, Brace)> {
        loop {
            let found = self.at + memchr::memchr2(b'$', b'}', &self.text[self.at..])?;
            if self.text[found] == b'}' {
                self.at = found + 1;
                return Some((found, Brace::Close));
            }
            match self.text.get(found + 1) {
                Some(b'{') => {
                    self.at = found + 2;
                    return Some((found, Brace::Open));
                }
                Some(b'$') => self.at = found + 2,
                _ => self.at = found + 1,
            }
        }
    }
}

/// Where each `${` of the current buffer closes, learnt in one pass when a reference is found
/// unclosed. Without it, each of a run of unclosed `${U:-` rescanned the rest of the buffer (up
/// to [`CHUNK`] + [`MAX_REFERENCE`] bytes): quadratic, 11 s for 1 MiB (issue 9 #18).
///
/// Whether the `}` closing a word exists depends only on the bytes from the word to the end of
/// the text, so an answer holds for any reference of the same buffer with the same end; the
/// buffer changes with every read, and `clear` is called then.
#[derive(Default)]
struct Closings {
    /// Address of the learnt text, and one past its end.
    start: usize,
    end: usize,
    /// (offset of a `${`, offset of its `}` if any), in offset order.
    entries: Vec<(u32, Option<u32>)>,
    /// Indices in `entries` of the `${` still open while learning.
    open: Vec<usize>,
}

impl Closings {
    fn clear(&mut self) {
        self.end = 0;
        self.entries.clear();
    }

    /// For `text` starting at a `${` of the learnt text: `Some(offset of its '}' in text)`, or
    /// `Some(None)` when it is not closed; `None` when not known.
    fn get(&self, text: &[u8]) -> Option<Option<usize>> {
        let address = text.as_ptr() as usize;
        if address + text.len() != self.end || address < self.start {
            return None;
        }
        let offset = u32::try_from(address - self.start).ok()?;
        let index = self
            .entries
            .binary_search_by_key(&offset, |&(open, _)| open)
            .ok()?;
        Some(self.entries[index].1.map(|close| (close - offset) as usize))
    }

    /// Learns where every `${` of `text` closes.
    fn learn(&mut self, text: &[u8]) {
        self.clear();
        // Offsets fit, as the buffer holds at most CHUNK + MAX_REFERENCE bytes; if not, nothing
        // is learnt and every reference is scanned.
        if u32::try_from(text.len()).is_err() {
            return;
        }
        self.start = text.as_ptr() as usize;
        self.end = self.start + text.len();
        self.open.clear();
        for (at, brace) in Braces::new(text) {
            let at = at as u32;
            match brace {
                Brace::Open => {
                    self.open.push(self.entries.len());
                    self.entries.push((at, None));
                }
                Brace::Close => {
                    if let Some(index) = self.open.pop() {
                        self.entries[index].1 = Some(at);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut values = Values::default();
        values.set("NAME", "world");
        values.set("EMPTY", "");
        values.set("PASSWORD", "pa$$w0rd${X}");
        values.set("_under_1", "u");
        values
    }

    fn ok(template: &str) -> String {
        let (output, errors) =
            render_bytes(template.as_bytes(), &mut values(), &Options::default());
        assert_eq!(errors, [], "{template}");
        String::from_utf8(output).unwrap()
    }

    fn errors(template: &str) -> Vec<(u64, u64, String)> {
        let (_, errors) = render_bytes(template.as_bytes(), &mut values(), &Options::default());
        errors
            .into_iter()
            .map(|e| (e.position.line, e.position.column, e.message))
            .collect()
    }

    #[test]
    fn posix_expansion_table() {
        for (template, expected) in [
            ("$NAME ${NAME}", "world world"),
            ("${NAME:-d} ${EMPTY:-d} ${UNSET:-d}", "world d d"),
            ("${NAME-d} ${EMPTY-d} ${UNSET-d}", "world  d"),
            ("${NAME:+a} ${EMPTY:+a} ${UNSET:+a}", "a  "),
            ("${NAME+a} ${EMPTY+a} ${UNSET+a}", "a a "),
            (
                "${NAME:=d} ${EMPTY:=d}/$EMPTY ${UNSET:=d}/$UNSET",
                "world d/d d/d",
            ),
            ("${EMPTY=d}/$EMPTY ${UNSET=d}/$UNSET", "/ d/d"),
            ("${NAME:?m} ${NAME?m} ${EMPTY?m}", "world world "),
            ("$_under_1", "u"),
        ] {
            assert_eq!(ok(template), expected, "{template}");
        }
    }

    #[test]
    fn defaults_nest_and_values_are_not_rescanned() {
        assert_eq!(ok("${UNSET:-${NAME}!}"), "world!");
        assert_eq!(ok("${UNSET:-a ${U2:-b ${NAME}} c}"), "a b world c");
        assert_eq!(ok("${UNSET:-{}"), "{");
        assert_eq!(ok("${UNSET:-$$}"), "$");
        assert_eq!(ok("$PASSWORD"), "pa$$w0rd${X}");
        assert_eq!(ok("${UNSET:-x}}"), "x}");
    }

    #[test]
    fn what_is_not_a_reference_is_copied() {
        for (template, expected) in [
            ("$1 $ $-x $} $", "$1 $ $-x $} $"),
            ("$${} $${1", "${} ${1"),
            ("$$NAME", "$NAME"),
            ("cost: 5$\n", "cost: 5$\n"),
            ("$NAME.txt", "world.txt"),
            ("a$NAME-b", "aworld-b"),
            ("héllo ${NAME}", "héllo world"),
        ] {
            assert_eq!(ok(template), expected, "{template}");
        }
    }

    #[test]
    fn errors_name_the_variable_and_position() {
        let found = errors("line one\n  é $MISSING and ${ALSO}\n${X:?must be set} ${EMPTY:?}");
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2, 5));
        assert!(found[0].2.starts_with("MISSING is not set"));
        assert_eq!((found[1].0, found[1].1), (2, 18));
        assert_eq!(found[2], (3, 1, "X: must be set".into()));
        assert_eq!(found[3], (3, 19, "EMPTY: is empty".into()));
    }

    #[test]
    fn syntax_errors_are_reported() {
        let found = errors("${NAME x}\n${NAME:-open");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (1, 1));
        assert!(found[0].2.contains("found a space"), "{}", found[0].2);
        assert_eq!((found[1].0, found[1].1), (2, 1));
        assert!(found[1].2.contains("not closed"), "{}", found[1].2);
    }

    #[test]
    fn unset_words_in_unused_defaults_are_no_error() {
        assert_eq!(ok("${NAME:-$UNSET}"), "world");
        assert_eq!(errors("${UNSET:-$UNSET2}").len(), 1);
    }

    #[test]
    fn only_and_prefix_select_names() {
        let options = Options {
            only: vec!["NAME".into()],
            prefixes: vec!["APP_".into()],
            ..Options::default()
        };
        let mut values = values();
        values.set("APP_PORT", "80");
        let (output, errors) = render_bytes(
            b"$NAME $host ${APP_PORT} ${remote_addr:-x} ${weird stuff}",
            &mut values,
            &options,
        );
        assert_eq!(errors, []);
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "world $host 80 ${remote_addr:-x} ${weird stuff}"
        );
    }

    #[test]
    fn allow_unset_substitutes_nothing() {
        let options = Options {
            allow_unset: true,
            ..Options::default()
        };
        let (output, errors) = render_bytes(b"[$UNSET]", &mut values(), &options);
        assert_eq!((output.as_slice(), errors.len()), (&b"[]"[..], 0));
    }

    /// Reads at most `.1` bytes at a time: with 1, every reference is split.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.1.min(buf.len()).min(self.0.len());
            let (piece, rest) = self.0.split_at(size);
            buf[..size].copy_from_slice(piece);
            self.0 = rest;
            Ok(size)
        }
    }

    #[test]
    fn references_split_across_chunks_are_found() {
        let template = "a $NAME ${UNSET:-${NAME}x} $$ ${NAME:+y} $";
        let mut output = Vec::new();
        let errors = render(
            Trickle(template.as_bytes(), 1),
            &mut output,
            &mut values(),
            &Options::default(),
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(String::from_utf8(output).unwrap(), ok(template));
    }

    #[test]
    fn references_longer_than_the_bound_are_errors_not_memory() {
        let long = format!("a\n${{UNSET:-{}}} $NAME", "x".repeat(MAX_REFERENCE + CHUNK));
        let (output, found) = render_bytes(long.as_bytes(), &mut values(), &Options::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].position, Position { line: 2, column: 1 });
        assert!(found[0].message.contains("not closed within 64 KiB"));
        // The scan goes on after the error.
        assert!(output.ends_with(b"} world"));
        // Within the bound, a long default is fine.
        let fits = format!("${{UNSET:-{}}}", "y".repeat(MAX_REFERENCE - 20));
        assert_eq!(ok(&fits).len(), MAX_REFERENCE - 20);
    }

    #[test]
    fn self_amplifying_assignments_are_bounded_found_by_fuzzing() {
        // Caught by the output bound of fuzz/fuzz_targets/render_template.rs. Each level
        // multiplies the last by 400: unchecked, 2 KiB of template built 640 MB of values in
        // memory. Now C (1.6 MB) is refused, and D, made of empty Cs, is empty.
        let template = format!(
            "${{A:=xxxxxxxxxx}}${{B:={}}}${{C:={}}}${{D:={}}}",
            "$A".repeat(400),
            "$B".repeat(400),
            "$C".repeat(400)
        );
        let mut values = values();
        let (output, found) = render_bytes(template.as_bytes(), &mut values, &Options::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let c_word = 1 + "${A:=xxxxxxxxxx}".len() + 806 + "${C:=".len();
        assert_eq!(found[0].position.column, c_word as u64);
        assert!(found[0].message.contains("more than 1 MiB"), "{found:?}");
        assert_eq!(output.len(), 10 + 4000);
        assert_eq!(values.get("D"), Some(&b""[..]));

        // Many names, each within the bound, still meet the total.
        let mut values = Values::default();
        values.set("BIG", vec![b'x'; MAX_WORD]);
        let many: String = (0..20).map(|n| format!("${{N{n}:=$BIG}}")).collect();
        let (_, found) = render_bytes(many.as_bytes(), &mut values, &Options::default());
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0]
            .message
            .starts_with("N16: the template assigns more than 16 MiB"));
        assert_eq!(values.get("N16"), None);
    }

    /// Issue 9 #22: the count was capped at 101 with the listing; it is the true total.
    #[test]
    fn errors_listed_are_capped_but_counted_in_full() {
        let mut output = Vec::new();
        let template = "$UNSET ".repeat(1000);
        let found = render(
            template.as_bytes(),
            &mut output,
            &mut values(),
            &Options::default(),
        )
        .unwrap();
        assert_eq!((found.listed.len(), found.total), (MAX_ERRORS, 1000));
        assert_eq!(found.listed[MAX_ERRORS - 1].position.column, 694);
    }

    /// Issue 9 #18: `${` at the end, `${}`, `${1}`, `${#A}` were copied silently while `${A%x}`
    /// was an error; each is a "bad substitution" at its position, in words too.
    #[test]
    fn braces_without_a_name_are_bad_substitutions() {
        let found = errors("${}\n ${1} ${#NAME} ${ NAME} ${UNSET:-${-}}\n${");
        let at: Vec<_> = found.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(at, [(1, 1), (2, 2), (2, 7), (2, 16), (2, 34), (3, 1)]);
        assert!(found.iter().all(|e| e.2.starts_with("bad substitution")));
        assert!(found[0].2.contains("found '}'"), "{}", found[0].2);
        assert!(found[5].2.contains("the end of the template"));
        // Not used, so not expanded: no error, as for unset names.
        assert_eq!(ok("${NAME:-${}}"), "world");
        let only = Options {
            only: vec!["NAME".into()],
            ..Options::default()
        };
        let (output, found) = render_bytes(b"${} ${1} ${NAME} ${", &mut values(), &only);
        assert_eq!(
            (output.as_slice(), found),
            (&b"${} ${1} world ${"[..], vec![])
        );
    }

    /// Issue 9 #18: every unclosed reference rescanned the rest of the buffer (11 s for 1 MiB).
    #[test]
    fn unclosed_references_are_scanned_in_linear_time() {
        let template = "${U:-".repeat((1 << 20) / 5);
        let started = std::time::Instant::now();
        let mut output = Vec::new();
        let found = render(
            template.as_bytes(),
            &mut output,
            &mut values(),
            &Options::default(),
        )
        .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(found.total, (1 << 20) / 5);
        assert!(found.listed[0].message.contains("not closed within 64 KiB"));
        // The same errors and output as when every reference is scanned on its own.
        let mut trickled = Vec::new();
        let small = "${U:-".repeat(200) + "${NAME:-${U:-x} ${U:- $NAME ${X}}";
        let found = render(
            Trickle(small.as_bytes(), 1),
            &mut trickled,
            &mut values(),
            &Options::default(),
        )
        .unwrap();
        let (whole, listed) = render_bytes(small.as_bytes(), &mut values(), &Options::default());
        assert_eq!((trickled, found.listed), (whole, listed));
    }

    /// The position of byte `offset` of `text`, counted the slow, obvious way.
    fn position_at(text: &str, offset: usize) -> (u64, u64) {
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line as u64, column as u64)
    }

    /// Issue 15 #5: positions are no longer tracked while copying, but found for the errors of
    /// each buffer when it is done; they hold past the first buffer, after multibyte text, in
    /// words, in any order of listing, and for any split of the reads.
    #[test]
    fn error_positions_are_found_across_buffers() {
        let line = "héllo wörld $$ ${NAME:-x} $NAME\n";
        let mut template = line.repeat(2 * CHUNK / line.len());
        template.push_str("ü ${X:?${UNSET}} $MISSING\n");
        template.push_str(&line.repeat(CHUNK / line.len()));
        template.push_str("  ${NAME x}");
        let at = |pattern: &str| position_at(&template, template.find(pattern).unwrap());
        // ':?' is listed after the error of its word, which lies after it.
        let expected = [at("${UNSET"), at("${X"), at("$MISSING"), at("${NAME x")];
        let found: Vec<_> = errors(&template).iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(found, expected);
        for size in [997, CHUNK - 1] {
            let mut output = Vec::new();
            let found = render(
                Trickle(template.as_bytes(), size),
                &mut output,
                &mut values(),
                &Options::default(),
            )
            .unwrap();
            let found: Vec<_> = found
                .listed
                .iter()
                .map(|e| (e.position.line, e.position.column))
                .collect();
            assert_eq!(found, expected, "reads of {size} bytes");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${A:-".repeat(100) + &"}".repeat(100);
        let found = errors(&deep);
        assert!(
            found.iter().any(|e| e.2.contains("nest deeper")),
            "{found:?}"
        );
    }

    /// Issue 15 #5: names are hashed and compared eight bytes at a time; names that differ in
    /// any one byte, or only in length, are still told apart, and a set replaces.
    #[test]
    fn names_differing_in_one_byte_are_distinct() {
        let mut values = Values::default();
        let base = "ABCDEFGHIJKLMNOPQRSTU";
        for length in 0..=base.len() {
            let name = &base[..length];
            values.set(name, name);
            for at in 0..length {
                let mut other = name.as_bytes().to_vec();
                other[at] = b'x';
                let other = String::from_utf8(other).unwrap();
                values.set(other.clone(), other.clone());
                assert_eq!(values.get(&other), Some(other.as_bytes()));
            }
        }
        for length in 0..=base.len() {
            assert_eq!(
                values.get(&base[..length]),
                Some(&base.as_bytes()[..length])
            );
        }
        values.set("ABC", "new");
        assert_eq!(values.get("ABC"), Some(&b"new"[..]));
        assert_eq!(values.get("ABy"), None);
    }

    #[test]
    fn json_values_flatten_to_dotted_names() {
        let mut values = Values::default();
        let json: serde_json::Value = serde_json::from_str(
            r#"{"db": {"host": "pg", "port": 5432, "tls": true, "opts": null},
                "hosts": ["a", "b"]}"#,
        )
        .unwrap();
        values.merge_json(&json).unwrap();
        let (output, errors) = render_bytes(
            b"${db.host}:${db.port} ${db.tls} ${hosts.1} ${hosts} ${db.opts-none} $db.host",
            &mut values,
            &Options {
                allow_unset: true,
                ..Options::default()
            },
        );
        assert_eq!(errors, []);
        assert_eq!(
            String::from_utf8(output).unwrap(),
            // `$db` is the whole object: the simple form stops at the dot.
            "pg:5432 true b [\"a\",\"b\"] none \
             {\"host\":\"pg\",\"opts\":null,\"port\":5432,\"tls\":true}.host"
        );
        assert!(values.merge_json(&serde_json::json!([1])).is_err());
    }
}
