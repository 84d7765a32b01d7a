//! pkt-line framing and side-band demultiplexing: arbitrary bytes never panic and never make the
//! reader allocate more than one maximum packet; whatever the side-band yields is no longer than
//! its input; and packets written with the `write_*` functions read back identically.
#![no_main]

use std::io::Read;

use initbox::applets::git::pktline::{
    write_data, write_delim, write_flush, write_line, Packet, PktError, PktReader, SideBand,
    MAX_PKT_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Reads packets until an error; each one is at most a maximum packet.
fn read_all(data: &[u8]) {
    let mut reader = PktReader::new(data);
    loop {
        match reader.read() {
            Ok(Packet::Data(payload)) => assert!(payload.len() + 4 <= MAX_PKT_LEN),
            Ok(_) => {}
            Err(PktError::Io(e)) => panic!("a byte slice cannot fail to read: {e}"),
            Err(_) => break,
        }
    }
    let mut reader = PktReader::new(data);
    while let Ok(Some(line)) = reader.read_line() {
        assert!(line.len() <= 3 * MAX_PKT_LEN, "lossy text of one packet");
    }
    let mut out = Vec::new();
    if let Err(e) = SideBand::new(PktReader::new(data)).read_to_end(&mut out) {
        assert!(
            !matches!(PktError::from_io(e), PktError::Io(_)),
            "a byte slice cannot fail to read"
        );
    }
    assert!(out.len() <= data.len(), "side-band made data up");
}

/// One packet the writer can produce, decoded from the fuzz input.
enum Written {
    Data(Vec<u8>),
    Line(String),
    Flush,
    Delim,
}

fn script(mut data: &[u8]) -> Vec<Written> {
    let mut packets = Vec::new();
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let take = |data: &mut &[u8]| -> Vec<u8> {
            let (len, rest) = match data {
                [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
                _ => (0, *data),
            };
            let len = len.min(rest.len()).min(MAX_PKT_LEN - 5);
            let (payload, rest) = rest.split_at(len);
            *data = rest;
            payload.to_vec()
        };
        packets.push(match op % 4 {
            0 => Written::Data(take(&mut data)),
            1 => Written::Line(String::from_utf8_lossy(&take(&mut data)).into_owned()),
            2 => Written::Flush,
            _ => Written::Delim,
        });
    }
    packets
}

fn round_trip(data: &[u8]) {
    let packets = script(data);
    let mut stream = Vec::new();
    for packet in &packets {
        match packet {
            Written::Data(payload) => write_data(&mut stream, payload),
            Written::Line(line) if line.len() + 5 <= MAX_PKT_LEN => write_line(&mut stream, line),
            Written::Line(_) => write_flush(&mut stream),
            Written::Flush => write_flush(&mut stream),
            Written::Delim => write_delim(&mut stream),
        }
    }
    let mut reader = PktReader::new(&stream[..]);
    for packet in &packets {
        match packet {
            Written::Data(payload) if payload.starts_with(b"ERR ") => {
                assert!(matches!(reader.read(), Err(PktError::Server(_))));
            }
            Written::Data(payload) => {
                assert_eq!(reader.read().unwrap(), Packet::Data(payload.clone()));
            }
            Written::Line(line) if line.starts_with("ERR ") => {
                assert!(matches!(reader.read_line(), Err(PktError::Server(_))));
            }
            Written::Line(line) if line.len() + 5 <= MAX_PKT_LEN => {
                assert_eq!(reader.read_line().unwrap().as_deref(), Some(&line[..]));
            }
            Written::Line(_) | Written::Flush => assert_eq!(reader.read().unwrap(), Packet::Flush),
            Written::Delim => assert_eq!(reader.read().unwrap(), Packet::Delim),
        }
    }
    assert!(reader.into_inner().is_empty(), "bytes left after the last packet");

    // The same payloads on side-band channel 1, with progress between them, join up again.
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for packet in &packets {
        match packet {
            Written::Data(payload) => {
                let payload = &payload[..payload.len().min(MAX_PKT_LEN - 5)];
                write_data(&mut stream, &[&[1], payload].concat());
                expected.extend_from_slice(payload);
            }
            Written::Line(line) => {
                let line = &line.as_bytes()[..line.len().min(MAX_PKT_LEN - 5)];
                write_data(&mut stream, &[&[2], line].concat());
            }
            Written::Flush | Written::Delim => {}
        }
    }
    write_flush(&mut stream);
    stream.extend_from_slice(b"trailing bytes are not read");
    let mut out = Vec::new();
    SideBand::new(PktReader::new(&stream[..]))
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, expected);
}

fuzz_target!(|data: &[u8]| {
    read_all(data);
    round_trip(data);
});
