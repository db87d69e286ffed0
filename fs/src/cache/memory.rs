//! In-memory LRU of blocks, bounded by the sum of block lengths.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

/// A block held in memory, with the last time its disk copy's mtime was refreshed.
struct Entry {
    data: Bytes,
    touched: Instant,
}

/// LRU of blocks whose data lengths never sum above `limit`.
///
/// Only block data is counted; keys and bookkeeping are small next to blocks of many KiB.
pub(crate) struct MemoryCache {
    entries: LruCache<String, Entry>,
    bytes: u64,
    limit: u64,
}

impl MemoryCache {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            limit,
        }
    }

    /// Returns the block and marks it most recently used. The flag is true when the disk copy's
    /// mtime is older than `touch_every` and should be refreshed, so that a block kept hot in memory
    /// is not evicted from disk as if it were cold.
    pub(crate) fn get(&mut self, key: &str, touch_every: Duration) -> Option<(Bytes, bool)> {
        let entry = self.entries.get_mut(key)?;
        let now = Instant::now();
        let touch = now.duration_since(entry.touched) >= touch_every;
        if touch {
            entry.touched = now;
        }
        Some((entry.data.clone(), touch))
    }

    /// Adds or replaces a block, then evicts least recently used blocks until under the limit.
    /// A block larger than the whole limit is not kept.
    pub(crate) fn insert(&mut self, key: &str, data: Bytes) {
        let len = data.len() as u64;
        if len > self.limit {
            self.remove(key);
            return;
        }
        let entry = Entry {
            data,
            touched: Instant::now(),
        };
        if let Some(old) = self.entries.put(key.to_owned(), entry) {
            self.bytes -= old.data.len() as u64;
        }
        self.bytes += len;
        while self.bytes > self.limit {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.data.len() as u64,
                None => break,
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.data.len() as u64;
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut cache = MemoryCache::new(300);
        cache.insert("a", block(100));
        cache.insert("b", block(100));
        cache.insert("c", block(100));
        // Using "a" makes "b" the oldest.
        assert!(cache.get("a", Duration::MAX).is_some());
        cache.insert("d", block(150));
        assert!(cache.get("b", Duration::MAX).is_none());
        assert!(cache.get("c", Duration::MAX).is_none());
        assert!(cache.get("a", Duration::MAX).is_some());
        assert!(cache.get("d", Duration::MAX).is_some());
        assert_eq!(cache.bytes(), 250);
    }

    #[test]
    fn oversized_block_is_not_kept() {
        let mut cache = MemoryCache::new(100);
        cache.insert("a", block(50));
        cache.insert("big", block(101));
        assert!(cache.get("big", Duration::MAX).is_none());
        assert_eq!(cache.bytes(), 50);
    }

    #[test]
    fn touch_is_rate_limited() {
        let mut cache = MemoryCache::new(100);
        cache.insert("a", block(10));
        assert_eq!(cache.get("a", Duration::MAX).map(|(_, t)| t), Some(false));
        assert_eq!(cache.get("a", Duration::ZERO).map(|(_, t)| t), Some(true));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, usize),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, 0usize..400).prop_map(|(k, len)| Op::Insert(k, len)),
            (0u8..16).prop_map(Op::Get),
            (0u8..16).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn accounting_matches_held_blocks(limit in 0u64..1000, ops in proptest::collection::vec(op(), 1..200)) {
            let mut cache = MemoryCache::new(limit);
            for op in ops {
                match op {
                    Op::Insert(k, len) => cache.insert(&k.to_string(), block(len)),
                    Op::Get(k) => {
                        cache.get(&k.to_string(), Duration::MAX);
                    }
                    Op::Remove(k) => cache.remove(&k.to_string()),
                }
                let held: u64 = cache.entries.iter().map(|(_, e)| e.data.len() as u64).sum();
                prop_assert_eq!(cache.bytes(), held);
                prop_assert!(cache.bytes() <= limit);
            }
        }
    }
}
