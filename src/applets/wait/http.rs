//! `http://` and `https://` targets: ready when the status is in `--expect-status` (default
//! 200-399, as Kubernetes probes) and, with `--expect-body`, the body contains the text. Other
//! statuses and connection errors mean "not yet"; a TLS failure cannot get better by waiting.
//! The client is the HTTP layer's (src/http/), with the shared HTTP options (trust, client
//! certificates, headers); wait's own attempt limit bounds connect and read.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use crate::applets::wait_tcp::{NotReady, Probe};
use crate::error::Error;
use crate::http::{self, Url};
use crate::supervisor::Deadline;

/// A health endpoint's body is short; past this, the text is not searched further.
const MAX_BODY: u64 = 64 * 1024;

/// What makes an answer "ready".
#[derive(Clone, Debug)]
pub struct Expect {
    /// Inclusive ranges of accepted statuses.
    pub statuses: Vec<(u16, u16)>,
    pub body: Option<String>,
    pub options: http::Options,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect {
            statuses: vec![(200, 399)],
            body: None,
            options: http::Options::default(),
        }
    }
}

/// `200`, `200-299`, `200,204,301-308`.
pub fn parse_statuses(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let invalid = || format!("invalid --expect-status '{text}' (use e.g. 200, 200-299, 200,204)");
    text.split(',')
        .map(|part| {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let low: u16 = low.trim().parse().map_err(|_| invalid())?;
            let high: u16 = high.trim().parse().map_err(|_| invalid())?;
            if !(100..=599).contains(&low) || !(low..=599).contains(&high) {
                return Err(invalid());
            }
            Ok((low, high))
        })
        .collect()
}

pub struct Http {
    url: Url,
    label: String,
    expect: Expect,
    client: OnceLock<http::Client>,
}

impl Http {
    pub fn parse(text: &str, expect: &Expect) -> Result<Http, String> {
        let url = Url::parse(text)?;
        Ok(Http {
            label: url.without_credentials(),
            url,
            expect: expect.clone(),
            client: OnceLock::new(),
        })
    }

    /// The one place that builds a client: the engine retries, so the client does not.
    fn client(
        &self,
        deadline: &Deadline,
        attempt_timeout: Duration,
    ) -> Result<&http::Client, Error> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let mut options = self.expect.options.clone();
        options.connect_timeout = attempt_timeout;
        options.read_timeout = attempt_timeout;
        options.retries = 0;
        let client = http::Client::new(&options, deadline)?;
        Ok(self.client.get_or_init(|| client))
    }

    fn body_matches(&self, response: http::Response, text: &str) -> Result<bool, NotReady> {
        let mut body = Vec::new();
        let mut reader = response.into_body();
        let read = (&mut reader).take(MAX_BODY).read_to_end(&mut body);
        read.map_err(|e| waiting_or_fatal(reader.error(e)))?;
        Ok(String::from_utf8_lossy(&body).contains(text))
    }
}

/// TLS and usage problems (a bad proxy variable) do not go away by waiting.
fn waiting_or_fatal(err: Error) -> NotReady {
    match err {
        Error::Tls(_) | Error::Usage(_) | Error::InputMissing(_) | Error::Data(_) => {
            NotReady::Fatal(err)
        }
        other => NotReady::Waiting(format!("http: {other}")),
    }
}

impl Probe for Http {
    fn label(&self) -> &str {
        &self.label
    }

    fn attempt(&self, deadline: &Deadline, attempt_timeout: Duration) -> Result<String, NotReady> {
        let client = self
            .client(deadline, attempt_timeout)
            .map_err(NotReady::Fatal)?;
        let headers = self
            .expect
            .options
            .credential_headers()
            .map_err(NotReady::Fatal)?;
        let response = client.get(&self.url, &headers).map_err(waiting_or_fatal)?;
        let status = response.status;
        let line = response.status_line();
        if !self
            .expect
            .statuses
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
        {
            return Err(NotReady::Waiting(format!("http: {line}")));
        }
        match &self.expect.body {
            Some(text) if !self.body_matches(response, text)? => Err(NotReady::Waiting(format!(
                "http: {line}, but the body lacks {text:?}"
            ))),
            _ => Ok(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_and_ranges() {
        assert_eq!(parse_statuses("200"), Ok(vec![(200, 200)]));
        assert_eq!(
            parse_statuses("200-299,301"),
            Ok(vec![(200, 299), (301, 301)])
        );
        for bad in ["", "2xx", "300-200", "99", "600", "200-"] {
            assert!(parse_statuses(bad).is_err(), "{bad}");
        }
    }
}
