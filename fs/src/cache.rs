//! Block cache: memory LRU over a persistent disk cache.
//!
//! Keys ([`CacheKey`]) name immutable content (snapshots never change, raw objects are named
//! with their version), so a cached block stays valid across restarts and is never invalidated,
//! only evicted. Every disk read is checked against a CRC32C; a bad file is dropped and counts as
//! a miss, so wrong bytes are never returned.
//!
//! Beside blocks the disk cache holds whole files ([`WholeKey`]): a file's bytes as one plain
//! file, assembled by the caller from checked blocks and sealed, which the kernel can read by
//! itself (FUSE passthrough). They count against the same limits and are evicted with the
//! blocks, least recently opened first.
//!
//! Concurrent lookups of one key share one disk read or fetch (single flight). The cache needs a
//! tokio runtime: disk I/O runs on the blocking pool and never on a worker.

mod disk;
mod key;
mod memory;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use disk::{Assembly, DiskCache};
pub use key::{CacheKey, WholeKey};
use memory::MemoryCache;

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Holds `blocks/`; created if missing.
    pub dir: std::path::PathBuf,
    /// Disk usage above this is evicted down to 90% of it. 0 keeps nothing on disk.
    pub max_disk_bytes: u64,
    /// Blocks are evicted, and new ones not written, while the file system has less free space.
    pub min_free_bytes: u64,
    /// Sum of block lengths held in memory.
    pub max_memory_bytes: u64,
}

pub use snapfs_control::wire::CacheStats;

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    fetched_bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Disk,
    Fetch,
}

/// What a flight's leader publishes. The error is type-erased because the cache is not generic
/// over callers' error types; followers downcast it back.
type Outcome = Result<(Bytes, Source), Arc<dyn Any + Send + Sync>>;

#[derive(Default)]
struct Flights {
    by_key: HashMap<String, (u64, watch::Receiver<Option<Outcome>>)>,
    next_id: u64,
}

/// Background disk writes not yet finished, so `flush` can wait for them.
#[derive(Default)]
struct PendingWrites {
    count: AtomicUsize,
    idle: Notify,
}

pub struct BlockCache {
    memory: Mutex<MemoryCache>,
    disk: Arc<DiskCache>,
    flights: Mutex<Flights>,
    counters: Counters,
    writes: Arc<PendingWrites>,
}

/// Recovers a poisoned lock: every critical section leaves the data consistent between
/// statements that can panic, so the state is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Role<'a> {
    Hit(Bytes),
    Lead(Flight<'a>),
    Follow(watch::Receiver<Option<Outcome>>),
}

enum Joined<'a, E> {
    Done(Result<Bytes, E>),
    Lead(Flight<'a>),
}

/// A lookup in progress that other callers may wait on. Dropping it unfinished (the leader was
/// cancelled or panicked) closes the channel, and followers retry on their own.
struct Flight<'a> {
    flights: &'a Mutex<Flights>,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
}

