//! Staging under `uploads/`: files stored while the copy runs, writes that arrive while a job
//! runs restart it, and a full cache volume refuses data with ENOSPC without losing anything
//! already made.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use snapfs_fs::format::Manifest;
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, sh};

/// Every object under `snapfs/<dir>/` of the store at `store`, as its key.
fn objects(store: &Path, dir: &str) -> BTreeSet<String> {
    let root = store.join("snapfs").join(dir);
    if !root.exists() {
        return BTreeSet::new();
    }
    sh(&format!("cd '{}' && find . -type f", root.display()))
        .lines()
        .map(|l| format!("snapfs/{dir}/{}", l.trim_start_matches("./")))
        .collect()
}

/// The packs the manifests of the store at `store` list.
fn listed_packs(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for key in objects(store, "snapshots") {
        let m = Manifest::from_bytes(&std::fs::read(store.join(&key)).unwrap()).unwrap();
        out.extend(m.packs);
    }
    out
}

/// Polls `f` until it holds, for at most a minute.
fn until(m: &Mount, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: never\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn files_are_stored_as_they_close_and_the_snapshot_holds_them_as_they_end() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    sh(&format!(
        "head -c 3000000 /dev/urandom > '{0}/a.bin' && head -c 2000000 /dev/urandom > '{0}/same.bin' \
         && echo 'hello, world' > '{0}/dir/b.txt' && : > '{0}/empty'",
        src.display()
    ));
    let up = m.target().join("uploads/early");
    sh(&format!("cp -r '{}' '{}'", src.display(), up.display()));
    // Every file was closed, so stored; now changed in place (same size, new bytes), cut by
    // path, and linked, on both sides alike.
    for dir in [&src, &up] {
        sh(&format!(
            "printf 'changed' | dd of='{0}/same.bin' bs=1 seek=1000000 conv=notrunc status=none \
             && truncate -s 5 '{0}/dir/b.txt' && ln '{0}/a.bin' '{0}/dir/a-link.bin'",
            dir.display()
        ));
    }
    m.wait("early");
    sh(&format!(
        "diff -r '{}' '{}'",
        src.display(),
        m.target().join("snapshots/early").display()
    ));
    // The run read nothing itself: every file's last close came before it.
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("stored while they were copied"))
        .unwrap_or_else(|| panic!("no early storing in the log:\n{log}"));
    assert!(line.contains("read=0"), "{line}");
    // What the snapshot does not use (same.bin as first copied, if alone in a pack) is gone,
    // and so is the lease: nothing but what the manifest lists is left.
    let store = m.store_dir();
    let packs = objects(&store, "packs");
    assert!(!packs.is_empty());
    assert!(packs.is_subset(&listed_packs(&store)), "{packs:?}");
    assert_eq!(objects(&store, "leases"), BTreeSet::new());
}

#[test]
fn a_removed_upload_leaves_nothing_of_what_was_stored_while_it_was_copied() {
    if !fuse_available() {
        return;
    }
    // It never settles: only the early storing sends anything. Packs go out as they fill
    // (8 MiB), so the file fills two.
    let m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    let up = m.target().join("uploads/gone");
    std::fs::create_dir(&up).unwrap();
    sh(&format!(
        "head -c 20000000 /dev/urandom > '{0}/a.bin' && echo small > '{0}/b.txt'",
        up.display()
    ));
    let store = m.store_dir();
    until(&m, "files stored while they are copied", || {
        !objects(&store, "packs").is_empty()
    });
    assert_eq!(objects(&store, "leases").len(), 1);
    sh(&format!("rm -r '{}'", up.display()));
    until(&m, "the stored files removed", || {
        m.log()
            .contains("what an upload stored while it was copied is removed")
    });
    assert_eq!(objects(&store, "packs"), BTreeSet::new());
    assert_eq!(objects(&store, "leases"), BTreeSet::new());
}

