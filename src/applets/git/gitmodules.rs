//! `.gitmodules` for submodule checkouts: a bounded parser for the part of git-config syntax that
//! file uses, the name, path and URL rules git enforces on it (`check_submodule_name`,
//! `check_submodule_url` and fsck's `.gitmodules` checks: CVE-2018-11235, CVE-2018-17456,
//! CVE-2020-5260, CVE-2020-11008), and git's resolution of relative submodule URLs. No I/O, so
//! it is fuzzed whole (`fuzz/fuzz_targets/gitmodules.rs`).
//!
//! Where git only warns and skips (a suspicious name, a path or URL that looks like an option),
//! this refuses the file: the blob comes from the server, and git's own fsck refuses the same.

use std::collections::HashMap;

use super::checkout::is_dot_git;
use super::pktline::trim_text;
use crate::http::{redact_url_text, Url};

/// Distinct `[submodule]` sections in one file.
pub const MAX_SUBMODULES: usize = 1000;
/// A physical line, and a value with its continuation lines.
pub const MAX_LINE_BYTES: usize = 8192;
/// PATH_MAX: a longer path cannot be created anyway.
pub const MAX_PATH_BYTES: usize = 4096;

/// One `[submodule "NAME"]` section with both path and url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submodule {
    pub name: String,
    pub path: String,
    pub url: String,
    /// `update = none` (or a `!command`, which git turns into none): git clone leaves it empty.
    pub update_none: bool,
}

/// A value with the line that set it, for the messages of later checks.
type Setting = Option<(String, usize)>;

struct Entry {
    name: String,
    path: Setting,
    url: Setting,
    update_none: bool,
}

enum Section {
    Submodule(usize),
    Other,
}

/// Parses the bytes of a `.gitmodules` blob. Err(message) names the line number ("line 7: ...").
/// A later value of the same key wins and a repeated section merges, as git reads a checked-out
/// `.gitmodules`. Sections without both `path` and `url` are left out: git never matches them
/// to a gitlink, and a gitlink without an entry is the caller's error ("no url found").
pub fn parse(data: &[u8]) -> Result<Vec<Submodule>, String> {
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let mut lines = data.split(|&b| b == b'\n').zip(1..);
    let mut entries: Vec<Entry> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // Git accepts keys before any section header; they are not ours.
    let mut section = Section::Other;
    while let Some((line, number)) = lines.next() {
        let at = |why: String| format!("line {number}: {why}");
        let mut rest = trim_start(physical(line, number)?);
        if rest.first() == Some(&b'[') {
            let (name, after) = parse_header(rest).map_err(at)?;
            section = match name {
                None => Section::Other,
                Some(name) => {
                    check_name(&name).map_err(at)?;
                    let index = match by_name.get(&name) {
                        Some(&index) => index,
                        None if entries.len() == MAX_SUBMODULES => {
                            return Err(at(format!("more than {MAX_SUBMODULES} submodules")))
                        }
                        None => {
                            by_name.insert(name.clone(), entries.len());
                            let (path, url) = (None, None);
                            entries.push(Entry {
                                name,
                                path,
                                url,
                                update_none: false,
                            });
                            entries.len() - 1
                        }
                    };
                    Section::Submodule(index)
                }
            };
            rest = trim_start(after);
        }
        if matches!(rest.first(), None | Some(b'#' | b';')) {
            continue;
        }
        let key_len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if !rest[0].is_ascii_alphabetic() {
            return Err(at("expected a key, a section header or a comment".into()));
        }
        let key = rest[..key_len].to_ascii_lowercase();
        let after = trim_start(&rest[key_len..]);
        let (value, last) = match after.first() {
            None | Some(b'#' | b';') => (None, number),
            Some(b'=') => {
                let (value, last) = parse_value(&after[1..], number, &mut lines)?;
                (Some(value), last)
            }
            Some(_) => return Err(at("expected '=' after the key".into())),
        };
        if let Section::Submodule(index) = section {
            set(&mut entries[index], &key, value, last)?;
        }
    }
    complete(entries)
}