impl Flight<'_> {
    fn finish(self, outcome: Outcome) {
        // Unregister first, so a follower that retries never finds this finished flight again.
        self.unregister();
        self.tx.send_replace(Some(outcome));
    }

    fn unregister(&self) {
        let mut flights = lock(self.flights);
        if flights
            .by_key
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            flights.by_key.remove(&self.key);
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl BlockCache {
    /// O(1): creates the directories if missing and starts the background usage scan; the
    /// directory tree is not walked here.
    pub fn open(config: CacheConfig) -> std::io::Result<Arc<BlockCache>> {
        Self::open_with_scan_gate(config, None)
    }

    fn open_with_scan_gate(
        config: CacheConfig,
        scan_gate: Option<mpsc::Receiver<()>>,
    ) -> std::io::Result<Arc<BlockCache>> {
        let disk = DiskCache::open(
            &config.dir,
            config.max_disk_bytes,
            config.min_free_bytes,
            scan_gate,
        )?;
        Ok(Arc::new(BlockCache {
            memory: Mutex::new(MemoryCache::new(config.max_memory_bytes)),
            disk: Arc::new(disk),
            flights: Mutex::default(),
            counters: Counters::default(),
            writes: Arc::default(),
        }))
    }

    /// Memory, then disk (verified), then `fetch`. Concurrent calls for one key share one disk
    /// read or fetch; a fetch error reaches every caller sharing it and is not cached. The error
    /// travels to the other callers type-erased in an `Arc`, and each gets its own clone (hence
    /// `E: Clone + Send + Sync + 'static`); a caller whose `E` differs from the leader's fetches
    /// for itself. A fetched block is put in memory and written to disk in the background.
    pub async fn get_or_fetch<F, Fut, E>(&self, key: CacheKey<'_>, fetch: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: Clone + Send + Sync + 'static,
    {
        let key = &key.encode();
        let flight = match self.join(key).await {
            Joined::Done(result) => return result,
            Joined::Lead(flight) => flight,
        };
        if let Some(data) = self.read_disk(key).await {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            self.remember(key, data.clone());
            flight.finish(Ok((data.clone(), Source::Disk)));
            return Ok(data);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        match fetch().await {
            Ok(data) => {
                let len = data.len() as u64;
                self.counters
                    .fetched_bytes
                    .fetch_add(len, Ordering::Relaxed);
                self.remember(key, data.clone());
                self.write_behind(key, data.clone());
                flight.finish(Ok((data.clone(), Source::Fetch)));
                Ok(data)
            }
            Err(err) => {
                flight.finish(Err(Arc::new(err.clone())));
                Err(err)
            }
        }
    }

    /// Memory or disk only; never fetches.
    pub async fn get_cached(&self, key: CacheKey<'_>) -> Option<Bytes> {
        let key = &key.encode();
        if let Some(data) = self.memory_get(key) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Some(data);
        }
        if let Some(data) = self.read_disk(key).await {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            self.remember(key, data.clone());
            return Some(data);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Puts a block without fetching: in memory now, on disk in the background.
    pub async fn insert(&self, key: CacheKey<'_>, data: Bytes) {
        let key = &key.encode();
        self.remember(key, data.clone());
        self.write_behind(key, data);
    }

    /// Drops a key from memory and disk. A background write of the same key still in progress
    /// may land afterwards; call [`BlockCache::flush`] first to rule that out.
    pub async fn remove(&self, key: CacheKey<'_>) {
        let key = key.encode();
        lock(&self.memory).remove(&key);
        let disk = Arc::clone(&self.disk);
        // A failed join means the blocking task panicked; the file then simply stays.
        let _ = tokio::task::spawn_blocking(move || disk.remove(&key)).await;
    }

    /// The sealed whole file of `key`, open for reading, when the disk cache holds one that
    /// still matches its seal (one that does not is dropped and counted as corrupt).
    pub async fn whole_file(&self, key: WholeKey) -> Option<std::fs::File> {
        let disk = Arc::clone(&self.disk);
        tokio::task::spawn_blocking(move || disk.open_whole(&key))
            .await
            .ok()
            .flatten()
    }

    /// Starts writing the whole file of `key`, `size` bytes; None when the disk cache takes
    /// none now (it keeps nothing on disk, is short of space, or the file would fill more than a
    /// quarter of it) or cannot make one.
    pub async fn begin_whole(&self, key: WholeKey, size: u64) -> Option<WholeWriter> {
        let disk = Arc::clone(&self.disk);
        let begun = tokio::task::spawn_blocking(move || disk.begin_whole(key, size)).await;
        match begun {
            Ok(Ok(Some(assembly))) => Some(WholeWriter {
                disk: Arc::clone(&self.disk),
                assembly: Some(assembly),
            }),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(err)) => {
                tracing::debug!(%err, "cannot start a whole file");
                None
            }
        }
    }

    /// Waits until every background disk write started so far has finished.
    pub async fn flush(&self) {
        loop {
            let mut idle = std::pin::pin!(self.writes.idle.notified());
            // Registered before the check, so a write finishing in between still wakes us.
            idle.as_mut().enable();
            if self.writes.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// True once the background scan has measured the disk usage.
    pub fn scan_complete(&self) -> bool {
        self.disk.scan_complete()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.counters.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.counters.disk_hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            fetched_bytes: self.counters.fetched_bytes.load(Ordering::Relaxed),
            disk_bytes: self.disk.usage(),
            memory_bytes: lock(&self.memory).bytes(),
            evicted_bytes: self.disk.evicted_bytes(),
            corrupt_dropped: self.disk.corrupt_dropped(),
        }
    }

    /// Returns a finished result (memory hit, or another caller's shared outcome) or makes this
    /// caller the leader of a new flight for `key`.
    async fn join<E: Clone + Send + Sync + 'static>(&self, key: &str) -> Joined<'_, E> {
        loop {
            let mut rx = match self.lead_or_follow(key) {
                Role::Hit(data) => {
                    self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                    return Joined::Done(Ok(data));
                }
                Role::Lead(flight) => return Joined::Lead(flight),
                Role::Follow(rx) => rx,
            };
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => None,
            };
            match outcome {
                Some(Ok((data, source))) => {
                    let counter = match source {
                        Source::Disk => &self.counters.disk_hits,
                        Source::Fetch => &self.counters.misses,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return Joined::Done(Ok(data));
                }
                Some(Err(err)) => {
                    if let Some(err) = err.downcast_ref::<E>() {
                        self.counters.misses.fetch_add(1, Ordering::Relaxed);
                        return Joined::Done(Err(err.clone()));
                    }
                    // The leader's error has another type than ours: fetch for ourselves.
                }
                // The leader went away without an outcome.
                None => {}
            }
        }
    }

    fn lead_or_follow(&self, key: &str) -> Role<'_> {
        // Cheap path first: hot blocks never touch the flights lock.
        if let Some(data) = self.memory_get(key) {
            return Role::Hit(data);
        }
        // Lock order: flights, then memory; never the reverse.
        let mut flights = lock(&self.flights);
        if let Some((_, rx)) = flights.by_key.get(key) {
            return Role::Follow(rx.clone());
        }
        // A flight may have finished between the check above and taking the lock.
        if let Some(data) = self.memory_get(key) {
            return Role::Hit(data);
        }
        let id = flights.next_id;
        flights.next_id += 1;
        let (tx, rx) = watch::channel(None);
        flights.by_key.insert(key.to_owned(), (id, rx));
        Role::Lead(Flight {
            flights: &self.flights,
            key: key.to_owned(),
            id,
            tx,
        })
    }

    fn memory_get(&self, key: &str) -> Option<Bytes> {
        let (data, touch) = lock(&self.memory).get(key, disk::TOUCH_EVERY)?;
        if touch {
            // Keeps the disk copy of a block that stays hot in memory from looking cold.
            let disk = Arc::clone(&self.disk);
            let key = key.to_owned();
            tokio::task::spawn_blocking(move || disk.touch(&key));
        }
        Some(data)
    }

    fn remember(&self, key: &str, data: Bytes) {
        lock(&self.memory).insert(key, data);
    }

    async fn read_disk(&self, key: &str) -> Option<Bytes> {
        let disk = Arc::clone(&self.disk);
        let key = key.to_owned();
        // A corrupt file's warning names the read that found it.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| disk.read(&key)))
            .await
            .ok()
            .flatten()
    }

    fn write_behind(&self, key: &str, data: Bytes) {
        /// Counts the write as finished even if it panics.
        struct Done(Arc<PendingWrites>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.count.fetch_sub(1, Ordering::AcqRel);
                self.0.idle.notify_waiters();
            }
        }
        self.writes.count.fetch_add(1, Ordering::AcqRel);
        let done = Done(Arc::clone(&self.writes));
        let disk = Arc::clone(&self.disk);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let _done = done;
            disk.store(&key, &data);
        });
    }
}

/// A whole file being written, in order, from bytes the caller checked. Dropped before
/// [`WholeWriter::finish`], nothing of it stays.
pub struct WholeWriter {
    disk: Arc<DiskCache>,
    /// Away while a write runs on the blocking pool; lost (and its temp file removed) only if
    /// that write panicked.
    assembly: Option<Assembly>,
}

impl WholeWriter {
    pub async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        let mut assembly = self.assembly.take().ok_or_else(Self::lost)?;
        let (assembly, written) = tokio::task::spawn_blocking(move || {
            let written = assembly.write(&data);
            (assembly, written)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.assembly = Some(assembly);
        written
    }

    /// Puts the file in place and seals it; it fails when fewer or more bytes were written
    /// than begun with.
    pub async fn finish(mut self) -> std::io::Result<()> {
        let assembly = self.assembly.take().ok_or_else(Self::lost)?;
        let disk = Arc::clone(&self.disk);
        tokio::task::spawn_blocking(move || disk.finish_whole(assembly))
            .await
            .map_err(std::io::Error::other)?
    }

    fn lost() -> std::io::Error {
        std::io::Error::other("a write of this whole file failed")
    }
}

#[cfg(test)]
mod tests;
