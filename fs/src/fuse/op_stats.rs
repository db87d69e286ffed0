//! How many of each FUSE operation were answered, how (ok, or which errno) and how fast: the
//! `snapfs_fuse_*` metrics.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use snapfs_control::prometheus::Histogram;

/// Upper bounds of the latency buckets, in seconds: a cached lookup is microseconds, a read
/// that waits on a store can be seconds.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

thread_local! {
    // The errno the callback running on this fuser thread answered with, 0 for none. A
    // callback answers on the thread it runs on, so its timer finds it here when it ends.
    static ANSWERED: Cell<i32> = const { Cell::new(0) };
}

/// Notes that the operation running on this thread answers with `errno`.
pub fn note_errno(errno: i32) {
    ANSWERED.with(|a| a.set(errno));
}

#[derive(Debug, Default)]
struct Op {
    /// Per errno (0: answered without error), how many.
    outcomes: BTreeMap<i32, u64>,
    latency: Histogram,
}

/// The counts of every operation since the mount.
#[derive(Debug, Default)]
pub struct OpStats {
    // One short critical section per operation, never held across anything that waits.
    ops: Mutex<BTreeMap<&'static str, Op>>,
}

/// What one operation's counts are now.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSnapshot {
    pub op: &'static str,
    /// Per outcome (`ok`, or an errno name such as `ENOENT`), how many.
    pub outcomes: Vec<(String, u64)>,
    pub latency: Histogram,
}

/// Times one operation; it is counted when this is dropped, at the end of the callback.
pub struct Timer<'a> {
    stats: &'a OpStats,
    op: &'static str,
    start: Instant,
}

impl OpStats {
    pub fn start(&self, op: &'static str) -> Timer<'_> {
        note_errno(0);
        Timer {
            stats: self,
            op,
            start: Instant::now(),
        }
    }

    fn record(&self, op: &'static str, errno: i32, seconds: f64) {
        let Ok(mut ops) = self.ops.lock() else {
            return;
        };
        let entry = ops.entry(op).or_default();
        *entry.outcomes.entry(errno).or_default() += 1;
        let h = &mut entry.latency;
        if h.counts.is_empty() {
            h.bounds = LATENCY_BOUNDS;
            h.counts = vec![0; LATENCY_BOUNDS.len() + 1];
        }
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        h.counts[bucket] += 1;
        h.sum += seconds;
    }

    /// Every operation seen so far, by name.
    pub fn snapshot(&self) -> Vec<OpSnapshot> {
        let Ok(ops) = self.ops.lock() else {
            return Vec::new();
        };
        ops.iter()
            .map(|(op, o)| OpSnapshot {
                op,
                outcomes: o
                    .outcomes
                    .iter()
                    .map(|(errno, n)| (errno_name(*errno), *n))
                    .collect(),
                latency: o.latency.clone(),
            })
            .collect()
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let errno = ANSWERED.with(|a| a.replace(0));
        self.stats
            .record(self.op, errno, self.start.elapsed().as_secs_f64());
    }
}

/// `ok`, or the symbolic name of the errnos snapfs answers with (the number for any other).
fn errno_name(errno: i32) -> String {
    let name = match errno {
        0 => "ok",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EDQUOT => "EDQUOT",
        libc::EEXIST => "EEXIST",
        libc::EINTR => "EINTR",
        libc::EINVAL => "EINVAL",
        libc::EIO => "EIO",
        libc::EISDIR => "EISDIR",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENODATA => "ENODATA",
        libc::ENOENT => "ENOENT",
        libc::ENOSPC => "ENOSPC",
        libc::ENOTDIR => "ENOTDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTSUP => "ENOTSUP",
        libc::ERANGE => "ERANGE",
        libc::EROFS => "EROFS",
        libc::EXDEV => "EXDEV",
        other => return other.to_string(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outcomes_and_latency_per_operation() {
        let stats = OpStats::default();
        drop(stats.start("lookup"));
        {
            let _t = stats.start("lookup");
            note_errno(libc::ENOENT);
        }
        drop(stats.start("read"));
        let snap = stats.snapshot();
        let ops: Vec<&str> = snap.iter().map(|s| s.op).collect();
        assert_eq!(ops, ["lookup", "read"]);
        assert_eq!(
            snap[0].outcomes,
            [("ok".to_string(), 1), ("ENOENT".to_string(), 1)]
        );
        assert_eq!(snap[0].latency.counts.iter().sum::<u64>(), 2);
        assert_eq!(snap[0].latency.bounds, LATENCY_BOUNDS);
        // The next operation on the thread starts clean.
        assert_eq!(snap[1].outcomes, [("ok".to_string(), 1)]);
    }

    #[test]
    fn unnamed_errnos_are_numbers() {
        assert_eq!(errno_name(libc::EPERM), libc::EPERM.to_string());
    }
}
