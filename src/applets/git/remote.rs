//! The smart HTTP exchange with one repository: `info/refs`, `ls-refs` and `git-upload-pack`
//! requests with their credentials, their responses turned into pkt-line streams, and every
//! failure into an initbox error (the HTTP body's own, a server `ERR`, a malformed stream).

use std::fs::File;
use std::io::{self, Read};

use super::pack::{self, Oid, Pack};
use super::pktline::PktError;
use super::progress::Progress;
use super::protocol::{self, Advertisement, Fetch, Ref, Wanted};
use crate::error::Error;
use crate::http::{self, Client, Header, Method, Url};
use crate::supervisor::Deadline;

const CONTENT_TYPE_REQUEST: &str = "application/x-git-upload-pack-request";
const CONTENT_TYPE_RESULT: &str = "application/x-git-upload-pack-result";

/// An initbox error carried through `io::Read` (the HTTP body classifies its own failures).
#[derive(Debug)]
struct Carried(Error);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Carried {}

/// A response body whose read errors already carry their exit code.
struct Body(http::BodyReader);

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(Carried(self.0.error(e))))
    }
}

fn from_io(err: io::Error, url: &Url) -> Error {
    match PktError::from_io(err) {
        PktError::Io(e) => {
            if e.get_ref().is_some_and(|inner| inner.is::<Carried>()) {
                if let Ok(carried) = e.into_inner().expect("checked").downcast::<Carried>() {
                    return carried.0;
                }
                unreachable!("checked above");
            }
            Error::io(format!("reading from {url}"), &e)
        }
        other => from_pkt(other, url),
    }
}

fn from_pkt(err: PktError, url: &Url) -> Error {
    match err {
        PktError::Io(e) => from_io(e, url),
        PktError::Server(message) if message.contains("not our ref") => Error::Remote(format!(
            "{url}: the server reported: {message}: it does not have the commit, or does not \
             send commits by id that no branch or tag reaches: check that the commit was \
             pushed, and let the server send it (uploadpack.allowReachableSHA1InWant=true, or \
             uploadpack.allowAnySHA1InWant=true for a commit no ref reaches)"
        )),
        PktError::Server(message) => {
            Error::Remote(format!("{url}: the server reported: {message}"))
        }
        malformed @ PktError::Malformed(_) => Error::Remote(format!("{url}: {malformed}")),
    }
}

pub(super) struct Remote<'a> {
    pub(super) client: &'a Client,
    pub(super) url: &'a Url,
    /// Credential headers, sent by [`Client::request`] to the repository's origin only.
    pub(super) auth: &'a [Header],
}

impl Remote<'_> {
    fn headers(&self, v2: bool, extra: &[(&str, &str)]) -> Vec<Header> {
        let mut headers: Vec<Header> = extra.iter().map(|(n, v)| Header::new(*n, *v)).collect();
        if v2 {
            headers.push(Header::new("Git-Protocol", "version=2"));
        }
        headers.extend_from_slice(self.auth);
        headers
    }

    /// The repository path without a trailing slash, for `info/refs` and `git-upload-pack`.
    fn base_path(&self) -> &str {
        self.url.path().trim_end_matches('/')
    }

    fn check(&self, response: http::Response) -> Result<Body, Error> {
        if response.is_success() {
            return Ok(Body(response.into_body()));
        }
        let status = response.status_error();
        match response.status {
            // Credentials are a permission matter (77), not a protocol fault: a retry with the
            // same settings cannot succeed, the secret given to the pod must change.
            401 | 403 => Err(Error::Permission(format!(
                "{status}: credentials missing or rejected: give them with --username and \
                 --password-file (or --password-env), user:password@ in the URL, --bearer-file, \
                 --basic-auth-from-env or --header; for another host, --credential \
                 URL_PREFIX=VAR or --credential-file URL_PREFIX=PATH"
            ))),
            404 => Err(Error::Remote(format!("{status}: check the repository URL"))),
            _ => Err(status),
        }
    }

    pub(super) fn advertisement(&self, wanted: &Wanted) -> Result<Advertisement, Error> {
        let url = self.url.with_path(&format!(
            "{}/info/refs?service=git-upload-pack",
            self.base_path()
        ));
        let response = self
            .client
            .request_retrying(Method::Get, &url, &self.headers(true, &[]))?;
        let body = self.check(response)?;
        protocol::parse_advertisement(body, wanted).map_err(|e| from_pkt(e, self.url))
    }

    fn upload_pack(&self, v2: bool, body: &[u8]) -> Result<Body, Error> {
        let url = self
            .url
            .with_path(&format!("{}/git-upload-pack", self.base_path()));
        let headers = self.headers(
            v2,
            &[
                ("Content-Type", CONTENT_TYPE_REQUEST),
                ("Accept", CONTENT_TYPE_RESULT),
            ],
        );
        let response = self
            .client
            .request_retrying(Method::Post(body), &url, &headers)?;
        self.check(response)
    }
}

/// Sends one fetch request and receives its pack into `file`.
pub(super) fn fetch_pack(
    remote: &Remote<'_>,
    advertisement: &Advertisement,
    fetch: &Fetch<'_>,
    file: File,
    deadline: &Deadline,
    progress: &mut Progress,
) -> Result<Pack, Error> {
    let response = match (advertisement, fetch) {
        (Advertisement::V0 { capabilities, .. }, Fetch::Shallow { want, depth, .. }) => {
            let request = protocol::fetch_request_v0(want, *depth, capabilities)
                .map_err(|e| from_pkt(e, remote.url))?;
            let body = remote.upload_pack(false, &request)?;
            protocol::read_fetch_response_v0(body).map(|s| Box::new(s) as Box<dyn Read>)
        }
        // Objects by id follow a filtered fetch, which only a v2 server offers.
        _ => {
            let body = remote.upload_pack(true, &protocol::fetch_request_v2(fetch))?;
            protocol::read_fetch_response_v2(body).map(|s| Box::new(s) as Box<dyn Read>)
        }
    }
    .map_err(|e| from_pkt(e, remote.url))?;
    pack::receive(response, file, deadline, progress, &|e| {
        from_io(e, remote.url)
    })
}

/// The object to fetch and, when already known, the commit it peels to.
pub(super) fn resolve(
    remote: &Remote<'_>,
    advertisement: &Advertisement,
    wanted: &Wanted,
) -> Result<(Oid, Option<Oid>), Error> {
    if let Wanted::Commit(id) = wanted {
        return Ok((*id, Some(*id)));
    }
    let listed: Vec<Ref>;
    let refs = match advertisement {
        Advertisement::V0 { refs, .. } => refs,
        Advertisement::V2 { .. } => {
            let body =
                remote.upload_pack(true, &protocol::ls_refs_request(&wanted.candidates()))?;
            listed = protocol::parse_ls_refs(body, wanted).map_err(|e| from_pkt(e, remote.url))?;
            &listed
        }
    };
    let found = protocol::find(refs, wanted).ok_or_else(|| {
        Error::Remote(match wanted {
            Wanted::Head => format!("{}: the repository has no HEAD (is it empty?)", remote.url),
            _ => format!(
                "{}: no ref {} (tried {}): check --ref",
                remote.url,
                match wanted {
                    Wanted::Name(name) => name.as_str(),
                    _ => "",
                },
                wanted.candidates().join(", ")
            ),
        })
    })?;
    Ok((found.id, Some(found.peeled.unwrap_or(found.id))))
}
