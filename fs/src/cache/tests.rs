use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug, Clone, PartialEq)]
struct FetchError(&'static str);

fn config(dir: &Path) -> CacheConfig {
    CacheConfig {
        dir: dir.to_owned(),
        max_disk_bytes: 1 << 30,
        min_free_bytes: 0,
        max_memory_bytes: 1 << 20,
    }
}

/// A key for test data `name`.
fn key(name: &str) -> CacheKey<'_> {
    CacheKey::Object {
        target: "cloud/test",
        object: name,
        version: "v1",
    }
}

/// Where `name`'s block lives on disk.
fn path_of(cache: &BlockCache, name: &str) -> std::path::PathBuf {
    cache.disk.path_for(&key(name).encode())
}

/// A fetch that counts its calls and returns `data`.
fn fetch(
    calls: &Arc<AtomicUsize>,
    data: &'static [u8],
) -> impl FnOnce() -> std::future::Ready<Result<Bytes, FetchError>> + use<> {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Bytes::from_static(data)))
    }
}

/// A cache in a new temporary directory, which lives as long as the returned guard.
fn fresh_cache() -> (tempfile::TempDir, Arc<BlockCache>) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(config(tmp.path())).unwrap();
    (tmp, cache)
}

/// Leaves `key` with `data` on disk in `dir`, from a cache that is closed again.
async fn seed_disk(dir: &Path, name: &str, data: &'static [u8]) {
    let cache = BlockCache::open(config(dir)).unwrap();
    cache.insert(key(name), Bytes::from_static(data)).await;
    cache.flush().await;
}

/// `callers` tasks asking for "k" at once, each with a slow fetch that answers `answer`;
/// gives how many fetches ran and what each caller got.
async fn slow_fetches_at_once(
    cache: &Arc<BlockCache>,
    callers: usize,
    answer: Result<Bytes, FetchError>,
) -> (usize, Vec<Result<Bytes, FetchError>>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let cache = Arc::clone(cache);
        let calls = Arc::clone(&calls);
        let answer = answer.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch(key("k"), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    answer
                })
                .await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    (calls.load(Ordering::SeqCst), results)
}

