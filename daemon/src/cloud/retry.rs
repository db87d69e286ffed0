//! How long a remote keeps trying before a read or write fails.
//!
//! object_store's HTTP client already retries every request that can fail transiently
//! (connection refused or reset, timeouts, 5xx, 429, a body cut off mid-read, resumed where it
//! broke) with exponential backoff and random jitter, and leaves 4xx answers alone. A second
//! retry layer above it would multiply the budget, so snapfs only sets that budget: short
//! enough that a read blocked on a dead server turns into EIO in seconds rather than minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use object_store::{BackoffConfig, RetryConfig};
use snapfs_control::units::parse_duration;

/// The retry budget of one remote, from its `retry_max` and `retry_timeout` options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Retries of one request after its first try.
    pub max_retries: usize,
    /// No retry starts after this long since the first try.
    pub timeout: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            max_retries: 8,
            timeout: Duration::from_secs(20),
        }
    }
}

impl RetryBudget {
    /// Takes snapfs's own keys out of a remote's options; the rest are object_store's.
    pub fn take_from(options: &mut BTreeMap<String, String>) -> anyhow::Result<RetryBudget> {
        let mut budget = RetryBudget::default();
        if let Some(v) = options.remove("retry_max") {
            budget.max_retries = v
                .trim()
                .parse()
                .with_context(|| format!("option retry_max: {v:?} is not a count"))?;
        }
        if let Some(v) = options.remove("retry_timeout") {
            budget.timeout = parse_duration(&v).context("option retry_timeout")?;
        }
        Ok(budget)
    }

    pub fn config(self) -> RetryConfig {
        RetryConfig {
            // Each wait is drawn at random between the first backoff and `base` times the last
            // one, capped: retrying clients spread out instead of arriving together.
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(4),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_its_keys_and_leaves_the_rest() {
        let mut o: BTreeMap<String, String> = [
            ("retry_max", "3"),
            ("retry_timeout", "1500ms"),
            ("region", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let b = RetryBudget::take_from(&mut o).unwrap();
        assert_eq!(b.max_retries, 3);
        assert_eq!(b.timeout, Duration::from_millis(1500));
        assert_eq!(o.len(), 1);
        let mut bad = BTreeMap::from([("retry_max".to_string(), "many".to_string())]);
        assert!(RetryBudget::take_from(&mut bad).is_err());
    }
}
