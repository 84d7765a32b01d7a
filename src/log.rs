//! Logging to stderr: one human line per event by default, or one JSON object per line
//! (`--log-format json`) with time, applet, level, message and the event's fields, for log
//! collectors. `-q` keeps only errors.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format, String> {
        match name {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown log format '{other}' (use text or json)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

struct Style {
    format: Format,
    quiet: bool,
}

static APPLET: OnceLock<&'static str> = OnceLock::new();
static STYLE: OnceLock<Style> = OnceLock::new();

/// Names the applet in every line from now on; set as soon as dispatch knows it.
pub fn set_applet(applet: &'static str) {
    let _ = APPLET.set(applet);
}

/// Sets the format once the options are parsed. Lines before that (usage errors) are text.
pub fn init(format: Format, quiet: bool) {
    let _ = STYLE.set(Style { format, quiet });
}

fn prefix() -> String {
    match APPLET.get() {
        Some(applet) => format!("initbox {applet}"),
        None => "initbox".into(),
    }
}

pub fn info(message: &str, fields: &[(&str, Value)]) {
    log(Level::Info, message, fields);
}

pub fn warn(message: &str, fields: &[(&str, Value)]) {
    log(Level::Warn, message, fields);
}

pub fn error(message: &str, fields: &[(&str, Value)]) {
    log(Level::Error, message, fields);
}

pub fn log(level: Level, message: &str, fields: &[(&str, Value)]) {
    let style = STYLE.get();
    if level != Level::Error && style.is_some_and(|s| s.quiet) {
        return;
    }
    let line = match style {
        Some(style) if style.format == Format::Json => {
            json_line(APPLET.get().copied().unwrap_or(""), level, message, fields)
        }
        _ => text_line(message),
    };
    // A closed stderr must not turn into a second failure.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The line as `main` prints it for a final error, also written to the termination log.
/// Control characters are escaped: a file name, a host name or a server's text must not split
/// the line (forging another) or reach the terminal as an escape sequence.
pub fn text_line(message: &str) -> String {
    format!("{}: {}", prefix(), escape_controls(message))
}

/// `\n`, `\t`, `\r` and `\u{..}` for control characters (C0, DEL, C1) and for the Unicode line
/// separators and bidirectional overrides that can reorder or split what a reader sees.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(escaped) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn json_line(applet: &str, level: Level, message: &str, fields: &[(&str, Value)]) -> String {
    let mut object = Map::new();
    object.insert("time".into(), Value::String(rfc3339_now()));
    object.insert("applet".into(), Value::String(applet.into()));
    object.insert("level".into(), Value::String(level.name().into()));
    object.insert("message".into(), Value::String(message.into()));
    for (name, value) in fields {
        object.insert((*name).into(), value.clone());
    }
    Value::Object(object).to_string()
}

fn rfc3339_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since_epoch.as_secs(), since_epoch.subsec_millis())
}

/// UTC time as `2026-11-22T10:04:05.123Z`, without a date library: the civil-from-days
/// conversion of the proleptic Gregorian calendar.
fn rfc3339(unix_seconds: u64, millis: u32) -> String {
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_350_245, 123), "2026-11-22T12:24:05.123Z");
    }

    /// Issue 9 #8: a newline in logged text could forge a second line.
    #[test]
    fn text_lines_escape_control_characters() {
        assert_eq!(
            escape_controls("a\ninitbox: FORGED\x1b[31m\u{202e}\u{9b}"),
            "a\\ninitbox: FORGED\\u{1b}[31m\\u{202e}\\u{9b}"
        );
        assert_eq!(escape_controls("plain: é"), "plain: é");
        assert!(!text_line("x\ry").contains('\r'));
    }

    #[test]
    fn json_lines_carry_fields() {
        let line = json_line("wait-tcp", Level::Warn, "x", &[("attempt", Value::from(3))]);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["applet"], "wait-tcp");
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["message"], "x");
        assert_eq!(parsed["attempt"], 3);
    }
}
