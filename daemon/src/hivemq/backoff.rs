//! Waits between tries: exponential, capped, and (for retries) with random jitter so that
//! clients hitting a struggling broker spread out instead of arriving together.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A growing wait: `start`, then doubled each step, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub start: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before try `step + 1` (step 0 is the first wait).
    pub fn delay(&self, step: u32) -> Duration {
        let factor = 1u32.checked_shl(step.min(30)).unwrap_or(u32::MAX);
        self.start.saturating_mul(factor).min(self.max)
    }

    /// `delay(step)` scaled by a random factor in [0.5, 1.0]: never longer than the plain
    /// delay, so the total a caller waits stays bounded by the sum of the plain delays.
    pub fn jittered(&self, step: u32) -> Duration {
        self.delay(step).mul_f64(0.5 + random_unit() / 2.0)
    }
}

/// A number in [0, 1) that differs from call to call. std seeds every `RandomState` randomly,
/// which is all the randomness jitter needs; no generator crate is pulled in for it.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let b = Backoff {
            start: Duration::from_secs(2),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (0..7).map(|s| b.delay(s).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_delay() {
        let b = Backoff {
            start: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut seen = std::collections::HashSet::new();
        for step in 0..8 {
            for _ in 0..50 {
                let d = b.jittered(step);
                assert!(d <= b.delay(step), "{d:?} at step {step}");
                assert!(d >= b.delay(step) / 2, "{d:?} at step {step}");
                seen.insert(d);
            }
        }
        // Random, not a fixed fraction.
        assert!(seen.len() > 100, "{} distinct waits", seen.len());
    }
}
