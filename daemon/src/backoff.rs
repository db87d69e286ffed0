//! Waits between tries, one policy for every client of the daemon: a request that failed in
//! a way that can pass is tried again through backon's retry loop, and a running job is
//! polled at growing intervals (DESIGN §7: 2 s → 30 s).
//!
//! backon is the crate kube's watcher already backs off with, so it costs no extra build.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A growing wait: `first`, then doubled each step, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Tries after the first one; `None` goes on until the caller stops (a poll).
    pub retries: Option<u32>,
    /// Each wait drawn at random between half and the whole of its plain value: clients that
    /// failed together spread out instead of coming back together, and the total stays within
    /// the plain waits' sum.
    pub jitter: bool,
}

impl BackoffBuilder for Backoff {
    type Backoff = ExponentialBackoff;

    /// The waits, in order.
    fn build(self) -> ExponentialBackoff {
        // backon's jitter adds up to one more wait; starting from half of each gives
        // [half, whole).
        let scale = if self.jitter { 2 } else { 1 };
        let b = ExponentialBuilder::new()
            .with_min_delay(self.first / scale)
            .with_max_delay(self.max / scale);
        let b = match self.retries {
            Some(n) => b.with_max_times(usize::try_from(n).unwrap_or(usize::MAX)),
            None => b.without_max_times(),
        };
        if self.jitter { b.with_jitter() } else { b }.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(first: u64, max: u64) -> Backoff {
        Backoff {
            first: Duration::from_millis(first),
            max: Duration::from_millis(max),
            retries: None,
            jitter: false,
        }
    }

    #[test]
    fn doubles_up_to_the_ceiling() {
        let b = poll(2000, 30_000);
        let waits: Vec<u64> = b.build().take(7).map(|d| d.as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.build().nth(10_000), Some(Duration::from_secs(30)));
    }

    #[test]
    fn retries_end_after_their_count() {
        let b = Backoff {
            retries: Some(2),
            ..poll(200, 2000)
        };
        assert_eq!(b.build().count(), 2);
        let none = Backoff {
            retries: Some(0),
            ..b
        };
        assert_eq!(none.build().next(), None);
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_delay() {
        // Durations a binary fraction holds exactly, so the bounds are exact too.
        let plain = poll(125, 2000);
        let jittered = Backoff {
            jitter: true,
            ..plain
        };
        let delays: Vec<Duration> = plain.build().take(8).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            for (step, (d, full)) in jittered.build().zip(&delays).take(8).enumerate() {
                assert!(d <= *full, "{d:?} at step {step}");
                assert!(d >= *full / 2, "{d:?} at step {step}");
                seen.insert(d);
            }
        }
        // Random, not a fixed fraction.
        assert!(seen.len() > 100, "{} distinct waits", seen.len());
    }
}
