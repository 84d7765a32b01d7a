//! `init`: a PID 1 for containers. It starts COMMAND as its child, forwards every signal it gets
//! to it, reaps every zombie re-parented to it, and exits as the child did (code, or 128+N).
//!
//! A long-lived PID 1 must stay small and idle, so this applet does not use the supervisor's
//! threads: it runs on the main thread, with every forwardable signal blocked from before the
//! child exists, and sleeps in `sigtimedwait` until a signal (SIGCHLD included) or one of its two
//! timers (`--term-delay`, `--kill-after`) is due. Nothing polls.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{format_duration, parse_duration, Args};
use crate::error::{signal_name, Error};
use crate::exec;
use crate::log;
use crate::supervisor::Job;
use crate::sys::{self, Exit, SignalSet};

pub const USAGE: &str = "\
Usage: initbox init [OPTIONS] [--] COMMAND [ARGS...]

Run COMMAND as a child and stay as its init: forward every signal to it, reap
every orphaned process, and exit with COMMAND's exit code (128+N when a signal
N killed it). Not PID 1, initbox registers as a child subreaper, so orphans
still come back to it.

OPTIONS
    -g, --group               run COMMAND in its own process group (the
                              terminal's foreground group when stdin is a
                              terminal) and send signals to the whole group
    -e, --remap-exit FROM:TO  exit TO when COMMAND exits FROM (repeatable),
                              e.g. 143:0 for an app that exits 143 on SIGTERM
    --term-delay DURATION     hold a SIGTERM this long before forwarding it,
                              so the pod leaves the load balancer first; a
                              second SIGTERM, or a SIGINT, is forwarded at once
    --kill-after DURATION     SIGKILL COMMAND (the group with -g) when it still
                              runs this long after SIGTERM or SIGINT was sent

Forwarded: every signal but KILL, STOP, CHLD, PIPE and the faults (SEGV, BUS,
FPE, ILL, TRAP, SYS, ABRT). COMMAND starts with default signal dispositions,
an empty signal mask and no descriptors of initbox's. COMMAND not found: 127;
not executable: 126.

EXAMPLES
    initbox init -- /app/server --port 8080
    initbox init -g --term-delay 5s --kill-after 20s -- /app/start.sh
    initbox init -e 143:0 -- java -jar /app.jar";

struct Settings {
    group: bool,
    remap: Vec<(u8, u8)>,
    term_delay: Option<Duration>,
    kill_after: Option<Duration>,
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    let settings = Settings {
        group: args.flag(["-g", "--group"]),
        remap: args
            .values(["-e", "--remap-exit"])?
            .iter()
            .map(|text| parse_remap(text).map_err(Error::Usage))
            .collect::<Result<_, _>>()?,
        term_delay: nonzero(args.value("--term-delay", parse_duration)?),
        kill_after: nonzero(args.value("--kill-after", parse_duration)?),
    };
    let mut command = std::mem::take(&mut args.command);
    let rest = args.positionals()?;
    if command.is_empty() {
        command = rest.into_iter().map(OsString::from).collect();
    } else if let Some(extra) = rest.first() {
        return Err(Error::usage(format!("unexpected argument '{extra}'")));
    }
    if command.is_empty() {
        return Err(Error::usage("no COMMAND given"));
    }
    Ok(Box::new(move |_| run(&command, &settings)))
}

/// `FROM:TO`, each an exit code 0-255.
fn parse_remap(text: &str) -> Result<(u8, u8), String> {
    let invalid = || format!("invalid --remap-exit '{text}' (use FROM:TO, e.g. 143:0)");
    let (from, to) = text.split_once(':').ok_or_else(invalid)?;
    Ok((
        from.parse().map_err(|_| invalid())?,
        to.parse().map_err(|_| invalid())?,
    ))
}

/// Every signal a process can catch, but SIGCHLD (ours: it says a child ended), SIGPIPE (std
/// ignores it, and a blocked ignored signal would still be queued, then forwarded) and the faults,
/// which the kernel raises in the thread that caused them and must stay deadly.
fn forwarded_signals() -> impl Iterator<Item = i32> {
    const NOT_FORWARDED: [i32; 11] = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGPIPE,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGABRT,
    ];
    (1..libc::SIGRTMIN())
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
        .filter(|signal| !NOT_FORWARDED.contains(signal))
}

/// What stopping the child has come to: a held SIGTERM, and when to SIGKILL.
struct Stopping {
    /// When the SIGTERM held by `--term-delay` is due to be forwarded.
    held_term: Option<Instant>,
    /// Whether `--term-delay` was spent: it holds only the first SIGTERM.
    delay_spent: bool,
    /// When `--kill-after` SIGKILLs the child.
    kill_at: Option<Instant>,
}

