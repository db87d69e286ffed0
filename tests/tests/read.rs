//! Reading snapshots: partial reads fetch only what they touch, the disk cache survives a
//! restart, and corrupt data is never returned.

use std::io::{Read, Seek, SeekFrom};

use snapfs_tests::{Mount, fuse_available, sh};

#[test]
fn sqlite_reads_a_few_pages_of_a_large_database() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let db = m.root.path().join("big.db");
    // ~100 MiB: 10,000 rows of 10 KB blobs, indexed by id.
    sh(&format!(
        "sqlite3 '{}' \"PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 10000)
         INSERT INTO t SELECT i, randomblob(10000) FROM n;\"",
        db.display()
    ));
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 100_000_000, "database is {size} bytes");
    sh(&format!(
        "cp '{}' '{}/uploads/big.db'",
        db.display(),
        m.target().display()
    ));
    m.wait("big.db");

    let before = m.store_metrics().get_bytes;
    let snap = m.target().join("snapshots/big.db");
    let out = sh(&format!(
        "sqlite3 'file:{}?immutable=1' 'SELECT id, length(v) FROM t WHERE id = 7777;'",
        snap.display()
    ));
    assert_eq!(out.trim(), "7777|10000");
    let fetched = m.store_metrics().get_bytes - before;
    // A point query touches a handful of pages: a few blocks at most, not the file.
    assert!(
        fetched < size / 5,
        "fetched {fetched} bytes of a {size}-byte database for one row"
    );
}

#[test]
fn disk_cache_serves_reads_after_a_restart() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start();
    let file = m.root.path().join("data.bin");
    sh(&format!(
        "head -c 20000000 /dev/urandom > '{}'",
        file.display()
    ));
    sh(&format!(
        "cp '{}' '{}/uploads/data.bin'",
        file.display(),
        m.target().display()
    ));
    m.wait("data.bin");
    let snap = m.target().join("snapshots/data.bin");
    sh(&format!("cmp '{}' '{}'", file.display(), snap.display()));

    m.restart();
    assert!(snap.exists(), "the snapshot is there after a restart");
    let before = m.store_metrics().get_bytes;
    sh(&format!("cmp '{}' '{}'", file.display(), snap.display()));
    assert_eq!(
        m.store_metrics().get_bytes - before,
        0,
        "a second read after a restart is served from the disk cache"
    );
}

#[test]
fn a_corrupt_pack_gives_eio_and_never_wrong_bytes() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}' && head -c 3000000 /dev/urandom > '{s}/victim.bin' && echo fine > '{s}/other.txt'",
        s = src.display()
    ));
    sh(&format!(
        "cp -r '{}' '{}/uploads/c'",
        src.display(),
        m.target().display()
    ));
    m.wait("c");

    // Flip one byte in the middle of the only pack (the large file's frame sits first).
    let packs = sh(&format!(
        "find '{}/snapfs/packs' -type f",
        m.store_dir().display()
    ));
    let pack = packs.lines().next().expect("a pack");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .unwrap();
    f.seek(SeekFrom::Start(1_000_000)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(1_000_000)).unwrap();
    std::io::Write::write_all(&mut f, &[b[0] ^ 0x40]).unwrap();
    drop(f);

    let snap = m.target().join("snapshots/c");
    let err = std::fs::read(snap.join("victim.bin")).expect_err("a corrupt block must not read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(snap.join("other.txt")).unwrap(), b"fine\n");
}