/// One line without its CR (git reads CRLF as LF), within the length bound.
fn physical(line: &[u8], number: usize) -> Result<&[u8], String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("line {number}: longer than {MAX_LINE_BYTES} bytes"));
    }
    Ok(line.strip_suffix(b"\r").unwrap_or(line))
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let blanks = bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &bytes[blanks..]
}

/// `[section]`, `[section "subsection"]` or the deprecated `[section.subsection]` (whose
/// subsection git lowercases). Returns the submodule name when the section is `submodule`,
/// and what follows the `]` (git allows a key or a comment there).
fn parse_header(line: &[u8]) -> Result<(Option<String>, &[u8]), String> {
    let bad = || "bad section header (expected [submodule \"NAME\"])".to_string();
    let body = &line[1..];
    let len = body
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        .count();
    let (section, rest) = body.split_at(len);
    if section.is_empty() {
        return Err(bad());
    }
    if let Some(after) = rest.strip_prefix(b"]") {
        let name = match section.iter().position(|&b| b == b'.') {
            Some(dot) if section[..dot].eq_ignore_ascii_case(b"submodule") => {
                Some(String::from_utf8_lossy(&section[dot + 1..]).to_ascii_lowercase())
            }
            _ => None,
        };
        return Ok((name, after));
    }
    if !matches!(rest.first(), Some(b' ' | b'\t')) {
        return Err(bad());
    }
    let mut rest = match trim_start(rest) {
        [b'"', rest @ ..] => rest,
        _ => return Err(bad()),
    };
    let mut name = Vec::new();
    loop {
        match rest {
            [b'"', b']', after @ ..] => {
                let name = String::from_utf8(name)
                    .map_err(|_| "the submodule name is not UTF-8".to_string())?;
                let ours = section.eq_ignore_ascii_case(b"submodule");
                return Ok((ours.then_some(name), after));
            }
            [] | [b'"', ..] | [b'\\'] => return Err(bad()),
            // Git drops a backslash before any other character: `\t` is `t`.
            [b'\\', byte, tail @ ..] | [byte, tail @ ..] => {
                name.push(*byte);
                rest = tail;
            }
        }
    }
}

/// A value after `=`: surrounding blanks dropped, `"` quoting, the escapes git knows, `#` and `;`
/// comments outside quotes, and a trailing backslash joining the next line. Returns the value and
/// the number of its last line.
fn parse_value<'a>(
    mut line: &'a [u8],
    mut number: usize,
    lines: &mut impl Iterator<Item = (&'a [u8], usize)>,
) -> Result<(Vec<u8>, usize), String> {
    let mut value = Vec::new();
    // Blanks outside quotes count only when something follows them.
    let mut blanks = Vec::new();
    let mut quoted = false;
    loop {
        let mut bytes = line.iter();
        let mut continued = false;
        while let Some(&byte) = bytes.next() {
            let add = match byte {
                b' ' | b'\t' if !quoted => {
                    if !value.is_empty() {
                        blanks.push(byte);
                    }
                    continue;
                }
                b'#' | b';' if !quoted => break,
                b'"' => {
                    quoted = !quoted;
                    None
                }
                b'\\' => match bytes.next() {
                    None => {
                        continued = true;
                        break;
                    }
                    Some(b'n') => Some(b'\n'),
                    Some(b't') => Some(b'\t'),
                    Some(b'b') => Some(b'\x08'),
                    Some(&b @ (b'"' | b'\\')) => Some(b),
                    Some(_) => return Err(format!("line {number}: unknown escape in a value")),
                },
                other => Some(other),
            };
            value.append(&mut blanks);
            value.extend(add);
            if value.len() > MAX_LINE_BYTES {
                return Err(format!(
                    "line {number}: value longer than {MAX_LINE_BYTES} bytes"
                ));
            }
        }
        match continued.then(|| lines.next()).flatten() {
            Some((next, next_number)) => {
                number = next_number;
                line = physical(next, number)?;
            }
            None if quoted => return Err(format!("line {number}: unterminated '\"' in a value")),
            None => return Ok((value, number)),
        }
    }
}

