//! `sleep`: pause for a duration, for `lifecycle.preStop` hooks in scratch images that have no
//! `sleep` of their own. It runs under the supervisor like every applet, so SIGTERM and SIGINT end
//! it at once (143, 130), and it can chain-load a command afterwards.

use crate::cli::{parse_duration, Args};
use crate::error::Error;
use crate::supervisor::Job;

pub const USAGE: &str = "\
Usage: initbox sleep DURATION [-- COMMAND [ARGS...]]

Pause for DURATION (500ms, 5s, 1m30s; a bare number, 0.5 too, is seconds), then exit 0,
or exec COMMAND when one is given. SIGTERM ends it with 143, SIGINT with 130.

EXAMPLES
    initbox sleep 5
    lifecycle: {preStop: {exec: {command: [/initbox, sleep, \"5\"]}}}";

pub fn parse(args: Args) -> Result<Job, Error> {
    let words = args.positionals()?;
    let [text] = words.as_slice() else {
        return Err(Error::usage("sleep takes exactly one DURATION"));
    };
    // `sleep 0.5` means seconds, as in coreutils; every other form is a duration.
    let seconds = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let duration = match seconds {
        true => parse_duration(&format!("{text}s")),
        false => parse_duration(text),
    }
    .map_err(Error::Usage)?;
    Ok(Box::new(move |deadline| {
        // The supervisor ends the process on a signal while this thread sleeps, so one sleep is
        // enough. A shorter --timeout is reported as the applet's own timeout.
        match deadline.remaining() {
            Some(left) if left < duration => {
                std::thread::sleep(left);
                Err(deadline.timeout_error("sleep"))
            }
            _ => {
                std::thread::sleep(duration);
                Ok(())
            }
        }
    }))
}
