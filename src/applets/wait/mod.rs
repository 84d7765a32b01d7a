//! `wait`: wait until services are ready, meaning they answer, not only that a port is open.
//!
//! A PostgreSQL that accepts connections may still answer "the database system is starting up";
//! a Redis answers `-LOADING` while it reads its dataset; an HTTP service listens long before its
//! health endpoint says 200. Each protocol file speaks just enough of its protocol (a few dozen
//! bytes, with strict limits on everything read) to tell "ready" from "not yet" from "waiting
//! cannot help". The engine (concurrent targets, backoff, deadline, `--any`, exec) is wait-tcp's.

mod dns;
mod file;
mod http;
pub mod mysql;
pub mod postgres;
pub mod redis;

use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::applets::wait_tcp::{self, NotReady, Probe, Settings};
use crate::cli::Args;
use crate::error::{describe_io, Error};
use crate::supervisor::{Deadline, Job};

pub const USAGE: &str = "\
Usage: initbox wait [OPTIONS] TARGET... [-- COMMAND [ARGS...]]

Wait until every TARGET is ready (or one of them, with --any), then exit 0, or
exec COMMAND when one is given. Ready means the service answers:

    host:port, tcp://host:port    the port accepts a connection
    postgres://[user@]host[:5432][/db]
                                  the server answers a startup message with an
                                  authentication request or an error other
                                  than 57P03 (starting up, shutting down)
    http://..., https://...       the status is in --expect-status, and the
                                  body contains --expect-body TEXT if given
    mysql://host[:3306]           the server sends its protocol-10 handshake
    redis://[[user]:password@]host[:6379][/db]
                                  PING answers PONG (after AUTH), not LOADING,
                                  BUSY or MASTERDOWN
    rediss://...                  the same over TLS, verified as https is
                                  (HTTP OPTIONS: --ca-file, --cert, --key)
    file:///path                  the path exists
    dns://name                    the name resolves

A wrong Redis password, or none where one is needed, fails at once (77); so
does a TLS failure (78).
Names are resolved again on every attempt.

OPTIONS
    --any                     succeed as soon as one target is ready
    --interval DURATION       fixed pause between attempts
                              (default: backoff from 5ms, doubling up to 100ms)
    --connect-timeout DURATION
                              limit for one attempt: connect and first answer
                              (default 2s; also for http(s) targets, where
                              --retries does not apply: wait retries until
                              its deadline)
    --expect-status LIST      accepted HTTP statuses (default 200-399), e.g.
                              200 or 200-299,304
    --expect-body TEXT        the HTTP body must contain TEXT
    --password-file PATH      Redis password, when the URL has none
    --password-env VAR        Redis password from an environment variable
    --non-empty               file targets must also have a size above 0
    --min-addresses N         dns targets must resolve to at least N addresses
                              (default 1)
    --timeout DURATION        overall deadline (default 60s; 0 waits forever)

On timeout, exits 124 and names each target that was not ready with its last
state. COMMAND not found: 127; not executable: 126.

EXAMPLES
    initbox wait postgres://app@db/app redis://cache --password-env REDIS_PASSWORD
    initbox wait file:///run/secrets/token --non-empty -- /app/server
    initbox wait dns://web-headless.default.svc.cluster.local --min-addresses 3";

/// Where a password comes from; read at each attempt, so `--check-args` needs no Secret mounted
/// and a rotated Secret is picked up.
#[derive(Clone)]
pub enum Password {
    None,
    Given(String),
    File(PathBuf),
    Env(String),
}

impl Password {
    pub fn read(&self) -> Result<Option<String>, Error> {
        match self {
            Password::None => Ok(None),
            Password::Given(text) => Ok(Some(text.clone())),
            Password::File(path) => {
                let what = format!("--password-file {}", path.display());
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(&what, &e))?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
            }
            Password::Env(name) => std::env::var(name)
                .map(Some)
                .map_err(|_| Error::Data(format!("--password-env {name}: variable not set"))),
        }
    }
}

/// The options that shape the probes of some target kinds.
struct Options {
    password: Password,
    http: http::Expect,
    non_empty: bool,
    min_addresses: usize,
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let settings = Settings::parse(&mut args)?;
    let password_file = args.value("--password-file", |s| Ok(PathBuf::from(s)))?;
    let password_env = args.value("--password-env", |s| Ok(s.to_string()))?;
    let password = match (password_file, password_env) {
        (Some(_), Some(_)) => {
            return Err(Error::usage(
                "--password-file and --password-env exclude each other",
            ))
        }
        (Some(path), None) => Password::File(path),
        (None, Some(name)) => Password::Env(name),
        (None, None) => Password::None,
    };
    let options = Options {
        password,
        http: http::Expect {
            statuses: args
                .value("--expect-status", http::parse_statuses)?
                .unwrap_or_else(|| http::Expect::default().statuses),
            body: args.value("--expect-body", |s| Ok(s.to_string()))?,
            options: crate::http::Options::parse(&mut args)?,
        },
        non_empty: args.flag("--non-empty"),
        min_addresses: args
            .value("--min-addresses", |s| match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "invalid --min-addresses '{s}' (use a number above 0)"
                )),
            })?
            .unwrap_or(1),
    };
    let targets = args
        .positionals()?
        .iter()
        .map(|text| target(text, &options))
        .collect::<Result<Vec<_>, _>>()?;
    wait_tcp::job(targets, settings)
}

