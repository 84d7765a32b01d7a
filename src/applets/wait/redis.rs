//! Redis readiness: `PING` must answer `PONG`. While it loads its dataset Redis answers
//! `-LOADING`, while a script runs `-BUSY`, a replica without its master `-MASTERDOWN`: all of
//! them mean "not yet". With a password, `AUTH` goes first in the same write; a refused password,
//! or `-NOAUTH` when none was given, cannot get better by waiting. `rediss://` has the same
//! exchange inside TLS, verified with the trust and client certificate of the HTTP options.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rustls::pki_types::ServerName;

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
    tls: Option<Tls>,
}

/// For `rediss://`: the options are turned into a configuration at each attempt, so
/// `--check-args` reads no file and a renewed CA file is picked up.
struct Tls {
    options: crate::http::Options,
    server_name: ServerName<'static>,
}

impl Redis {
    pub fn new(
        endpoint: Endpoint,
        password: &Password,
        tls: Option<&crate::http::Options>,
    ) -> Result<Redis, Error> {
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
        let tls = match tls {
            None => None,
            Some(options) => Some(Tls {
                options: options.clone(),
                server_name: ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                    Error::usage(format!("{}: not a valid TLS server name", endpoint.label))
                })?,
            }),
        };
        Ok(Redis {
            endpoint,
            password,
            tls,
        })
    }

    /// `AUTH` (when there is a password) and `PING`, sent in one write.
    fn request(&self, password: Option<&str>) -> Vec<u8> {
        let mut request = Vec::with_capacity(96);
        if let Some(password) = password {
            match &self.endpoint.user {
                Some(user) => request.extend(command(&["AUTH", user, password])),
                None => request.extend(command(&["AUTH", password])),
            }
        }
        request.extend(command(&["PING"]));
        request
    }

    /// Wraps the connection in TLS for `rediss://`. Nothing is sent yet: the handshake happens
    /// on the first write, bounded by the timeouts already set on `tcp`.
    fn over_tls(
        &self,
        tls: &Tls,
        tcp: TcpStream,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, NotReady> {
        let config = crate::http::rustls_config(&tls.options).map_err(NotReady::Fatal)?;
        let connection = rustls::ClientConnection::new(config, tls.server_name.clone())
            .map_err(|e| NotReady::Fatal(self.tls_failed(&e)))?;
        Ok(rustls::StreamOwned::new(connection, tcp))
    }

    fn tls_failed(&self, err: &rustls::Error) -> Error {
        crate::http::tls_error(err, &self.endpoint.label, &self.endpoint.host)
    }

    /// An I/O failure; one that carries a TLS error (untrusted certificate, name mismatch,
    /// handshake refused) will not get better by waiting.
    fn failed(&self, err: &std::io::Error) -> NotReady {
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => NotReady::Fatal(self.tls_failed(tls)),
            None => exchange_failed("redis", err),
        }
    }

    /// The AUTH/PING exchange, the same over plain TCP and TLS.
    fn exchange(
        &self,
        mut stream: impl Read + Write,
        request: &[u8],
        authenticating: bool,
    ) -> Result<String, NotReady> {
        let failed = |e: std::io::Error| self.failed(&e);
        stream.write_all(request).map_err(failed)?;
        stream.flush().map_err(failed)?;
        let mut reader = BufReader::with_capacity(MAX_LINE + 2, stream);
        if authenticating {
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
        let request = self.request(password.as_deref());
        // connect sets the attempt timeout on reads and writes, so it bounds the handshake too.
        let tcp = self.endpoint.connect(deadline, attempt_timeout)?;
        match &self.tls {
            None => self.exchange(&tcp, &request, password.is_some()),
            Some(tls) => self.exchange(self.over_tls(tls, tcp)?, &request, password.is_some()),
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
