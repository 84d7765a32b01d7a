//! Signals, deadlines and clean-up: the one place that decides when an applet must stop.
//!
//! SIGTERM, SIGINT and every other signal whose default action ends the process get handlers
//! before anything else runs. That matters most as PID 1 in a container, where the kernel drops
//! any signal that has no handler, so `docker stop` would wait for its SIGKILL; outside PID 1, an
//! unhandled SIGHUP or SIGUSR1 would end the process with its temporaries left behind. The applet's work runs on a worker thread; the main thread waits for the
//! first of: the work finishing, a signal, or the deadline (plus a short grace, so an applet that
//! checks its own deadline reports its own, more precise, timeout message). On a signal or a missed
//! deadline the main thread removes every temporary path the applet registered and returns, which
//! ends the process however the worker is blocked (in getaddrinfo, a read, a connect).
//!
//! Temporary paths are registered through [`TempGuard`]: creation and the final rename happen under
//! the same lock as the forced clean-up, so a temporary is either removed or committed, never left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use std::{fs, io, thread};

use crate::error::Error;

/// How long an applet has past its deadline to report its own timeout before it is abandoned.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);
/// How long a stopping applet may take to unwind by itself (its guards clean up) before the
/// supervisor cleans up for it.
const STOP_GRACE: Duration = Duration::from_millis(40);

/// The signals whose default action ends the process, so that any of them ends it the same way:
/// temporaries removed, exit 128+N. Left out: the faults (SEGV, BUS, FPE, ILL, TRAP, SYS, ABRT),
/// which a handler cannot return from, and PIPE, which std ignores so that a write into a closed
/// pipe or socket fails with EPIPE and unwinds through the applet's own error path and guards.
const TERMINATING_SIGNALS: [i32; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGIO,
    libc::SIGPWR,
];

/// Set to the signal number once a stop was requested; `STOPPED_BY_DEADLINE` after the deadline.
static STOP: AtomicI32 = AtomicI32::new(0);
const STOPPED_BY_DEADLINE: i32 = -1;

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// When this run started (when the supervisor was installed): temporaries older than this that
/// initbox can prove are its own were left by a killed run and may be swept.
pub fn run_started() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

/// The overall deadline of an applet. `None` means no deadline (`--timeout 0`).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    start: Instant,
    end: Option<Instant>,
    timeout: Option<Duration>,
}

impl Deadline {
    pub fn after(timeout: Option<Duration>) -> Deadline {
        let start = Instant::now();
        Deadline {
            start,
            end: timeout.map(|t| start + t),
            timeout,
        }
    }

    /// Time left, or `None` when there is no deadline. Zero once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.end
            .map(|end| end.saturating_duration_since(Instant::now()))
    }

    pub fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// `limit`, shortened to the time left. Never zero, because zero means "no timeout" to std.
    pub fn cap(&self, limit: Duration) -> Duration {
        let capped = self.remaining().map_or(limit, |left| left.min(limit));
        capped.max(Duration::from_millis(1))
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The error for work that did not finish in time, naming the configured timeout.
    pub fn timeout_error(&self, what: impl std::fmt::Display) -> Error {
        let limit = self
            .timeout
            .map(crate::cli::format_duration)
            .unwrap_or_default();
        Error::Timeout(format!("{what}: timed out after {limit} (--timeout)"))
    }

    /// Fails when a stop was requested or the deadline passed; long loops call it between steps.
    pub fn check(&self, what: impl std::fmt::Display) -> Result<(), Error> {
        match STOP.load(Ordering::SeqCst) {
            0 if self.expired() => Err(self.timeout_error(what)),
            0 => Ok(()),
            STOPPED_BY_DEADLINE => Err(self.timeout_error(what)),
            signal => Err(Error::Signal(signal)),
        }
    }
}

/// Whether the applet was told to stop (signal or deadline); for loops that have no deadline.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) != 0
}

/// The signal that asked the applet to stop, if one did.
pub fn stop_signal() -> Option<i32> {
    Some(STOP.load(Ordering::SeqCst)).filter(|&signal| signal > 0)
}

enum Event {
    Finished(Result<(), Error>),
    Signal(i32),
}

/// Owns the signal handlers; created first thing in `main`.
pub struct Supervisor {
    events: Receiver<Event>,
    sender: Sender<Event>,
}

/// The work of an applet after its arguments were parsed.
pub type Job = Box<dyn FnOnce(&Deadline) -> Result<(), Error> + Send>;

