//! The smart HTTP conversation with `git-upload-pack`: protocol v2 (`gitprotocol-v2`: `ls-refs`,
//! then `fetch` with `deepen`) and the v0/v1 fallback (`gitprotocol-http`, `gitprotocol-pack`:
//! the `info/refs` advertisement, then `want`/`deepen`/`done`).
//!
//! Only requests and responses live here (the HTTP exchange is in `mod.rs`), so the parsing is
//! tested against byte streams captured from real `git http-backend` runs.

use std::io::Read;

use super::pack::{hex, parse_hex, Oid};
use super::pktline::{
    trim_text, write_delim, write_flush, write_line, Packet, PktError, PktReader, SideBand,
};

/// More v2 capability lines than this are refused: git sends about ten, and an endless list
/// would otherwise grow without bound (issue 9 #9).
pub const MAX_CAPABILITIES: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub id: Oid,
    /// For an annotated tag: the object it points to, peeled to a non-tag.
    pub peeled: Option<Oid>,
    /// For HEAD: the branch it points to.
    pub target: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Advertisement {
    V2 {
        capabilities: Vec<String>,
    },
    V0 {
        refs: Vec<Ref>,
        capabilities: Vec<String>,
    },
}

fn malformed(why: impl Into<String>) -> PktError {
    PktError::Malformed(why.into())
}

/// A malformed-stream error quoting the server's text, escaped (issue 9 #8).
fn malformed_quoting(why: &str, text: &str) -> PktError {
    malformed(format!("{why} '{}'", trim_text(text.as_bytes())))
}

fn parse_id(text: &str) -> Result<Oid, PktError> {
    parse_hex(text).ok_or_else(|| malformed_quoting("bad object id", text))
}

/// Parses the `info/refs` response. A v2 server answers `version 2` and its capabilities; an
/// older one lists its refs, capabilities after a NUL on the first line. Of the refs, only those
/// `wanted` could name are kept: a repository may advertise millions (issue 9 #9).
pub fn parse_advertisement(reader: impl Read, wanted: &Wanted) -> Result<Advertisement, PktError> {
    let mut packets = PktReader::new(reader);
    let mut first = packets.read_line()?;
    if first.as_deref() == Some("# service=git-upload-pack") {
        // The preamble ends with a flush; servers may send it even when they speak v2.
        if packets.read_line()?.is_some() {
            return Err(malformed("no flush after the service line"));
        }
        first = packets.read_line()?;
    } else if first
        .as_deref()
        .is_some_and(|line| line.starts_with("# service="))
    {
        return Err(malformed("the server offered a different service"));
    }
    let Some(first) = first else {
        // An empty repository: flush and nothing else.
        return Ok(Advertisement::V0 {
            refs: Vec::new(),
            capabilities: Vec::new(),
        });
    };
    if first == "version 2" {
        let mut capabilities = Vec::new();
        while let Some(line) = packets.read_line()? {
            if capabilities.len() == MAX_CAPABILITIES {
                return Err(malformed(format!(
                    "the server advertised more than {MAX_CAPABILITIES} capabilities"
                )));
            }
            capabilities.push(line);
        }
        return Ok(Advertisement::V2 { capabilities });
    }
    let (first_ref, caps) = first.split_once('\0').unwrap_or((&first, ""));
    let capabilities: Vec<String> = caps
        .split(' ')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let candidates = wanted.candidates();
    let mut refs: Vec<Ref> = Vec::new();
    let mut line = Some(first_ref.to_string());
    while let Some(text) = line {
        if !text.starts_with("0000000000000000000000000000000000000000 capabilities^{}") {
            let (id, name) = text
                .split_once(' ')
                .ok_or_else(|| malformed_quoting("bad ref line", &text))?;
            let id = parse_id(id)?;
            match name.strip_suffix("^{}") {
                Some(tag) => {
                    if let Some(r) = refs.iter_mut().rev().find(|r| r.name == tag) {
                        r.peeled = Some(id);
                    }
                }
                None if !candidates.iter().any(|c| c == name) => {}
                None => refs.push(Ref {
                    name: name.to_string(),
                    id,
                    peeled: None,
                    target: None,
                }),
            }
        }
        line = packets.read_line()?;
    }
    if let Some(target) = symref_of_head(&capabilities) {
        if let Some(head) = refs.iter_mut().find(|r| r.name == "HEAD") {
            head.target = Some(target);
        }
    }
    Ok(Advertisement::V0 { refs, capabilities })
}

fn symref_of_head(capabilities: &[String]) -> Option<String> {
    capabilities
        .iter()
        .find_map(|c| c.strip_prefix("symref=HEAD:"))
        .map(String::from)
}

fn agent() -> String {
    format!("agent=initbox/{}", env!("CARGO_PKG_VERSION"))
}

