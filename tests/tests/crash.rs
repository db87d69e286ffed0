//! A daemon killed with SIGKILL in the middle of an upload: nothing half-made is ever visible,
//! the dead mount is cleared, and the upload completes after a restart.

use std::time::{Duration, Instant};

use snapfs_tests::{Mount, fuse_available, sh};

#[test]
fn kill_9_mid_upload_then_restart_completes_it() {
    if !fuse_available() {
        return;
    }
    // Nothing stored while copied, so the run has the whole file to read when it is killed
    // (a daemon killed while it stores files early: tests/tests/staging.rs).
    let mut m = Mount::start_storing_late();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}' && head -c 629145600 /dev/urandom > '{s}/big.bin' && echo small > '{s}/small.txt'",
        s = src.display()
    ));
    sh(&format!(
        "cp -r '{}' '{}/uploads/crashy'",
        src.display(),
        m.target().display()
    ));

    // Kill as soon as the job is running and has made progress.
    let status = m.target().join("uploads/crashy.status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let json = std::fs::read_to_string(&status).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        if v["state"] == "uploading" && v["bytes_done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            v["state"] != "done",
            "the upload finished before it could be interrupted"
        );
        assert!(
            Instant::now() < deadline,
            "upload never started: {json}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!m.target().join("snapshots/crashy").exists());
    m.kill9();
    // The store holds packs but no manifest: no snapshot exists.
    let manifests = sh(&format!(
        "find '{}/snapfs' -name '*.manifest.zst' | wc -l",
        m.store_dir().display()
    ));
    assert_eq!(manifests.trim(), "0");

    m.relaunch();
    m.wait("crashy");
    sh(&format!(
        "diff -r '{}' '{}/snapshots/crashy'",
        src.display(),
        m.target().display()
    ));
    // Only the packs of the finished upload remain: the interrupted one's were removed. (A
    // pack whose write the kill cut short leaves the file store's temporary `NAME#N` file,
    // which is no object of the store and not counted.)
    let uploads = sh(&format!(
        "find '{}/snapfs/packs' -type f ! -name '*#*' -printf '%h\\n' | sort -u | wc -l",
        m.store_dir().display()
    ));
    assert_eq!(
        uploads.trim(),
        "1",
        "packs of the interrupted upload are removed"
    );
}

#[test]
fn staged_upload_survives_a_clean_restart() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    sh(&format!(
        "mkdir '{t}/uploads/later' && echo data > '{t}/uploads/later/f'",
        t = m.target().display()
    ));
    m.stop();
    std::fs::write(
        m.root.path().join("config.toml"),
        format!("[upload]\nsettle = \"{}\"\n", snapfs_tests::TEST_SETTLE),
    )
    .unwrap();
    m.relaunch();
    m.wait("later");
    assert_eq!(
        std::fs::read(m.target().join("snapshots/later/f")).unwrap(),
        b"data\n"
    );
}
