//! initbox: one static binary for the jobs of Kubernetes initContainers and scratch-image
//! entrypoints.
//!
//! It is a multi-call binary, as busybox: called through a link named after an applet
//! (`wait-tcp`) it runs that applet; called as `initbox` it takes the applet from its first
//! argument. This file only dispatches; each applet lives in `applets/`, and the table in
//! `applets/mod.rs` lists them.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use initbox::applets::{self, Applet, APPLETS};
use initbox::cli::{self, Args, Common};
use initbox::error::{self, Error};
use initbox::exec;
use initbox::log;
use initbox::supervisor::{self, Deadline, Supervisor};

/// Kubernetes' default terminationMessagePath; the kubelet shows its content as the reason.
const TERMINATION_LOG: &str = "/dev/termination-log";
const TERMINATION_LOG_LIMIT: usize = 4096;

fn main() -> ExitCode {
    report_panics_as_internal_errors();
    let mut words: Vec<OsString> = std::env::args_os().collect();
    let applet = match select(&mut words) {
        Ok(applet) => applet,
        Err(code) => return code,
    };
    // Handlers first: as PID 1, a SIGTERM that arrives before them would be dropped. init takes
    // its signals itself, on this one thread, and starts no supervisor.
    let supervisor = match applet.runs_command {
        true => None,
        false => match Supervisor::install() {
            Ok(supervisor) => Some(supervisor),
            Err(err) => return report(&err, None),
        },
    };
    let help_hint = format!("initbox {} --help", applet.name);
    match run(applet, words, supervisor) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err, Some(&help_hint)),
    }
}

/// The applet named by the link we were called through, or by the first argument (which is then
/// taken off `words`, as is argv[0]). The multi-call name's own options (`--help`, `--version`,
/// `--install`) are handled here and end the run with their exit code.
fn select(words: &mut Vec<OsString>) -> Result<&'static Applet, ExitCode> {
    let invoked_as = words
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let applet = match applets::find(&invoked_as) {
        Some(applet) => applet,
        None => {
            if words.len() < 2 {
                print!("{}", overview());
                return Err(ExitCode::SUCCESS);
            }
            let first = words.remove(1).to_string_lossy().into_owned();
            match first.as_str() {
                "-h" | "--help" | "help" => {
                    print!("{}", overview());
                    return Err(ExitCode::SUCCESS);
                }
                "-V" | "--version" => {
                    print!("{}", version());
                    return Err(ExitCode::SUCCESS);
                }
                "--install" => {
                    return Err(match install(&words[1..]) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(err) => report(&err, Some("initbox --help")),
                    })
                }
                name => match applets::find(name) {
                    Some(applet) => applet,
                    None => {
                        let err = Error::usage(format!("unknown applet '{name}'"));
                        return Err(report(&err, Some("initbox --help")));
                    }
                },
            }
        }
    };
    words.remove(0);
    Ok(applet)
}

fn run(
    applet: &'static Applet,
    words: Vec<OsString>,
    supervisor: Option<Supervisor>,
) -> Result<(), Error> {
    log::set_applet(applet.name);
    let usages: Vec<&str> = std::iter::once(applet.usage)
        .chain(applet.shared_options.iter().copied())
        .collect();
    let (words, command) = exec::split_command(words, &usages);
    // init runs the command as its child; every other applet chain-loads it once it succeeded.
    let (own, chained) = match applet.runs_command {
        true => (command, Vec::new()),
        false => (Vec::new(), command),
    };
    let mut args = Args::new(words, own);
    let common = Common::parse(&mut args, applet.default_timeout)?;
    if common.help {
        print!("{}", applet_help(applet));
        return Ok(());
    }
    log::init(common.log_format, common.quiet);
    let job = (applet.parse)(args)?;
    if common.check_args {
        return Ok(());
    }
    let deadline = Deadline::after(common.timeout);
    let Some(supervisor) = supervisor else {
        return job(&deadline);
    };
    supervisor.run(deadline, job)?;
    if chained.is_empty() {
        return Ok(());
    }
    // A stop asked for as the applet finished must not be lost in the exec.
    if let Some(signal) = supervisor::stop_signal() {
        return Err(Error::Signal(signal));
    }
    Err(exec::exec(&chained))
}

/// Prints the one line that explains the failure, also to the termination log, and returns the
/// exit code. Usage errors point to the help that shows the right form.
fn report(err: &Error, help_hint: Option<&str>) -> ExitCode {
    if let Error::Exited(code) = err {
        return ExitCode::from(*code);
    }
    let mut message = err.to_string();
    if let (Error::Usage(_), Some(hint)) = (err, help_hint) {
        message.push_str(&format!(" (see '{hint}')"));
    }
    log::error(&message, &[("exit_code", err.exit_code().into())]);
    write_termination_log(&log::text_line(&message));
    ExitCode::from(err.exit_code())
}

/// A panic is a bug: say so in the one-line form and exit 1, as the contract says, rather than
/// abort (panic = "abort") with SIGABRT's 134.
fn report_panics_as_internal_errors() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("internal error (a bug, please report it): {info}");
        let err = Error::Internal(message.clone());
        log::error(&message, &[("exit_code", err.exit_code().into())]);
        write_termination_log(&log::text_line(&message));
        std::process::exit(err.exit_code().into());
    }));
}

/// Writes the reason where Kubernetes looks for it, only when that file already exists (the
/// kubelet creates it): outside Kubernetes nothing is created in /dev.
fn write_termination_log(line: &str) {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(TERMINATION_LOG)
    else {
        return;
    };
    let mut end = line.len().min(TERMINATION_LOG_LIMIT);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let _ = std::io::Write::write_all(&mut file, &line.as_bytes()[..end]);
}

fn overview() -> String {
    let mut text = String::from(
        "Usage: initbox APPLET [OPTIONS] [ARGS...]\n\
         \x20      APPLET [OPTIONS] [ARGS...]      (through a link named after the applet)\n\
         \x20      initbox --install DIR           (create one symlink per applet in DIR)\n\
         \x20      initbox --version\n\nAPPLETS\n",
    );
    for applet in APPLETS {
        text.push_str(&format!("    {:<17}{}\n", applet.name, applet.summary));
    }
    text.push_str("\n'initbox APPLET --help' shows an applet's options.\n\n");
    text.push_str(error::EXIT_CODES);
    text.push('\n');
    text
}

fn applet_help(applet: &Applet) -> String {
    let mut blocks = vec![applet.usage];
    blocks.extend(applet.shared_options);
    blocks.extend([cli::COMMON_OPTIONS, error::EXIT_CODES]);
    format!("{}\n", blocks.join("\n\n"))
}

fn version() -> String {
    format!(
        "initbox {} (commit {}, {})\napplets: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("INITBOX_COMMIT"),
        env!("INITBOX_TARGET"),
        env!("INITBOX_APPLETS")
    )
}

/// `--install DIR`: one symlink per applet, pointing at this binary. Links that already point
/// here are kept, so the step can run again; anything else in the way is an error.
fn install(words: &[OsString]) -> Result<(), Error> {
    let [directory] = words else {
        return Err(Error::usage("--install takes exactly one DIR"));
    };
    let directory = PathBuf::from(directory);
    let binary = std::env::current_exe()
        .map_err(|e| Error::io("cannot tell where this binary is (is /proc mounted?)", &e))?;
    for applet in APPLETS {
        let link = directory.join(applet.name);
        if std::fs::read_link(&link).is_ok_and(|target| target == binary) {
            continue;
        }
        std::os::unix::fs::symlink(&binary, &link).map_err(|e| Error::io(link.display(), &e))?;
    }
    Ok(())
}
