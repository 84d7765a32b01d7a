//! The HTTP(S) client that every applet speaking HTTP shares: ureq with rustls (ring), set up on
//! purpose rather than with ureq's defaults. One file per concern: [`options`] (the one option
//! set and its help), [`url`] (parsing and redaction), [`auth`] (headers and credentials),
//! [`proxy`], [`tls`] (trust and client certificates), [`classify`] (errors to exit codes) and
//! [`retry`]; this file holds the client, its requests and responses.
//!
//! - Deadlines: names are resolved through [`net::resolve`], so DNS obeys the deadline too; every
//!   request carries the time left as ureq's global timeout, a connect timeout and a per-read idle
//!   timeout, so a server that stalls mid-body is cut off.
//! - Redirects are followed here, not by ureq: at most [`MAX_REDIRECTS`], never from https to
//!   http, and credentials (URL userinfo, authentication and every header the user supplied) are
//!   dropped once a redirect leaves the original scheme, host and port (RFC 9110 section 15.4).

mod auth;
mod classify;
mod options;
mod proxy;
mod retry;
mod tls;
mod url;

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use serde_json::json;
use ureq::config::Config;
use ureq::http::{StatusCode, Uri};
use ureq::tls::TlsConfig;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Proxy};

pub use self::auth::{basic_auth, bearer_from_file, read_secret_file, Header};
use self::classify::{classify, Context};
pub use self::classify::{is_transient, tls_error};
pub use self::options::{env_value, Options, HELP};
use self::proxy::Proxies;
pub use self::retry::{Failure, Retries};
#[cfg(feature = "wait")]
pub(crate) use self::tls::rustls_config;
pub use self::url::{redact_url_text, Url, MASK};
use crate::error::Error;
use crate::log;
use crate::net::{self, ResolveError};
use crate::supervisor::Deadline;

/// Redirects followed before giving up, as curl's and git's defaults are near.
pub const MAX_REDIRECTS: usize = 10;
/// ureq keeps at most this many resolved addresses.
const MAX_ADDRESSES: usize = 16;
const USER_AGENT: &str = concat!("initbox/", env!("CARGO_PKG_VERSION"));

/// Resolves through [`net::resolve`], so a resolver that does not answer cannot outlive the
/// deadline, and a name that does not exist is told apart from a resolver that failed.
#[derive(Debug)]
struct DeadlineResolver {
    deadline: Deadline,
}

/// Carries a [`ResolveError`] through ureq, to be recognised again in [`classify`].
#[derive(Debug)]
pub(super) struct ResolveFailure(ResolveError);

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
    pub fn name(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post(_) => "POST",
        }
    }
}

/// An HTTP client bound to one deadline; built once per applet run.
pub struct Client {
    agent: Agent,
    /// Why the TLS settings cannot be used (`SSL_CERT_FILE`, `--ca-file`, `--cert` or `--key`
    /// missing or unusable). Only https:// requests fail on it: a plain http:// one checks no
    /// certificate.
    tls_unusable: Option<Error>,
    proxies: Proxies,
    context: Context,
    retries: u32,
}

impl Client {
    pub fn new(options: &Options, deadline: &Deadline) -> Result<Client, Error> {
        let (tls, tls_unusable) = match tls::config(options) {
            Ok(tls) => (tls, None),
            Err(err) => (TlsConfig::default(), Some(err)),
        };
        let config = Agent::config_builder()
            .tls_config(tls)
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(USER_AGENT)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.read_timeout))
            .timeout_per_write(Some(options.read_timeout))
            .build();
        let resolver = DeadlineResolver {
            deadline: *deadline,
        };
        Ok(Client {
            agent: Agent::with_parts(config, DefaultConnector::default(), resolver),
            tls_unusable,
            proxies: Proxies::from_env()?,
            context: Context {
                connect_timeout: options.connect_timeout,
                read_timeout: options.read_timeout,
                deadline: *deadline,
            },
            retries: options.retries,
        })
    }

    /// Sends a request whose whole answer the caller reads at once, retrying connect errors,
    /// timeouts and transient statuses (408, 429, 5xx) up to `--retries` times. A response is
    /// returned whatever its status once retries are spent or the status is not transient.
    pub fn request_retrying(
        &self,
        method: Method<'_>,
        url: &Url,
        headers: &[Header],
    ) -> Result<Response, Error> {
        let mut retries = Retries::new(self.retries);
        loop {
            let failure = match self.request(method, url, headers) {
                Ok(response) if !response.is_transient() || retries.spent() => return Ok(response),
                Ok(response) => Failure::status(&response),
                Err(error) => Failure::classified(error),
            };
            retries.pause(
                failure,
                &format!("{} {url}", method.name()),
                &self.context.deadline,
            )?;
        }
    }

    /// How many retries `--retries` allows.
    pub fn retries(&self) -> u32 {
        self.retries
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
        self.context
            .deadline
            .check(format!("{} {url}", method.name()))?;
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
                &self.context,
                proxy.map(|p| p.0.as_str()),
            )
        };
        let proxy = proxy.map(|p| p.1.clone());
        let remaining = self.context.deadline.remaining();
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
            context: self.context,
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
    context: Context,
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

    /// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 section 10.2.3).
    pub fn retry_after(&self) -> Option<Duration> {
        retry::parse_retry_after(self.header("retry-after")?, SystemTime::now())
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
            context: self.context,
        }
    }
}

/// A streaming response body; memory use does not depend on its size.
pub struct BodyReader {
    reader: ureq::BodyReader<'static>,
    url: Url,
    method: &'static str,
    context: Context,
}

impl BodyReader {
    /// The error enum for an `io::Error` returned by `read`.
    pub fn error(&self, err: io::Error) -> Error {
        classify(
            ureq::Error::from(err),
            self.method,
            &self.url,
            &self.context,
            None,
        )
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
