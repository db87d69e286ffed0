//! Reading snapshots: partial reads fetch only what they touch, the disk cache survives a
//! restart, and corrupt data is never returned.

use std::io::{Read, Seek, SeekFrom};

use snapfs_tests::{Mount, fuse_available, random_file, sh, sqlite_db};

#[test]
fn sqlite_reads_a_few_pages_of_a_large_database() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let db = m.root.path().join("big.db");
    // ~100 MiB: 10,000 rows of 10 KB blobs.
    sqlite_db(&db, 10_000);
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 100_000_000, "database is {size} bytes");
    m.upload(&db, "big.db");

    let snap = m.target().join("snapshots/big.db");
    let (out, fetched) = m.get_bytes_during(|| {
        sh(&format!(
            "sqlite3 'file:{}?immutable=1' 'SELECT id, length(v) FROM t WHERE id = 7777;'",
            snap.display()
        ))
    });
    assert_eq!(out.trim(), "7777|10000");
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
    random_file(&file, 20_000_000);
    m.upload(&file, "data.bin");
    let snap = m.target().join("snapshots/data.bin");
    sh(&format!("cmp '{}' '{}'", file.display(), snap.display()));

    m.restart();
    assert!(snap.exists(), "the snapshot is there after a restart");
    let (_, fetched) =
        m.get_bytes_during(|| sh(&format!("cmp '{}' '{}'", file.display(), snap.display())));
    assert_eq!(
        fetched, 0,
        "a second read after a restart is served from the disk cache"
    );
}

#[test]
fn a_corrupt_pack_gives_eio_and_never_wrong_bytes() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let snap = m.upload_victim_tree();

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

    let err = std::fs::read(snap.join("victim.bin")).expect_err("a corrupt block must not read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(snap.join("other.txt")).unwrap(), b"fine\n");
}
