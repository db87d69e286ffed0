//! Uploads through `uploads/` and reads back through `snapshots/`, over a real mount.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use snapfs_tests::{Mount, fuse_available, sh};

/// `find` listing of a tree with type, mode, size and mtime (ns) of every entry.
fn inventory(dir: &Path) -> String {
    let mut lines: Vec<String> = sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%s|%T@|%l\\n'",
        dir.display()
    ))
    .lines()
    // Directory sizes are file-system specific.
    .map(|l| {
        let mut f: Vec<&str> = l.split('|').collect();
        if f[1] == "d" {
            f[3] = "-";
        }
        f.join("|")
    })
    .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn tree_round_trips_with_modes_and_times() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "set -e; mkdir -p '{s}/nested/deeper/deepest' '{s}/empty dir' '{s}/many'
         head -c 209715200 /dev/urandom > '{s}/nested/big.bin'
         : > '{s}/empty.txt'
         echo grüße > '{s}/nested/deeper/spaces and ümlauts.txt'
         ln -s nested/big.bin '{s}/link-to-big'
         ln -s ../../outside '{s}/nested/dangling'
         chmod 600 '{s}/empty.txt'; chmod 750 '{s}/nested/deeper'
         cd '{s}/many' && for i in $(seq 1 2000); do echo \"file $i\" > f$i.txt; done
         touch -d '2001-02-03 04:05:06.789' '{s}/empty.txt'",
        s = src.display()
    ));
    let upload = m.target().join("uploads/tree");
    sh(&format!("cp -a '{}' '{}'", src.display(), upload.display()));
    m.wait(upload.file_name().unwrap().to_str().unwrap());

    let snap = m.target().join("snapshots/tree");
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        src.display(),
        snap.display()
    ));
    assert_eq!(inventory(&src), inventory(&snap));
    assert!(
        !upload.exists(),
        "uploads/tree is gone once the snapshot is ready"
    );
    assert_eq!(
        std::fs::read_link(m.target().join("snapshots/latest")).unwrap(),
        Path::new("tree")
    );
    let state = sh(&format!(
        "getfattr --only-values -n user.snapfs.state '{}'",
        snap.display()
    ));
    assert_eq!(state, "ready");
}

#[test]
fn single_file_becomes_a_file_snapshot() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let file = m.root.path().join("db-2026-11-20.db");
    sh(&format!(
        "head -c 5000000 /dev/urandom > '{}'",
        file.display()
    ));
    sh(&format!(
        "cp '{}' '{}/uploads/'",
        file.display(),
        m.target().display()
    ));
    m.wait("db-2026-11-20.db");
    let snap = m.target().join("snapshots/db-2026-11-20.db");
    assert!(std::fs::symlink_metadata(&snap).unwrap().is_file());
    sh(&format!("cmp '{}' '{}'", file.display(), snap.display()));
    let crc = sh(&format!(
        "getfattr --only-values -n user.snapfs.crc32c '{}'",
        snap.display()
    ));
    assert_eq!(crc.len(), 8, "crc32c is 8 hex digits: {crc}");
    assert_eq!(std::fs::metadata(&snap).unwrap().size(), 5_000_000);
}

#[test]
fn status_file_reports_progress_then_disappears() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let upload = m.target().join("uploads/st");
    std::fs::create_dir(&upload).unwrap();
    std::fs::write(upload.join("a"), b"abc").unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.target().join("uploads/st.status")).unwrap())
            .unwrap();
    assert_eq!(status["snapshot"], "st");
    assert_eq!(status["target"], "cloud/local");
    assert!(
        ["staging", "queued", "uploading", "done"].contains(&status["state"].as_str().unwrap())
    );
    m.wait(upload.file_name().unwrap().to_str().unwrap());
    assert!(!m.target().join("uploads/st.status").exists());
    assert_eq!(
        std::fs::read(m.target().join("snapshots/st/a")).unwrap(),
        b"abc"
    );
}
