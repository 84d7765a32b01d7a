//! git's pkt-line framing (`gitprotocol-common`, "pkt-line Format") and side-band
//! demultiplexing (`gitprotocol-pack`, "Packfile Data").
//!
//! A pkt-line is four hex digits giving the length (including those four bytes) followed by the
//! payload. `0000` is a flush, `0001` a delimiter and `0002` a response end (protocol v2). The
//! reader validates every length, so a hostile server cannot make it allocate more than one
//! maximum-sized packet (65520 bytes) at a time.

use std::io::{self, Read};

/// The largest pkt-line git sends or accepts, header included.
pub const MAX_PKT_LEN: usize = 65520;

#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    Flush,
    Delim,
    ResponseEnd,
    Data(Vec<u8>),
}

/// A malformed stream or an error the server sent; `Io` is a transport failure.
#[derive(Debug)]
pub enum PktError {
    Malformed(String),
    /// The server's own message: an `ERR` packet or side-band channel 3.
    Server(String),
    Io(io::Error),
}

impl PktError {
    /// Wraps the error so it can travel through `io::Read` and be told apart afterwards.
    pub fn into_io(self) -> io::Error {
        match self {
            PktError::Io(e) => e,
            other => io::Error::other(other),
        }
    }

    /// The inverse of `into_io`.
    pub fn from_io(err: io::Error) -> PktError {
        if err
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<PktError>().is_some())
        {
            if let Ok(inner) = err.into_inner().unwrap().downcast::<PktError>() {
                return *inner;
            }
            unreachable!("checked above");
        }
        PktError::Io(err)
    }
}

impl std::fmt::Display for PktError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PktError::Malformed(m) => write!(f, "malformed git protocol stream: {m}"),
            PktError::Server(m) => write!(f, "the server reported: {m}"),
            PktError::Io(e) => write!(f, "{}", crate::error::describe_io(e)),
        }
    }
}

impl std::error::Error for PktError {}

/// Appends one data packet.
pub fn write_data(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() + 4 <= MAX_PKT_LEN);
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a text line, adding the newline git expects.
pub fn write_line(out: &mut Vec<u8>, line: &str) {
    let mut payload = line.as_bytes().to_vec();
    payload.push(b'\n');
    write_data(out, &payload);
}

pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

pub fn write_delim(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

pub struct PktReader<R> {
    inner: R,
}

impl<R: Read> PktReader<R> {
    pub fn new(inner: R) -> PktReader<R> {
        PktReader { inner }
    }

    /// The next packet; end of stream is an error, since every git response ends with a flush.
    pub fn read(&mut self) -> Result<Packet, PktError> {
        let mut header = [0u8; 4];
        read_exact(&mut self.inner, &mut header, "a pkt-line header")?;
        let text = std::str::from_utf8(&header)
            .ok()
            .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                PktError::Malformed(format!(
                    "bad pkt-line length {:?}",
                    String::from_utf8_lossy(&header)
                ))
            })?;
        let len = usize::from_str_radix(text, 16).expect("four hex digits");
        match len {
            0 => return Ok(Packet::Flush),
            1 => return Ok(Packet::Delim),
            2 => return Ok(Packet::ResponseEnd),
            3 => return Err(PktError::Malformed("pkt-line length 3".into())),
            n if n > MAX_PKT_LEN => {
                return Err(PktError::Malformed(format!("pkt-line length {n} too long")))
            }
            _ => {}
        }
        let mut payload = vec![0u8; len - 4];
        read_exact(&mut self.inner, &mut payload, "a pkt-line")?;
        if let Some(message) = payload.strip_prefix(b"ERR ") {
            return Err(PktError::Server(trim_text(message)));
        }
        Ok(Packet::Data(payload))
    }

    /// The next data packet as text without its newline; `None` at a flush or delimiter.
    pub fn read_line(&mut self) -> Result<Option<String>, PktError> {
        match self.read()? {
            Packet::Data(payload) => Ok(Some(
                String::from_utf8_lossy(strip_newline(&payload)).into_owned(),
            )),
            _ => Ok(None),
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), PktError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PktError::Malformed(format!("the stream ended inside {what}"))
        } else {
            PktError::from_io(e)
        }
    })
}

pub fn strip_newline(payload: &[u8]) -> &[u8] {
    payload.strip_suffix(b"\n").unwrap_or(payload)
}

