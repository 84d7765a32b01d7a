//! `wait-tcp`: wait until TCP ports accept connections, then optionally become the app.
//!
//! Each target is probed on its own thread: resolve the name again (a Kubernetes Service may
//! appear later), try every address, close the probe connection cleanly, and back off from a few
//! milliseconds up to a short cap, so an opening port is noticed within about 100 ms without
//! busy-looping. With `-- COMMAND`, initbox execs the command once the targets are ready, so it can
//! be an entrypoint that waits and then is replaced by the app.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{format_duration, parse_duration, Args};
use crate::error::{describe_io, Error};
use crate::log;
use crate::net::{self, ResolveError};
use crate::retry::Backoff;
use crate::supervisor::{Deadline, Job};

pub const USAGE: &str = "\
Usage: initbox wait-tcp [OPTIONS] TARGET... [-- COMMAND [ARGS...]]

Wait until every TARGET accepts a TCP connection (or one of them, with --any),
then exit 0, or exec COMMAND when one is given.

TARGET is host:port, [ipv6]:port or tcp://host:port. Names are resolved again
on every attempt and every address (IPv4 and IPv6) is tried.

OPTIONS
    --any                     succeed as soon as one target is ready
    --interval DURATION       fixed pause between attempts
                              (default: backoff from 5ms, doubling up to 100ms)
    --connect-timeout DURATION
                              limit for one connection attempt (default 2s)
    --timeout DURATION        overall deadline (default 60s; 0 waits forever)

On timeout, exits 124 and names each target that was not ready with its last
error. COMMAND not found: 127; not executable: 126.