async fn unreachable_fetch() -> Result<Bytes, FetchError> {
    Err(FetchError("fetch must not run"))
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sum of the sizes of the block files really on disk.
fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for shard in std::fs::read_dir(dir.join("blocks")).unwrap() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            total += file.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[tokio::test]
async fn memory_hit_does_not_fetch_again() {
    let (_tmp, cache) = fresh_cache();
    let calls = Arc::default();
    let first = cache.get_or_fetch(key("k"), fetch(&calls, b"hello")).await;
    let second = cache.get_or_fetch(key("k"), fetch(&calls, b"other")).await;
    assert_eq!(first, Ok(Bytes::from_static(b"hello")));
    assert_eq!(second, Ok(Bytes::from_static(b"hello")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.memory_hits, stats.misses), (1, 1));
    assert_eq!(stats.fetched_bytes, 5);
    assert_eq!(stats.memory_bytes, 5);
}

#[tokio::test]
async fn disk_hit_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let key = CacheKey::Block {
        target: "cloud/local",
        object: "snapfs/packs/abc/00000001.pack",
        version: None,
        offset: 1234,
        len: 5678,
    };
    {
        let cache = BlockCache::open(config(tmp.path())).unwrap();
        let calls = Arc::default();
        cache
            .get_or_fetch(key, fetch(&calls, b"block"))
            .await
            .unwrap();
        cache.flush().await;
    }
    let cache = BlockCache::open(config(tmp.path())).unwrap();
    let data = cache.get_or_fetch(key, unreachable_fetch).await;
    assert_eq!(data, Ok(Bytes::from_static(b"block")));
    assert_eq!(cache.stats().disk_hits, 1);
    // Now in memory too.
    assert_eq!(cache.get_cached(key).await.as_deref(), Some(&b"block"[..]));
    assert_eq!(cache.stats().memory_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_fetch() {
    let (_tmp, cache) = fresh_cache();
    let (calls, results) =
        slow_fetches_at_once(&cache, 16, Ok(Bytes::from_static(b"shared"))).await;
    for result in results {
        assert_eq!(result, Ok(Bytes::from_static(b"shared")));
    }
    assert_eq!(calls, 1);
    let stats = cache.stats();
    assert_eq!(stats.memory_hits + stats.misses, 16);
    assert_eq!(stats.fetched_bytes, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_fetch_error_reaches_every_caller_and_is_not_cached() {
    let (_tmp, cache) = fresh_cache();
    let (calls, results) = slow_fetches_at_once(&cache, 8, Err(FetchError("backend down"))).await;
    for result in results {
        assert_eq!(result, Err(FetchError("backend down")));
    }
    assert_eq!(calls, 1);
    let calls = Arc::default();
    let data = cache.get_or_fetch(key("k"), fetch(&calls, b"back")).await;
    assert_eq!(data, Ok(Bytes::from_static(b"back")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fetch_error_is_returned_and_not_cached() {
    let (_tmp, cache) = fresh_cache();
    let failed = cache
        .get_or_fetch(key("k"), || async { Err::<Bytes, _>(FetchError("boom")) })
        .await;
    assert_eq!(failed, Err(FetchError("boom")));
    cache.flush().await;
    assert_eq!(cache.get_cached(key("k")).await, None);
    assert!(!path_of(&cache, "k").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_takes_over_when_the_leader_is_cancelled() {
    let (_tmp, cache) = fresh_cache();
    let leader = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move {
            cache
                .get_or_fetch(key("k"), std::future::pending::<Result<Bytes, FetchError>>)
                .await
        })
    };
    wait_until("the leader's flight", || {
        lock(&cache.flights).by_key.contains_key(&key("k").encode())
    })
    .await;
    let follower = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move {
            let calls = Arc::default();
            cache.get_or_fetch(key("k"), fetch(&calls, b"mine")).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    assert_eq!(follower.await.unwrap(), Ok(Bytes::from_static(b"mine")));
}

#[tokio::test]
async fn flipped_byte_is_a_miss_and_refetched() {
    let tmp = tempfile::tempdir().unwrap();
    seed_disk(tmp.path(), "k", b"good data").await;
    let cache = BlockCache::open(config(tmp.path())).unwrap();
    let path = path_of(&cache, "k");
    let mut raw = std::fs::read(&path).unwrap();
    let at = raw.len() - 6;
    raw[at] ^= 0x01;
    std::fs::write(&path, &raw).unwrap();

    let calls = Arc::default();
    let data = cache
        .get_or_fetch(key("k"), fetch(&calls, b"good data"))
        .await;
    assert_eq!(data, Ok(Bytes::from_static(b"good data")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(
        (stats.corrupt_dropped, stats.disk_hits, stats.misses),
        (1, 0, 1)
    );
    // The refetched block replaced the bad file.
    cache.flush().await;
    let fresh = BlockCache::open(config(tmp.path())).unwrap();
    assert_eq!(
        fresh.get_cached(key("k")).await.as_deref(),
        Some(&b"good data"[..])
    );
}

#[tokio::test]
async fn truncated_file_is_a_miss_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    seed_disk(tmp.path(), "k", b"some block").await;
    let cache = BlockCache::open(config(tmp.path())).unwrap();
    let path = path_of(&cache, "k");
    let raw = std::fs::read(&path).unwrap();
    std::fs::write(&path, &raw[..raw.len() - 3]).unwrap();
    assert_eq!(cache.get_cached(key("k")).await, None);
    assert_eq!(cache.stats().corrupt_dropped, 1);
    assert!(!path.exists());
}

#[tokio::test]
async fn memory_limit_evicts_least_recently_used() {
    let tmp = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        max_disk_bytes: 0,
        max_memory_bytes: 1000,
        ..config(tmp.path())
    };
    let cache = BlockCache::open(config).unwrap();
    for name in ["a", "b", "c"] {
        cache.insert(key(name), Bytes::from(vec![0u8; 300])).await;
    }
    assert!(cache.get_cached(key("a")).await.is_some());
    cache.insert(key("d"), Bytes::from(vec![0u8; 300])).await;
    assert_eq!(cache.stats().memory_bytes, 900);
    assert!(cache.get_cached(key("b")).await.is_none());
    for name in ["a", "c", "d"] {
        assert!(cache.get_cached(key(name)).await.is_some(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_limit_holds_after_many_inserts() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 64 << 10;
    let config = CacheConfig {
        max_disk_bytes: limit,
        max_memory_bytes: 0,
        ..config(tmp.path())
    };
    let cache = BlockCache::open(config).unwrap();
    for i in 0..100 {
        cache
            .insert(key(&format!("block-{i}")), Bytes::from(vec![i as u8; 4096]))
            .await;
    }
    cache.flush().await;
    wait_until("eviction under the limit", || {
        cache.stats().disk_bytes <= limit && bytes_on_disk(tmp.path()) <= limit
    })
    .await;
    assert!(cache.stats().evicted_bytes > 0);
    // What survived is intact.
    let kept = (0..100)
        .filter(|i| {
            cache
                .disk
                .read(&key(&format!("block-{i}")).encode())
                .is_some()
        })
        .count();
    assert!(kept > 0);
}

#[tokio::test]
async fn free_space_floor_evicts_and_stops_writes() {
    let tmp = tempfile::tempdir().unwrap();
    seed_disk(tmp.path(), "old", b"old block").await;
    // No file system has this much free space, so everything must go.
    let config = CacheConfig {
        min_free_bytes: u64::MAX,
        ..config(tmp.path())
    };
    let cache = BlockCache::open(config).unwrap();
    // The evictor records the low-space state before publishing the evicted bytes.
    wait_until("eviction", || cache.stats().evicted_bytes > 0).await;
    assert_eq!(bytes_on_disk(tmp.path()), 0);
    cache
        .insert(key("new"), Bytes::from_static(b"new block"))
        .await;
    cache.flush().await;
    assert!(!path_of(&cache, "new").exists());
    assert_eq!(
        cache.get_cached(key("new")).await.as_deref(),
        Some(&b"new block"[..])
    );
}

#[tokio::test]
async fn open_does_not_walk_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let files = 3000u64;
    for i in 0..files {
        let hash = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let shard = tmp.path().join(format!("blocks/{:02x}", hash >> 56));
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(format!("{hash:016x}")), [0u8; 100]).unwrap();
    }
    let (release, gate) = mpsc::channel();
    let cache = BlockCache::open_with_scan_gate(config(tmp.path()), Some(gate)).unwrap();
    // Open returned while the scan is still held back, so it cannot have walked the tree.
    assert!(!cache.scan_complete());
    assert_eq!(cache.stats().disk_bytes, 0);
    release.send(()).unwrap();
    wait_until("the scan", || cache.scan_complete()).await;
    assert_eq!(cache.stats().disk_bytes, files * 100);
}

#[tokio::test]
async fn unwritable_dir_still_returns_data() {
    let (tmp, cache) = fresh_cache();
    // A file where the blocks directory should be fails every write, even for root.
    let blocks = tmp.path().join("blocks");
    std::fs::remove_dir_all(&blocks).unwrap();
    std::fs::write(&blocks, b"not a directory").unwrap();
    let calls = Arc::default();
    let data = cache.get_or_fetch(key("k"), fetch(&calls, b"fresh")).await;
    assert_eq!(data, Ok(Bytes::from_static(b"fresh")));
    cache.flush().await;
    assert_eq!(
        cache.get_cached(key("k")).await.as_deref(),
        Some(&b"fresh"[..])
    );
    assert_eq!(cache.stats().disk_bytes, 0);
}

#[tokio::test]
async fn remove_drops_memory_and_disk() {
    let (_tmp, cache) = fresh_cache();
    cache
        .insert(key("k"), Bytes::from_static(b"bad upstream"))
        .await;
    cache.flush().await;
    assert!(path_of(&cache, "k").exists());
    cache.remove(key("k")).await;
    assert!(!path_of(&cache, "k").exists());
    assert_eq!(cache.get_cached(key("k")).await, None);
    assert_eq!(cache.stats().memory_bytes, 0);
}

#[test]
fn lookups_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let (_tmp, cache) = fresh_cache();
    assert_send(&cache.get_or_fetch(key("k"), unreachable_fetch));
    assert_send(&cache.get_cached(key("k")));
}