/// Server text, made safe to print on one line: control characters (ESC, newlines) become
/// spaces and the length is capped. Every remote string that reaches a log or an error goes
/// through here.
pub fn trim_text(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let text: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.chars().take(500).collect()
}

/// Reads the pack data carried on side-band channel 1 until the flush that ends it. Progress
/// (channel 2) is dropped; channel 3 ends the stream with the server's message.
pub struct SideBand<R> {
    packets: PktReader<R>,
    current: Vec<u8>,
    position: usize,
    done: bool,
}

impl<R: Read> SideBand<R> {
    pub fn new(packets: PktReader<R>) -> SideBand<R> {
        SideBand {
            packets,
            current: Vec::new(),
            position: 0,
            done: false,
        }
    }

    fn refill(&mut self) -> Result<(), PktError> {
        loop {
            match self.packets.read()? {
                Packet::Flush | Packet::ResponseEnd => {
                    self.done = true;
                    return Ok(());
                }
                Packet::Delim => {
                    return Err(PktError::Malformed("delimiter inside the packfile".into()))
                }
                Packet::Data(payload) => match payload.split_first() {
                    Some((1, data)) if !data.is_empty() => {
                        self.current = payload;
                        self.position = 1;
                        return Ok(());
                    }
                    Some((1 | 2, _)) => {}
                    Some((3, message)) => return Err(PktError::Server(trim_text(message))),
                    _ => {
                        return Err(PktError::Malformed(format!(
                            "unknown side-band channel {}",
                            payload.first().copied().unwrap_or(0)
                        )))
                    }
                },
            }
        }
    }
}

impl<R: Read> Read for SideBand<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            self.refill().map_err(PktError::into_io)?;
            if self.done {
                return Ok(0);
            }
        }
        let available = &self.current[self.position..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> PktReader<&[u8]> {
        PktReader::new(bytes)
    }

    #[test]
    fn writes_and_reads_back_every_kind() {
        let mut out = Vec::new();
        write_line(&mut out, "command=ls-refs");
        write_delim(&mut out);
        write_data(&mut out, b"peel");
        write_flush(&mut out);
        out.extend_from_slice(b"0002");
        assert_eq!(&out[..], &b"0014command=ls-refs\n00010008peel00000002"[..]);
        let mut r = reader(&out);
        assert_eq!(r.read_line().unwrap().as_deref(), Some("command=ls-refs"));
        assert_eq!(r.read().unwrap(), Packet::Delim);
        assert_eq!(r.read().unwrap(), Packet::Data(b"peel".to_vec()));
        assert_eq!(r.read().unwrap(), Packet::Flush);
        assert_eq!(r.read().unwrap(), Packet::ResponseEnd);
    }

    #[test]
    fn bad_lengths_are_malformed_not_panics() {
        for bytes in [&b"0003"[..], b"zzzz", b"fff0", b"0010abc", b"00", b"ffff"] {
            match reader(bytes).read() {
                Err(PktError::Malformed(_)) => {}
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn err_packet_is_the_server_message() {
        match reader(b"0016ERR access denied\n").read() {
            Err(PktError::Server(m)) => assert_eq!(m, "access denied"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn side_band_joins_channel_one_and_skips_progress() {
        let mut stream = Vec::new();
        write_data(&mut stream, b"\x01PACK");
        write_data(&mut stream, b"\x02Counting objects\r");
        write_data(&mut stream, b"\x01data");
        write_flush(&mut stream);
        let mut out = Vec::new();
        SideBand::new(reader(&stream))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"PACKdata");
    }

    #[test]
    fn side_band_error_channel_is_surfaced() {
        let mut stream = Vec::new();
        write_data(&mut stream, b"\x01PACK");
        write_data(&mut stream, b"\x03fatal: out of memory\n");
        let mut out = Vec::new();
        let err = SideBand::new(reader(&stream))
            .read_to_end(&mut out)
            .unwrap_err();
        match PktError::from_io(err) {
            PktError::Server(m) => assert_eq!(m, "fatal: out of memory"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn side_band_truncated_stream_is_malformed() {
        let mut stream = Vec::new();
        write_data(&mut stream, b"\x01PACK");
        let mut out = Vec::new();
        let err = SideBand::new(reader(&stream))
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(matches!(PktError::from_io(err), PktError::Malformed(_)));
    }
}