fn target(text: &str, options: &Options) -> Result<Box<dyn Probe>, Error> {
    let Some((scheme, _)) = text.split_once("://") else {
        return Ok(Box::new(
            wait_tcp::Target::parse(text).map_err(Error::Usage)?,
        ));
    };
    let endpoint = |port| Endpoint::parse(text, port).map_err(Error::Usage);
    Ok(match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Box::new(wait_tcp::Target::parse(text).map_err(Error::Usage)?),
        "postgres" | "postgresql" => Box::new(postgres::Postgres::new(endpoint(5432)?)),
        "http" | "https" => {
            Box::new(http::Http::parse(text, &options.http).map_err(Error::Usage)?)
        }
        "mysql" | "mariadb" => Box::new(mysql::Mysql::new(endpoint(3306)?)),
        "redis" => Box::new(redis::Redis::new(endpoint(6379)?, &options.password, None)?),
        "rediss" => Box::new(redis::Redis::new(
            endpoint(6379)?,
            &options.password,
            Some(&options.http.options),
        )?),
        "file" => Box::new(file::File::parse(text, options.non_empty).map_err(Error::Usage)?),
        "dns" => Box::new(dns::Dns::parse(text, options.min_addresses).map_err(Error::Usage)?),
        other => {
            return Err(Error::usage(format!(
                "unsupported target scheme '{other}://' (use host:port, tcp, http(s), postgres, mysql, \
                 redis(s), file or dns)"
            )))
        }
    })
}

/// `scheme://[user[:password]@]host[:port][/path]`, as the database URLs of most clients.
/// Not `Debug`: it holds the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// After the `/`, without query (`?sslmode=...` is for clients, not for readiness).
    pub path: String,
    /// The URL without credentials, for every message.
    pub label: String,
}

impl Endpoint {
    pub fn parse(text: &str, default_port: u16) -> Result<Endpoint, String> {
        let invalid = |why: &str| format!("invalid target '{}': {why}", redact(text));
        let (scheme, rest) = text.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (info, None),
                };
                let decode = |s: &str| percent_decode(s).map_err(|why| invalid(&why));
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                (user, password.map(decode).transpose()?)
            }
        };
        let (host, port) = split_host_port(hostport).map_err(|why| invalid(&why))?;
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(invalid("port must be 1-65535")),
            },
        };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut label = format!("{scheme}://{shown_host}:{port}");
        if !path.is_empty() {
            label.push('/');
            label.push_str(path);
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            user,
            password,
            path: percent_decode(path).map_err(|why| invalid(&why))?,
            label,
        })
    }

    /// A connection with `attempt_timeout` on every read and write, so one silent server cannot
    /// hold the probe past its turn.
    pub fn connect(
        &self,
        deadline: &Deadline,
        attempt_timeout: Duration,
    ) -> Result<TcpStream, NotReady> {
        let (stream, _) = wait_tcp::connect(&self.host, self.port, deadline, attempt_timeout)?;
        let limit = Some(deadline.cap(attempt_timeout));
        stream
            .set_read_timeout(limit)
            .and_then(|()| stream.set_write_timeout(limit))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| NotReady::Waiting(describe_io(&e).to_lowercase()))?;
        Ok(stream)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']').ok_or("missing ']'")?;
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or("junk after ']'")?)),
        }
    } else {
        match text.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("write IPv6 addresses in brackets, as [::1]".into())
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    // Found by the wait_answers fuzz target: `[[h]` left a '[' in the host, so the label did not
    // parse back.
    if host.contains(['[', ']']) {
        return Err("stray '[' or ']' in the host".into());
    }
    Ok((host, port))
}

/// RFC 3986 percent-decoding, for passwords with `@`, `:` or `/` in them.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("'%' without two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "'%' without two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "'%' without two hex digits")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding is not UTF-8".into())
}

/// The target text with any userinfo cut out, for messages about a malformed target.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}

/// An I/O failure in the middle of a protocol exchange: the server is not (yet) answering.
fn exchange_failed(protocol: &str, err: &io::Error) -> NotReady {
    NotReady::Waiting(match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{protocol}: no answer in time")
        }
        io::ErrorKind::UnexpectedEof => format!("{protocol}: connection closed before an answer"),
        _ => format!("{protocol}: {}", describe_io(err).to_lowercase()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_defaults_and_ipv6() {
        let e = Endpoint::parse("redis://:p%40ss@cache/2", 6379).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("cache", 6379, "2")
        );
        assert_eq!((e.user, e.password.as_deref()), (None, Some("p@ss")));
        assert_eq!(e.label, "redis://cache:6379/2");
        let e = Endpoint::parse("postgres://app@[::1]:5433/db?sslmode=require", 5432).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 5433));
        assert_eq!((e.user.as_deref(), e.path.as_str()), (Some("app"), "db"));
        assert_eq!(e.label, "postgres://[::1]:5433/db");
    }

    /// Issue 11: `rediss://` is a Redis target over TLS, on Redis's port by default.
    #[test]
    fn rediss_targets_default_to_port_6379() {
        let options = Options {
            password: Password::None,
            http: http::Expect::default(),
            non_empty: false,
            min_addresses: 1,
        };
        let probe = target("rediss://:pw@cache/1", &options).unwrap();
        assert_eq!(probe.label(), "rediss://cache:6379/1");
    }

    #[test]
    fn malformed_urls_say_why_without_the_password() {
        for (text, why) in [
            ("redis://u:secret@:1", "missing host"),
            ("redis://u:secret@h:0", "port must be"),
            ("redis://u:sec%zzret@h", "hex digits"),
            ("mysql://::1:3306", "brackets"),
            ("mysql://[::1", "missing ']'"),
            ("mysql://[[db]", "stray '['"),
            ("mysql://db]:1", "stray '['"),
        ] {
            let err = Endpoint::parse(text, 1).err().unwrap();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("secret") && !err.contains("sec%"), "{err}");
        }
    }
}