/// Records `path` or `url` (checked here, so every value git would see is checked, as fsck does)
/// and whether `update` is none; other keys (`branch`, `shallow`, `ignore`, ...) are not
/// initbox's business.
fn set(entry: &mut Entry, key: &[u8], value: Option<Vec<u8>>, number: usize) -> Result<(), String> {
    let at = |why: String| format!("line {number}: submodule '{}': {why}", shown(&entry.name));
    let key = match key {
        b"path" => "path",
        b"url" => "url",
        b"update" => {
            entry.update_none = value.is_some_and(|v| v == b"none" || v.starts_with(b"!"));
            return Ok(());
        }
        _ => return Ok(()),
    };
    // Git too: a key without `=` is boolean true, and path and url are no booleans.
    let value = value.ok_or_else(|| at(format!("{key} has no value")))?;
    let value = String::from_utf8(value).map_err(|_| at(format!("{key} is not UTF-8")))?;
    if key == "path" {
        check_path(&value).map_err(at)?;
        entry.path = Some((value, number));
    } else {
        check_url_text(&value).map_err(at)?;
        entry.url = Some((value, number));
    }
    Ok(())
}

fn complete(entries: Vec<Entry>) -> Result<Vec<Submodule>, String> {
    let mut by_path: HashMap<String, String> = HashMap::new();
    let mut submodules = Vec::new();
    for entry in entries {
        let (Some((path, number)), Some((url, _))) = (entry.path, entry.url) else {
            continue;
        };
        if let Some(other) = by_path.insert(path.clone(), entry.name.clone()) {
            return Err(format!(
                "line {number}: submodules '{}' and '{}' have the same path '{}'",
                shown(&other),
                shown(&entry.name),
                shown(&path)
            ));
        }
        submodules.push(Submodule {
            name: entry.name,
            path,
            url,
            update_none: entry.update_none,
        });
    }
    Ok(submodules)
}

/// For messages: control characters blanked, long text cut.
fn shown(text: &str) -> String {
    trim_text(text.as_bytes())
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Git's `check_submodule_name`: the name becomes a directory under `.git/modules/`, so a `..`
/// component (with `/` or `\` as separator) could leave it (CVE-2018-11235). Names starting with
/// `-` and control characters are refused too: the name appears in commands and messages.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty submodule name".into());
    }
    if has_control(name) {
        return Err("submodule name contains a control character".into());
    }
    let shown = shown(name);
    if name.starts_with('-') {
        return Err(format!("submodule name '{shown}' starts with '-'"));
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err(format!(
            "submodule name '{shown}' has a '..' component (CVE-2018-11235)"
        ));
    }
    Ok(())
}

/// A submodule path must stay inside the tree and be a path git itself could have written.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if has_control(path) {
        return Err("path contains a control character".into());
    }
    let shown = shown(path);
    let why = if path.starts_with('-') {
        "starts with '-' (CVE-2018-17456)"
    } else if path.starts_with('/') {
        "is absolute"
    } else if path.ends_with('/') {
        "ends with '/'"
    } else if path.split('/').any(|part| part.is_empty()) {
        "has an empty component"
    } else if path.split('/').any(|part| part == "." || part == "..") {
        "has a '.' or '..' component"
    } else if path.split('/').any(|part| is_dot_git(part.as_bytes())) {
        "has a component that is '.git' to git or a file system"
    } else {
        return Ok(());
    };
    Err(format!("path '{shown}' {why}"))
}

/// The checks that need no parent URL: an option-like URL (CVE-2018-17456) and control
/// characters, raw or percent-encoded (CVE-2020-5260: a newline reached the credential helper).
pub fn check_url_text(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("url is empty".into());
    }
    if url.starts_with('-') {
        return Err(format!(
            "url '{}' starts with '-' (CVE-2018-17456)",
            shown(&redact_url_text(url))
        ));
    }
    let encoded_control = url.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| b < 0x20 || b == 0x7f)
    });
    if has_control(url) || encoded_control {
        return Err("url contains a control character (CVE-2020-5260)".into());
    }
    Ok(())
}

