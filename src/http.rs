//! The HTTP(S) client that `fetch` and `git-shallow` share: ureq with rustls (ring), set up on
//! purpose rather than with ureq's defaults.
//!
//! - Trust: the embedded Mozilla roots (webpki-root-certs), plus `--ca-file` and `SSL_CERT_FILE`
//!   when given, or only the `--ca-file` certificates with `ca_file_only`. Verification cannot be
//!   turned off. A trust file that cannot be read fails https:// requests only.
//! - Deadlines: names are resolved through [`net::resolve`], so DNS obeys the deadline too; every
//!   request carries the time left as ureq's global timeout, a connect timeout and a per-read idle
//!   timeout, so a server that stalls mid-body is cut off.
//! - Proxies: `HTTPS_PROXY`/`https_proxy`, lower-case-only `http_proxy` (as curl, against
//!   "httpoxy", where a CGI request header `Proxy:` becomes `HTTP_PROXY`), `ALL_PROXY`/`all_proxy`
//!   and `NO_PROXY`/`no_proxy`. ureq reads these itself by default; here it is told not to.
//! - Redirects are followed here, not by ureq: at most [`MAX_REDIRECTS`], never from https to
//!   http, and credentials (URL userinfo, authentication and every header the user supplied) are
//!   dropped once a redirect leaves the original scheme, host and port (RFC 9110 section 15.4).
//! - Errors become the exit-code enum: DNS 68, refused/unreachable 69, TLS 78 with the reason,
//!   timeout 124, HTTP status 76 (the caller decides which statuses fail).
//! - Secrets are never printed: URLs display without their password and with secret-looking
//!   query values masked, credential headers display as `***`.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use ureq::config::Config;
use ureq::http::{StatusCode, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Proxy};

use crate::error::{describe_io, Error};
use crate::log;
use crate::net::{self, ResolveError};
use crate::supervisor::Deadline;

/// Redirects followed before giving up, as curl's and git's defaults are near.
pub const MAX_REDIRECTS: usize = 10;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may send nothing at all before the transfer counts as stalled.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// ureq keeps at most this many resolved addresses.
const MAX_ADDRESSES: usize = 16;
const USER_AGENT: &str = concat!("initbox/", env!("CARGO_PKG_VERSION"));
/// What a masked secret prints as.
pub const MASK: &str = "***";

/// An `http` or `https` URL, split into the parts initbox needs. Userinfo is kept apart from the
/// address, so it is sent as an `Authorization` header and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    user: Option<String>,
    password: Option<String>,
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    /// `host` or `[v6]`, with `:port` when the URL named one.
    authority: String,
    /// Starts with `/`; includes the query, never a fragment.
    path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let invalid = |why: &str| format!("invalid URL '{}': {why}", redact_url_text(text));
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(invalid("only http:// and https:// are supported"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid(
                "spaces and control characters must be percent-encoded",
            ));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(percent_decode(password))),
                    None => (info, None),
                };
                (Some(percent_decode(user)), password)
            }
        };
        let (host, port_text) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, tail) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("bad IPv6 address"));
            }
            (host, tail.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
        {
            return Err(invalid("bad character in host name"));
        }
        let default_port = if https { 443 } else { 80 };
        let port = match port_text {
            None | Some("") => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                // `user:pa/ss@host`: the authority ends at the `/`, so the password reads as a port.
                _ if text.contains('@') => {
                    return Err(invalid(
                        "a user name or password holding '/', '?' or '#' must be \
                         percent-encoded (%2F, %3F, %23)",
                    ))
                }
                _ => return Err(invalid("port must be 1-65535")),
            },
        };
        let host = host.to_ascii_lowercase();
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Url {
            https,
            user,
            password,
            host,
            port,
            authority,
            path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query, e.g. `/repo.git/info/refs?service=git-upload-pack`.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The URL as sent on the wire: without userinfo, which travels as a header instead.
    pub fn without_credentials(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.path)
    }

    /// `user` and `password` from the userinfo, percent-decoded.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.user
            .as_deref()
            .map(|user| (user, self.password.as_deref().unwrap_or("")))
    }

    /// Same scheme, host and port: where credentials may follow a redirect.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }

    /// A new URL with `path` (and query) replaced, e.g. for git's `info/refs` beside a repo URL.
    pub fn with_path(&self, path: &str) -> Url {
        let mut url = self.clone();
        url.path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        url
    }

    /// Resolves a `Location` header against this URL (RFC 3986 section 5.2, for the forms servers
    /// send: absolute, scheme-relative, absolute-path and relative-path). Userinfo never carries
    /// over.
    pub fn join(&self, location: &str) -> Result<Url, String> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        let mut next = if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(location)?
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme()))?
        } else if lower.contains("://") || lower.starts_with("mailto:") {
            return Err(format!(
                "redirect to an unsupported URL '{}'",
                redact_url_text(location)
            ));
        } else {
            let mut next = self.clone();
            let location = location.split('#').next().unwrap_or_default();
            next.path = if location.starts_with('/') {
                location.to_string()
            } else if location.starts_with('?') {
                let base = self.path.split('?').next().unwrap_or("/");
                format!("{base}{location}")
            } else {
                let base = self.path.split('?').next().unwrap_or("/");
                let directory = &base[..=base.rfind('/').unwrap_or(0)];
                format!("{directory}{location}")
            };
            next.path = remove_dot_segments(&next.path);
            next
        };
        next.user = None;
        next.password = None;
        Ok(next)
    }
}

