//! The applet table: dispatch, `--help`, `--install` and `--version` all read it, so adding an
//! applet is one entry here plus its module.

use std::time::Duration;

use crate::cli::Args;
use crate::error::Error;
use crate::supervisor::Job;

#[cfg(feature = "chmod-tree")]
pub mod chmod_tree;
#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "git-shallow")]
pub mod git;
#[cfg(feature = "init")]
pub mod init;
#[cfg(feature = "render-template")]
pub mod render_template;
#[cfg(feature = "sleep")]
pub mod sleep;
#[cfg(feature = "sysctl")]
pub mod sysctl;
#[cfg(feature = "wait")]
pub mod wait;
#[cfg(any(feature = "wait-tcp", feature = "wait"))]
pub mod wait_tcp;

pub struct Applet {
    pub name: &'static str,
    pub summary: &'static str,
    /// Usage, options with defaults, and examples; `--help` appends the common options and the
    /// exit codes.
    pub usage: &'static str,
    /// Option sets shared with other applets (`http::HELP`), printed after `usage`.
    pub shared_options: &'static [&'static str],
    /// The deadline when `--timeout` is not given; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// Parses the applet's own options (the common ones are already taken) into the work to run.
    pub parse: fn(Args) -> Result<Job, Error>,
    /// The applet runs the command after `--` itself (init, as its child) and takes its signals
    /// itself, on the main thread: no supervisor threads. Every other applet chain-loads that
    /// command once it succeeded.
    pub runs_command: bool,
}

pub const APPLETS: &[Applet] = &[
    #[cfg(feature = "wait")]
    Applet {
        name: "wait",
        summary: "wait until services answer (PostgreSQL, MySQL, Redis, files, DNS, TCP)",
        usage: wait::USAGE,
        shared_options: &[crate::http::HELP],
        default_timeout: Some(Duration::from_secs(60)),
        parse: wait::parse,
        runs_command: false,
    },
    #[cfg(feature = "wait-tcp")]
    Applet {
        name: "wait-tcp",
        summary: "wait until TCP ports accept connections",
        usage: wait_tcp::USAGE,
        shared_options: &[],
        default_timeout: Some(Duration::from_secs(60)),
        parse: wait_tcp::parse,
        runs_command: false,
    },
    #[cfg(feature = "fetch")]
    Applet {
        name: "fetch",
        summary: "download a file over HTTP(S) atomically, with checksum, retries and deadline",
        usage: fetch::USAGE,
        shared_options: &[crate::http::HELP],
        default_timeout: Some(Duration::from_secs(300)),
        parse: fetch::parse,
        runs_command: false,
    },
    #[cfg(feature = "render-template")]
    Applet {
        name: "render-template",
        summary: "render ${VAR} templates from the environment or JSON values, atomically",
        usage: render_template::USAGE,
        shared_options: &[],
        default_timeout: None,
        parse: render_template::parse,
        runs_command: false,
    },
    #[cfg(feature = "chmod-tree")]
    Applet {
        name: "chmod-tree",
        summary: "set mode and owner over directory trees, never following symlinks",
        usage: chmod_tree::USAGE,
        shared_options: &[],
        default_timeout: None,
        parse: chmod_tree::parse,
        runs_command: false,
    },
    #[cfg(feature = "sysctl")]
    Applet {
        name: "sysctl",
        summary: "set and read kernel parameters in /proc/sys, as procps sysctl",
        usage: sysctl::USAGE,
        shared_options: &[],
        default_timeout: None,
        parse: sysctl::parse,
        runs_command: false,
    },
    #[cfg(feature = "git-shallow")]
    Applet {
        name: "git-shallow",
        summary: "check out one commit of a git repository over HTTP(S), with no git installed",
        usage: git::USAGE,
        shared_options: &[crate::http::HELP],
        default_timeout: Some(git::DEFAULT_TIMEOUT),
        parse: git::parse,
        runs_command: false,
    },
    #[cfg(feature = "init")]
    Applet {
        name: "init",
        summary: "run a command as PID 1: forward signals, reap zombies, pass its exit code on",
        usage: init::USAGE,
        shared_options: &[],
        default_timeout: None,
        parse: init::parse,
        runs_command: true,
    },
    #[cfg(feature = "sleep")]
    Applet {
        name: "sleep",
        summary: "pause for a duration (preStop hooks), obeying SIGTERM",
        usage: sleep::USAGE,
        shared_options: &[],
        default_timeout: None,
        parse: sleep::parse,
        runs_command: false,
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
