//! `sysctl`: set and read kernel parameters under `/proc/sys`, as procps `sysctl` does, for the
//! initContainer that tunes a pod's network namespace (or, privileged, the node) before the app.
//!
//! Keys are validated before anything is written (no `..`, no empty segment, nothing outside
//! /proc/sys). `-p FILE` reads the procps `sysctl.conf` format; every malformed line of every file
//! is reported (65, `file:line`) before the first write. After each write the value is read back
//! and printed as `key = value`, with runs of whitespace (multi-value keys print tab-separated)
//! normalised to one space. A failing setting does not stop the others; the exit code is that of
//! the first failure, unless the key was marked with a leading `-` ("ignore if it fails").

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::cli::Args;
use crate::error::{describe_io, Error};
use crate::log;
use crate::supervisor::{Deadline, Job};

pub const USAGE: &str = "\
Usage: initbox sysctl [OPTIONS] [KEY=VALUE | KEY]...

Write KEY=VALUE settings to /proc/sys, read each back and print it as
'key = value'. A KEY alone is only read. KEY uses dots (net.core.somaxconn) or
slashes (net/ipv4/conf/eth0.100/forwarding, for names that contain a dot).

OPTIONS
    -p, --load FILE   apply a sysctl.conf file (repeatable; default: none).
                      Format as procps: 'key = value' lines, '#' and ';'
                      comments, blank lines, '-key = value' to ignore failure.
                      Every malformed line is reported before anything is set.

A key that does not exist exits 66. A read-only /proc/sys or a refused write
exits 77: in Kubernetes, namespaced keys (net.*) are set through the pod's
securityContext.sysctls, node-level keys (vm.max_map_count) need a privileged
initContainer.

EXAMPLES
    initbox sysctl net.core.somaxconn=4096 net.ipv4.ip_local_port_range='1024 65000'
    initbox sysctl -p /config/sysctl.conf
    initbox sysctl vm.max_map_count=262144
    initbox sysctl net.ipv4.tcp_keepalive_time";

const LOAD: [&str; 2] = ["-p", "--load"];
const PROC_SYS: &str = "/proc/sys";
const PERMISSION_HINT: &str = "the pod needs the key in securityContext.sysctls (namespaced keys \
such as net.core.somaxconn) or a privileged initContainer (node-level keys such as \
vm.max_map_count)";

/// A validated key: as written (for messages and output) and its path below /proc/sys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub segments: Vec<String>,
}

impl Key {
    /// Dots separate segments, unless the key has a slash: then slashes do and dots are part of
    /// names (`net/ipv4/conf/eth0.100/forwarding`), as procps reads it.
    pub fn parse(text: &str) -> Result<Key, String> {
        let invalid = |why: &str| format!("invalid key '{text}': {why}");
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        let separator = if text.contains('/') { '/' } else { '.' };
        let segments: Vec<String> = text.split(separator).map(str::to_string).collect();
        for segment in &segments {
            match segment.as_str() {
                "" => return Err(invalid("empty segment")),
                "." | ".." => return Err(invalid("'.' and '..' are not allowed")),
                s if s.contains('\0') || s.chars().any(char::is_whitespace) => {
                    return Err(invalid("contains whitespace or NUL"))
                }
                _ => {}
            }
        }
        Ok(Key {
            name: text.to_string(),
            segments,
        })
    }

    pub fn path(&self) -> PathBuf {
        let mut path = PathBuf::from(PROC_SYS);
        path.extend(&self.segments);
        path
    }
}

/// One thing to do: set (or only read, without a value) one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: Key,
    pub value: Option<String>,
    /// Written with a leading `-`: a failure is a warning.
    pub ignore_failure: bool,
    /// `file:line` for settings from a file, for messages.
    pub origin: Option<String>,
}