/// Displays without the password and with secret-looking query values masked. A user name
/// without a password is masked too: it is then often a token (`https://TOKEN@github.com/`).
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        if let Some(user) = &self.user {
            match self.password {
                Some(_) => write!(f, "{user}:{MASK}@")?,
                None => write!(f, "{MASK}@")?,
            }
        }
        write!(f, "{}{}", self.authority, redact_query(&self.path))
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn remove_dot_segments(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters whose names contain one of these have their values masked when printed:
/// signed-URL signatures, tokens, keys.
const SECRET_QUERY_WORDS: &[&str] = &[
    "sig",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "credential",
    "auth",
];

fn redact_query(path: &str) -> String {
    let Some((path, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if looks_secret(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", parameters.join("&"))
}

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_QUERY_WORDS.iter().any(|word| name.contains(word))
}

/// A URL as the user typed it, with any userinfo masked; for messages about text that did not
/// parse as a [`Url`], and for proxy URLs. When what follows a `:` in the authority is no port,
/// the password may hold an unencoded `/`, `?` or `#`: the userinfo then ends at the last `@`.
/// The user name is shown only when a password follows it and it holds none of those.
pub fn redact_url_text(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(at) => text.split_at(at + 3),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let cut_short = authority
        .split_once(':')
        .is_some_and(|(_, port)| !port.bytes().all(|b| b.is_ascii_digit()));
    let userinfo_end = match authority.rfind('@') {
        Some(at) => Some(at),
        None if cut_short => rest.rfind('@'),
        None => None,
    };
    let Some(at) = userinfo_end else {
        return format!(
            "{scheme}{authority}{}",
            redact_query(&rest[authority_end..])
        );
    };
    let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
    let shown_user = userinfo
        .split_once(':')
        .map(|(user, _)| user)
        .filter(|user| !user.contains(['/', '?', '#']));
    let tail = match after.find(['?', '#']) {
        Some(query) => format!("{}{}", &after[..query], redact_query(&after[query..])),
        None => after.to_string(),
    };
    match shown_user {
        Some(user) => format!("{scheme}{user}:{MASK}@{tail}"),
        None => format!("{scheme}{MASK}@{tail}"),
    }
}

/// A request header. Headers the user supplied and authentication headers are credentials: their
/// values print as `***` and they are never sent to another origin; the protocol headers initbox
/// adds itself (`Git-Protocol`, `Content-Type`) are not.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
    credential: bool,
}

impl Header {
    /// A protocol header of initbox's own.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
            credential: false,
        }
    }

    /// A header the user supplied or an authentication header. Whatever its name (`X-Vault-Pass`,
    /// `X-JFrog-Art-Api`), it may carry a secret, so it is treated as one.
    pub fn credential(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            credential: true,
            ..Header::new(name, value)
        }
    }

    /// Parses `Name: value`, as curl's `-H`; the result is a credential.
    pub fn parse(text: &str) -> Result<Header, String> {
        let (name, value) = text.split_once(':').ok_or_else(|| {
            format!(
                "invalid header '{}': use 'Name: value'",
                redact_header_text(text)
            )
        })?;
        let header = Header::credential(name.trim(), value.trim());
        header.validate()?;
        Ok(header)
    }

    pub fn validate(&self) -> Result<(), String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        // The name is not quoted: a malformed header (`Authorization Bearer TOKEN: x`) puts the
        // secret in it.
        if self.name.is_empty() {
            return Err("invalid header: the name is empty".to_string());
        }
        if let Some(at) = self.name.bytes().position(|b| !token(b)) {
            return Err(format!(
                "invalid header name: character {} is not allowed in a name (use 'Name: value')",
                at + 1
            ));
        }
        if self
            .value
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(format!("header {}: value has a line break", self.name));
        }
        Ok(())
    }

    /// Whether the header may carry a credential: never printed, and dropped when a redirect
    /// leaves the original origin.
    pub fn is_credential(&self) -> bool {
        self.credential
    }

    /// `Name: value` for messages, the value masked when it is a credential.
    pub fn redacted(&self) -> String {
        if self.is_credential() {
            format!("{}: {MASK}", self.name)
        } else {
            format!("{}: {}", self.name, self.value)
        }
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact_header_text(text: &str) -> String {
    match text.split_once(':') {
        Some((name, _)) => format!("{name}: {MASK}"),
        None => MASK.to_string(),
    }
}

/// A secret from a file (a mounted Secret): trailing line breaks dropped, an empty file refused.
/// Read when the job runs, not while parsing, so `--check-args` needs no Secret mounted.
pub fn read_secret_file(path: &std::path::Path, option: &str) -> Result<String, Error> {
    let what = format!("{option} {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&what, &e))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(Error::Data(format!("{what}: the file is empty")));
    }
    Ok(text.to_string())
}

/// `Authorization: Bearer` with the token of `--bearer-file PATH`.
pub fn bearer_from_file(path: &std::path::Path) -> Result<Header, Error> {
    let token = read_secret_file(path, "--bearer-file")?;
    let header = Header::credential("Authorization", format!("Bearer {}", token.trim()));
    header.validate().map_err(|_| {
        Error::Data(format!(
            "--bearer-file {}: the token has a line break inside",
            path.display()
        ))
    })?;
    Ok(header)
}

/// `Authorization: Basic ...` for a user and password (RFC 7617).
pub fn basic_auth(user: &str, password: &str) -> Header {
    Header::credential(
        "Authorization",
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How the client connects and what it trusts.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before it counts as stalled.
    pub read_timeout: Duration,
    /// PEM files whose certificates are trusted in addition to the Mozilla roots.
    pub ca_files: Vec<PathBuf>,
    /// Trust only `ca_files`: no Mozilla roots, no `SSL_CERT_FILE`.
    pub ca_file_only: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            ca_files: Vec::new(),
            ca_file_only: false,
        }
    }
}

