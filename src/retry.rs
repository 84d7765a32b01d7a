//! Retry schedules: exponential backoff with jitter, so that many pods waiting on one service do
//! not probe it in lockstep, and a fixed interval when the user asks for one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Backoff {
    next: Duration,
    max: Duration,
    fixed: bool,
    seed: u64,
}

impl Backoff {
    /// Starts at `first`, doubles up to `max`.
    pub fn exponential(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first,
            max,
            fixed: false,
            seed: seed(),
        }
    }

    pub fn fixed(interval: Duration) -> Backoff {
        Backoff {
            next: interval,
            max: interval,
            fixed: true,
            seed: seed(),
        }
    }

    /// The pause before the next attempt: the current step, less up to a fifth at random.
    pub fn next_delay(&mut self) -> Duration {
        if self.fixed {
            return self.next;
        }
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let fifth = step / 5;
        let jitter_nanos = self.random() % (fifth.as_nanos() as u64 + 1);
        step - Duration::from_nanos(jitter_nanos)
    }

    /// xorshift64: statistical quality does not matter here, only spreading the attempts.
    fn random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (u64::from(nanos) << 20) ^ u64::from(std::process::id()) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::exponential(ms(10), ms(100));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        let steps = [10, 20, 40, 80, 100, 100, 100, 100];
        for (delay, step) in delays.iter().zip(steps) {
            assert!(
                *delay <= ms(step) && *delay >= ms(step) * 4 / 5,
                "{delay:?} vs {step}"
            );
        }
    }

    #[test]
    fn fixed_interval_does_not_move() {
        let mut backoff = Backoff::fixed(Duration::from_millis(250));
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }
}
