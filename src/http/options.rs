//! The one HTTP option set: every applet that speaks HTTP takes these options, parsed by
//! [`Options::parse`] and documented by [`HELP`], so fetch, git-shallow and wait accept and refuse
//! the same values (issue 10: the two copies had drifted).

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{self, Header};
use crate::cli::{parse_duration, Args};
use crate::error::Error;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may send nothing at all before the transfer counts as stalled.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;

/// The help block for [`Options`], shown by every applet that takes them.
pub const HELP: &str = "\
HTTP OPTIONS
    --ca-file PEM             also trust the certificates in PEM (repeatable)
    --ca-file-only            trust only --ca-file, not the Mozilla roots
                              nor SSL_CERT_FILE
    --cert PEM, --key PEM     client certificate (chain) and its PKCS#8, RSA or
                              EC private key, for servers that ask for one
    --connect-timeout DURATION
                              limit for one connection attempt (default 10s)
    --read-timeout DURATION   a response silent this long is cut off (default 30s)
    --header 'NAME: VALUE'    extra request header (repeatable)
    --header-from-env NAME=VAR
                              header NAME with the value of environment
                              variable VAR, kept off the command line (repeatable)
    --bearer-file PATH        send 'Authorization: Bearer' with the token in PATH
                              (e.g. a mounted Secret)
    --basic-auth-from-env VAR basic auth from VAR holding 'user:password'
                              (or put user:password@ in the URL)
    --retries N               retries after connect errors, timeouts, 5xx and 429
                              (default 3; backoff with jitter; Retry-After honoured)

HTTPS certificates are verified against the embedded Mozilla roots, plus
--ca-file and SSL_CERT_FILE; verification cannot be turned off. Proxies come
from HTTPS_PROXY/https_proxy, http_proxy (lower case only), ALL_PROXY and
NO_PROXY. Secrets (URL passwords, credential headers, keys) are never printed.";

/// How the client connects, what it trusts and which credentials it sends. Files and variables
/// named here are read when the job runs ([`Options::credential_headers`], `Client::new`), not
/// while parsing, so `--check-args` needs no Secret mounted.
#[derive(Clone, Debug)]
pub struct Options {
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before it counts as stalled.
    pub read_timeout: Duration,
    /// PEM files whose certificates are trusted in addition to the Mozilla roots.
    pub ca_files: Vec<PathBuf>,
    /// Trust only `ca_files`: no Mozilla roots, no `SSL_CERT_FILE`.
    pub ca_file_only: bool,
    /// `--cert` and `--key`: the client certificate chain and its private key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Retries after a transient failure; the first attempt is not counted.
    pub retries: u32,
    headers: Vec<Header>,
    headers_from_env: Vec<String>,
    bearer_file: Option<PathBuf>,
    basic_auth_from_env: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            ca_files: Vec::new(),
            ca_file_only: false,
            client_cert: None,
            retries: DEFAULT_RETRIES,
            headers: Vec::new(),
            headers_from_env: Vec::new(),
            bearer_file: None,
            basic_auth_from_env: None,
        }
    }
}