/// The proxies chosen from the environment, on purpose.
#[derive(Clone, Debug, Default)]
struct Proxies {
    https: Option<(String, Proxy)>,
    http: Option<(String, Proxy)>,
    no_proxy: Vec<String>,
}

impl Proxies {
    fn from_env() -> Result<Proxies, Error> {
        let lookup = |names: &[&'static str]| -> Option<(&'static str, String)> {
            names.iter().find_map(|name| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (*name, v.trim().to_string()))
            })
        };
        let build =
            |found: Option<(&'static str, String)>| -> Result<Option<(String, Proxy)>, Error> {
                let Some((name, value)) = found else {
                    return Ok(None);
                };
                let shown = redact_url_text(&value);
                let lower = value.to_ascii_lowercase();
                if lower.contains("://") && !lower.starts_with("http://") {
                    return Err(Error::usage(format!(
                        "{name}={shown}: only http:// proxies are supported"
                    )));
                }
                // Our own parser first: it refuses the forms ureq would read differently, such as
                // a password with a `/`, whose tail ureq takes for the proxy's host name.
                let full = if lower.contains("://") {
                    value.clone()
                } else {
                    format!("http://{value}")
                };
                Url::parse(&full).map_err(|why| Error::usage(format!("{name}: {why}")))?;
                let proxy = Proxy::new(&value)
                    .map_err(|_| Error::usage(format!("{name}={shown}: not a valid proxy URL")))?;
                Ok(Some((shown, proxy)))
            };
        let all = ["ALL_PROXY", "all_proxy"];
        let https = build(lookup(&["HTTPS_PROXY", "https_proxy"]).or_else(|| lookup(&all)))?;
        // Upper-case HTTP_PROXY is ignored on purpose, as curl does: under CGI it is set from a
        // client's `Proxy:` request header ("httpoxy").
        let http = build(lookup(&["http_proxy"]).or_else(|| lookup(&all)))?;
        let no_proxy = lookup(&["NO_PROXY", "no_proxy"])
            .map(|(_, list)| {
                list.split(',')
                    .map(|entry| entry.trim().to_ascii_lowercase())
                    .filter(|entry| !entry.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Proxies {
            https,
            http,
            no_proxy,
        })
    }

    fn for_url(&self, url: &Url) -> Option<&(String, Proxy)> {
        if no_proxy_matches(&self.no_proxy, url.host()) {
            return None;
        }
        if url.is_https() {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
    }
}

/// `NO_PROXY` as curl reads it: `*` for all, otherwise host names that match themselves and
/// their subdomains (a leading dot is optional), and IP literals; ports are ignored.
fn no_proxy_matches(list: &[String], host: &str) -> bool {
    list.iter().any(|entry| {
        let entry = entry.trim_start_matches("*.").trim_start_matches('.');
        let entry = match entry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or_default(),
            None => entry,
        };
        entry == "*"
            || host == entry
            || host
                .strip_suffix(entry)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

/// The certificates to trust, per [`Settings`].
fn root_certificates(settings: &Settings) -> Result<Vec<Certificate<'static>>, Error> {
    let mut roots = Vec::new();
    if !settings.ca_file_only {
        roots.extend(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| Certificate::from_der(der.as_ref())),
        );
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
            roots.extend(read_pem_certificates(Path::new(&path), "SSL_CERT_FILE")?);
        }
    }
    for path in &settings.ca_files {
        roots.extend(read_pem_certificates(path, "--ca-file")?);
    }
    Ok(roots)
}

