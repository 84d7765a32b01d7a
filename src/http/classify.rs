//! Errors become the exit-code enum with a message that names the request and what to do: DNS
//! 68, refused/unreachable 69, TLS 78 with the reason, timeout 124, anything else the server did
//! 76 (the caller decides which statuses fail).

use std::io;
use std::time::Duration;

use super::url::Url;
use super::ResolveFailure;
use crate::error::{describe_io, Error};
use crate::net::ResolveError;
use crate::supervisor::Deadline;

/// What a failure is judged against: the limits that may have cut it off. Small and `Copy`, so
/// each response and body carries it instead of a copy of the settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub deadline: Deadline,
}

/// Whether an error from this module is worth a retry: the network or the server may do better
/// next time (refused, reset, timed out, temporary DNS failure).
pub fn is_transient(err: &Error) -> bool {
    matches!(err, Error::Unavailable(_) | Error::Timeout(_))
}

/// Maps a ureq error to the exit-code enum with a message that names the URL and what to do.
pub(super) fn classify(
    err: ureq::Error,
    method: &str,
    url: &Url,
    context: &Context,
    proxy: Option<&str>,
) -> Error {
    let deadline = &context.deadline;
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
                crate::cli::format_duration(context.connect_timeout)
            )),
            ureq::Timeout::PerRead | ureq::Timeout::RecvBody | ureq::Timeout::RecvResponse => {
                Error::Timeout(format!(
                    "{at}: the server sent nothing for {} (--read-timeout)",
                    crate::cli::format_duration(context.read_timeout)
                ))
            }
            other => Error::Timeout(format!("{at}: timed out ({other})")),
        },
        ureq::Error::Io(e) => classify_io(&e, &at, &via, url, deadline),
        ureq::Error::Rustls(e) => tls_error(&e, &at, url.host()),
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
        return tls_error(tls, at, url.host());
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
pub fn tls_error(err: &rustls::Error, at: &str, host: &str) -> Error {
    use rustls::CertificateError as Cert;
    let reason = match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => "certificate not trusted (unknown issuer): add its CA with \
                                    --ca-file or SSL_CERT_FILE"
                .to_string(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                format!("certificate name mismatch: it is not valid for '{host}'")
            }
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
