//! The one error type of initbox and the exit-code contract.
//!
//! Every applet returns `Result<(), Error>`; `main` alone prints the message and turns the variant
//! into the process exit code. `Error::exit_code` is the only place the numbers appear, and the table
//! in README.md and `initbox --help` mirrors it (the integration tests produce every row).

use std::fmt;
use std::io;

/// A failure, carrying the one-line message the user sees.
#[derive(Clone, Debug)]
pub enum Error {
    /// initbox itself failed: a bug (a panic), or the process could not get what every run
    /// needs, such as a thread (exit 1).
    Internal(String),
    /// Unknown applet or option, missing or malformed value (exit 64). The message names the
    /// argument; `main` adds the `--help` hint.
    Usage(String),
    /// Bad input data: template syntax, undefined variable, malformed sysctl or values file (65).
    Data(String),
    /// A named input file or path does not exist (66).
    InputMissing(String),
    /// DNS resolution failed for good (68).
    HostUnknown(String),
    /// Connection refused, reset or unreachable after every retry (69).
    Unavailable(String),
    /// Reading or writing failed, disk full (74).
    Io(String),
    /// The remote answered, but not acceptably: HTTP status, git protocol or pack error (76).
    Remote(String),
    /// Permission denied (77).
    Permission(String),
    /// TLS: certificate not trusted, handshake failed (78).
    Tls(String),
    /// Checksum or object-hash mismatch (79).
    Integrity(String),
    /// The applet's deadline passed (124, as GNU `timeout`).
    Timeout(String),
    /// The command to exec was found but could not be run (126, as POSIX shells).
    NotExecutable(String),
    /// The command to exec was not found (127, as POSIX shells).
    CommandNotFound(String),
    /// Stopped by a signal (128 + signal number).
    Signal(i32),
    /// init's command ended with this exit code (128+N for signal N), passed on as ours. The
    /// command spoke for itself: nothing is printed, the termination log is its own.
    Exited(u8),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Internal(_) => 1,
            Error::Usage(_) => 64,
            Error::Data(_) => 65,
            Error::InputMissing(_) => 66,
            Error::HostUnknown(_) => 68,
            Error::Unavailable(_) => 69,
            Error::Io(_) => 74,
            Error::Remote(_) => 76,
            Error::Permission(_) => 77,
            Error::Tls(_) => 78,
            Error::Integrity(_) => 79,
            Error::Timeout(_) => 124,
            Error::NotExecutable(_) => 126,
            Error::CommandNotFound(_) => 127,
            Error::Signal(n) => u8::try_from(128 + n).unwrap_or(255),
            Error::Exited(code) => *code,
        }
    }

    /// Classifies an I/O error on `what` (a path or a target) by its kind, so a missing file is 66
    /// and a permission problem 77 wherever it happens.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Error {
        let message = format!("{what}: {}", describe_io(err));
        match err.kind() {
            io::ErrorKind::NotFound => Error::InputMissing(message),
            io::ErrorKind::PermissionDenied => Error::Permission(message),
            io::ErrorKind::TimedOut => Error::Timeout(message),
            _ if err.raw_os_error() == Some(libc::EROFS) => Error::Permission(message),
            _ => Error::Io(message),
        }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage(message.into())
    }

    /// This error with `context` before its message (`submodule 'lib': 401 ...`); the variant,
    /// and so the exit code, stays.
    pub fn context(self, context: impl fmt::Display) -> Error {
        let message = format!("{context}: {self}");
        match self {
            Error::Internal(_) => Error::Internal(message),
            Error::Usage(_) => Error::Usage(message),
            Error::Data(_) => Error::Data(message),
            Error::InputMissing(_) => Error::InputMissing(message),
            Error::HostUnknown(_) => Error::HostUnknown(message),
            Error::Unavailable(_) => Error::Unavailable(message),
            Error::Io(_) => Error::Io(message),
            Error::Remote(_) => Error::Remote(message),
            Error::Permission(_) => Error::Permission(message),
            Error::Tls(_) => Error::Tls(message),
            Error::Integrity(_) => Error::Integrity(message),
            Error::Timeout(_) => Error::Timeout(message),
            Error::NotExecutable(_) => Error::NotExecutable(message),
            Error::CommandNotFound(_) => Error::CommandNotFound(message),
            Error::Signal(_) | Error::Exited(_) => self,
        }
    }
}

/// The OS message without Rust's " (os error N)" suffix, which means nothing to a user.
pub fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Internal(m) => write!(f, "internal error: {m}"),
            Error::Signal(n) => write!(f, "stopped by {}", signal_name(*n)),
            Error::Exited(code) => write!(f, "the command exited with {code}"),
            Error::Usage(m)
            | Error::Data(m)
            | Error::InputMissing(m)
            | Error::HostUnknown(m)
            | Error::Unavailable(m)
            | Error::Io(m)
            | Error::Remote(m)
            | Error::Permission(m)
            | Error::Tls(m)
            | Error::Integrity(m)
            | Error::Timeout(m)
            | Error::NotExecutable(m)
            | Error::CommandNotFound(m) => f.write_str(m),
        }
    }
}

pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGALRM => "SIGALRM",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        other => return format!("signal {other}"),
    };
    name.into()
}

/// The exit-code table as `--help` prints it; kept beside `exit_code` so the two agree.
pub const EXIT_CODES: &str = "\
EXIT CODES
    0    success
    1    internal error: a bug (panic), or no thread could be started
    64   usage: unknown applet or option, bad value
    65   data error: template syntax, undefined variable, malformed input file
    66   input missing: a named file or path does not exist
    68   host unknown: DNS resolution failed for good
    69   unavailable: connection refused, reset or unreachable after all retries
    74   I/O error: write failed, disk full
    76   remote or protocol error: HTTP status, git protocol or pack error
    77   permission denied
    78   TLS failure: certificate not trusted, handshake failed
    79   integrity: checksum or object-hash mismatch
    124  timeout: the deadline (--timeout) passed
    126  the command after -- is not executable
    127  the command after -- was not found
    128+N stopped by signal N (143 SIGTERM, 130 SIGINT)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_exit_code() {
        let err = Error::Permission("401".into()).context("submodule 'lib'");
        assert_eq!(err.exit_code(), 77);
        assert_eq!(err.to_string(), "submodule 'lib': 401");
        assert_eq!(Error::Signal(15).context("x").exit_code(), 143);
    }

    #[test]
    fn io_errors_map_to_their_codes() {
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(Error::io("x", &missing).exit_code(), 66);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(Error::io("x", &denied).exit_code(), 77);
        let read_only = io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(Error::io("x", &read_only).exit_code(), 77);
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::io("x", &full).exit_code(), 74);
    }

    #[test]
    fn signals_exit_with_128_plus_n() {
        assert_eq!(Error::Signal(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Error::Signal(libc::SIGINT).exit_code(), 130);
    }

    #[test]
    fn os_error_suffix_is_dropped() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe_io(&err), "No such file or directory");
    }
}