fn read_pem_certificates(path: &Path, option: &str) -> Result<Vec<Certificate<'static>>, Error> {
    let what = format!("{option} {}", path.display());
    let pem = std::fs::read(path).map_err(|e| Error::io(&what, &e))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(e) => return Err(Error::Data(format!("{what}: not valid PEM: {e}"))),
        }
    }
    if certificates.is_empty() {
        return Err(Error::Data(format!(
            "{what}: no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)"
        )));
    }
    Ok(certificates)
}

/// Resolves through [`net::resolve`], so a resolver that does not answer cannot outlive the
/// deadline, and a name that does not exist is told apart from a resolver that failed.
#[derive(Debug)]
struct DeadlineResolver {
    deadline: Deadline,
}

/// Carries a [`ResolveError`] through ureq, to be recognised again in [`classify`].
#[derive(Debug)]
struct ResolveFailure(ResolveError);

impl fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ResolveFailure {}

impl Resolver for DeadlineResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addresses = net::resolve(host, port, &self.deadline)
            .map_err(|e| ureq::Error::Other(Box::new(ResolveFailure(e))))?;
        let mut resolved = self.empty();
        for address in addresses.into_iter().take(MAX_ADDRESSES) {
            resolved.push(address);
        }
        Ok(resolved)
    }
}

/// The request method, with the body for POST.
#[derive(Clone, Copy, Debug)]
pub enum Method<'a> {
    Get,
    Post(&'a [u8]),
}

impl Method<'_> {
    fn name(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post(_) => "POST",
        }
    }
}

/// An HTTP client bound to one deadline; built once per applet run.
pub struct Client {
    agent: Agent,
    /// Why the trust settings cannot be used (`SSL_CERT_FILE` or `--ca-file` missing or not
    /// PEM). Only https:// requests fail on it: a plain http:// one checks no certificate.
    tls_unusable: Option<Error>,
    proxies: Proxies,
    settings: Settings,
    deadline: Deadline,
}

