//! The template language of `render-template`: a streaming, one-pass expander of the POSIX shell
//! parameter-expansion forms that envsubst users write.
//!
//! `render` reads its input in fixed-size chunks and writes as it goes, so memory stays bounded
//! (one chunk plus at most one unfinished reference, capped at [`MAX_REFERENCE`]) whatever the input
//! size. A reference split across two chunks is carried over to the next read. Text between
//! references is found with `memchr` and copied in one write. Substituted values are written, never
//! scanned again, so a value containing `$` arrives intact.
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

/// FNV-1a for the variable table: names are short and come from the pod's own environment and
/// values files (no one to aim at collisions), and SipHash took a sixth of the render time.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// The variables a template sees. `${VAR:=word}` assigns into it, as the shell does, so later
/// references (in the same or a later template) see the value.
#[derive(Clone, Debug, Default)]
pub struct Values {
    map: HashMap<String, Vec<u8>, BuildHasherDefault<Fnv>>,
}

impl Values {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.map.get(name).map(Vec::as_slice)
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.map.insert(name.into(), value.into());
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
        position: Position::START,
        errors: Errors::default(),
        depth: 0,
        assigned: 0,
        closings: Closings::default(),
    };
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
        let consumed = renderer.expand(&pending, end, output)?;
        if end {
            return Ok(renderer.errors);
        }
        pending.drain(..consumed);
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
    /// Of the next byte to handle.
    position: Position,
    errors: Errors,
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

fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_name_byte(byte: u8, braced: bool) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || (braced && byte == b'.')
}

