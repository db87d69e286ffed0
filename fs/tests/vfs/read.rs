//! The read path: exact bytes for any range, the cache, and checksums against injected corruption.

use std::sync::Arc;

use snapfs_fs::backend::BackendError;
use snapfs_fs::format::BLOCK_SIZE;
use snapfs_fs::tree::SnapshotTree;

use crate::fake::Corruption;
use crate::fixture::{BIG_LEN, Fixture, errno, noise, standard, standard_backend};

const BIG: &str = "cloud/local/snapshots/db-1/data/big.bin";
const HELLO: &str = "cloud/local/snapshots/db-1/hello.txt";
const SINGLE: &str = "cloud/local/snapshots/db-2";

/// Ranges that start and end on, just before and just after block boundaries and the end.
fn edge_ranges() -> Vec<(u64, u32)> {
    let b = BLOCK_SIZE as u64;
    let end = BIG_LEN as u64;
    let mut out = vec![
        (0, 1),
        (0, 4096),
        (0, 1 << 20),
        (b - 1, 2),
        (b - 10, 20),
        (b, 1),
        (b, 4096),
        (2 * b - 1, 1),
        (2 * b - 4096, 8192),
        // Spans one whole block and parts of the two around it.
        (b - 1, BLOCK_SIZE as u32 + 2),
        (end - 1, 1),
        (end - 5, 100),
        (end - 4096, 1 << 20),
        (end, 10),
        (end + 1, 10),
        (u64::MAX - 10, 100),
    ];
    // Pseudo-random ranges, some of them long enough to cross boundaries.
    let picks = noise(16 * 64, 9);
    for chunk in picks.chunks(16) {
        let word = |i: usize| u64::from_le_bytes(chunk[i..i + 8].try_into().unwrap());
        let offset = word(0) % (end + 100);
        let len = (word(8) % (3 << 20)) as u32;
        out.push((offset, len));
    }
    out
}

fn expected(source: &[u8], offset: u64, len: u32) -> &[u8] {
    let start = (offset.min(source.len() as u64)) as usize;
    let end = offset
        .saturating_add(u64::from(len))
        .min(source.len() as u64) as usize;
    &source[start..end.max(start)]
}