impl Client {
    pub fn new(settings: &Settings, deadline: &Deadline) -> Result<Client, Error> {
        let (roots, tls_unusable) = match root_certificates(settings) {
            Ok(roots) => (roots, None),
            Err(err) => (Vec::new(), Some(err)),
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .build();
        let config = Agent::config_builder()
            .tls_config(tls)
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(USER_AGENT)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.read_timeout))
            .timeout_per_write(Some(settings.read_timeout))
            .build();
        let resolver = DeadlineResolver {
            deadline: *deadline,
        };
        Ok(Client {
            agent: Agent::with_parts(config, DefaultConnector::default(), resolver),
            tls_unusable,
            proxies: Proxies::from_env()?,
            settings: settings.clone(),
            deadline: *deadline,
        })
    }

    pub fn get(&self, url: &Url, headers: &[Header]) -> Result<Response, Error> {
        self.request(Method::Get, url, headers)
    }

    pub fn post(&self, url: &Url, headers: &[Header], body: &[u8]) -> Result<Response, Error> {
        self.request(Method::Post(body), url, headers)
    }

    /// Sends the request and follows redirects; returns the final response whatever its status
    /// (see [`Response::is_success`], [`Response::status_error`]).
    pub fn request(
        &self,
        method: Method<'_>,
        url: &Url,
        headers: &[Header],
    ) -> Result<Response, Error> {
        let origin = url;
        let mut method = method;
        let mut current = url.clone();
        let mut hops = 0;
        loop {
            let same_origin = current.same_origin(origin);
            let mut sent: Vec<Header> = headers
                .iter()
                .filter(|header| same_origin || !header.is_credential())
                .cloned()
                .collect();
            if same_origin {
                if let Some((user, password)) = origin.credentials() {
                    if !sent
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("authorization"))
                    {
                        sent.push(basic_auth(user, password));
                    }
                }
            }
            let response = self.send_once(method, &current, &sent)?;
            let status = response.status;
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let Some(location) = response.header("location").map(str::to_string) else {
                return Ok(response);
            };
            drop(response);
            if hops == MAX_REDIRECTS {
                return Err(Error::Remote(format!(
                    "{origin}: more than {MAX_REDIRECTS} redirects (last to {current})"
                )));
            }
            hops += 1;
            let next = current
                .join(&location)
                .map_err(|why| Error::Remote(format!("{current}: bad redirect: {why}")))?;
            if current.is_https() && !next.is_https() {
                return Err(Error::Remote(format!(
                    "{current}: refusing the redirect from https to http ({next}): \
                     use the https URL the server should offer"
                )));
            }
            // 303, and 301/302 after POST as browsers do, become GET without a body.
            if status == 303 || (matches!(status, 301 | 302) && matches!(method, Method::Post(_))) {
                method = Method::Get;
            }
            log::info(
                &format!("{current}: redirected ({status}) to {next}"),
                &[
                    ("url", json!(current.to_string())),
                    ("status", json!(status)),
                    ("location", json!(next.to_string())),
                ],
            );
            current = next;
        }
    }

    fn send_once(
        &self,
        method: Method<'_>,
        url: &Url,
        headers: &[Header],
    ) -> Result<Response, Error> {
        self.deadline.check(format!("{} {url}", method.name()))?;
        if let (true, Some(err)) = (url.is_https(), &self.tls_unusable) {
            return Err(err.clone());
        }
        let target = url.without_credentials();
        let proxy = self.proxies.for_url(url);
        let fail = |err: ureq::Error| {
            classify(
                err,
                method.name(),
                url,
                &self.settings,
                &self.deadline,
                proxy.map(|p| p.0.as_str()),
            )
        };
        let proxy = proxy.map(|p| p.1.clone());
        let remaining = self.deadline.remaining();
        let result = match method {
            Method::Get => prepare(self.agent.get(&target), headers, proxy, remaining).call(),
            Method::Post(body) => {
                prepare(self.agent.post(&target), headers, proxy, remaining).send(body)
            }
        };
        let response = result.map_err(fail)?;
        let (parts, body) = response.into_parts();
        Ok(Response {
            status: parts.status.as_u16(),
            url: url.clone(),
            method: method.name(),
            headers: parts.headers,
            body: Some(body),
            settings: self.settings.clone(),
            deadline: self.deadline,
        })
    }
}

