//! The `render-template` parser: never panics; the output stays bounded; reading the template in
//! chunks of any size gives exactly the output and errors of one whole read (the carry-over of a
//! reference split across reads); error positions lie within the template; a template with no
//! `$` is copied byte for byte; and a template with every `$` doubled renders back to itself.
//! Run with a low `-rss_limit_mb` (scripts/fuzz uses 512) to hold memory to the bound too.
//!
//! Input: one byte of flags, eight bytes that choose the read sizes, then the template.
#![no_main]

use std::io::{self, Read, Write};

use initbox::applets::render_template::parse::{
    render, render_bytes, Options, Values, MAX_WORD,
};
use libfuzzer_sys::fuzz_target;

/// Returns 1 to 256 bytes per read, sizes taken in turn from `sizes`.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = usize::from(self.sizes[self.turn % self.sizes.len()]) + 1;
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Counts and hashes the output (FNV-1a, byte by byte, so the split of writes does not matter)
/// and keeps its first `KEEP` bytes: a template may legitimately make far more output than is
/// worth holding here.
struct Sink {
    len: usize,
    hash: u64,
    kept: Vec<u8>,
}

const KEEP: usize = 1 << 20;

impl Sink {
    fn new() -> Sink {
        Sink { len: 0, hash: 0xcbf2_9ce4_8422_2325, kept: Vec::new() }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &byte in buf {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let room = KEEP.saturating_sub(self.kept.len()).min(buf.len());
        self.kept.extend_from_slice(&buf[..room]);
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn values() -> Values {
    let mut values = Values::default();
    values.set("A", "a$A${A}");
    values.set("E", "");
    values.set("x.y", "dotted");
    values
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let Some((sizes, template)) = rest.split_at_checked(8) else {
        return;
    };
    let options = Options {
        allow_unset: flags & 1 != 0,
        only: if flags & 2 != 0 { vec!["A".into(), "U".into()] } else { vec![] },
        prefixes: if flags & 4 != 0 { vec!["x".into()] } else { vec![] },
    };

    let mut whole = Sink::new();
    let whole_errors = render(template, &mut whole, &mut values(), &options).unwrap();
    let mut chunked = Sink::new();
    let reader = Chunked { data: template, sizes, turn: 0 };
    let chunked_errors = render(reader, &mut chunked, &mut values(), &options).unwrap();
    assert_eq!(
        (whole.len, whole.hash, &whole.kept),
        (chunked.len, chunked.hash, &chunked.kept),
        "chunked output differs"
    );
    assert_eq!(whole_errors, chunked_errors, "chunked errors differ");

    // Each reference makes at most one word's worth (the values given are shorter), so the
    // output is linear in the template, not geometric.
    assert!(
        whole.len <= template.len() * MAX_WORD,
        "{} bytes of output from {} of template",
        whole.len,
        template.len()
    );

    let lines = 1 + template.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(whole_errors.listed.len() <= whole_errors.total);
    for error in &whole_errors.listed {
        assert!(
            (1..=lines).contains(&error.position.line) && error.position.column >= 1,
            "{error:?} outside a template of {lines} lines"
        );
    }

    if !template.contains(&b'$') {
        assert_eq!(whole.kept, template, "a template without '$' changed");
        assert!(whole_errors.is_empty());
    }

    let mut escaped = Vec::with_capacity(template.len() * 2);
    for &byte in template {
        escaped.push(byte);
        if byte == b'$' {
            escaped.push(b'$');
        }
    }
    let (output, errors) = render_bytes(&escaped, &mut values(), &options);
    assert_eq!(output, template, "'$$'-escaped template did not render to itself");
    assert!(errors.is_empty(), "{errors:?}");
});