/// The v2 `ls-refs` request for the refs that `wanted` could name.
pub fn ls_refs_request(prefixes: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    write_line(&mut body, "command=ls-refs");
    write_line(&mut body, &agent());
    write_delim(&mut body);
    write_line(&mut body, "symrefs");
    write_line(&mut body, "peel");
    for prefix in prefixes {
        write_line(&mut body, &format!("ref-prefix {prefix}"));
    }
    write_flush(&mut body);
    body
}

/// Parses the `ls-refs` response: "ID NAME[ symref-target:T][ peeled:ID]" lines. Refs that
/// `wanted` cannot name are dropped, whatever the server sends.
pub fn parse_ls_refs(reader: impl Read, wanted: &Wanted) -> Result<Vec<Ref>, PktError> {
    let candidates = wanted.candidates();
    let mut packets = PktReader::new(reader);
    let mut refs = Vec::new();
    while let Some(line) = packets.read_line()? {
        let mut fields = line.split(' ');
        let id = fields.next().unwrap_or_default();
        let name = fields
            .next()
            .ok_or_else(|| malformed_quoting("bad ls-refs line", &line))?;
        if !candidates.iter().any(|c| c == name) {
            continue;
        }
        let mut r = Ref {
            name: name.to_string(),
            // An unborn HEAD has no id; it is useless to a clone, so it is skipped.
            id: match id {
                "unborn" => continue,
                _ => parse_id(id)?,
            },
            peeled: None,
            target: None,
        };
        for attribute in fields {
            if let Some(target) = attribute.strip_prefix("symref-target:") {
                r.target = Some(target.to_string());
            } else if let Some(peeled) = attribute.strip_prefix("peeled:") {
                r.peeled = Some(parse_id(peeled)?);
            }
        }
        refs.push(r);
    }
    Ok(refs)
}

/// What `--ref` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    Head,
    Name(String),
    Commit(Oid),
}

impl Wanted {
    pub fn parse(text: &str) -> Wanted {
        match parse_hex(&text.to_ascii_lowercase()) {
            Some(id) => Wanted::Commit(id),
            None if text == "HEAD" => Wanted::Head,
            None => Wanted::Name(text.to_string()),
        }
    }

    /// The full ref names this could mean, in the order `git clone --branch` tries them.
    pub fn candidates(&self) -> Vec<String> {
        match self {
            Wanted::Head => vec!["HEAD".into()],
            Wanted::Name(name) if name.starts_with("refs/") => vec![name.clone()],
            Wanted::Name(name) => vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")],
            Wanted::Commit(_) => Vec::new(),
        }
    }
}

/// The ref `wanted` names among `refs`, or `None`.
pub fn find<'a>(refs: &'a [Ref], wanted: &Wanted) -> Option<&'a Ref> {
    wanted
        .candidates()
        .iter()
        .find_map(|name| refs.iter().find(|r| &r.name == name))
}

/// What a v2 `fetch` asks for, with no negotiation (nothing is held locally).
pub enum Fetch<'a> {
    /// One commit and `depth` commits of history; `filtered`: without blobs (`filter
    /// blob:none`), which a second request fetches by id.
    Shallow {
        want: &'a Oid,
        depth: u32,
        filtered: bool,
    },
    /// Objects by id, the blobs a filtered fetch left out.
    Objects(&'a [Oid]),
}

/// The v2 `fetch` request.
pub fn fetch_request_v2(fetch: &Fetch<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    write_line(&mut body, "command=fetch");
    write_line(&mut body, &agent());
    write_delim(&mut body);
    write_line(&mut body, "no-progress");
    write_line(&mut body, "ofs-delta");
    match fetch {
        Fetch::Shallow {
            want,
            depth,
            filtered,
        } => {
            write_line(&mut body, &format!("deepen {depth}"));
            if *filtered {
                write_line(&mut body, "filter blob:none");
            }
            write_line(&mut body, &format!("want {}", hex(want)));
        }
        Fetch::Objects(wants) => {
            for want in *wants {
                write_line(&mut body, &format!("want {}", hex(want)));
            }
        }
    }
    write_line(&mut body, "done");
    write_flush(&mut body);
    body
}

/// Whether a v2 server's `fetch` takes `filter` (git's `uploadpack.allowFilter`).
pub fn supports_filter(capabilities: &[String]) -> bool {
    capabilities
        .iter()
        .filter_map(|c| c.strip_prefix("fetch="))
        .any(|features| features.split(' ').any(|f| f == "filter"))
}