/// Headers, proxy and the time left, the same for every method.
fn prepare<B>(
    request: ureq::RequestBuilder<B>,
    headers: &[Header],
    proxy: Option<Proxy>,
    remaining: Option<Duration>,
) -> ureq::RequestBuilder<B> {
    headers
        .iter()
        .fold(request, |request, header| {
            request.header(header.name.as_str(), header.value.as_str())
        })
        .config()
        .proxy(proxy)
        .timeout_global(remaining)
        .build()
}

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    /// The URL that answered, after redirects.
    pub url: Url,
    method: &'static str,
    headers: ureq::http::HeaderMap,
    body: Option<ureq::Body>,
    settings: Settings,
    deadline: Deadline,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The decoded body length, when the server said it and no content-encoding changes it.
    pub fn content_length(&self) -> Option<u64> {
        if self
            .header("content-encoding")
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
        {
            return None;
        }
        self.header("content-length")?.trim().parse().ok()
    }

    /// `Retry-After` in its delay-seconds form (RFC 9110 section 10.2.3); the HTTP-date form is
    /// not read, and the caller's backoff applies instead.
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds: u64 = self.header("retry-after")?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }

    /// `HTTP 404 Not Found` for messages.
    pub fn status_line(&self) -> String {
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        format!("HTTP {} {reason}", self.status)
            .trim_end()
            .to_string()
    }

    /// The error (76) for a response the caller does not accept.
    pub fn status_error(&self) -> Error {
        Error::Remote(format!(
            "{} {}: {}",
            self.method,
            self.url,
            self.status_line()
        ))
    }

    /// Whether a retry may get a better answer: 408, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 408 | 429) || self.status >= 500
    }

    /// The body as a stream, decoded from gzip when the server compressed it. Read errors are
    /// `io::Error`s; [`BodyReader::error`] turns one into the exit-code enum.
    pub fn into_body(mut self) -> BodyReader {
        let body = self.body.take().expect("the body is taken once");
        BodyReader {
            reader: body.into_reader(),
            url: self.url.clone(),
            method: self.method,
            settings: self.settings.clone(),
            deadline: self.deadline,
        }
    }
}

/// A streaming response body; memory use does not depend on its size.
pub struct BodyReader {
    reader: ureq::BodyReader<'static>,
    url: Url,
    method: &'static str,
    settings: Settings,
    deadline: Deadline,
}

