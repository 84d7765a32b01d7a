//! Signs of life on a slow clone (issue 13): nothing for a clone that ends within
//! [`FIRST_AFTER`], then a line at most every [`EVERY`] with the phase and its counts
//! (`receiving 41.2 MiB, 9,120 objects, 18.0 MiB/s`, `checking out 3,055 files`), as JSON fields
//! with `--log-format json`. `-q` silences them with every other info line (src/log.rs). Callers
//! report as often as they like: the clock decides, as wait-tcp's reminders do.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{human_size, rate};
use crate::log;

/// A fast clone says nothing until it is done.
const FIRST_AFTER: Duration = Duration::from_secs(2);
/// At most one line per this long, across phases.
const EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    started: Instant,
    last: Option<Instant>,
    /// The submodule path this clone is for; `None` for the repository of the command line.
    submodule: Option<String>,
}

/// The clock starts when the progress is made: at the start of the clone.
impl Default for Progress {
    fn default() -> Progress {
        Progress {
            started: Instant::now(),
            last: None,
            submodule: None,
        }
    }
}

impl Progress {
    /// Submodules are cloned side by side: their lines say whose they are.
    pub fn of_submodule(shown: &str) -> Progress {
        Progress {
            submodule: Some(shown.to_string()),
            ..Progress::default()
        }
    }

    fn line(&self, text: String, fields: &[(&str, serde_json::Value)]) {
        match &self.submodule {
            None => log::info(&text, fields),
            Some(path) => {
                let mut fields = fields.to_vec();
                fields.push(("submodule", json!(path)));
                log::info(&format!("submodule {path}: {text}"), &fields);
            }
        }
    }

    /// Whether a line is due now; if so, the next one is [`EVERY`] away.
    fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = match self.last {
            None => now.duration_since(self.started) >= FIRST_AFTER,
            Some(last) => now.duration_since(last) >= EVERY,
        };
        if due {
            self.last = Some(now);
        }
        due
    }

    pub fn receiving(&mut self, bytes: u64, objects: u32) {
        if !self.due() {
            return;
        }
        let elapsed = self.started.elapsed();
        self.line(
            format!(
                "receiving {}, {} objects, {}",
                human_size(bytes),
                thousands(u64::from(objects)),
                rate(bytes, elapsed)
            ),
            &[
                ("phase", json!("receiving")),
                ("bytes", json!(bytes)),
                ("objects", json!(objects)),
                ("elapsed_ms", json!(elapsed.as_millis() as u64)),
            ],
        );
    }

    pub fn checking_out(&mut self, files: u64) {
        if !self.due() {
            return;
        }
        self.line(
            format!("checking out {} files", thousands(files)),
            &[
                ("phase", json!("checking out")),
                ("files", json!(files)),
                (
                    "elapsed_ms",
                    json!(self.started.elapsed().as_millis() as u64),
                ),
            ],
        );
    }
}

/// `9120` as `9,120`: counts in progress lines are read at a glance.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(9120), "9,120");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn first_line_waits_then_lines_are_spaced() {
        let mut progress = Progress::default();
        assert!(!progress.due(), "a fast clone says nothing");
        progress.started -= FIRST_AFTER;
        assert!(progress.due());
        assert!(!progress.due(), "the next line waits");
        progress.last = progress.last.map(|t| t - EVERY);
        assert!(progress.due());
    }
}
