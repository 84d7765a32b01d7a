//! Proxies, chosen from the environment on purpose (ureq is told not to read it itself):
//! `HTTPS_PROXY`/`https_proxy`, lower-case-only `http_proxy` (as curl, against "httpoxy", where a
//! CGI request header `Proxy:` becomes `HTTP_PROXY`), `ALL_PROXY`/`all_proxy` and
//! `NO_PROXY`/`no_proxy`.

use ureq::Proxy;

use super::url::{redact_url_text, Url};
use crate::error::Error;

/// The proxies chosen from the environment, on purpose.
#[derive(Clone, Debug, Default)]
pub(super) struct Proxies {
    https: Option<(String, Proxy)>,
    http: Option<(String, Proxy)>,
    no_proxy: Vec<String>,
}

impl Proxies {
    pub(super) fn from_env() -> Result<Proxies, Error> {
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

    pub(super) fn for_url(&self, url: &Url) -> Option<&(String, Proxy)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
