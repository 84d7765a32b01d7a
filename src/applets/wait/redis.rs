//! Redis readiness: `PING` must answer `PONG`. While it loads its dataset Redis answers
//! `-LOADING`, while a script runs `-BUSY`, a replica without its master `-MASTERDOWN`: all of
//! them mean "not yet". With a password, `AUTH` goes first in the same write; a refused password,
//! or `-NOAUTH` when none was given, cannot get better by waiting.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::{exchange_failed, Endpoint, Password};
use crate::applets::wait_tcp::{NotReady, Probe};
use crate::error::Error;
use crate::supervisor::Deadline;

/// A status or error line longer than this is not a Redis answer to AUTH or PING.
const MAX_LINE: usize = 512;

/// The first line of a RESP reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`.
    Status(String),
    /// `-LOADING Redis is loading the dataset in memory`.
    Error(String),
    /// Anything else, as read.
    Other(String),
}

/// Reads one line (up to CRLF), never more than `MAX_LINE` bytes.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = Vec::with_capacity(64);
    let read = Read::by_ref(reader)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if line.pop() != Some(b'\n') {
        return Ok(Reply::Other("a line without an end".into()));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = |rest: &[u8]| String::from_utf8_lossy(rest).into_owned();
    Ok(match line.split_first() {
        Some((b'+', rest)) => Reply::Status(text(rest)),
        Some((b'-', rest)) => Reply::Error(text(rest)),
        _ => Reply::Other(text(&line)),
    })
}

/// A command as a RESP array of bulk strings, which carries any byte in a password.
pub fn command(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Redis {
    endpoint: Endpoint,
    password: Password,
}

impl Redis {
    pub fn new(endpoint: Endpoint, password: &Password) -> Result<Redis, Error> {
        if !endpoint.path.is_empty() && endpoint.path.parse::<u32>().is_err() {
            return Err(Error::usage(format!(
                "{}: the path must be a database number",
                endpoint.label
            )));
        }
        let password = match &endpoint.password {
            Some(given) => Password::Given(given.clone()),
            None => password.clone(),
        };
        Ok(Redis { endpoint, password })
    }

    fn wrong_password(&self, reply: &str) -> NotReady {
        NotReady::Fatal(Error::Permission(format!(
            "{}: the password was refused ({})",
            self.endpoint.label,
            first_word(reply)
        )))
    }
}

fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or_default()
}

impl Probe for Redis {
    fn label(&self) -> &str {
        &self.endpoint.label
    }

    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady> {
        let password = self.password.read().map_err(NotReady::Fatal)?;
        let mut request = Vec::with_capacity(96);
        if let Some(password) = &password {
            match &self.endpoint.user {
                Some(user) => request.extend(command(&["AUTH", user, password])),
                None => request.extend(command(&["AUTH", password])),
            }
        }
        request.extend(command(&["PING"]));
        let stream = self.endpoint.connect(deadline, attempt_timeout)?;
        let failed = |e: std::io::Error| exchange_failed("redis", &e);
        (&stream).write_all(&request).map_err(failed)?;
        let mut reader = BufReader::with_capacity(MAX_LINE + 2, &stream);
        if password.is_some() {
            match read_reply(&mut reader).map_err(failed)? {
                Reply::Error(e) if e.starts_with("WRONGPASS") || e.contains("invalid password") => {
                    return Err(self.wrong_password(&e))
                }
                // Other AUTH errors (no password configured) leave PING to decide.
                _ => {}
            }
        }
        match read_reply(&mut reader).map_err(failed)? {
            Reply::Status(s) if s == "PONG" => Ok("redis PONG".into()),
            Reply::Error(e) if first_word(&e) == "NOAUTH" => {
                Err(NotReady::Fatal(Error::Permission(format!(
                    "{}: a password is needed and none was given (use the URL, \
                     --password-file or --password-env)",
                    self.endpoint.label
                ))))
            }
            Reply::Error(e) => Err(NotReady::Waiting(format!("redis: {e}"))),
            Reply::Status(s) | Reply::Other(s) => Err(NotReady::Waiting(format!(
                "redis: unexpected answer to PING: {s}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_line_by_line() {
        let mut input = &b"+OK\r\n-LOADING Redis is loading the dataset in memory\r\n:1\r\n"[..];
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Status("OK".into()));
        assert_eq!(
            read_reply(&mut input).unwrap(),
            Reply::Error("LOADING Redis is loading the dataset in memory".into())
        );
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Other(":1".into()));
        assert!(read_reply(&mut input).is_err());
    }

    #[test]
    fn endless_lines_stop_at_the_limit() {
        let long = vec![b'+'; 10_000];
        assert!(matches!(read_reply(&mut &long[..]), Ok(Reply::Other(_))));
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            command(&["AUTH", "p w\r\n"]),
            b"*2\r\n$4\r\nAUTH\r\n$5\r\np w\r\n\r\n"
        );
    }
}
