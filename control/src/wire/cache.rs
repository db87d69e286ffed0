//! The block cache's counters, as the cache keeps them and `snapfs status` shows them.

use serde::{Deserialize, Serialize};

/// Counters since the cache was opened. Each lookup counts as exactly one of `memory_hits`,
/// `disk_hits` or `misses`; a caller that joined another caller's lookup counts by where that
/// one found the block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    pub fetched_bytes: u64,
    /// Approximate until the cache's background scan of its disk directory completes.
    pub disk_bytes: u64,
    pub memory_bytes: u64,
    pub evicted_bytes: u64,
    pub corrupt_dropped: u64,
}