/// Skips the sections before `packfile` and returns its side-band stream.
pub fn read_fetch_response_v2<R: Read>(reader: R) -> Result<SideBand<R>, PktError> {
    let mut packets = PktReader::new(reader);
    loop {
        let header = match packets.read()? {
            Packet::Data(line) => String::from_utf8_lossy(&line).trim_end().to_string(),
            Packet::Flush | Packet::ResponseEnd => {
                return Err(malformed("the server sent no packfile"))
            }
            Packet::Delim => continue,
        };
        match header.as_str() {
            "packfile" => return Ok(SideBand::new(packets)),
            "shallow-info" | "acknowledgments" | "wanted-refs" => loop {
                match packets.read()? {
                    Packet::Data(_) => {}
                    Packet::Delim => break,
                    _ => return Err(malformed("the server sent no packfile")),
                }
            },
            other => return Err(malformed_quoting("unexpected section", other)),
        }
    }
}

/// The v0 upload-pack request; capabilities only if the server offered them.
pub fn fetch_request_v0(want: &Oid, depth: u32, offered: &[String]) -> Result<Vec<u8>, PktError> {
    for needed in ["shallow", "side-band-64k"] {
        if !offered.iter().any(|c| c == needed) {
            return Err(malformed(format!(
                "the server does not support '{needed}', which a shallow clone needs"
            )));
        }
    }
    let mut caps = vec!["side-band-64k", "shallow"];
    for optional in ["ofs-delta", "no-progress"] {
        if offered.iter().any(|c| c == optional) {
            caps.push(optional);
        }
    }
    let agent = agent();
    caps.push(&agent);
    let mut body = Vec::new();
    write_line(&mut body, &format!("want {} {}", hex(want), caps.join(" ")));
    write_line(&mut body, &format!("deepen {depth}"));
    write_flush(&mut body);
    write_line(&mut body, "done");
    Ok(body)
}

