//! `dns://name`: ready once the name resolves (`--min-addresses N`: to at least N addresses, such
//! as every replica behind a headless Service). The system resolver answers, as for every other
//! target, so /etc/hosts and the pod's search domains apply.

use std::time::Duration;

use crate::applets::wait_tcp::{NotReady, Probe};
use crate::net::{self, ResolveError};
use crate::supervisor::Deadline;

pub struct Dns {
    name: String,
    min_addresses: usize,
    label: String,
}

impl Dns {
    pub fn parse(text: &str, min_addresses: usize) -> Result<Dns, String> {
        let name = text["dns://".len()..].trim_end_matches('/');
        if name.is_empty() || name.contains(['/', ':', '@', '?']) {
            return Err(format!("invalid target '{text}': use dns://name"));
        }
        Ok(Dns {
            name: name.to_string(),
            min_addresses,
            label: text.to_string(),
        })
    }
}

impl Probe for Dns {
    fn label(&self) -> &str {
        &self.label
    }

    fn attempt(&self, deadline: &Deadline, _: Duration) -> Result<String, NotReady> {
        let addresses = net::resolve(&self.name, 0, deadline).map_err(|e| match e {
            ResolveError::TimedOut => NotReady::Unanswered,
            ResolveError::NotFound(_) => NotReady::Waiting("dns: name not known yet".into()),
            other @ ResolveError::Temporary(_) => NotReady::Waiting(format!("dns: {other}")),
        })?;
        let shown: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
        if addresses.len() < self.min_addresses {
            return Err(NotReady::Waiting(format!(
                "dns: {} of {} addresses ({})",
                addresses.len(),
                self.min_addresses,
                shown.join(", ")
            )));
        }
        Ok(shown.join(", "))
    }
}
