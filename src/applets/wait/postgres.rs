//! PostgreSQL readiness as `pg_isready` decides it: send a protocol-3.0 startup message and read
//! the first answer. Any authentication request, or any error other than SQLSTATE 57P03
//! (`cannot_connect_now`: starting up, shutting down, in recovery), means the server accepts
//! connections. No password is sent: being asked for one is the answer.

use std::io::{Read, Write};
use std::time::Duration;

use super::{exchange_failed, Endpoint};
use crate::applets::wait_tcp::{NotReady, Probe};
use crate::supervisor::Deadline;

/// Protocol 3.0 (the major version in the high 16 bits).
const PROTOCOL_3_0: u32 = 3 << 16;
/// Longer first answers are not PostgreSQL's: an error with its fields is a few hundred bytes.
const MAX_ANSWER: usize = 8192;
const CANNOT_CONNECT_NOW: &str = "57P03";

pub struct Postgres {
    endpoint: Endpoint,
    startup: Vec<u8>,
}

impl Postgres {
    pub fn new(endpoint: Endpoint) -> Postgres {
        let user = endpoint.user.clone().unwrap_or_else(|| "postgres".into());
        let database = match endpoint.path.as_str() {
            "" => user.clone(),
            db => db.to_string(),
        };
        Postgres {
            startup: startup_message(&user, &database),
            endpoint,
        }
    }
}

/// The StartupMessage: length, protocol version, then `name\0value\0` pairs and a final `\0`.
pub fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (name, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        // A NUL would end the value early; the server would see another user.
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// What the first message from the server says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepting connections; the text says how it answered.
    Accepting(String),
    /// 57P03, with the server's message.
    NotYet(String),
    /// Not a PostgreSQL answer.
    Garbled(String),
}

/// Reads the first message, never more than `MAX_ANSWER` bytes of it.
pub fn read_answer(reader: &mut impl Read) -> std::io::Result<Answer> {
    let mut header = [0u8; 5];
    reader.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let Some(body_length) = length.checked_sub(4).filter(|&n| n <= MAX_ANSWER) else {
        return Ok(Answer::Garbled(format!("message length {length}")));
    };
    let mut body = vec![0u8; body_length];
    reader.read_exact(&mut body)?;
    Ok(match header[0] {
        b'R' => Answer::Accepting("asks for authentication".into()),
        // NegotiateProtocolVersion: a newer server, up and talking.
        b'v' => Answer::Accepting("negotiates the protocol version".into()),
        b'E' => classify_error(&body),
        other => Answer::Garbled(format!("unexpected message type {:?}", char::from(other))),
    })
}

/// An ErrorResponse: fields of a type byte and a NUL-terminated text, ended by a NUL.
fn classify_error(body: &[u8]) -> Answer {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let [kind, tail @ ..] = rest {
        if *kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let text = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'C' => code = text,
            b'M' => message = text,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    if code == CANNOT_CONNECT_NOW {
        Answer::NotYet(format!("{message} ({code})"))
    } else {
        Answer::Accepting(format!("answers {code}: {message}"))
    }
}

impl Probe for Postgres {
    fn label(&self) -> &str {
        &self.endpoint.label
    }

    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady> {
        let mut stream = self.endpoint.connect(deadline, attempt_timeout)?;
        stream
            .write_all(&self.startup)
            .map_err(|e| exchange_failed("postgres", &e))?;
        match read_answer(&mut stream).map_err(|e| exchange_failed("postgres", &e))? {
            Answer::Accepting(how) => Ok(format!("postgres {how}")),
            Answer::NotYet(why) => Err(NotReady::Waiting(format!("postgres: {why}"))),
            Answer::Garbled(what) => Err(NotReady::Waiting(format!(
                "postgres: not a PostgreSQL answer ({what})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn startup_message_layout() {
        let m = startup_message("app", "db");
        assert_eq!(&m[..4], &(m.len() as u32).to_be_bytes());
        assert_eq!(&m[4..8], &[0, 3, 0, 0]);
        assert_eq!(&m[8..], b"user\0app\0database\0db\0\0");
    }

    #[test]
    fn answers_are_classified_as_pg_isready_does() {
        let auth = message(b'R', &10u32.to_be_bytes());
        assert!(matches!(
            read_answer(&mut &auth[..]),
            Ok(Answer::Accepting(_))
        ));
        let starting = message(
            b'E',
            b"SFATAL\0C57P03\0Mthe database system is starting up\0\0",
        );
        assert_eq!(
            read_answer(&mut &starting[..]).unwrap(),
            Answer::NotYet("the database system is starting up (57P03)".into())
        );
        let no_db = message(b'E', b"SFATAL\0C3D000\0Mdatabase \"x\" does not exist\0\0");
        assert!(matches!(
            read_answer(&mut &no_db[..]),
            Ok(Answer::Accepting(_))
        ));
    }

    #[test]
    fn oversized_or_foreign_answers_are_not_read_through() {
        let huge = [b'E', 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_answer(&mut &huge[..]),
            Ok(Answer::Garbled(_))
        ));
        let http = b"HTTP/1.1 400 Bad Request\r\n";
        assert!(matches!(
            read_answer(&mut &http[..]),
            Ok(Answer::Garbled(_))
        ));
        assert!(read_answer(&mut &b"R\0\0"[..]).is_err());
    }
}