/// Resolves a submodule url against the URL of the repository whose .gitmodules holds it
/// (`../lib.git`, `./x`, or absolute), and applies the URL rules; Err names why.
///
/// Relative URLs follow git's `relative_url`: trailing `/` of the parent path dropped, each
/// leading `../` removes one component, `./` is skipped, the rest is appended after a `/` as is.
/// Unlike git, climbing above the host's root is an error (git would make the next component the
/// host: `https://h/a` + `../../x` is `https://x`), the parent's query is dropped, and the
/// parent's userinfo is NOT carried over (git does carry it): credentials are chosen per URL
/// prefix by the caller. An absolute URL keeps its own userinfo, kept apart by [`Url`].
pub fn resolve_url(parent: &Url, url: &str) -> Result<Url, String> {
    check_url_text(url)?;
    if url.starts_with("./") || url.starts_with("../") {
        return resolve_relative(parent, url);
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Url::parse(url);
    }
    let kind = match url.split_once(':') {
        Some((scheme, rest)) if rest.starts_with("//") => format!("a '{scheme}://' URL"),
        Some((transport, rest)) if rest.starts_with(':') => {
            format!("a '{transport}::' transport URL")
        }
        Some((host, _)) if !host.contains('/') => "an scp-like 'host:path' (ssh) URL".into(),
        _ => "a local path".into(),
    };
    Err(format!(
        "url '{}' is {}; only http:// and https:// URLs are accepted",
        shown(&redact_url_text(url)),
        shown(&kind)
    ))
}

