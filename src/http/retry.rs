//! Retrying a failed HTTP attempt: which failures deserve another try, how long to wait
//! (`Retry-After` when the server says, backoff with jitter otherwise), and never past the
//! deadline. fetch retries whole downloads with it, the client single requests.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::classify::is_transient;
use super::Response;
use crate::cli::format_duration;
use crate::error::Error;
use crate::log;
use crate::retry::Backoff;
use crate::supervisor::Deadline;

const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Why one attempt failed, and whether another may succeed.
pub struct Failure {
    pub error: Error,
    pub retry: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }

    /// Retried when the network or the server may do better next time.
    pub fn classified(error: Error) -> Failure {
        Failure {
            retry: is_transient(&error),
            ..Failure::fatal(error)
        }
    }

    /// A status the caller does not accept; 408, 429 and 5xx are retried.
    pub fn status(response: &Response) -> Failure {
        Failure {
            error: response.status_error(),
            retry: response.is_transient(),
            retry_after: response.retry_after(),
        }
    }
}

/// The retries left for one operation.
pub struct Retries {
    attempt: u32,
    attempts: u32,
    backoff: Backoff,
}

impl Retries {
    pub fn new(retries: u32) -> Retries {
        Retries {
            attempt: 1,
            attempts: retries.saturating_add(1),
            backoff: Backoff::exponential(FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE),
        }
    }

    /// Whether the current attempt is the last one.
    pub fn spent(&self) -> bool {
        self.attempt >= self.attempts
    }

    /// After a failed attempt at `what` (`GET URL`): waits and returns `Ok` when another attempt
    /// is due, or the error that ends the operation. A signal or the deadline ends it whatever
    /// the attempt's own error says.
    pub fn pause(
        &mut self,
        failure: Failure,
        what: &str,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        deadline.check(what)?;
        if !failure.retry || self.spent() {
            return Err(failure.error);
        }
        let pause = failure
            .retry_after
            .unwrap_or_else(|| self.backoff.next_delay());
        if deadline.remaining().is_some_and(|left| left <= pause) {
            log::warn(
                &format!(
                    "no time left to retry in {} (--timeout)",
                    format_duration(pause)
                ),
                &[],
            );
            return Err(failure.error);
        }
        self.attempt += 1;
        log::warn(
            &format!(
                "{}; retrying in {} (attempt {} of {})",
                failure.error,
                format_duration(pause),
                self.attempt,
                self.attempts
            ),
            &[
                ("request", json!(what)),
                ("error", json!(failure.error.to_string())),
                ("attempt", json!(self.attempt)),
                ("pause_ms", json!(pause.as_millis() as u64)),
            ],
        );
        let until = Instant::now() + pause;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            deadline.check(what)?;
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        Ok(())
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): delay-seconds, or an HTTP-date in the IMF-fixdate
/// form every server sends (`Sun, 06 Nov 1994 08:49:37 GMT`), which counts from `now`. A date in
/// the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = UNIX_EPOCH + Duration::from_secs(parse_imf_fixdate(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the epoch of an IMF-fixdate (RFC 9110 section 5.6.7).
fn parse_imf_fixdate(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = text.split_once(", ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = fields.as_slice() else {
        return None;
    };
    let number = |text: &str, digits: usize| -> Option<u64> {
        (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let (day, year) = (number(day, 2)?, number(year, 4)?);
    let clock: Vec<&str> = time.split(':').collect();
    let [hour, minute, second] = clock.as_slice() else {
        return None;
    };
    let (hour, minute, second) = (number(hour, 2)?, number(minute, 2)?, number(second, 2)?);
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for
/// years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: the HTTP-date form of `Retry-After` was ignored.
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        let parse = |text| parse_retry_after(text, now);
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        for bad in [
            "",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
