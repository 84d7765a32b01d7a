//! MySQL and MariaDB readiness: the server speaks first, with its protocol-10 handshake once it
//! accepts clients, or an error packet (too many connections, host blocked). Only the first
//! packet's header and a bounded prefix of its payload are read.

use std::io::Read;
use std::time::Duration;

use super::{exchange_failed, Endpoint};
use crate::applets::wait_tcp::{NotReady, Probe};
use crate::supervisor::Deadline;

const PROTOCOL_10: u8 = 0x0a;
const ERROR_PACKET: u8 = 0xff;
/// Enough for the version string or an error message; the rest of the packet is not needed.
const MAX_PREFIX: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The handshake, with the server version.
    Handshake(String),
    /// An error packet: code and message.
    Refused(u16, String),
    Garbled(String),
}

/// Reads the first packet's header and at most `MAX_PREFIX` bytes of its payload.
pub fn read_answer(reader: &mut impl Read) -> std::io::Result<Answer> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header)?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if length == 0 {
        return Ok(Answer::Garbled("empty packet".into()));
    }
    let mut payload = Vec::with_capacity(length.min(MAX_PREFIX));
    reader
        .take(length.min(MAX_PREFIX) as u64)
        .read_to_end(&mut payload)?;
    Ok(match payload.as_slice() {
        [PROTOCOL_10, rest @ ..] => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Answer::Handshake(String::from_utf8_lossy(&rest[..end]).into_owned())
        }
        [ERROR_PACKET, low, high, rest @ ..] => {
            // After 4.1 the message may follow a '#' and a five-character SQLSTATE.
            let message = match rest {
                [b'#', state @ ..] if state.len() >= 5 => &state[5..],
                _ => rest,
            };
            let code = u16::from_le_bytes([*low, *high]);
            Answer::Refused(code, String::from_utf8_lossy(message).into_owned())
        }
        [other, ..] => Answer::Garbled(format!("protocol version {other}")),
        [] => Answer::Garbled("truncated packet".into()),
    })
}

pub struct Mysql {
    endpoint: Endpoint,
}

impl Mysql {
    pub fn new(endpoint: Endpoint) -> Mysql {
        Mysql { endpoint }
    }
}

impl Probe for Mysql {
    fn label(&self) -> &str {
        &self.endpoint.label
    }

    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady> {
        let mut stream = self.endpoint.connect(deadline, attempt_timeout)?;
        match read_answer(&mut stream).map_err(|e| exchange_failed("mysql", &e))? {
            Answer::Handshake(version) => Ok(format!("mysql {version}")),
            Answer::Refused(code, message) => {
                Err(NotReady::Waiting(format!("mysql: error {code}: {message}")))
            }
            Answer::Garbled(what) => Err(NotReady::Waiting(format!(
                "mysql: not a MySQL handshake ({what})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(0);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn handshake_and_error_packets() {
        let hello = packet(b"\x0a10.11.6-MariaDB\0\x01\x02\x03\x04salt");
        assert_eq!(
            read_answer(&mut &hello[..]).unwrap(),
            Answer::Handshake("10.11.6-MariaDB".into())
        );
        let busy = packet(b"\xff\x10\x04#08004Too many connections");
        assert_eq!(
            read_answer(&mut &busy[..]).unwrap(),
            Answer::Refused(1040, "Too many connections".into())
        );
        let old = packet(b"\xff\x10\x04Too many connections");
        assert_eq!(
            read_answer(&mut &old[..]).unwrap(),
            Answer::Refused(1040, "Too many connections".into())
        );
    }

    #[test]
    fn only_a_bounded_prefix_is_read() {
        let mut big = packet(&[PROTOCOL_10; 100_000]);
        big.truncate(4 + MAX_PREFIX);
        assert!(matches!(
            read_answer(&mut &big[..]),
            Ok(Answer::Handshake(_))
        ));
        assert!(matches!(
            read_answer(&mut &packet(b"\x09")[..]),
            Ok(Answer::Garbled(_))
        ));
    }
}
