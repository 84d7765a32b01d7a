//! Command-line pieces every applet shares: the common options, duration and size values, and the
//! check that nothing unknown was left on the command line.

use std::ffi::OsString;
use std::time::Duration;

use crate::error::Error;
use crate::log::Format;

/// Options every applet accepts, taken off the command line before the applet parses its own.
pub const COMMON_OPTIONS: &str = "\
COMMON OPTIONS
    --timeout DURATION   overall deadline, e.g. 500ms, 30s, 5m, 1h, 1m30s (at
                         least 1ms); 0 = none
    --check-args         only check the arguments (exit 0 or 64), do nothing
    --log-format FORMAT  text (default) or json; also INITBOX_LOG_FORMAT
    -q, --quiet          only print errors
    -h, --help           this help";

/// The parsed command line of one applet: its options, and the command after `--` when the
/// applet runs it itself (init); `exec::split_command` took that `--` off already.
pub struct Args {
    pub options: pico_args::Arguments,
    pub command: Vec<OsString>,
}

impl Args {
    pub fn new(words: Vec<OsString>, command: Vec<OsString>) -> Args {
        Args {
            options: pico_args::Arguments::from_vec(words),
            command,
        }
    }

    pub fn flag(&mut self, names: impl Into<pico_args::Keys>) -> bool {
        self.options.contains(names)
    }

    /// An option's value parsed by `parse`, whose error text explains the expected form.
    pub fn value<T>(
        &mut self,
        names: impl Into<pico_args::Keys>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        self.options
            .opt_value_from_fn(names, parse)
            .map_err(usage_error)
    }

    /// Every occurrence of a repeatable option.
    pub fn values(
        &mut self,
        names: impl Into<pico_args::Keys> + Copy,
    ) -> Result<Vec<String>, Error> {
        self.options.values_from_str(names).map_err(usage_error)
    }

    /// The remaining words, all positional: any word left that looks like an option is unknown.
    pub fn positionals(self) -> Result<Vec<String>, Error> {
        self.options
            .finish()
            .into_iter()
            .map(|word| match word.into_string() {
                Ok(word) if word.starts_with('-') && word.len() > 1 => {
                    Err(Error::usage(format!("unknown option '{word}'")))
                }
                Ok(word) => Ok(word),
                Err(word) => Err(Error::usage(format!(
                    "argument is not valid UTF-8: {}",
                    word.to_string_lossy()
                ))),
            })
            .collect()
    }
}

fn usage_error(err: pico_args::Error) -> Error {
    Error::usage(match err {
        pico_args::Error::OptionWithoutAValue(name) => format!("option '{name}' needs a value"),
        pico_args::Error::Utf8ArgumentParsingFailed { cause, .. }
        | pico_args::Error::ArgumentParsingFailed { cause } => cause,
        other => other.to_string(),
    })
}

/// The options common to all applets.
pub struct Common {
    pub help: bool,
    /// Parse and validate only: lets manifests be checked against this binary's parser.
    pub check_args: bool,
    pub timeout: Option<Duration>,
    pub log_format: Format,
    pub quiet: bool,
}

