//! Reading at the kernel's speed, over a real mount: files kept whole in the disk cache are
//! read by the kernel itself (FUSE passthrough), with the daemon's read path as the fallback;
//! a damaged whole file is never served; `ls -l` asks the daemon nothing per file for
//! attributes the file system does not keep.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, random_file, sh, sqlite_db};

/// Where the daemon keeps whole files (`[cache] dir` is `cache/snapfs`).
fn whole_dir(m: &Mount) -> PathBuf {
    m.root.path().join("cache/snapfs/blocks/files")
}

fn seals(m: &Mount) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(whole_dir(m)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seal"))
        .collect()
}

/// Waits until the daemon sealed `n` whole files (it assembles them in the background).
fn wait_for_seals(m: &Mount, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seals(m).len() < n {
        assert!(
            Instant::now() < deadline,
            "no whole file was kept\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocks and files the daemon read, from memory, disk or the remote, so far.
fn daemon_reads(m: &Mount) -> u64 {
    let c = m.status().metrics.cache;
    c.memory_hits + c.disk_hits + c.misses
}

/// Uploads `len` random bytes as snapshot `data.bin`; answers the local file and the snapshot.
fn random_snapshot(m: &Mount, len: u64) -> (PathBuf, PathBuf) {
    let file = m.root.path().join("data.bin");
    random_file(&file, len);
    m.upload(&file, "data.bin");
    (file, m.target().join("snapshots/data.bin"))
}

fn cmp(a: &Path, b: &Path) {
    sh(&format!("cmp '{}' '{}'", a.display(), b.display()));
}

/// Every byte of `path` read through a shared read-only mapping.
fn mmap_equals(path: &Path, want: &Path) {
    sh(&format!(
        "python3 -c 'import mmap,sys
f = open(sys.argv[1], \"rb\")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
assert m[:] == open(sys.argv[2], \"rb\").read()
assert m[len(m) // 2] == open(sys.argv[2], \"rb\").read()[len(m) // 2]' '{}' '{}'",
        path.display(),
        want.display()
    ));
}

#[test]
fn a_file_read_in_full_is_then_read_by_the_kernel() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start();
    let (file, snap) = random_snapshot(&m, 20_000_000);
    cmp(&file, &snap);
    wait_for_seals(&m, 1);
    assert!(m.log().contains("FUSE passthrough on"), "{}", m.log());

    // A fresh daemon: nothing of the file in its memory, nor in the mount's page cache.
    m.restart();
    // The lookup reads the manifest through the cache; the file's bytes must not go there.
    std::fs::metadata(&snap).unwrap();
    let before = daemon_reads(&m);
    cmp(&file, &snap);
    mmap_equals(&snap, &file);
    assert_eq!(
        daemon_reads(&m),
        before,
        "the kernel read the whole file itself"
    );
}

#[test]
fn a_database_opened_often_is_kept_whole_and_queries_and_maps_right() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start();
    let db = m.root.path().join("app.db");
    sqlite_db(&db, 1_000);
    m.upload(&db, "app.db");
    let snap = m.target().join("snapshots/app.db");
    let query = |path: &Path| {
        sh(&format!(
            "sqlite3 'file:{}?immutable=1' 'SELECT count(*), sum(length(v)) FROM t WHERE id % 7 = 3;'",
            path.display()
        ))
    };
    let want = query(&db);
    for _ in 0..snapfs_fs::vfs::OPENS_FOR_WHOLE {
        assert_eq!(query(&snap), want);
    }
    wait_for_seals(&m, 1);
    m.restart();
    std::fs::metadata(&snap).unwrap();
    let before = daemon_reads(&m);
    assert_eq!(query(&snap), want);
    mmap_equals(&snap, &db);
    assert_eq!(daemon_reads(&m), before, "queries read the whole file");
}

#[test]
fn a_handle_open_before_the_file_was_kept_whole_keeps_working_beside_new_ones() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let (file, snap) = random_snapshot(&m, 9_000_000);
    let want = std::fs::read(&file).unwrap();
    // Read in full through one handle, which stays open while the file is made whole.
    let mut first = std::fs::File::open(&snap).unwrap();
    let mut got = Vec::new();
    first.read_to_end(&mut got).unwrap();
    assert!(got == want);
    wait_for_seals(&m, 1);
    // The kernel keeps one mode per open file: this open goes through the daemon as well.
    assert!(std::fs::read(&snap).unwrap() == want);
    drop(first);
    assert!(std::fs::read(&snap).unwrap() == want);
}

#[test]
fn a_damaged_whole_file_is_never_served() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start();
    let (file, snap) = random_snapshot(&m, 12_000_000);
    cmp(&file, &snap);
    wait_for_seals(&m, 1);
    m.stop();
    let seal = seals(&m).remove(0);
    let whole = seal.with_extension("");
    let mut bytes = std::fs::read(&whole).unwrap();
    bytes[6_000_000] ^= 0x40;
    // Written in place, as damage would be: a new file would be a new inode.
    sh(&format!("chmod u+w '{}'", whole.display()));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&whole)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();

    m.launch();
    cmp(&file, &snap);
    mmap_equals(&snap, &file);
    assert!(
        m.log().contains("no longer matches its seal"),
        "{}",
        m.log()
    );
    assert!(m.status().metrics.cache.corrupt_dropped >= 1);
}

#[test]
fn without_passthrough_the_daemon_serves_every_read() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::unstarted(&format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n"));
    m.daemon_args.push("--no-passthrough".into());
    m.launch();
    let (file, snap) = random_snapshot(&m, 9_000_000);
    for _ in 0..snapfs_fs::vfs::OPENS_FOR_WHOLE {
        cmp(&file, &snap);
    }
    mmap_equals(&snap, &file);
    assert!(
        m.log().contains(
            "FUSE passthrough off, the daemon serves every read: turned off with --no-passthrough"
        ),
        "{}",
        m.log()
    );
    m.restart();
    std::fs::metadata(&snap).unwrap();
    let before = daemon_reads(&m);
    cmp(&file, &snap);
    assert!(daemon_reads(&m) > before, "the daemon served the read");
    assert!(seals(&m).is_empty(), "no whole file is made for nothing");
}

#[test]
fn attributes_the_file_system_keeps_none_of_are_refused_for_the_whole_mount() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    m.upload(&src, "tree");
    let snap = m.target().join("snapshots/tree");
    let a = snap.join("a");
    // ENOTSUP lets ls remember the device has no SELinux labels and no ACLs.
    let selinux = sh(&format!(
        "getfattr -n security.selinux '{}' 2>&1 || true",
        a.display()
    ));
    assert!(selinux.contains("Operation not supported"), "{selinux}");
    let acl = sh(&format!(
        "getfattr -n system.posix_acl_access '{}' 2>&1 || true",
        a.display()
    ));
    assert!(acl.contains("Operation not supported"), "{acl}");
    let other = sh(&format!(
        "getfattr -n user.other '{}' 2>&1 || true",
        a.display()
    ));
    assert!(other.contains("No such attribute"), "{other}");
    // The snapshot's own attributes are still there.
    let state = sh(&format!(
        "getfattr --only-values -n user.snapfs.state '{}'",
        snap.display()
    ));
    assert_eq!(state, "ready");
    let size = sh(&format!(
        "getfattr --only-values -n user.snapfs.size '{}'",
        a.display()
    ));
    assert_eq!(size, "1");
}