#[test]
fn a_restarted_daemon_removes_what_it_stored_and_makes_the_snapshot_from_the_staged_files() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    let up = m.target().join("uploads/again");
    std::fs::create_dir(&up).unwrap();
    sh(&format!(
        "head -c 20000000 /dev/urandom > '{}/a.bin'",
        up.display()
    ));
    let staged = m.root.path().join("kept.bin");
    std::fs::copy(up.join("a.bin"), &staged).unwrap();
    let store = m.store_dir();
    until(&m, "files stored while they are copied", || {
        !objects(&store, "packs").is_empty()
    });
    // Seen complete (every file closed, quiet), so resumed rather than failed after the crash.
    let cache = m.root.path().join("cache");
    until(&m, "the upload marked complete", || {
        !sh(&format!(
            "find '{}' -path '*/.complete/cloud/local/again'",
            cache.display()
        ))
        .trim()
        .is_empty()
    });
    let before = objects(&store, "packs");
    m.kill9();
    // Which files those packs held died with the daemon: they go, and the upload is made
    // from what is staged.
    std::fs::write(
        m.root.path().join("config.toml"),
        format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n"),
    )
    .unwrap();
    m.relaunch();
    m.wait("again");
    sh(&format!(
        "cmp '{}' '{}'",
        staged.display(),
        m.target().join("snapshots/again/a.bin").display()
    ));
    until(&m, "the packs stored before the crash removed", || {
        objects(&store, "packs").is_disjoint(&before)
    });
    assert!(objects(&store, "packs").is_subset(&listed_packs(&store)));
}

#[test]
fn a_write_during_the_upload_cancels_it_and_it_settles_again() {
    if !fuse_available() {
        return;
    }
    // Nothing stored while copied: the run reads the whole file, long enough to be overtaken.
    let m = Mount::start_storing_late();
    let src = m.root.path().join("big.bin");
    sh(&format!(
        "head -c 629145600 /dev/urandom > '{}'",
        src.display()
    ));
    let up = m.target().join("uploads/overtaken");
    std::fs::create_dir(&up).unwrap();
    sh(&format!("cp '{}' '{}/'", src.display(), up.display()));
    let status = m.target().join("uploads/overtaken.status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&status).unwrap_or_default())
                .unwrap_or_default();
        if v["state"] == "uploading" {
            break;
        }
        assert!(v["state"] != "done", "finished before the late write");
        assert!(
            Instant::now() < deadline,
            "upload never started\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(up.join("late.txt"), b"arrived late").unwrap();
    m.wait("overtaken");
    let snap = m.target().join("snapshots/overtaken");
    assert_eq!(
        std::fs::read(snap.join("late.txt")).unwrap(),
        b"arrived late"
    );
    sh(&format!(
        "cmp '{}' '{}/big.bin'",
        src.display(),
        snap.display()
    ));
    assert!(
        m.log().contains("overtaken by new writes"),
        "the first run was cancelled"
    );
    // The cancelled run's packs were removed: one upload's packs remain.
    let uploads = sh(&format!(
        "ls '{}/snapfs/packs' | wc -l",
        m.store_dir().display()
    ));
    assert_eq!(uploads.trim(), "1");
}

/// A small tmpfs for the cache volume, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_cache_volume_gives_enospc_and_loses_nothing() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=24m tmpfs '{}'",
        small.display()
    ));
    let _tmpfs = Tmpfs(small.clone());
    let m = Mount::start_with(&format!(
        "[cache]\ndir = \"{}\"\nmin_free = \"1MiB\"\n[upload]\nsettle = \"{}\"\n",
        small.display(),
        snapfs_tests::TEST_SETTLE
    ));
    sh(&format!(
        "mkdir '{t}/uploads/first' && echo kept > '{t}/uploads/first/f'",
        t = m.target().display()
    ));
    m.wait("first");

    let big = m.root.path().join("big.bin");
    sh(&format!(
        "head -c 41943040 /dev/urandom > '{}'",
        big.display()
    ));
    let up = m.target().join("uploads/too-big");
    std::fs::create_dir(&up).unwrap();
    let err = std::fs::copy(&big, up.join("big.bin")).expect_err("the cache volume is full");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // What was made before is intact, and the failed upload can be removed.
    assert_eq!(
        std::fs::read(m.target().join("snapshots/first/f")).unwrap(),
        b"kept\n"
    );
    sh(&format!("rm -r '{}'", up.display()));
    assert!(!up.exists());
    sh(&format!(
        "mkdir '{t}/uploads/after' && echo ok > '{t}/uploads/after/f'",
        t = m.target().display()
    ));
    m.wait("after");
    assert_eq!(
        std::fs::read(m.target().join("snapshots/after/f")).unwrap(),
        b"ok\n"
    );
}