EXAMPLES
    initbox wait-tcp db:5432 redis:6379 --timeout 2m
    initbox wait-tcp --any [::1]:8080 127.0.0.1:8080
    initbox wait-tcp db:5432 -- /app/server --port 8080";

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// While nothing changes, one progress line per this long and target.
const REMINDER_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    /// As the user wrote it (without `tcp://`), for messages.
    label: String,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let label = text.strip_prefix("tcp://").unwrap_or(text);
        let invalid = |why: &str| format!("invalid target '{text}': {why} (use host:port)");
        let (host, port) = if let Some(bracketed) = label.strip_prefix('[') {
            let (host, rest) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']'"))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| invalid("missing port"))?;
            (host, port)
        } else {
            let (host, port) = label
                .rsplit_once(':')
                .ok_or_else(|| invalid("missing port"))?;
            if host.contains(':') {
                return Err(invalid("write IPv6 addresses in brackets, as [::1]:80"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(invalid("port must be 1-65535")),
        };
        Ok(Target {
            host: host.to_string(),
            port,
            label: label.to_string(),
        })
    }
}

/// How the engine probes: shared by `wait-tcp` and `wait`.
pub struct Settings {
    pub any: bool,
    pub interval: Option<Duration>,
    /// Limit for one attempt: the connection, and the first answer of protocol probes.
    pub connect_timeout: Duration,
}

impl Settings {
    /// Takes the engine's options (`--any`, `--interval`, `--connect-timeout`) off `args`.
    pub fn parse(args: &mut Args) -> Result<Settings, Error> {
        let settings = Settings {
            any: args.flag("--any"),
            interval: args.value("--interval", parse_duration)?,
            connect_timeout: args
                .value("--connect-timeout", parse_duration)?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        if settings.interval == Some(Duration::ZERO) {
            return Err(Error::usage("--interval must be more than 0"));
        }
        // As in the HTTP options: an attempt with no time to connect could never succeed.
        if settings.connect_timeout.is_zero() {
            return Err(Error::usage("--connect-timeout must be more than 0"));
        }
        Ok(settings)
    }
}

/// Why one attempt did not find the target ready.
pub enum NotReady {
    /// The resolver had not answered when the deadline passed.
    Unanswered,
    /// Keep waiting; the text is the state to report, e.g. "connection refused".
    Waiting(String),
    /// Waiting cannot help (a wrong password, an untrusted certificate): stop every probe.
    Fatal(Error),
}

/// One kind of target: what a single attempt does, and how it names the target in messages.
pub trait Probe: Send + 'static {
    /// The target as the user wrote it, without credentials.
    fn label(&self) -> &str;
    /// One attempt; on success, a short detail for the "ready" line (the address, a version).
    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady>;
}

impl Probe for Target {
    fn label(&self) -> &str {
        &self.label
    }

    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady> {
        // Closing right away sends a FIN: the server sees a clean connect-and-close.
        let (_stream, address) = connect(&self.host, self.port, deadline, attempt_timeout)?;
        Ok(address.to_string())
    }
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let settings = Settings::parse(&mut args)?;
    let targets = args
        .positionals()?
        .iter()
        .map(|text| {
            Target::parse(text)
                .map(|t| Box::new(t) as Box<dyn Probe>)
                .map_err(Error::Usage)
        })
        .collect::<Result<Vec<_>, _>>()?;
    job(targets, settings)
}

/// The work of a wait applet: probe every target until ready (main chain-loads a command after).
pub fn job(targets: Vec<Box<dyn Probe>>, settings: Settings) -> Result<Job, Error> {
    if targets.is_empty() {
        return Err(Error::usage("no TARGET given"));
    }
    Ok(Box::new(move |deadline| {
        wait_for(targets, &settings, deadline)
    }))
}

enum Outcome {
    Ready,
    NotReady { last_error: String, attempts: u32 },
    Fatal(Error),
}

fn wait_for(
    targets: Vec<Box<dyn Probe>>,
    settings: &Settings,
    deadline: &Deadline,
) -> Result<(), Error> {
    let count = targets.len();
    let finished = Arc::new(AtomicBool::new(false));
    let (sender, outcomes) = mpsc::channel();
    for target in targets {
        let sender = sender.clone();
        let finished = Arc::clone(&finished);
        let deadline = *deadline;
        let mut backoff = match settings.interval {
            Some(interval) => Backoff::fixed(interval),
            None => Backoff::exponential(FIRST_PAUSE, MAX_PAUSE),
        };
        let connect_timeout = settings.connect_timeout;
        thread::Builder::new()
            .name(format!("probe {}", target.label()))
            .spawn(move || {
                let outcome = probe_until_ready(
                    target.as_ref(),
                    &deadline,
                    connect_timeout,
                    &mut backoff,
                    &finished,
                );
                let _ = sender.send((target.label().to_string(), outcome));
            })
            .map_err(|e| Error::Internal(format!("cannot start a probe thread: {e}")))?;
    }
    drop(sender);

    let mut not_ready = Vec::new();
    for (label, outcome) in outcomes.iter().take(count) {
        match outcome {
            Outcome::Ready if settings.any => {
                finished.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Outcome::Ready => {}
            Outcome::Fatal(err) => {
                finished.store(true, Ordering::SeqCst);
                return Err(err);
            }
            Outcome::NotReady {
                last_error,
                attempts,
            } => {
                log::error(
                    &format!("{label}: not ready: {last_error} (attempt {attempts})"),
                    &[
                        ("target", json!(label)),
                        ("error", json!(last_error)),
                        ("attempts", json!(attempts)),
                    ],
                );
                not_ready.push(label);
            }
        }
    }
    if not_ready.is_empty() {
        return Ok(());
    }
    Err(deadline.timeout_error(format!(
        "{} of {count} target(s) not ready: {}",
        not_ready.len(),
        not_ready.join(", ")
    )))
}

fn probe_until_ready(
    target: &dyn Probe,
    deadline: &Deadline,
    connect_timeout: Duration,
    backoff: &mut Backoff,
    finished: &AtomicBool,
) -> Outcome {
    let label = target.label();
    let started = Instant::now();
    let mut attempts = 0;
    let mut last_error = String::new();
    let mut last_report = started;
    loop {
        attempts += 1;
        match target.attempt(deadline, connect_timeout) {
            Ok(detail) => {
                let elapsed = started.elapsed();
                log::info(
                    &format!(
                        "{label} ready after {} ({detail}, attempt {attempts})",
                        format_duration(elapsed)
                    ),
                    &[
                        ("target", json!(label)),
                        ("detail", json!(detail)),
                        ("attempts", json!(attempts)),
                        ("elapsed_ms", json!(elapsed.as_millis() as u64)),
                    ],
                );
                return Outcome::Ready;
            }
            Err(NotReady::Fatal(err)) => return Outcome::Fatal(err),
            // The deadline cut the lookup short; an earlier attempt's error says more about
            // the target than "no answer in time" does.
            Err(NotReady::Unanswered) if !last_error.is_empty() => {}
            Err(NotReady::Unanswered) => last_error = ResolveError::TimedOut.to_string(),
            Err(NotReady::Waiting(error)) => {
                let changed = error != last_error;
                if changed || last_report.elapsed() >= REMINDER_EVERY {
                    log::info(
                        &format!(
                            "{label}: {error}, attempt {attempts}, {}",
                            format_duration(started.elapsed())
                        ),
                        &[
                            ("target", json!(label)),
                            ("error", json!(error)),
                            ("attempts", json!(attempts)),
                        ],
                    );
                    last_report = Instant::now();
                }
                last_error = error;
            }
        }
        if deadline.expired() || finished.load(Ordering::SeqCst) {
            return Outcome::NotReady {
                last_error,
                attempts,
            };
        }
        thread::sleep(deadline.cap(backoff.next_delay()));
    }
}

/// Resolves `host` again (a Kubernetes Service may appear later), then connects to each address
/// in turn until one accepts.
pub fn connect(
    host: &str,
    port: u16,
    deadline: &Deadline,
    connect_timeout: Duration,
) -> Result<(TcpStream, SocketAddr), NotReady> {
    let addresses = net::resolve(host, port, deadline).map_err(|e| match e {
        ResolveError::TimedOut => NotReady::Unanswered,
        ResolveError::NotFound(_) => NotReady::Waiting(format!("{host}: name not resolved yet")),
        other @ ResolveError::Temporary(_) => NotReady::Waiting(other.to_string()),
    })?;
    let mut failures = Vec::new();
    for address in addresses {
        match TcpStream::connect_timeout(&address, deadline.cap(connect_timeout)) {
            Ok(stream) => return Ok((stream, address)),
            // A name's addresses are worth naming; an IP target would only repeat itself.
            Err(e) if host.parse::<std::net::IpAddr>().is_ok() => {
                failures.push(describe_connect(&e));
            }
            Err(e) => failures.push(format!("{address} {}", describe_connect(&e))),
        }
        if deadline.expired() {
            break;
        }
    }
    Err(NotReady::Waiting(failures.join("; ")))
}

fn describe_connect(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "connect timed out".into(),
        _ => describe_io(err).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        let t = Target::parse("db:5432").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.label.as_str()),
            ("db", 5432, "db:5432")
        );
        let t = Target::parse("tcp://redis.default.svc:6379").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("redis.default.svc", 6379));
        assert_eq!(t.label, "redis.default.svc:6379");
        let t = Target::parse("[::1]:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
    }

    #[test]
    fn malformed_targets_say_why() {
        for (text, why) in [
            ("db", "missing port"),
            ("db:", "port must be"),
            ("db:0", "port must be"),
            ("db:65536", "port must be"),
            (":80", "missing host"),
            ("::1:80", "brackets"),
            ("[::1:80", "missing ']'"),
            ("[::1]80", "missing port"),
        ] {
            let err = Target::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