impl Supervisor {
    pub fn install() -> Result<Supervisor, Error> {
        run_started();
        let (sender, events) = mpsc::channel();
        let mut signals = signal_hook::iterator::Signals::new(TERMINATING_SIGNALS)
            .map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))?;
        let to_main = sender.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    // The first signal decides the exit code; later ones change nothing.
                    let _ = STOP.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                    if to_main.send(Event::Signal(signal)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the signal thread: {e}")))?;
        Ok(Supervisor { events, sender })
    }

    /// Runs `job` under `deadline`, returning its result, or the signal or timeout that ended it.
    pub fn run(self, deadline: Deadline, job: Job) -> Result<(), Error> {
        let to_main = self.sender;
        thread::Builder::new()
            .name("applet".into())
            .spawn(move || {
                let result = job(&deadline);
                let _ = to_main.send(Event::Finished(result));
            })
            .map_err(|e| Error::Internal(format!("cannot start the applet thread: {e}")))?;

        let hard_end = deadline.remaining().map(|left| left + DEADLINE_GRACE);
        let event = match hard_end {
            None => self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(left) => self.events.recv_timeout(left),
        };
        match event {
            Ok(Event::Finished(result)) => result,
            Ok(Event::Signal(signal)) => {
                wait_for_unwind(&self.events);
                Err(Error::Signal(signal))
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = STOP.compare_exchange(
                    0,
                    STOPPED_BY_DEADLINE,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                wait_for_unwind(&self.events);
                Err(deadline.timeout_error("gave up"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Internal("the applet thread vanished".into()))
            }
        }
    }
}

/// Gives a stopping applet a moment to unwind through its own guards, then removes whatever
/// temporaries are still registered and refuses new ones.
fn wait_for_unwind(events: &Receiver<Event>) {
    let until = Instant::now() + STOP_GRACE;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(Event::Finished(_)) | Err(_) => break,
            Ok(Event::Signal(_)) => {}
        }
    }
    let mut registry = registry();
    registry.closed = true;
    for entry in registry.entries.drain(..) {
        remove_temp(&entry.path, entry.is_dir);
    }
}

struct Entry {
    id: u64,
    path: PathBuf,
    is_dir: bool,
}

struct Registry {
    /// Set when the process is stopping: no temporary may be created or committed after it.
    closed: bool,
    entries: Vec<Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    closed: false,
    entries: Vec::new(),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic aborts the process (panic = "abort"), so a poisoned lock cannot be observed in
    // release builds; in tests, carry on with the data.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stopped_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "initbox is stopping")
}

fn remove_temp(path: &Path, is_dir: bool) {
    if is_dir {
        // The worker may still be adding files while we remove them; a few passes win the race.
        for _ in 0..5 {
            match crate::sys::remove_tree_at_path(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => continue,
                _ => return,
            }
        }
    } else {
        let _ = fs::remove_file(path);
    }
}

/// A temporary file or directory that is removed unless committed, even when the process is
/// stopped by a signal or its deadline while the applet is blocked.
#[derive(Debug)]
pub struct TempGuard {
    id: u64,
    path: PathBuf,
    is_dir: bool,
}

impl TempGuard {
    /// Runs `create` for `path` and registers the path, both under the clean-up lock.
    pub fn create<T>(
        path: PathBuf,
        is_dir: bool,
        create: impl FnOnce(&Path) -> io::Result<T>,
    ) -> io::Result<(TempGuard, T)> {
        let mut registry = registry();
        if registry.closed {
            return Err(stopped_error());
        }
        let made = create(&path)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry.entries.push(Entry {
            id,
            path: path.clone(),
            is_dir,
        });
        Ok((TempGuard { id, path, is_dir }, made))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `finish` (typically the rename into place) under the clean-up lock, after which the
    /// path is no longer removed. On failure the temporary stays registered and is removed on drop.
    pub fn commit<T>(self, finish: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        let mut registry = registry();
        if registry.closed {
            return Err(stopped_error());
        }
        let made = finish(&self.path)?;
        registry.entries.retain(|entry| entry.id != self.id);
        drop(registry);
        std::mem::forget(self);
        Ok(made)
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let mut registry = registry();
        let before = registry.entries.len();
        registry.entries.retain(|entry| entry.id != self.id);
        // After a forced clean-up the entry is gone and so is the path: nothing left to do.
        if registry.entries.len() != before {
            remove_temp(&self.path, self.is_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_never_exceeds_the_time_left_nor_returns_zero() {
        let unlimited = Deadline::after(None);
        assert_eq!(
            unlimited.cap(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        let passed = Deadline::after(Some(Duration::ZERO));
        assert!(passed.expired());
        assert_eq!(passed.cap(Duration::from_secs(3)), Duration::from_millis(1));
        let soon = Deadline::after(Some(Duration::from_secs(1)));
        assert!(soon.cap(Duration::from_secs(3)) <= Duration::from_secs(1));
    }

    #[test]
    fn uncommitted_temporaries_are_removed_and_committed_ones_kept() {
        let dir = std::env::temp_dir().join(format!("initbox-guard-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dropped = dir.join("dropped");
        let (guard, ()) = TempGuard::create(dropped.clone(), false, |p| fs::write(p, "x")).unwrap();
        drop(guard);
        assert!(!dropped.exists());

        let kept = dir.join("kept");
        let (guard, ()) = TempGuard::create(kept.clone(), false, |p| fs::write(p, "x")).unwrap();
        let final_path = dir.join("final");
        guard.commit(|p| fs::rename(p, &final_path)).unwrap();
        assert!(final_path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