#[tokio::test(flavor = "multi_thread")]
async fn any_range_reads_the_original_bytes() {
    let f = Fixture::new(standard_backend());
    let s = standard();
    let ino = f.ino(BIG).await;
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    assert!(opened.keep_cache, "snapshot files never change");
    for (offset, len) in edge_ranges() {
        let got = f.vfs.read(opened.fh, offset, len).await.unwrap();
        let want = expected(&s.big, offset, len);
        assert!(
            got == want,
            "range {offset}+{len}: {} bytes, expected {}",
            got.len(),
            want.len()
        );
    }
    f.vfs.release(opened.fh);

    assert!(f.read_all(BIG).await.unwrap() == s.big);
    assert!(f.read_all(SINGLE).await.unwrap() == s.single);
    assert_eq!(f.read_all(HELLO).await.unwrap(), s.hello);
    assert_eq!(f.read(HELLO, 7, 5).await.unwrap(), &b"world"[..]);
    assert!(f.read(HELLO, 13, 5).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readers_get_the_same_bytes() {
    let f = Arc::new(Fixture::new(standard_backend()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (offset, len)) in edge_ranges().into_iter().enumerate().take(48) {
        let f = f.clone();
        tasks.spawn(async move {
            let got = f.read(BIG, offset, len).await.unwrap();
            assert!(
                got == expected(&standard().big, offset, len),
                "reader {i}: {offset}+{len}"
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    f.quiesce().await;
    // Single flight and the cache: each block came from the backend at most once.
    let blocks = BIG_LEN.div_ceil(BLOCK_SIZE) as u64;
    let pack = standard().pack_of("db-1");
    assert!(
        f.backend.reads_of(pack) <= blocks,
        "{}",
        f.backend.reads_of(pack)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_read_is_served_from_the_cache() {
    let f = Fixture::new(standard_backend());
    let s = standard();
    assert!(f.read_all(BIG).await.unwrap() == s.big);
    f.quiesce().await;
    let reads = f.backend.reads();
    let bytes = f.backend.read_bytes();
    assert!(reads > 0);
    for (offset, len) in edge_ranges() {
        let got = f.read(BIG, offset, len).await.unwrap();
        assert!(got == expected(&s.big, offset, len), "{offset}+{len}");
    }
    assert!(f.read_all(BIG).await.unwrap() == s.big);
    assert_eq!(f.backend.reads(), reads, "a cached block was fetched again");
    assert_eq!(f.backend.read_bytes(), bytes);

    // The disk cache outlives the process: a restarted Vfs reads without the backend.
    f.cache.flush().await;
    let f = f.restarted();
    assert!(f.read_all(BIG).await.unwrap() == s.big);
    assert_eq!(f.backend.reads(), reads, "the disk cache was not used");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_corrupted_in_transit_is_fetched_again() {
    let backend = standard_backend();
    let pack = standard().pack_of("db-1");
    backend.corrupt(pack, None, Corruption::Once);
    let f = Fixture::new(backend.clone());
    assert_eq!(f.read_all(HELLO).await.unwrap(), standard().hello);
    assert_eq!(backend.reads_of(pack), 2, "one bad fetch, one good");
    assert_eq!(f.read_all(HELLO).await.unwrap(), standard().hello);
    assert_eq!(backend.reads_of(pack), 2, "the good block was cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_corrupt_at_rest_fails_with_eio() {
    let backend = standard_backend();
    let pack = standard().pack_of("db-2");
    backend.corrupt(pack, None, Corruption::Always);
    let f = Fixture::new(backend.clone());
    assert_eq!(errno(f.read(SINGLE, 0, 100).await), libc::EIO);
    assert_eq!(backend.reads_of(pack), 2, "fetched exactly once more");
    // Failures are not cached: the next read tries again, and fails again.
    assert_eq!(errno(f.read(SINGLE, 10, 1).await), libc::EIO);
    assert_eq!(backend.reads_of(pack), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_block_fails_every_read_that_touches_it() {
    let s = standard();
    let pack = s.pack_of("db-1");
    let tree = s.tree_of("db-1");
    let data = tree.child(SnapshotTree::ROOT, "data").unwrap();
    let big = tree.node(tree.child(data, "big.bin").unwrap()).unwrap();
    let backend = standard_backend();
    backend.corrupt(pack, Some(big.blocks[1].offset), Corruption::Always);
    let f = Fixture::new(backend);

    let b = BLOCK_SIZE as u64;
    assert_eq!(errno(f.read(BIG, b - 10, 20).await), libc::EIO);
    assert_eq!(errno(f.read(BIG, 0, 5 << 20).await), libc::EIO);
    assert_eq!(errno(f.read(BIG, b + 5, 1).await), libc::EIO);
    assert_eq!(errno(f.read_all(BIG).await), libc::EIO);
    // Its neighbours are sound and still read.
    let got = f.read(BIG, 0, 4096).await.unwrap();
    assert!(got == s.big[..4096]);
    let got = f.read(BIG, 2 * b, 4096).await.unwrap();
    assert!(got == s.big[2 * BLOCK_SIZE..2 * BLOCK_SIZE + 4096]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_backend_fails_reads_with_eio_until_it_returns() {
    let backend = standard_backend();
    let f = Fixture::new(backend.clone());
    f.lookup(HELLO).await.unwrap();
    backend.fail_reads(Some(BackendError::Unavailable("timed out".into())));
    assert_eq!(errno(f.read(HELLO, 0, 100).await), libc::EIO);
    backend.fail_reads(None);
    assert_eq!(f.read(HELLO, 0, 100).await.unwrap(), standard().hello);
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_readers_get_read_ahead_random_ones_do_not() {
    let pack = standard().pack_of("db-1");
    let b = BLOCK_SIZE as u64;

    let f = Fixture::new(standard_backend());
    let ino = f.ino(BIG).await;
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    f.vfs.read(opened.fh, 0, 1 << 20).await.unwrap();
    f.quiesce().await;
    assert_eq!(
        f.backend.reads_of(pack),
        2,
        "the next block was not fetched ahead"
    );
    // The block fetched ahead serves the stream without another request.
    f.vfs.read(opened.fh, b, 1 << 20).await.unwrap();
    f.vfs.release(opened.fh);

    // A reader that jumps straight to the tail touches one block only.
    let f = Fixture::new(standard_backend());
    let ino = f.ino(BIG).await;
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    f.vfs.read(opened.fh, 2 * b + 100, 4096).await.unwrap();
    f.vfs.read(opened.fh, 100, 4096).await.unwrap();
    f.quiesce().await;
    f.vfs.release(opened.fh);
    assert_eq!(
        f.backend.reads_of(pack),
        2,
        "a random reader fetched more than it read"
    );
}