fn run(command: &[OsString], settings: &Settings) -> Result<(), Error> {
    let watched = SignalSet::of(forwarded_signals().chain([libc::SIGCHLD]));
    // Before the fork: a signal that arrives from here on waits in the queue until we take it.
    sys::block_signals(&watched)
        .map_err(|e| Error::Internal(format!("cannot block signals: {e}")))?;
    if std::process::id() != 1 {
        sys::become_subreaper().map_err(|e| {
            Error::Internal(format!("cannot become a child subreaper (prctl): {e}"))
        })?;
    }
    let child = sys::spawn_child(command, settings.group)
        .map_err(|e| exec::command_error(&command[0], &e))?;
    let target = if settings.group { -child } else { child };
    let mut stopping = Stopping {
        held_term: None,
        delay_spent: false,
        kill_at: None,
    };
    loop {
        let due = [stopping.held_term, stopping.kill_at]
            .into_iter()
            .flatten()
            .min();
        let timeout = due.map(|at| at.saturating_duration_since(Instant::now()));
        match sys::wait_for_signal(&watched, timeout) {
            Some(libc::SIGCHLD) => {
                if let Some(exit) = reap_all(child) {
                    return finish(&command[0], exit, settings);
                }
            }
            Some(signal) => on_signal(signal, target, settings, &mut stopping),
            None => on_timer(target, settings, &mut stopping),
        }
    }
}

/// Reaps every ended child (orphans included); returns how `child` ended, if it did.
fn reap_all(child: i32) -> Option<Exit> {
    let mut ended = None;
    while let Some((pid, exit)) = sys::reap_any() {
        if pid == child {
            ended = Some(exit);
        }
    }
    ended
}

fn on_signal(signal: i32, target: i32, settings: &Settings, stopping: &mut Stopping) {
    if signal == libc::SIGTERM && !stopping.delay_spent {
        if let Some(delay) = settings.term_delay {
            stopping.delay_spent = true;
            stopping.held_term = Some(Instant::now() + delay);
            log::info(
                &format!(
                    "holding SIGTERM for {} (--term-delay)",
                    format_duration(delay)
                ),
                &[("delay_ms", json!(delay.as_millis() as u64))],
            );
            return;
        }
    }
    // A second SIGTERM or a SIGINT is forwarded at once, in place of the held SIGTERM.
    if signal == libc::SIGTERM || signal == libc::SIGINT {
        stopping.held_term = None;
    }
    forward(signal, target, settings, stopping);
}

fn on_timer(target: i32, settings: &Settings, stopping: &mut Stopping) {
    let now = Instant::now();
    if stopping.held_term.is_some_and(|at| at <= now) {
        stopping.held_term = None;
        forward(libc::SIGTERM, target, settings, stopping);
    }
    if stopping.kill_at.is_some_and(|at| at <= now) {
        stopping.kill_at = None;
        let after = settings.kill_after.map(format_duration).unwrap_or_default();
        log::warn(
            &format!(
                "still running {after} after being told to stop: sending SIGKILL (--kill-after)"
            ),
            &[("pid", json!(target))],
        );
        let _ = sys::send_signal(target, libc::SIGKILL);
    }
}

fn forward(signal: i32, target: i32, settings: &Settings, stopping: &mut Stopping) {
    // ESRCH: the child is gone and its SIGCHLD is on its way; nothing to forward to.
    let _ = sys::send_signal(target, signal);
    let stops = signal == libc::SIGTERM || signal == libc::SIGINT;
    if stops && stopping.kill_at.is_none() {
        stopping.kill_at = settings.kill_after.map(|after| Instant::now() + after);
    }
}

/// The child's exit as ours: its code, or 128+N for signal N, then `--remap-exit`.
fn finish(program: &OsString, exit: Exit, settings: &Settings) -> Result<(), Error> {
    let (code, how) = match exit {
        Exit::Code(code) => (code, format!("exited with {code}")),
        Exit::Signal(signal) => (128 + signal, format!("killed by {}", signal_name(signal))),
    };
    let code = u8::try_from(code).unwrap_or(u8::MAX);
    let code = settings
        .remap
        .iter()
        .find(|(from, _)| *from == code)
        .map_or(code, |(_, to)| *to);
    log::info(
        &format!("{} {how}", program.to_string_lossy()),
        &[("exit_code", json!(code))],
    );
    match code {
        0 => Ok(()),
        code => Err(Error::Exited(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_takes_two_exit_codes() {
        assert_eq!(parse_remap("143:0"), Ok((143, 0)));
        for bad in ["143", "143:", ":0", "256:0", "1:-1", "a:b"] {
            assert!(parse_remap(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn faults_kill_and_chld_are_not_forwarded() {
        let forwarded: Vec<i32> = forwarded_signals().collect();
        for kept in [libc::SIGTERM, libc::SIGHUP, libc::SIGWINCH, libc::SIGTSTP] {
            assert!(forwarded.contains(&kept), "{kept}");
        }
        for left in [libc::SIGKILL, libc::SIGCHLD, libc::SIGSEGV, libc::SIGABRT] {
            assert!(!forwarded.contains(&left), "{left}");
        }
        assert!(forwarded.contains(&libc::SIGRTMAX()));
    }
}
