//! Chain-loading: every applet can continue into `-- COMMAND [ARGS]`, which initbox execs only
//! once the applet succeeded (the execline/s6 idea), so a scratch entrypoint composes steps
//! without a shell: `wait ... -- render-template ... -- init -- /app/server`.
//!
//! The command line is split here, before any applet parses its options, at the first `--` that
//! is not the value of an option, so that every applet gets the same rule and no applet's parser
//! sees the `--`. Which options take a value is read from the applet's usage text (`--mode MODE`),
//! the one place that already states it.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;

use crate::cli::COMMON_OPTIONS;
use crate::error::{describe_io, Error};

/// Splits `words` (the applet's arguments) at the first `--` that is not an option's value:
/// returns the applet's own words and the command after the `--` (empty when there is none).
/// `usages` are the texts that document the applet's options (its own and the shared sets).
pub fn split_command(mut words: Vec<OsString>, usages: &[&str]) -> (Vec<OsString>, Vec<OsString>) {
    let mut previous_takes_value = false;
    let mut split = None;
    for (index, word) in words.iter().enumerate() {
        let text = word.to_str().unwrap_or("");
        if text == "--" && !previous_takes_value {
            split = Some(index);
            break;
        }
        previous_takes_value = !previous_takes_value
            && text.starts_with('-')
            && std::iter::once(&COMMON_OPTIONS)
                .chain(usages)
                .any(|usage| takes_value(usage, text));
    }
    let Some(split) = split else {
        return (words, Vec::new());
    };
    let command = words.split_off(split + 1);
    words.pop();
    (words, command)
}

/// Whether `usage` documents `option` with a value: `--mode MODE`, `-p, --load FILE`,
/// `--header 'NAME: VALUE'`. A flag's line goes on with its lower-case description.
fn takes_value(usage: &str, option: &str) -> bool {
    usage.lines().any(|line| {
        let mut tokens = line.split_whitespace().map(|t| t.trim_end_matches(','));
        while let Some(token) = tokens.next() {
            if !token.starts_with('-') {
                return false;
            }
            if token == option {
                // Past the option's other spellings (`-p, --load`) to what follows them.
                let next = tokens.find(|t| !t.starts_with('-')).unwrap_or("");
                return next.starts_with(|c: char| c.is_ascii_uppercase() || c == '\'');
            }
        }
        false
    })
}

/// Replaces this process with `command`: returns only on failure, with the error to exit with.
/// std's `exec` resets SIGPIPE (which std ignores) to its default and keeps the mask we were given.
pub fn exec(command: &[OsString]) -> Error {
    let Some((program, arguments)) = command.split_first() else {
        return Error::usage("no COMMAND after '--'");
    };
    let err = std::process::Command::new(program).args(arguments).exec();
    command_error(program, &err)
}

/// 127 when `program` was not found, 126 when it was found but could not be run, as POSIX
/// shells answer.
pub fn command_error(program: &OsString, err: &io::Error) -> Error {
    let name = program.to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => Error::CommandNotFound(format!("{name}: command not found")),
        _ => Error::NotExecutable(format!("{name}: cannot execute: {}", describe_io(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "\
Usage: initbox demo [OPTIONS] PATH
    -p, --load FILE   apply a file
    --mode MODE       octal mode
    --dry-run         change nothing";

    fn split(words: &[&str]) -> (Vec<OsString>, Vec<OsString>) {
        split_command(words.iter().map(OsString::from).collect(), &[USAGE])
    }

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_first_double_dash_starts_the_command() {
        let (own, command) = split(&["--dry-run", "/x", "--", "app", "--", "y"]);
        assert_eq!(own, os(&["--dry-run", "/x"]));
        assert_eq!(command, os(&["app", "--", "y"]));
        let (own, command) = split(&["/x"]);
        assert_eq!((own, command), (os(&["/x"]), Vec::new()));
    }

    #[test]
    fn a_double_dash_that_is_an_option_value_stays_with_the_applet() {
        let (own, command) = split(&["--mode", "--", "/x", "--", "app"]);
        assert_eq!(own, os(&["--mode", "--", "/x"]));
        assert_eq!(command, os(&["app"]));
        let (own, _) = split(&["-p", "--", "--timeout", "--", "/x"]);
        assert_eq!(own, os(&["-p", "--", "--timeout", "--", "/x"]));
        // A flag takes no value: the `--` after it is the split.
        let (own, command) = split(&["--dry-run", "--", "app"]);
        assert_eq!((own, command), (os(&["--dry-run"]), os(&["app"])));
    }

    #[test]
    fn shared_option_sets_count_too() {
        let shared = "    --header 'NAME: VALUE'    extra request header";
        let words = os(&["URL", "--header", "--", "--", "app"]);
        let (own, command) = split_command(words, &[USAGE, shared]);
        assert_eq!(own, os(&["URL", "--header", "--"]));
        assert_eq!(command, os(&["app"]));
    }

    #[test]
    fn exec_failures_map_to_126_and_127() {
        let missing = exec(&os(&["/nonexistent/initbox-test-program"]));
        assert_eq!(missing.exit_code(), 127);
        let not_executable = exec(&os(&["/"]));
        assert_eq!(not_executable.exit_code(), 126);
    }
}