impl Common {
    /// Takes the common options off `args`; `default_timeout` applies when `--timeout` is absent.
    pub fn parse(args: &mut Args, default_timeout: Option<Duration>) -> Result<Common, Error> {
        let help = args.flag(["-h", "--help"]);
        let check_args = args.flag("--check-args");
        let timeout = match args.value("--timeout", parse_duration)? {
            Some(Duration::ZERO) => None,
            Some(limit) => Some(limit),
            None => default_timeout,
        };
        let log_format = match args.value("--log-format", Format::parse)? {
            Some(format) => format,
            None => match std::env::var("INITBOX_LOG_FORMAT") {
                Ok(name) => Format::parse(&name)
                    .map_err(|e| Error::usage(format!("INITBOX_LOG_FORMAT: {e}")))?,
                Err(_) => Format::Text,
            },
        };
        let quiet = args.flag(["-q", "--quiet"]);
        Ok(Common {
            help,
            check_args,
            timeout,
            log_format,
            quiet,
        })
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1m30s`, `1.5s`, as Kubernetes users write durations (Go's
/// `time.ParseDuration` units from `ms` up). A bare number is seconds, as for GNU `timeout`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_unbounded(text)?;
    if duration > MAX_DURATION {
        return Err(format!(
            "duration '{text}' is longer than {}h (use 0 for no limit)",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(duration)
}

/// Ten years: longer is a typo, and an `Instant` that far ahead could overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn parse_duration_unbounded(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{text}' (use e.g. 500ms, 30s, 5m, 1h, 1m30s)");
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut any_nonzero = false;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(invalid()),
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        any_nonzero |= value > 0.0;
        total = total
            .checked_add(Duration::try_from_secs_f64(value * unit_seconds).map_err(|_| invalid())?)
            .ok_or_else(invalid)?;
        rest = tail;
    }
    // A value rounding to 0 would mean "no deadline" (`--timeout 0.0000001ms`), and no limit
    // below 1 ms is meant: a typo must not turn a short limit into none.
    if any_nonzero && total < Duration::from_millis(1) {
        return Err(format!(
            "duration '{text}' is shorter than 1ms (use 0 for no limit)"
        ));
    }
    Ok(total)
}

/// Sizes for humans: `512 B`, `1.5 KiB`, `100.0 MiB`, `1.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An average rate for progress lines: `18.0 MiB/s`.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    format!("{}/s", human_size((bytes as f64 / seconds) as u64))
}

/// Formats a duration the way `parse_duration` reads it, for messages: `1m30s`, `250ms`, `2.5s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    if seconds < 60 {
        let tenths = (millis % 1000) / 100;
        return if tenths == 0 {
            format!("{seconds}s")
        } else {
            format!("{seconds}.{tenths}s")
        };
    }
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

/// Parses a byte size: `1048576`, `512K`, `100M`, `2G`, with or without a trailing `B`/`iB`.
/// Units are powers of 1024, as in Kubernetes' `Mi`/`Gi` and curl's `--max-filesize` suffixes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size '{text}' (use e.g. 65536, 512K, 100M, 2G)");
    let digits_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_len);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches(['B', 'i']) {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(invalid()),
    };
    number.checked_mul(1 << shift).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }

    #[test]
    fn durations_in_kubernetes_form() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration("7"), Ok(ms(7000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in ["", "s", "5x", "m5", "1..5s", "-1s", "5 s", "1e400h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// Found by the `durations` fuzz target: a huge `--timeout` overflowed the deadline's Instant.
    #[test]
    fn absurdly_long_durations_are_refused() {
        assert!(parse_duration("87600h").is_ok());
        let err = parse_duration("9301855301855571162").unwrap_err();
        assert!(err.contains("longer than 87600h"), "{err}");
        assert!(parse_duration("100000h").is_err());
    }

    /// Issue 9 #23: `--timeout 0.0000001ms` rounded to 0, which means "no deadline".
    #[test]
    fn durations_below_a_millisecond_are_refused_not_forever() {
        for tiny in ["0.0000001ms", "0.5ms", "0.0009s", "0.00001m", "0h0.1ms"] {
            let err = parse_duration(tiny).unwrap_err();
            assert!(err.contains("shorter than 1ms"), "{tiny:?}: {err}");
        }
        for zero in ["0", "0s", "0ms", "0.0s", "0h0m"] {
            assert_eq!(parse_duration(zero), Ok(Duration::ZERO), "{zero:?}");
        }
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
    }

    #[test]
    fn durations_print_as_they_are_written() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        for text in ["250ms", "2.5s", "1m30s", "1h", "59s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn leftover_options_are_unknown() {
        let args = Args::new(vec!["--bogus".into(), "x".into()], Vec::new());
        let err = args.positionals().unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("--bogus"));
    }
}