impl Options {
    /// Takes the HTTP options off `args`.
    pub fn parse(args: &mut Args) -> Result<Options, Error> {
        let headers = args
            .values("--header")?
            .iter()
            .map(|text| Header::parse(text).map_err(|e| Error::usage(format!("--header: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let headers_from_env = args.values("--header-from-env")?;
        for spec in &headers_from_env {
            split_header_spec(spec)?;
        }
        let options = Options {
            connect_timeout: timeout(args, "--connect-timeout", DEFAULT_CONNECT_TIMEOUT)?,
            read_timeout: timeout(args, "--read-timeout", DEFAULT_READ_TIMEOUT)?,
            ca_files: args
                .values("--ca-file")?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            ca_file_only: args.flag("--ca-file-only"),
            client_cert: None,
            retries: args
                .value("--retries", parse_retries)?
                .unwrap_or(DEFAULT_RETRIES),
            headers,
            headers_from_env,
            bearer_file: args.value("--bearer-file", |s| Ok(PathBuf::from(s)))?,
            basic_auth_from_env: args.value("--basic-auth-from-env", parse_variable)?,
        };
        let cert = args.value("--cert", |s| Ok(PathBuf::from(s)))?;
        let key = args.value("--key", |s| Ok(PathBuf::from(s)))?;
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(Error::usage("--cert and --key go together")),
        };
        if options.ca_file_only && options.ca_files.is_empty() {
            return Err(Error::usage("--ca-file-only needs --ca-file"));
        }
        if options.bearer_file.is_some() && options.basic_auth_from_env.is_some() {
            return Err(Error::usage(
                "give --bearer-file or --basic-auth-from-env, not both",
            ));
        }
        Ok(Options {
            client_cert,
            ..options
        })
    }

    /// Whether an `Authorization` header comes from these options, so an applet with its own
    /// credential options can refuse two sources.
    pub fn sets_authorization(&self) -> bool {
        self.bearer_file.is_some() || self.basic_auth_from_env.is_some()
    }

    /// The headers to send: `--header`, then those read now from variables and files.
    pub fn credential_headers(&self) -> Result<Vec<Header>, Error> {
        let mut headers = self.headers.clone();
        for spec in &self.headers_from_env {
            headers.push(header_from_env(spec)?);
        }
        if let Some(var) = &self.basic_auth_from_env {
            headers.push(basic_auth_from_env(var)?);
        }
        if let Some(path) = &self.bearer_file {
            headers.push(auth::bearer_from_file(path)?);
        }
        Ok(headers)
    }
}

/// A timeout option: a duration of more than zero (zero would mean "fail at once", never meant).
fn timeout(args: &mut Args, name: &'static str, default: Duration) -> Result<Duration, Error> {
    match args.value(name, parse_duration)? {
        None => Ok(default),
        Some(limit) if limit.is_zero() => Err(Error::usage(format!(
            "{name} must be more than 0 (e.g. 5s)"
        ))),
        Some(limit) => Ok(limit),
    }
}

fn parse_retries(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .map_err(|_| format!("invalid --retries '{text}' (use a count, e.g. 3)"))
}

fn parse_variable(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['=', '\0']) {
        return Err(format!("invalid variable name '{text}'"));
    }
    Ok(text.to_string())
}

fn split_header_spec(spec: &str) -> Result<(&str, &str), Error> {
    spec.split_once('=')
        .filter(|(name, var)| !name.trim().is_empty() && parse_variable(var).is_ok())
        .ok_or_else(|| {
            Error::usage(format!(
                "--header-from-env '{spec}': use NAME=VAR, e.g. Authorization=CONFIG_AUTH"
            ))
        })
}

/// The value of an environment variable an option names; unset is missing input (66), as for
/// a missing file.
pub fn env_value(option: &str, var: &str) -> Result<String, Error> {
    std::env::var(var)
        .map_err(|_| Error::InputMissing(format!("{option} {var}: the variable is not set")))
}

/// `NAME=VAR`: header NAME with the value of the environment variable VAR.
fn header_from_env(spec: &str) -> Result<Header, Error> {
    let (name, var) = split_header_spec(spec)?;
    let value = env_value("--header-from-env", var)?;
    let header = Header::credential(name.trim(), value.trim());
    header
        .validate()
        .map_err(|e| Error::Data(format!("--header-from-env: {e}")))?;
    Ok(header)
}

/// `--basic-auth-from-env VAR`, VAR holding `user:password`.
fn basic_auth_from_env(var: &str) -> Result<Header, Error> {
    let value = env_value("--basic-auth-from-env", var)?;
    let (user, password) = value.split_once(':').ok_or_else(|| {
        Error::Data(format!(
            "--basic-auth-from-env: {var} must hold 'user:password'"
        ))
    })?;
    Ok(auth::basic_auth(user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_from_env_names_the_variable_not_its_value() {
        let err = header_from_env("Authorization=INITBOX_TEST_UNSET_VARIABLE").unwrap_err();
        assert!(err.to_string().contains("INITBOX_TEST_UNSET_VARIABLE"));
        assert!(header_from_env("no-equals-sign").is_err());
    }
}