impl BodyReader {
    /// The error enum for an `io::Error` returned by `read`.
    pub fn error(&self, err: io::Error) -> Error {
        classify(
            ureq::Error::from(err),
            self.method,
            &self.url,
            &self.settings,
            &self.deadline,
            None,
        )
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Whether an error from this module is worth a retry: the network or the server may do better
/// next time (refused, reset, timed out, temporary DNS failure).
pub fn is_transient(err: &Error) -> bool {
    matches!(err, Error::Unavailable(_) | Error::Timeout(_))
}

/// Maps a ureq error to the exit-code enum with a message that names the URL and what to do.
fn classify(
    err: ureq::Error,
    method: &str,
    url: &Url,
    settings: &Settings,
    deadline: &Deadline,
    proxy: Option<&str>,
) -> Error {
    let at = format!("{method} {url}");
    let via = proxy
        .map(|p| format!(" (via proxy {p})"))
        .unwrap_or_default();
    match err {
        ureq::Error::Other(boxed) => match boxed.downcast::<ResolveFailure>() {
            Ok(failure) => match failure.0 {
                ResolveError::NotFound(why) => {
                    Error::HostUnknown(format!("{at}: cannot resolve the host: {why}"))
                }
                ResolveError::Temporary(why) => Error::Unavailable(format!(
                    "{at}: name resolution failed for {}: {why}",
                    url.host()
                )),
                ResolveError::TimedOut => {
                    deadline.timeout_error(format!("{at}: resolving {}", url.host()))
                }
            },
            Err(other) => Error::Remote(format!("{at}: {other}")),
        },
        ureq::Error::HostNotFound => {
            Error::HostUnknown(format!("{at}{via}: cannot resolve the host name"))
        }
        ureq::Error::Timeout(kind) => match kind {
            ureq::Timeout::Global => deadline.timeout_error(&at),
            ureq::Timeout::Connect => Error::Timeout(format!(
                "{at}{via}: connect timed out after {} (--connect-timeout)",
                crate::cli::format_duration(settings.connect_timeout)
            )),
            ureq::Timeout::PerRead | ureq::Timeout::RecvBody | ureq::Timeout::RecvResponse => {
                Error::Timeout(format!(
                    "{at}: the server sent nothing for {} (--read-timeout)",
                    crate::cli::format_duration(settings.read_timeout)
                ))
            }
            other => Error::Timeout(format!("{at}: timed out ({other})")),
        },
        ureq::Error::Io(e) => classify_io(&e, &at, &via, url, deadline),
        ureq::Error::Rustls(e) => tls_error(&e, &at, url),
        ureq::Error::ConnectionFailed => {
            Error::Unavailable(format!("{at}{via}: connection failed"))
        }
        ureq::Error::ConnectProxyFailed(why) => {
            Error::Unavailable(format!("{at}{via}: the proxy refused the tunnel: {why}"))
        }
        ureq::Error::Tls(why) => Error::Tls(format!("{at}: TLS failed: {why}")),
        ureq::Error::TlsRequired => Error::Tls(format!("{at}: TLS required but not negotiated")),
        ureq::Error::Protocol(e) => Error::Remote(format!(
            "{at}: the server's answer is not valid HTTP/1.1: {e}"
        )),
        ureq::Error::Decompress(_, e) => Error::Remote(format!(
            "{at}: the gzip-encoded body is corrupt: {}",
            describe_io(&e)
        )),
        ureq::Error::LargeResponseHeader(size, limit) => Error::Remote(format!(
            "{at}: response headers too large ({size} bytes, limit {limit})"
        )),
        other => Error::Remote(format!("{at}: {other}")),
    }
}

fn classify_io(err: &io::Error, at: &str, via: &str, url: &Url, deadline: &Deadline) -> Error {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_error(tls, at, url);
    }
    let target = format!("{}:{}", url.host(), url.port());
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Error::Unavailable(format!(
            "{at}{via}: connection refused by {target} (is the server listening?)"
        )),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Error::Unavailable(
            format!("{at}{via}: {target} unreachable: {}", describe_io(err)),
        ),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Error::Unavailable(format!(
            "{at}{via}: connection closed by the server: {}",
            describe_io(err)
        )),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock if deadline.expired() => {
            deadline.timeout_error(at)
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            Error::Timeout(format!("{at}{via}: timed out: {}", describe_io(err)))
        }
        _ => Error::Unavailable(format!("{at}{via}: {}", describe_io(err))),
    }
}