impl Renderer<'_> {
    /// Expands `text` into `output`, returning how much of it was handled; the rest (an
    /// unfinished reference) is to be offered again with more input. With `end`, all is handled.
    fn expand(&mut self, text: &[u8], end: bool, output: &mut impl Write) -> io::Result<usize> {
        let mut done = 0;
        loop {
            let Some(offset) = memchr::memchr(b'$', &text[done..]) else {
                self.copy(&text[done..], output)?;
                return Ok(text.len());
            };
            let dollar = done + offset;
            self.copy(&text[done..dollar], output)?;
            match self.reference(&text[dollar..], end, output)? {
                Step::NeedMore => return Ok(dollar),
                Step::Consumed(length) => done = dollar + length,
            }
        }
    }

    /// Writes text as is and moves the position over it.
    fn copy(&mut self, text: &[u8], output: &mut impl Write) -> io::Result<()> {
        self.position.advance(text);
        output.write_all(text)
    }

    fn error(&mut self, position: Position, message: String) {
        self.errors.total += 1;
        if self.errors.listed.len() < MAX_ERRORS {
            self.errors.listed.push(TemplateError { position, message });
        }
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
            self.copy(b"$", output)?;
            return Ok(Step::Consumed(1));
        };
        if next == b'$' {
            self.position.advance(b"$$");
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
                self.copy(&text[..length], output)?;
            } else {
                let start = self.position;
                self.position.advance(&text[..length]);
                self.plain(name, start, output)?;
            }
            return Ok(Step::Consumed(length));
        }
        if next != b'{' {
            self.copy(b"$", output)?;
            return Ok(Step::Consumed(1));
        }

        // `${` starts a reference: a name must follow (bash: "bad substitution").
        let first = match text.get(2) {
            Some(&first) => Some(first),
            None if !end => return Ok(Step::NeedMore),
            None => None,
        };
        if !first.is_some_and(is_name_start) {
            self.bad_substitution(first, output)?;
            return Ok(Step::Consumed(2));
        }
        let name_end = 2 + name_length(&text[2..], true);
        let name = ascii(&text[2..name_end]);
        let start = self.position;
        let selected = self.options.selects(name);
        let (operator, colon, word_start) = match text.get(name_end..) {
            Some([b'}', ..]) => {
                let length = name_end + 1;
                if selected {
                    self.position.advance(&text[..length]);
                    self.plain(name, start, output)?;
                } else {
                    self.copy(&text[..length], output)?;
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
                    self.copy(&text[..name_end], output)?;
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
                self.error(start, message);
                self.position.advance(&text[..name_end]);
                return Ok(Step::Consumed(name_end));
            }
        };
        let Some(word_end) = self.closing_brace(text, word_start) else {
            if can_wait {
                return Ok(Step::NeedMore);
            }
            if !selected {
                self.copy(&text[..name_end], output)?;
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
            self.error(start, message);
            self.position.advance(&text[..name_end]);
            return Ok(Step::Consumed(name_end));
        };
        let length = word_end + 1;
        if !selected {
            self.copy(&text[..length], output)?;
            return Ok(Step::Consumed(length));
        }
        let word = &text[word_start..word_end];
        let mut word_position = start;
        word_position.advance(&text[..word_start]);
        let value = self.values.get(name).map(<[u8]>::to_vec);
        let use_word = match (&value, colon) {
            (None, _) => true,
            (Some(value), true) => value.is_empty(),
            (Some(_), false) => false,
        };
        match operator {
            Operator::Default | Operator::Assign if use_word => {
                let expanded = self.expand_word(word, word_position)?;
                if operator == Operator::Assign {
                    if self.assigned + expanded.len() > MAX_ASSIGNED {
                        let message = format!(
                            "{name}: the template assigns more than {} MiB in all",
                            MAX_ASSIGNED >> 20
                        );
                        self.error(start, message);
                    } else {
                        self.assigned += expanded.len();
                        self.values.set(name, expanded.as_slice());
                    }
                }
                output.write_all(&expanded)?;
            }
            Operator::Error if use_word => {
                let message = self.expand_word(word, word_position)?;
                let message = if message.is_empty() {
                    if value.is_some() {
                        "is empty".to_string()
                    } else {
                        "is not set".to_string()
                    }
                } else {
                    String::from_utf8_lossy(&message).into_owned()
                };
                self.error(start, format!("{name}: {message}"));
            }
            Operator::Alternative if use_word => {}
            Operator::Alternative => {
                let expanded = self.expand_word(word, word_position)?;
                output.write_all(&expanded)?;
            }
            Operator::Default | Operator::Assign | Operator::Error => {
                output.write_all(value.as_deref().unwrap_or_default())?;
            }
        }
        self.position = start;
        self.position.advance(&text[..length]);
        Ok(Step::Consumed(length))
    }

    /// `${` not followed by a name. When every name is substituted it can only be a mistake;
    /// with `--only` or `--prefix` it is not a selected name, so it is copied like the others.
    fn bad_substitution(&mut self, found: Option<u8>, output: &mut impl Write) -> io::Result<()> {
        if !self.options.selects_all() {
            return self.copy(b"${", output);
        }
        let found = found.map_or_else(|| "the end of the template".into(), found_text);
        let message = format!(
            "bad substitution: '${{' must be followed by a name, found {found} \
             (write '$${{' for a literal '${{')"
        );
        self.error(self.position, message);
        self.position.advance(b"${");
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

    /// `$NAME` or `${NAME}`: the value, or in strict mode an error when unset.
    fn plain(&mut self, name: &str, start: Position, output: &mut impl Write) -> io::Result<()> {
        match self.values.get(name) {
            Some(value) => output.write_all(value),
            None => {
                if !self.options.allow_unset {
                    self.error(
                        start,
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
    fn expand_word(&mut self, word: &[u8], position: Position) -> io::Result<Vec<u8>> {
        if self.depth >= MAX_NESTING {
            self.error(
                position,
                format!("references nest deeper than {MAX_NESTING} levels"),
            );
            return Ok(Vec::new());
        }
        let mut expanded = Word::default();
        let outer = self.position;
        self.position = position;
        self.depth += 1;
        let result = self.expand(word, true, &mut expanded);
        self.depth -= 1;
        self.position = outer;
        result?;
        if expanded.overflowed {
            let message = format!("this word expands to more than {} MiB", MAX_WORD >> 20);
            self.error(position, message);
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
    text.iter()
        .position(|&b| !is_name_byte(b, braced))
        .unwrap_or(text.len())
}

/// A name as text. Callers pass only bytes accepted by `is_name_byte`.
fn ascii(name: &[u8]) -> &str {
    debug_assert!(name.is_ascii());
    // SAFETY: names consist of ASCII letters, digits, '_' and '.', which are valid UTF-8; checking
    // again cost 6% of the render time.
    unsafe { std::str::from_utf8_unchecked(name) }
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

    /// Reads one byte at a time: every reference is split.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn references_split_across_chunks_are_found() {
        let template = "a $NAME ${UNSET:-${NAME}x} $$ ${NAME:+y} $";
        let mut output = Vec::new();
        let errors = render(
            Trickle(template.as_bytes()),
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
            Trickle(small.as_bytes()),
            &mut trickled,
            &mut values(),
            &Options::default(),
        )
        .unwrap();
        let (whole, listed) = render_bytes(small.as_bytes(), &mut values(), &Options::default());
        assert_eq!((trickled, found.listed), (whole, listed));
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