fn resolve_relative(parent: &Url, url: &str) -> Result<Url, String> {
    let full = parent.without_credentials();
    let origin = &full[..full.len() - parent.path().len()];
    let path = parent.path();
    let mut base = path[..path.find('?').unwrap_or(path.len())].trim_end_matches('/');
    let mut rest = url;
    let mut climbed = false;
    loop {
        if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("../") {
            let cut = base
                .rfind('/')
                .ok_or_else(|| format!("url '{}' climbs above the root of {origin}", shown(url)))?;
            base = &base[..cut];
            rest = after;
            climbed = true;
        } else {
            break;
        }
    }
    // Git's fsck: `../` then `/` or `:` once reached the host part (CVE-2020-11008).
    if climbed && (rest.starts_with('/') || rest.starts_with(':')) {
        return Err(format!(
            "url '{}' has '/' or ':' after '../' (CVE-2020-11008)",
            shown(url)
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    Url::parse(&format!("{origin}{base}/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, path: &str, url: &str) -> Submodule {
        let (name, path, url) = (name.into(), path.into(), url.into());
        Submodule {
            name,
            path,
            url,
            update_none: false,
        }
    }

    #[track_caller]
    fn refused(text: impl AsRef<[u8]>, expected: &str) {
        let text = String::from_utf8_lossy(text.as_ref());
        match parse(text.as_bytes()) {
            Err(message) => assert!(message.contains(expected), "{message:?} lacks {expected:?}"),
            Ok(parsed) => panic!("{text:?} parsed as {parsed:?}"),
        }
    }

    #[test]
    fn reads_gitmodules_as_git_submodule_add_writes_it() {
        // `git submodule add ../lib "deps/my lib"`, `--name 'we"ird\name'`, `-b master`, and
        // `git config -f .gitmodules` for shallow and fetchRecurseSubmodules (git 2.47).
        let text = "[submodule \"deps/my lib\"]\n\tpath = deps/my lib\n\turl = ../lib\n\
            [submodule \"we\\\"ird\\\\name\"]\n\tpath = other\n\turl = https://h.example/o.git\n\
            [submodule \"only-branch\"]\n\tbranch = main\n\
            [submodule \"vendor/zlib\"]\n\tpath = third_party/zlib\n\turl = ../../z/zlib.git\n\
            \tbranch = master\n\tshallow = true\n\tfetchRecurseSubmodules = false\n";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            [
                one("deps/my lib", "deps/my lib", "../lib"),
                one("we\"ird\\name", "other", "https://h.example/o.git"),
                one("vendor/zlib", "third_party/zlib", "../../z/zlib.git"),
            ]
        );
        assert_eq!(parse(b"").unwrap(), []);
    }

    #[test]
    fn follows_git_config_syntax() {
        let text = "\u{feff}; top\r\nstray = ignored\n[core]\n\tpath = not-ours\n\
            [SubModule \"A\"] PATH = \"a \\\"q\\\"\" # trailing\n\
            \tURL = https://h/a\\\n  b.git  ; comment\n\
            [submodule \"B\"]\n  path = first\n  path = later\n  update = none\n  url\t=\tx/../y\n\
            [submodule \"A\"]\n  url = \"https://h/#not-a-comment\"\n\
            [submodule.Old.Style]\n  path = old\n  url = ./old\n\
            [submodule \"no-url\"]\n  path = p\n[submodule]\n  path = none\n";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            [
                one("A", "a \"q\"", "https://h/#not-a-comment"),
                Submodule {
                    update_none: true,
                    ..one("B", "later", "x/../y")
                },
                one("old.style", "old", "./old"),
            ]
        );
        // Escapes, blanks between quoted parts, a quoted continuation.
        let text = "[submodule \"e\"]\npath = \"\" x \"y\\\\z\"\nurl = \"u\\\nv\"\n";
        assert_eq!(parse(text.as_bytes()).unwrap(), [one("e", "x y\\z", "uv")]);
        // A continuation at the end of the input ends the value, as in git.
        assert_eq!(
            parse(b"[submodule \"e\"]\npath = p\nurl = u\\").unwrap(),
            [one("e", "p", "u")]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        refused(
            "[submodule \"a\"]\n\n  path = \"x\\q\"\n",
            "line 3: unknown escape",
        );
        refused(
            "[submodule \"a\"]\npath = \"x\n",
            "line 2: unterminated '\"'",
        );
        refused(
            "[submodule \"a\"]\npath = \"x\\\n",
            "line 3: unterminated '\"'",
        );
        for header in [
            "[submodule\"a\"]",
            "[submodule \"a\" ]",
            "[submodule \"a",
            "[ x]",
            "[x",
        ] {
            refused(format!("# c\n{header}\n"), "line 2: bad section header");
        }
        refused(
            "[submodule \"a\"]\npath x\n",
            "line 2: expected '=' after the key",
        );
        refused("[submodule \"a\"]\n1path = x\n", "line 2: expected a key");
        refused(
            "[submodule \"a\"]\npath\n",
            "line 2: submodule 'a': path has no value",
        );
        refused(
            "[submodule \"a\"]\nurl ; c\n",
            "line 2: submodule 'a': url has no value",
        );
        let err = parse(b"[submodule \"a\"]\n\n path = \xff\n").unwrap_err();
        assert_eq!(err, "line 3: submodule 'a': path is not UTF-8");
        let err = parse(b"[submodule \"\xff\"]\n").unwrap_err();
        assert_eq!(err, "line 1: the submodule name is not UTF-8");
        let long = format!("[submodule \"a\"]\n# {}\n", "x".repeat(MAX_LINE_BYTES));
        refused(&long, "line 2: longer than 8192 bytes");
        let long = format!(
            "[submodule \"a\"]\nurl = {}\\\n{}",
            "x".repeat(5000),
            "y".repeat(5000)
        );
        refused(&long, "line 3: value longer than 8192 bytes");
    }

    #[test]
    fn at_most_max_submodules() {
        let section = |i: usize| format!("[submodule \"s{i}\"]\npath = p{i}\nurl = ./u{i}\n");
        let mut text: String = (0..MAX_SUBMODULES).map(section).collect();
        text.push_str("[submodule \"s0\"]\n");
        assert_eq!(parse(text.as_bytes()).unwrap().len(), MAX_SUBMODULES);
        text.push_str(&section(MAX_SUBMODULES));
        refused(&text, "line 3002: more than 1000 submodules");
    }

    #[test]
    fn hostile_names_are_refused() {
        for (name, why) in [
            ("..", "'..' has a '..' component (CVE-2018-11235)"),
            ("a/../b", "a '..' component"),
            ("a\\\\..", "a '..' component"),
            ("../../hooks", "a '..' component"),
            ("-x", "'-x' starts with '-'"),
            ("", "empty submodule name"),
            ("a\u{1}b", "contains a control character"),
        ] {
            let text = format!("\n[submodule \"{name}\"]\n");
            refused(&text, "line 2: ");
            refused(&text, why);
        }
        refused(
            "[submodule...]\n",
            "line 1: submodule name '..' has a '..' component",
        );
        refused("[submodule.]\n", "line 1: empty submodule name");
        // `...` or `a..b` are no `..` component.
        assert!(parse(b"[submodule \"...\"]\n[submodule \"a..b\"]\n").is_ok());
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long = "a/".repeat(MAX_PATH_BYTES / 2) + "b";
        for (path, why) in [
            ("../x", "'../x' has a '.' or '..' component"),
            ("a/../../b", "has a '.' or '..' component"),
            ("./a", "has a '.' or '..' component"),
            (".git", "'.git' has a component that is '.git'"),
            ("a/.GIT/hooks", "is '.git' to git or a file system"),
            ("a/.git. ", "is '.git' to git or a file system"),
            ("GIT~1", "is '.git' to git or a file system"),
            (".g\u{200c}it", "is '.git' to git or a file system"),
            ("/etc", "'/etc' is absolute"),
            ("a/", "'a/' ends with '/'"),
            ("a//b", "has an empty component"),
            ("-x", "'-x' starts with '-' (CVE-2018-17456)"),
            ("a\\tb", "path contains a control character"),
            ("\"\"", "path is empty"),
            (&long, "path is longer than 4096 bytes"),
        ] {
            let text = format!("[submodule \"s\"]\nurl = ./s\npath = {path}\n");
            refused(&text, "line 3: submodule 's': path ");
            refused(&text, why);
        }
        // Checked even when a later value would replace it, as fsck does.
        refused("[submodule \"s\"]\npath = ..\npath = ok\n", "line 2:");
        let twice =
            "[submodule \"a\"]\npath = p\nurl = ./a\n[submodule \"b\"]\npath = p\nurl = ./b\n";
        refused(
            twice,
            "line 5: submodules 'a' and 'b' have the same path 'p'",
        );
    }

    #[test]
    fn hostile_url_text_is_refused() {
        for (url, why) in [
            ("-uhttps://h/x", "starts with '-' (CVE-2018-17456)"),
            ("--upload-pack=touch${IFS}x", "starts with '-'"),
            ("https://h/x\\n", "control character (CVE-2020-5260)"),
            ("https://h/x%0a", "control character"),
            ("./x%7F", "control character"),
            ("\"\"", "url is empty"),
        ] {
            let text = format!("[submodule \"s\"]\npath = s\nurl = {url}\n");
            refused(&text, "line 3: submodule 's': url ");
            refused(&text, why);
        }
        let shown = parse(b"[submodule \"s\"]\nurl = -https://u:hunter2@h/\n").unwrap_err();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    fn resolve(parent: &str, url: &str) -> Result<String, String> {
        resolve_url(&Url::parse(parent).unwrap(), url).map(|url| url.to_string())
    }

    #[test]
    fn relative_urls_resolve_as_git_does() {
        // Each expectation is what `git submodule init` (git 2.47) wrote for the same pair.
        for (parent, url, expected) in [
            ("https://h/a/b.git", "../lib.git", "https://h/a/lib.git"),
            ("https://h/a/b.git/", "../lib.git", "https://h/a/lib.git"),
            ("https://h/a/b.git", "./x", "https://h/a/b.git/x"),
            ("https://h/a/b.git", "../../x", "https://h/x"),
            ("https://h/a/b.git", "./../y", "https://h/a/y"),
            ("https://h/a/b.git", ".././z", "https://h/a/z"),
            ("https://h/a/b.git", "../", "https://h/a/"),
            ("https://h/a/b.git", "./a/../b/", "https://h/a/b.git/a/../b"),
            ("https://h/b", "../lib.git", "https://h/lib.git"),
            ("https://h/", "./x", "https://h/x"),
            (
                "http://h:8080//a/b",
                "../lib.git",
                "http://h:8080//a/lib.git",
            ),
            ("https://h//a/b", "../../../x", "https://h/x"),
            // Git keeps the query in the middle (`https://h/a/b?x=1/x`); it is dropped here.
            ("https://h/a/b?x=1", "./x", "https://h/a/b/x"),
            ("https://h/a/b?x=1", "../lib.git", "https://h/a/lib.git"),
        ] {
            assert_eq!(
                resolve(parent, url).as_deref(),
                Ok(expected),
                "{parent} + {url}"
            );
        }
        // The parent's userinfo stays behind (git carries it); the caller picks credentials.
        let parent = Url::parse("https://bob:secret@h/org/app.git").unwrap();
        let sibling = resolve_url(&parent, "../lib.git").unwrap();
        assert_eq!(sibling.without_credentials(), "https://h/org/lib.git");
        assert_eq!(sibling.credentials(), None);
    }

    #[test]
    fn relative_urls_never_leave_the_host() {
        // Git makes these `https://x`, `https:/x`, `https://lib.git`.
        for (parent, url) in [
            ("https://h/a/b.git", "../../../x"),
            ("https://h/b", "../../x"),
            ("https://h/", "../lib.git"),
        ] {
            let err = resolve(parent, url).unwrap_err();
            assert!(err.contains("climbs above the root of https://h"), "{err}");
        }
        for url in ["..//h2/x", "../:x", "./../:443/x"] {
            let err = resolve("https://h/a/b", url).unwrap_err();
            assert!(err.contains("(CVE-2020-11008)"), "{url}: {err}");
        }
        // Whatever follows the `../`, the host is the parent's.
        for url in [
            "./@evil.example/x",
            "../https://evil.example/x",
            "./?@evil/#x",
        ] {
            assert!(
                resolve("https://h/a", url)
                    .unwrap()
                    .starts_with("https://h/"),
                "{url}"
            );
        }
    }

    #[test]
    fn absolute_urls_must_be_http() {
        let parent = Url::parse("https://h/a.git").unwrap();
        let url = resolve_url(&parent, "HTTPS://tok:pw@Other.example:8443/x.git").unwrap();
        assert_eq!(url.credentials(), Some(("tok", "pw")));
        assert_eq!(url.to_string(), "https://tok:***@other.example:8443/x.git");
        assert_eq!(resolve("https://h/", "http://p/x").unwrap(), "http://p/x");
        for (url, why) in [
            ("ssh://git@h/x.git", "is a 'ssh://' URL"),
            ("git://h/x.git", "is a 'git://' URL"),
            ("file:///etc", "is a 'file://' URL"),
            ("ext::sh -c touch% /tmp/pwned", "is a 'ext::' transport URL"),
            ("http::https://h/x", "is a 'http::' transport URL"),
            (
                "git@github.com:org/x.git",
                "is an scp-like 'host:path' (ssh) URL",
            ),
            ("/srv/git/x.git", "is a local path"),
            ("x/y:z", "is a local path"),
            ("..", "is a local path"),
        ] {
            let err = resolve("https://h/a.git", url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(
                err.ends_with("only http:// and https:// URLs are accepted"),
                "{err}"
            );
        }
        let err = resolve("https://h/", "ssh://u:hunter2@h/x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(resolve("https://h/", "https:///x")
            .unwrap_err()
            .contains("missing host"));
        assert!(resolve("https://h/", "-https://h/")
            .unwrap_err()
            .contains("'-'"));
    }
}