/// TLS failures (78) with the reason a user can act on.
fn tls_error(err: &rustls::Error, at: &str, url: &Url) -> Error {
    use rustls::CertificateError as Cert;
    let reason = match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => "certificate not trusted (unknown issuer): add its CA with \
                                    --ca-file or SSL_CERT_FILE"
                .to_string(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => format!(
                "certificate name mismatch: it is not valid for '{}'",
                url.host()
            ),
            Cert::Expired | Cert::ExpiredContext { .. } => {
                "certificate expired (check the server's certificate and this machine's clock)"
                    .to_string()
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                "certificate not valid yet (check this machine's clock)".to_string()
            }
            Cert::Revoked => "certificate revoked".to_string(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server aborted the TLS handshake ({alert:?})")
        }
        other => format!("TLS handshake failed: {other}"),
    };
    Error::Tls(format!("{at}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_userinfo_apart_and_never_print_passwords() {
        let url =
            Url::parse("https://bob:s%40cret@Example.com:8443/a/b?x=1&token=abc#frag").unwrap();
        assert_eq!(url.credentials(), Some(("bob", "s@cret")));
        assert_eq!(url.host(), "example.com");
        assert_eq!(url.port(), 8443);
        assert_eq!(
            url.without_credentials(),
            "https://example.com:8443/a/b?x=1&token=abc"
        );
        let shown = url.to_string();
        assert_eq!(shown, "https://bob:***@example.com:8443/a/b?x=1&token=***");
        assert!(!format!("{url:?}").contains("cret"));
        assert_eq!(
            Url::parse("http://[::1]:80").unwrap().without_credentials(),
            "http://[::1]/"
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://a b/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let err = Url::parse("ftp://u:hunter2@h/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redirect_locations_resolve_per_rfc_3986() {
        let base = Url::parse("https://u:p@h.example/a/b/c?q=1").unwrap();
        let join = |location: &str| base.join(location).unwrap().to_string();
        assert_eq!(join("d"), "https://h.example/a/b/d");
        assert_eq!(join("../d?x"), "https://h.example/a/d?x");
        assert_eq!(join("/top"), "https://h.example/top");
        assert_eq!(join("?y=2"), "https://h.example/a/b/c?y=2");
        assert_eq!(join("//other:81/p"), "https://other:81/p");
        assert_eq!(join("http://plain/"), "http://plain/");
        assert!(base.join("file:///etc/passwd").is_err());
        assert_eq!(base.join("d").unwrap().credentials(), None);
        assert!(base.same_origin(&base.join("/x").unwrap()));
        assert!(!base.same_origin(&base.join("//other/").unwrap()));
    }

    #[test]
    fn credential_headers_are_masked() {
        let header = Header::parse("Authorization: Bearer abc").unwrap();
        assert!(header.is_credential());
        assert_eq!(header.redacted(), "Authorization: ***");
        assert_eq!(format!("{header:?}"), "Authorization: ***");
        assert!(Header::parse("X-Api-Key: k").unwrap().is_credential());
        // Issue 9 #4: whatever its name, a header the user gave is a credential.
        assert!(Header::parse("X-Vault-Pass: p").unwrap().is_credential());
        assert!(basic_auth("u", "p").is_credential());
        let plain = Header::new("Accept", "text/plain");
        assert!(!plain.is_credential());
        assert_eq!(plain.redacted(), "Accept: text/plain");
        assert!(Header::parse("no colon secret")
            .unwrap_err()
            .contains("***"));
        assert!(Header::parse("Bad Name: v").is_err());
    }

    #[test]
    fn basic_auth_is_rfc_7617() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame").value,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn no_proxy_matches_hosts_and_subdomains() {
        let list: Vec<String> = ["internal.example", ".svc", "10.0.0.1", "[::1]:8080"]
            .map(String::from)
            .to_vec();
        assert!(no_proxy_matches(&list, "internal.example"));
        assert!(no_proxy_matches(&list, "a.internal.example"));
        assert!(no_proxy_matches(&list, "db.ns.svc"));
        assert!(no_proxy_matches(&list, "10.0.0.1"));
        assert!(no_proxy_matches(&list, "::1"));
        assert!(!no_proxy_matches(&list, "notinternal.example"));
        assert!(!no_proxy_matches(&list, "example.com"));
        assert!(no_proxy_matches(&["*".to_string()], "anything"));
    }

    /// Issue 9 #5: passwords with `/`, `?`, `#`, tokens as user names, malformed headers.
    #[test]
    fn secrets_in_odd_places_are_masked() {
        for text in [
            "http://alice:SECRET/TOKEN@h/",
            "http://alice:SECRET?TOKEN@h/",
            "http://alice:SECRET#TOKEN@h/",
        ] {
            let err = Url::parse(text).unwrap_err();
            assert!(!err.contains("SECRET") && !err.contains("TOKEN"), "{err}");
            assert!(err.contains("percent-encoded"), "{err}");
            assert_eq!(redact_url_text(text), "http://alice:***@h/");
        }
        let token_as_user = Url::parse("https://TOKEN@github.com/o/r.git").unwrap();
        assert_eq!(token_as_user.to_string(), "https://***@github.com/o/r.git");
        assert_eq!(
            redact_url_text("http://TOKEN@proxy:3128"),
            "http://***@proxy:3128"
        );
        let err = Header::parse("Authorization Bearer TOKEN: x").unwrap_err();
        assert!(!err.contains("TOKEN"), "{err}");
    }

    #[test]
    fn redacting_raw_url_text() {
        assert_eq!(
            redact_url_text("http://u:pw@h/p?sig=1"),
            "http://u:***@h/p?sig=***"
        );
        assert_eq!(redact_url_text("h:3128"), "h:3128");
        // An `@` in the path or query is no userinfo.
        assert_eq!(
            redact_url_text("http://h:81/@scope/p?mail=a@b"),
            "http://h:81/@scope/p?mail=a@b"
        );
    }
}
