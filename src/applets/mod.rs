//! The applet table: dispatch, `--help`, `--install` and `--version` all read it, so adding an
//! applet is one entry here plus its module.

use std::time::Duration;

use crate::cli::Args;
use crate::error::Error;
use crate::supervisor::Job;

#[cfg(feature = "git-shallow")]
pub mod git;
#[cfg(feature = "wait-tcp")]
pub mod wait_tcp;

pub struct Applet {
    pub name: &'static str,
    pub summary: &'static str,
    /// Usage, options with defaults, and examples; `--help` appends the common options and the
    /// exit codes.
    pub usage: &'static str,
    /// The deadline when `--timeout` is not given; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// Parses the applet's own options (the common ones are already taken) into the work to run.
    pub parse: fn(Args) -> Result<Job, Error>,
}

pub const APPLETS: &[Applet] = &[
    #[cfg(feature = "wait-tcp")]
    Applet {
        name: "wait-tcp",
        summary: "wait until TCP ports accept connections, then optionally exec a command",
        usage: wait_tcp::USAGE,
        default_timeout: Some(Duration::from_secs(60)),
        parse: wait_tcp::parse,
    },
    #[cfg(feature = "git-shallow")]
    Applet {
        name: "git-shallow",
        summary: "check out one commit of a git repository over HTTP(S), with no git installed",
        usage: git::USAGE,
        default_timeout: Some(git::DEFAULT_TIMEOUT),
        parse: git::parse,
    },
];

pub fn find(name: &str) -> Option<&'static Applet> {
    APPLETS.iter().find(|applet| applet.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_lists_the_applets_of_this_table() {
        let names: Vec<&str> = APPLETS.iter().map(|a| a.name).collect();
        assert_eq!(env!("INITBOX_APPLETS"), names.join(" "));
    }

    #[test]
    fn every_usage_starts_with_its_name() {
        for applet in APPLETS {
            let expected = format!("Usage: initbox {} ", applet.name);
            assert!(applet.usage.starts_with(&expected), "{}", applet.name);
        }
    }
}