/// Parses `KEY=VALUE`, `KEY`, or either with a leading `-`.
pub fn parse_setting(text: &str) -> Result<Setting, String> {
    let (ignore_failure, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key.trim(), Some(value.trim().to_string())),
        None => (text.trim(), None),
    };
    Ok(Setting {
        key: Key::parse(key)?,
        value,
        ignore_failure,
        origin: None,
    })
}

/// Parses a `sysctl.conf` file's bytes. Returns the settings, or every malformed line as
/// `file:line: why`. Comments may hold any bytes (procps skips them); a setting must be UTF-8.
pub fn parse_conf(file: &str, text: &[u8]) -> Result<Vec<Setting>, Vec<String>> {
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let origin = format!("{file}:{}", index + 1);
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") || line.starts_with(b";") {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            problems.push(format!("{origin}: not valid UTF-8"));
            continue;
        };
        if !line.contains('=') {
            problems.push(format!("{origin}: expected 'key = value', found '{line}'"));
            continue;
        }
        match parse_setting(line) {
            Ok(mut setting) => {
                setting.origin = Some(origin);
                settings.push(setting);
            }
            Err(why) => problems.push(format!("{origin}: {why}")),
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let files = args.values(LOAD)?;
    let mut settings = Vec::new();
    // A leading '-' ("ignore if it fails") is for files only, as in procps: on the command line
    // it reads as an option.
    for word in args.positionals()? {
        settings.push(parse_setting(&word).map_err(Error::Usage)?);
    }
    if files.is_empty() && settings.is_empty() {
        return Err(Error::usage("no KEY=VALUE, KEY or -p FILE given"));
    }
    Ok(Box::new(move |deadline| run(&files, settings, deadline)))
}

fn run(files: &[String], mut settings: Vec<Setting>, deadline: &Deadline) -> Result<(), Error> {
    let mut problems = Vec::new();
    let mut from_files = Vec::new();
    for file in files {
        let text = fs::read(file).map_err(|e| Error::io(file, &e))?;
        match parse_conf(file, &text) {
            Ok(found) => from_files.extend(found),
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        for problem in &problems[..problems.len() - 1] {
            log::error(problem, &[]);
        }
        return Err(Error::Data(format!(
            "{} (nothing was set)",
            problems[problems.len() - 1]
        )));
    }
    // Files first, then the command line, so a command-line value wins, as the last one set.
    from_files.append(&mut settings);

    let mut first_failure = None;
    let mut stdout = io::stdout().lock();
    for setting in &from_files {
        deadline.check("sysctl")?;
        match apply(setting) {
            Ok(value) => {
                let _ = writeln!(stdout, "{} = {value}", setting.key.name);
            }
            Err(err) if setting.ignore_failure => {
                log::warn(
                    &format!("{err} (ignored: key marked with '-')"),
                    &[("key", json!(setting.key.name))],
                );
            }
            Err(err) => match first_failure {
                // The first failure decides the exit code and is printed last by main; the
                // others are logged as they happen.
                None => first_failure = Some(err),
                Some(_) => log::error(&err.to_string(), &[("key", json!(setting.key.name))]),
            },
        }
    }
    let _ = stdout.flush();
    match first_failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Writes the value (if any) and reads the key back, returning the normalised value.
fn apply(setting: &Setting) -> Result<String, Error> {
    let key = &setting.key;
    let path = key.path();
    let label = match &setting.origin {
        Some(origin) => format!("{origin}: {}", key.name),
        None => key.name.clone(),
    };
    if let Some(value) = &setting.value {
        let written = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()));
        match written {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(Error::Data(format!(
                    "{label}: the kernel refused the value '{value}' (out of range or malformed?)"
                )))
            }
            Err(e) => return Err(classify(&label, &path, "cannot write", &e)),
            Ok(()) => {}
        }
    }
    match (fs::read_to_string(&path), &setting.value) {
        (Ok(text), _) => Ok(normalise(&text)),
        // Write-only keys (vm.drop_caches, mode 0200) cannot be read back.
        (Err(e), Some(value)) if e.kind() == io::ErrorKind::PermissionDenied => {
            Ok(normalise(value))
        }
        (Err(e), _) => Err(classify(&label, &path, "cannot read", &e)),
    }
}

