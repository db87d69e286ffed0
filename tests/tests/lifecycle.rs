//! Lifecycle over a real mount: expiry recorded and shown, `snapfs gc` (dry run by default),
//! retention, the snapshot limit, orphan packs, and the scheduled cleanup.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use snapfs_control::wire::{Request, Response};
use snapfs_fs::format::Manifest;
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, ok, sh};

/// A mount whose remote `local` keeps its objects in `store` and has the given extra keys;
/// scheduled cleanup is off unless `lifecycle` turns it on, so tests decide when it runs.
fn mount(store: &Path, remote: &str, lifecycle: &str) -> Mount {
    Mount::start_with(&format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n\
         [lifecycle]\ninterval = \"0\"\n{lifecycle}\n\
         [[remote]]\nname = \"local\"\nurl = \"file://{}\"\n{remote}\n",
        store.display()
    ))
}

/// Makes snapshot `name` holding one small file, through `uploads/`.
fn upload(m: &Mount, name: &str) {
    std::fs::write(m.target().join("uploads").join(name), name.repeat(100)).unwrap();
    m.wait(name);
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

/// Snapshot names as `snapfs list --json` shows them, newest first.
fn names(m: &Mount) -> Vec<String> {
    let list = json(&m.snapfs(&["list", "cloud/local", "--json"]));
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

fn deleted(report: &serde_json::Value) -> Vec<(String, String)> {
    report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["reason"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn manifest_path(store: &Path, name: &str) -> PathBuf {
    store.join(format!("snapfs/snapshots/{name}.manifest.zst"))
}

/// Every pack object in the store, relative to `snapfs/packs/`.
fn packs(store: &Path) -> Vec<String> {
    let dir = store.join("snapfs/packs");
    if !dir.exists() {
        return Vec::new();
    }
    let mut v: Vec<String> = sh(&format!("cd '{}' && find . -type f", dir.display()))
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    v.sort();
    v
}

/// Rewrites a snapshot's manifest with another creation time, as if made then.
fn backdate(store: &Path, name: &str, created: &str) {
    let path = manifest_path(store, name);
    let m = Manifest::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let mut v = serde_json::to_value(&m).unwrap();
    v["created"] = created.into();
    let m: Manifest = serde_json::from_value(v).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, m.to_bytes()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

#[test]
fn ttl_is_recorded_and_shown() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "ttl = \"1d\"", "");
    upload(&m, "a");
    let expires = sh(&format!(
        "getfattr --only-values -n user.snapfs.expires '{}'",
        m.target().join("snapshots/a").display()
    ));
    let list = json(&m.snapfs(&["list", "cloud/local", "--json"]));
    let row = &list[0];
    assert_eq!(row["index"], 1);
    assert_eq!(row["name"], "a");
    assert_eq!(row["size"], 100);
    assert_eq!(row["state"], "ready");
    assert_eq!(row["crc32c"].as_str().unwrap().len(), 8);
    assert_eq!(row["expires"], expires.as_str());
    // A day after it was made, to the second.
    let (created, expires) = (row["created"].as_str().unwrap(), expires.as_str());
    assert!(expires > created, "{created} / {expires}");
    assert_eq!(&created[11..19], &expires[11..19]);
    let table = ok(&m.snapfs(&["list", "cloud/local"]));
    assert!(
        table.lines().next().unwrap().ends_with("EXPIRES"),
        "{table}"
    );
    assert!(table.contains(expires), "{table}");
}

#[test]
fn gc_is_a_dry_run_until_told_yes_and_restore_refuses_expired() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "ttl = \"1s\"", "");
    upload(&m, "old");
    std::thread::sleep(Duration::from_millis(1200));

    // Past its expiry, restore needs --force.
    let dest = m.root.path().join("restored");
    let snap = m.target().join("snapshots/old");
    let refused = m.snapfs(&["restore", snap.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(!dest.exists());
    ok(&m.snapfs(&[
        "restore",
        snap.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--force",
    ]));
    assert_eq!(std::fs::read(&dest).unwrap(), "old".repeat(100).as_bytes());

    let text = ok(&m.snapfs(&["gc"]));
    assert!(
        text.contains("would delete cloud/local/snapshots/old (expired"),
        "{text}"
    );
    let report = json(&m.snapfs(&["gc", "cloud/local", "--json", "--dry-run"]));
    assert_eq!(report["dry_run"], true);
    assert_eq!(deleted(&report), [("old".into(), "expired".into())]);
    assert_eq!(names(&m), ["old"], "a dry run deletes nothing");
    assert!(manifest_path(store.path(), "old").exists());

    let report = json(&m.snapfs(&["gc", "--yes", "--json"]));
    assert_eq!(report["dry_run"], false);
    assert_eq!(deleted(&report), [("old".into(), "expired".into())]);
    assert!(names(&m).is_empty());
    assert!(!manifest_path(store.path(), "old").exists());
    assert!(packs(store.path()).is_empty(), "its packs went with it");
    assert!(!snap.exists());
    assert_eq!(ok(&m.snapfs(&["gc"])), "nothing to clean up\n");
}

#[test]
fn retention_keeps_the_newest_even_when_expired() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(
        store.path(),
        "ttl = \"1s\"\nretention = { min_count = 2 }",
        "",
    );
    for name in ["a", "b", "c"] {
        upload(&m, name);
    }
    std::thread::sleep(Duration::from_millis(1200));
    let report = json(&m.snapfs(&["gc", "cloud/local", "--yes", "--json"]));
    assert_eq!(deleted(&report), [("a".into(), "expired".into())]);
    assert_eq!(names(&m), ["c", "b"]);
}

#[test]
fn max_days_alone_retires_old_snapshots() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(
        store.path(),
        "retention = { min_days = 1, max_days = 30 }",
        "",
    );
    upload(&m, "old");
    upload(&m, "new");
    backdate(store.path(), "old", "2020-01-01T00:00:00Z");
    let report = json(&m.snapfs(&["gc", "--json"]));
    assert_eq!(report["deleted"][0]["name"], "old");
    assert_eq!(report["deleted"][0]["reason"]["kind"], "max_days");
    assert_eq!(report["deleted"][0]["reason"]["max_days"], 30);
    let text = ok(&m.snapfs(&["gc", "--yes"]));
    assert!(
        text.contains("deleted cloud/local/snapshots/old (older than 30 days)"),
        "{text}"
    );
    assert_eq!(names(&m), ["new"]);
}

#[test]
fn uploads_over_max_snapshots_fail_with_edquot_before_staging() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "max_snapshots = 1", "");
    upload(&m, "one");
    let err = std::fs::create_dir(m.target().join("uploads/two")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    let err = std::fs::write(m.target().join("uploads/three"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    let staged = sh(&format!(
        "find '{}' -name two -o -name three 2>/dev/null || true",
        m.root.path().join("cache").display()
    ));
    assert_eq!(staged, "", "nothing was staged");
    let src = m.root.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    let out = m.snapfs(&[
        "snapshot",
        "cloud/local",
        src.to_str().unwrap(),
        "--name",
        "four",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(names(&m), ["one"]);
}

#[test]
fn orphan_packs_are_collected_and_referenced_ones_never() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "");
    upload(&m, "kept");
    let referenced = packs(store.path());
    assert!(!referenced.is_empty());
    // Those a referenced upload wrote long ago stay; so do fresh ones of an upload that may
    // still be running; only old packs no manifest lists go.
    let dir = store.path().join("snapfs/packs");
    sh(&format!(
        "set -e; cd '{d}'; touch -d 2020-01-01 */*
         mkdir 20200101T000000Z-dead 20991231T000000Z-busy
         head -c 3000 /dev/urandom > 20200101T000000Z-dead/00000000.pack
         head -c 1000 /dev/urandom > 20200101T000000Z-dead/00000001.pack
         head -c 700 /dev/urandom > '20200101T000000Z-dead/00000002.pack#1'
         touch -d 2020-01-01 20200101T000000Z-dead/*
         head -c 500 /dev/urandom > 20991231T000000Z-busy/00000000.pack
         head -c 200 /dev/urandom > '20991231T000000Z-busy/00000001.pack#2'",
        d = dir.display()
    ));
    // A write killed half-way leaves the file store's temporary file beside the pack; an
    // old one goes with the orphans, a fresh one (a write going on) stays.
    let report = json(&m.snapfs(&["gc", "--json"]));
    assert_eq!(report["orphan_packs"], 3);
    assert_eq!(report["orphan_bytes"], 4700);
    assert_eq!(packs(store.path()).len(), referenced.len() + 5, "dry run");
    let text = ok(&m.snapfs(&["gc", "--yes"]));
    assert!(text.contains("deleted 3 orphan packs"), "{text}");
    let mut left = referenced.clone();
    left.push("20991231T000000Z-busy/00000000.pack".into());
    left.push("20991231T000000Z-busy/00000001.pack#2".into());
    left.sort();
    assert_eq!(packs(store.path()), left);
    assert_eq!(
        std::fs::read(m.target().join("snapshots/kept")).unwrap(),
        "kept".repeat(100).as_bytes()
    );
}

#[test]
fn gc_repacks_a_mostly_unused_pack_and_says_how_far_it_came() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "");
    // One pack with a large file only `both` holds and a small one `small` holds too: once
    // `both` goes, most of the pack is unused, and the small file's bytes move out of it.
    let src = tempfile::tempdir().unwrap();
    sh(&format!(
        "set -e; cd '{}'; head -c 3000000 /dev/urandom > large; head -c 100000 /dev/urandom > small",
        src.path().display()
    ));
    for (name, files) in [("both", "large small"), ("small", "small")] {
        sh(&format!(
            "set -e; mkdir '{up}'; cd '{src}'; cp {files} '{up}/'",
            up = m.target().join("uploads").join(name).display(),
            src = src.path().display()
        ));
        m.wait(name);
    }
    let remove = Request::Remove {
        target: "cloud/local".into(),
        name: "both".into(),
    };
    assert_eq!(m.call(&remove), Response::Done);
    let mut seen = Vec::new();
    let gc = Request::Gc {
        target: Some("cloud/local".into()),
        dry_run: false,
        progress: true,
    };
    let report = match m.call_watching(&gc, |done, total| seen.push((done, total))) {
        Response::Gc(report) => report,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(report.repacked_packs, 1, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    // The last line, sent once it was done: the small file's bytes, all moved.
    let (done, total) = *seen.last().expect("progress lines");
    assert_eq!(done, total);
    assert!((90_000..=110_000).contains(&total), "{seen:?}");
    assert_eq!(
        std::fs::read(m.target().join("snapshots/small/small")).unwrap(),
        std::fs::read(src.path().join("small")).unwrap()
    );
}

#[test]
fn packs_left_by_an_interrupted_deletion_are_collected() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "orphan_grace = \"1s\"");
    upload(&m, "gone");
    upload(&m, "stays");
    let before = packs(store.path());
    // A deletion that stopped after the manifest, as it deletes it first.
    std::fs::remove_file(manifest_path(store.path(), "gone")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let report = json(&m.snapfs(&["gc", "--yes", "--json"]));
    assert_eq!(report["orphan_packs"], 1, "{report}");
    assert!(deleted(&report).is_empty());
    assert_eq!(packs(store.path()).len(), before.len() - 1);
    assert_eq!(names(&m), ["stays"]);
    assert_eq!(
        std::fs::read(m.target().join("snapshots/stays")).unwrap(),
        "stays".repeat(100).as_bytes()
    );
}

#[test]
fn scheduled_cleanup_deletes_expired_snapshots() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    // mount() turns the schedule off; this one runs it every second.
    let m = Mount::start_with(&format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[lifecycle]\ninterval = \"1s\"\n\
         [[remote]]\nname = \"local\"\nurl = \"file://{}\"\nttl = \"1s\"\n",
        store.path().display()
    ));
    upload(&m, "brief");
    // The log line is the cleanup's last word on it; the deadline only keeps a broken
    // schedule from hanging the test.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.log().contains("snapshot deleted") {
        assert!(Instant::now() < deadline, "not cleaned up:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!manifest_path(store.path(), "brief").exists());
    assert!(names(&m).is_empty());
}

#[test]
fn deleting_a_snapshot_keeps_the_packs_another_snapshot_lists() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "");
    upload(&m, "real");
    let packs_before = packs(store.path());
    // A manifest written by someone else that names the packs of "real".
    let path = manifest_path(store.path(), "real");
    let real = Manifest::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let mut v = serde_json::to_value(&real).unwrap();
    v["name"] = "copy".into();
    let copy: Manifest = serde_json::from_value(v).unwrap();
    std::fs::write(manifest_path(store.path(), "copy"), copy.to_bytes()).unwrap();
    assert_eq!(names(&m), ["copy", "real"]);

    let copy_path = m.target().join("snapshots/copy");
    ok(&m.snapfs(&["rm", "--yes", copy_path.to_str().unwrap()]));
    assert_eq!(names(&m), ["real"]);
    assert_eq!(packs(store.path()), packs_before, "the packs of real stay");
    assert_eq!(
        std::fs::read(m.target().join("snapshots/real")).unwrap(),
        "real".repeat(100).as_bytes()
    );
    // Removing the last snapshot that lists them removes them.
    let real_path = m.target().join("snapshots/real");
    ok(&m.snapfs(&["rm", "--yes", real_path.to_str().unwrap()]));
    assert!(packs(store.path()).is_empty());
}

#[test]
fn a_manifest_under_another_name_is_shown_once_and_warned_about_once() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "");
    upload(&m, "real");
    let path = manifest_path(store.path(), "real");
    std::fs::copy(&path, manifest_path(store.path(), "copy")).unwrap();
    assert_eq!(names(&m), ["real"]);
    assert_eq!(names(&m), ["real"]);
    let warned = m.log().matches("skipping an unreadable manifest").count();
    assert_eq!(warned, 1, "{}", m.log());
    // Its packs are still those of "real": cleanup does not take them.
    let report = json(&m.snapfs(&["gc", "--yes", "--json"]));
    assert_eq!(report["orphan_packs"], 0, "{report}");
    assert_eq!(
        std::fs::read(m.target().join("snapshots/real")).unwrap(),
        "real".repeat(100).as_bytes()
    );
}

#[test]
fn a_file_whose_pack_is_missing_fails_with_eio_not_enoent() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let m = mount(store.path(), "", "");
    upload(&m, "lost");
    for p in packs(store.path()) {
        std::fs::remove_file(store.path().join("snapfs/packs").join(p)).unwrap();
    }
    let err = std::fs::read(m.target().join("snapshots/lost")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

/// Bytes of every pack object in the store.
fn pack_bytes(store: &Path) -> u64 {
    packs(store)
        .iter()
        .map(|p| {
            std::fs::metadata(store.join("snapfs/packs").join(p))
                .unwrap()
                .len()
        })
        .sum()
}

/// A mount of a remote at `store` (cleanup with `grace`) holding snapshot "next" of 4 files
/// of one chunk each, made after a snapshot of `files` such files that is then deleted: the
/// first pack is at most a quarter used. Answers the mount and the source folder.
fn a_pack_mostly_unused(store: &Path, grace: &str, files: u32) -> (Mount, PathBuf) {
    let m = mount(store, "", &format!("orphan_grace = \"{grace}\""));
    let src = store.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        snapfs_tests::random_file(&src.join(format!("f{i:02}")), 500_000);
    }
    let (target, from) = (m.target(), src.to_str().unwrap().to_owned());
    let snapshot = |name: &str| {
        ok(&m.snapfs(&["snapshot", target.to_str().unwrap(), &from, "-n", name]));
    };
    snapshot("base");
    for i in 4..files {
        std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    snapshot("next");
    ok(&m.snapfs(&[
        "rm",
        "--yes",
        target.join("snapshots/base").to_str().unwrap(),
    ]));
    (m, src)
}

#[test]
fn a_mostly_unused_pack_is_repacked_and_its_snapshots_read_the_same() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    // 24 files of one chunk each: a first pack of about 16 of them, a second of the rest. The
    // snapshot left keeps 4 files of the first pack.
    let (m, src) = a_pack_mostly_unused(store.path(), "0s", 24);
    let target = m.target();
    let listed = |s: &str| -> Vec<String> {
        let m =
            Manifest::from_bytes(&std::fs::read(manifest_path(store.path(), s)).unwrap()).unwrap();
        m.packs
    };
    let before = listed("next");
    assert_eq!(
        before.len(),
        1,
        "the snapshot left uses one pack: {before:?}"
    );

    let report = json(&m.snapfs(&["gc", "--json"]));
    assert_eq!(report["repacked_packs"], 1, "dry run: {report}");
    assert_eq!(listed("next"), before, "a dry run changes nothing");
    let text = ok(&m.snapfs(&["gc", "--yes"]));
    assert!(text.contains("repacked 1 mostly unused pack"), "{text}");
    let after = listed("next");
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the snapshot names the new pack");
    // With no grace period, the same cleanup deletes the old pack.
    assert!(text.contains("deleted 1 orphan pack"), "{text}");
    assert!(!store.path().join(&before[0]).exists());
    for i in 0..4 {
        let name = format!("f{i:02}");
        sh(&format!(
            "cmp '{}' '{}'",
            src.join(&name).display(),
            target.join("snapshots/next").join(&name).display()
        ));
    }
    assert_eq!(ok(&m.snapfs(&["gc", "--yes"])), "nothing to clean up\n");
    assert!(
        pack_bytes(store.path()) < 2_100_000,
        "what is left is what the snapshot uses: {} bytes",
        pack_bytes(store.path())
    );
    assert_eq!(snapfs_tests::only_listed_packs_left(store.path()), 1);
    // A fresh daemon (no cache) reads the same through the new pack.
    drop(m);
    let m = mount(store.path(), "", "");
    sh(&format!(
        "cmp '{}' '{}'",
        src.join("f03").display(),
        m.target().join("snapshots/next/f03").display()
    ));
    ok(&m.snapfs(&[
        "verify",
        m.target().join("snapshots/next").to_str().unwrap(),
    ]));
}

#[test]
fn a_file_opened_before_a_repack_reads_on_from_the_old_pack() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let (m, src) = a_pack_mostly_unused(store.path(), "1h", 20);
    let target = m.target();
    // Opened, not read: none of its bytes is cached yet.
    let mut opened = std::fs::File::open(target.join("snapshots/next/f02")).unwrap();
    let before = Manifest::from_bytes(&std::fs::read(manifest_path(store.path(), "next")).unwrap())
        .unwrap()
        .packs;
    let text = ok(&m.snapfs(&["gc", "--yes"]));
    assert!(text.contains("repacked 1 mostly unused pack"), "{text}");
    assert!(
        !text.contains("orphan"),
        "kept for the grace period: {text}"
    );
    assert!(store.path().join(&before[0]).exists());
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut opened, &mut read).unwrap();
    assert_eq!(read, std::fs::read(src.join("f02")).unwrap());
}
