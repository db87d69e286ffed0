//! Staging under `uploads/`: writes that arrive while a job runs restart it, and a full cache
//! volume refuses data with ENOSPC without losing anything already made.

use std::time::{Duration, Instant};

use snapfs_tests::{Mount, fuse_available, sh};

#[test]
fn a_write_during_the_upload_cancels_it_and_it_settles_again() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
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
