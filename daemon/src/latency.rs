//! How long store requests take, by operation: the `snapfs_store_request_seconds` histograms.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use snapfs_control::wire::OpLatency;

#[derive(Debug, Default)]
pub struct Latencies {
    // One short critical section per request, never held across anything that waits.
    ops: Mutex<BTreeMap<&'static str, OpLatency>>,
}

impl Latencies {
    pub fn record(&self, op: &'static str, took: Duration) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(op)
            .or_insert_with(|| OpLatency::new(op))
            .observe(took);
    }

    /// Records how long `request` takes to finish, as operation `op`.
    pub async fn time<T>(&self, op: &'static str, request: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = request.await;
        self.record(op, start.elapsed());
        out
    }

    pub fn snapshot(&self) -> Vec<OpLatency> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_into_buckets_by_operation() {
        let l = Latencies::default();
        l.record("get", Duration::from_micros(500));
        l.record("get", Duration::from_secs(100));
        l.record("put", Duration::from_millis(20));
        let s = l.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].op.as_str(), s[0].counts[0]), ("get", 1));
        assert_eq!(s[0].counts.last(), Some(&1), "past the last bound");
        assert_eq!(s[0].sum_micros, 100_000_500);
        assert_eq!(s[1].counts.iter().sum::<u64>(), 1);
    }
}