/// Skips the shallow list and the NAK, and returns the side-band stream of the pack.
pub fn read_fetch_response_v0<R: Read>(reader: R) -> Result<SideBand<R>, PktError> {
    let mut packets = PktReader::new(reader);
    // "shallow ID" / "unshallow ID" lines, then a flush.
    while let Some(line) = packets.read_line()? {
        if !line.starts_with("shallow ") && !line.starts_with("unshallow ") {
            return Err(malformed_quoting("unexpected line", &line));
        }
    }
    match packets.read_line()? {
        Some(line) if line == "NAK" || line.starts_with("ACK ") => Ok(SideBand::new(packets)),
        Some(line) => Err(malformed_quoting("unexpected line", &line)),
        None => Err(malformed("the server sent no packfile")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "c2ceb93fb05b4153f7471f31a7bdfb9cbd3e16f7";
    const T: &str = "a2e26d116158a9c97a97acd96f4e8999f53dc2c4";

    fn pkt(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "F" => write_flush(&mut out),
                "D" => write_delim(&mut out),
                text => write_line(&mut out, text),
            }
        }
        out
    }

    #[test]
    fn v2_advertisement_as_git_http_backend_sends_it() {
        let bytes = pkt(&[
            "version 2",
            "agent=git/2.39.5",
            "ls-refs=unborn",
            "fetch=shallow wait-for-done",
            "F",
        ]);
        match parse_advertisement(&bytes[..], &Wanted::Head).unwrap() {
            Advertisement::V2 { capabilities } => {
                assert!(capabilities.contains(&"fetch=shallow wait-for-done".to_string()))
            }
            other => panic!("{other:?}"),
        }
        let mut with_preamble = pkt(&["# service=git-upload-pack", "F"]);
        with_preamble.extend(bytes);
        assert!(matches!(
            parse_advertisement(&with_preamble[..], &Wanted::Head).unwrap(),
            Advertisement::V2 { .. }
        ));
    }

    #[test]
    fn v0_advertisement_with_peeled_tag_and_symref() {
        let first = format!("{C} HEAD\0multi_ack side-band-64k ofs-delta shallow symref=HEAD:refs/heads/master agent=git/2.39.5");
        let bytes = pkt(&[
            "# service=git-upload-pack",
            "F",
            &first,
            &format!("{C} refs/heads/master"),
            &format!("{T} refs/tags/v1"),
            &format!("{C} refs/tags/v1^{{}}"),
            "F",
        ]);
        let v0 = |wanted: &Wanted| match parse_advertisement(&bytes[..], wanted).unwrap() {
            Advertisement::V0 { refs, capabilities } => (refs, capabilities),
            other => panic!("{other:?}"),
        };
        let (refs, capabilities) = v0(&Wanted::Head);
        assert!(capabilities.contains(&"shallow".to_string()));
        assert_eq!(refs.len(), 1, "only what --ref can name is kept");
        assert_eq!(refs[0].target.as_deref(), Some("refs/heads/master"));
        assert_eq!(
            find(&refs, &Wanted::Head).unwrap().id,
            parse_hex(C).unwrap()
        );
        let wanted = Wanted::Name("v1".into());
        let (refs, _) = v0(&wanted);
        let tag = find(&refs, &wanted).unwrap();
        assert_eq!((tag.id, tag.peeled), (parse_hex(T).unwrap(), parse_hex(C)));
    }

    #[test]
    fn ls_refs_response() {
        let bytes = pkt(&[
            &format!("{C} HEAD symref-target:refs/heads/master"),
            &format!("{T} refs/tags/v1 peeled:{C}"),
            "unborn refs/heads/x",
            "F",
        ]);
        let refs = parse_ls_refs(&bytes[..], &Wanted::Head).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].target.as_deref(), Some("refs/heads/master"));
        let refs = parse_ls_refs(&bytes[..], &Wanted::Name("v1".into())).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].peeled, parse_hex(C));
        assert!(parse_ls_refs(&pkt(&["nonsense", "F"])[..], &Wanted::Head).is_err());
    }

    #[test]
    fn issue_9_endless_capabilities_and_escaped_lines() {
        let mut caps = vec!["version 2".to_string()];
        caps.extend((0..=MAX_CAPABILITIES).map(|i| format!("cap{i}")));
        caps.push("F".into());
        let lines: Vec<&str> = caps.iter().map(String::as_str).collect();
        let err = parse_advertisement(&pkt(&lines)[..], &Wanted::Head).unwrap_err();
        assert!(err.to_string().contains("capabilities"), "{err}");
        let err =
            parse_advertisement(&pkt(&["\x1b[31mred\rx", "F"])[..], &Wanted::Head).unwrap_err();
        assert!(!err.to_string().contains('\x1b'), "{err}");
    }

    #[test]
    fn wanted_forms() {
        assert_eq!(Wanted::parse("HEAD"), Wanted::Head);
        assert_eq!(
            Wanted::parse(&C.to_uppercase()),
            Wanted::Commit(parse_hex(C).unwrap())
        );
        assert_eq!(
            Wanted::parse("main").candidates(),
            ["refs/heads/main", "refs/tags/main"]
        );
        assert_eq!(
            Wanted::parse("refs/pull/1/head").candidates(),
            ["refs/pull/1/head"]
        );
    }

    #[test]
    fn fetch_responses_lead_to_the_pack() {
        let mut v2 = pkt(&["shallow-info", &format!("shallow {C}"), "D", "packfile"]);
        let mut sideband = Vec::new();
        super::super::pktline::write_data(&mut sideband, b"\x01PACK");
        write_flush(&mut sideband);
        v2.extend(&sideband);
        let mut out = Vec::new();
        read_fetch_response_v2(&v2[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"PACK");

        let mut v0 = pkt(&[&format!("shallow {C}"), "F", "NAK"]);
        v0.extend(&sideband);
        out.clear();
        read_fetch_response_v0(&v0[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"PACK");

        let err = pkt(&["ERR upload-pack: not our ref"]);
        match read_fetch_response_v2(&err[..]) {
            Err(PktError::Server(m)) => assert!(m.contains("not our ref")),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn requests_are_well_formed() {
        let id = parse_hex(C).unwrap();
        let body = fetch_request_v2(&Fetch::Shallow {
            want: &id,
            depth: 3,
            filtered: false,
        });
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("0012command=fetch\n"));
        assert!(text.contains("000ddeepen 3\n"));
        assert!(!text.contains("filter"));
        assert!(text.ends_with(&format!("0032want {C}\n0009done\n0000")));
        let filtered = fetch_request_v2(&Fetch::Shallow {
            want: &id,
            depth: 1,
            filtered: true,
        });
        assert!(String::from_utf8(filtered)
            .unwrap()
            .contains("0015filter blob:none\n"));
        let blobs = [id, parse_hex(T).unwrap()];
        let text = String::from_utf8(fetch_request_v2(&Fetch::Objects(&blobs))).unwrap();
        assert!(!text.contains("deepen"));
        assert!(text.ends_with(&format!("0032want {C}\n0032want {T}\n0009done\n0000")));
        assert!(supports_filter(&[
            "fetch=shallow wait-for-done filter".into()
        ]));
        assert!(!supports_filter(&["fetch=shallow".into(), "filter".into()]));
        let offered: Vec<String> = ["shallow", "side-band-64k", "ofs-delta"]
            .map(String::from)
            .into();
        let body = String::from_utf8(fetch_request_v0(&id, 1, &offered).unwrap()).unwrap();
        assert!(body.contains(&format!("want {C} side-band-64k shallow ofs-delta agent=")));
        assert!(
            body.ends_with("0000000ddeepen 1\n00000009done\n") || body.ends_with("00000009done\n")
        );
        assert!(fetch_request_v0(&id, 1, &[]).is_err());
    }
}