fn classify(label: &str, path: &std::path::Path, doing: &str, err: &io::Error) -> Error {
    let path = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => Error::InputMissing(format!(
            "{label}: unknown key (no {path}; is the module loaded, the name right?)"
        )),
        io::ErrorKind::PermissionDenied => Error::Permission(format!(
            "{label}: {doing} {path}: {}: {PERMISSION_HINT}",
            describe_io(err)
        )),
        _ if err.raw_os_error() == Some(libc::EROFS) => Error::Permission(format!(
            "{label}: {doing} {path}: /proc/sys is read-only here: {PERMISSION_HINT}"
        )),
        _ => Error::Io(format!("{label}: {doing} {path}: {}", describe_io(err))),
    }
}

/// Collapses whitespace runs (multi-value keys use tabs) to one space, without trailing newline.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dots_or_slashes_map_below_proc_sys() {
        let key = Key::parse("net.core.somaxconn").unwrap();
        assert_eq!(key.path(), PathBuf::from("/proc/sys/net/core/somaxconn"));
        let key = Key::parse("net/ipv4/conf/eth0.100/forwarding").unwrap();
        assert_eq!(
            key.path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn keys_that_could_leave_proc_sys_are_refused() {
        for (bad, why) in [
            ("", "empty"),
            ("net..core", "empty segment"),
            (".net.core", "empty segment"),
            ("net.core.", "empty segment"),
            ("/etc/passwd", "empty segment"),
            ("net/../../etc", "'..'"),
            ("net/./core", "'.'"),
            ("net.co re", "whitespace"),
        ] {
            let err = Key::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn settings_read_values_and_the_ignore_prefix() {
        let s = parse_setting("-net.ipv4.ip_local_port_range = 1024 65000").unwrap();
        assert!(s.ignore_failure);
        assert_eq!(s.key.name, "net.ipv4.ip_local_port_range");
        assert_eq!(s.value.as_deref(), Some("1024 65000"));
        let s = parse_setting("kernel.hostname").unwrap();
        assert_eq!(s.value, None);
        let s = parse_setting("a.b=x=y").unwrap();
        assert_eq!(s.value.as_deref(), Some("x=y"));
    }

    #[test]
    fn conf_files_in_procps_format() {
        let text = "# comment\n; also comment\n\n  net.core.somaxconn = 1024\n\
                    -net.ipv4.tcp_mtu_probing=1\nkernel.x =\n";
        let settings = parse_conf("s.conf", text.as_bytes()).unwrap();
        assert_eq!(settings.len(), 3);
        assert_eq!(settings[0].origin.as_deref(), Some("s.conf:4"));
        assert!(settings[1].ignore_failure);
        assert_eq!(settings[2].value.as_deref(), Some(""));
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_line() {
        let problems = parse_conf("s.conf", b"a.b = 1\nnonsense\nx..y = 2\n").unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("s.conf:2: expected 'key = value'"));
        assert!(problems[1].starts_with("s.conf:3: invalid key"));
    }

    /// Issue 9 #21: a non-UTF-8 byte failed the whole read (74) without a line number.
    #[test]
    fn non_utf8_settings_are_malformed_lines_and_comments_may_hold_any_bytes() {
        let problems = parse_conf("s.conf", b"# caf\xe9\r\na.b = 1\nc.d = \xff\n").unwrap_err();
        assert_eq!(problems, ["s.conf:3: not valid UTF-8"]);
        let settings = parse_conf("s.conf", b"; \xe9\na.b = 1\r\n").unwrap();
        assert_eq!(settings[0].value.as_deref(), Some("1"));
    }

    #[test]
    fn whitespace_is_normalised() {
        assert_eq!(normalise("32768\t60999\n"), "32768 60999");
        assert_eq!(normalise("4096\n"), "4096");
    }
}
