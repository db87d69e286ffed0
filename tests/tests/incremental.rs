//! Incremental snapshots in a bucket: a second snapshot stores only what changed (down to a
//! database's pages), unchanged files read in place are not opened again, shared chunks survive
//! the deletion of the snapshot that wrote them, and the recovery in snapfs-format(5) works
//! with standard tools alone.

use std::path::Path;

use snapfs_tests::{Dice, Mount, fuse_available, random_file, sh, sqlite_db};

/// Bytes of all packs in the local remote.
fn pack_bytes(m: &Mount) -> u64 {
    let packs = m.store_dir().join("snapfs/packs");
    if !packs.exists() {
        return 0;
    }
    sh(&format!(
        "find '{}' -type f -printf '%s\\n'",
        packs.display()
    ))
    .lines()
    .map(|l| l.parse::<u64>().unwrap())
    .sum()
}

fn snapshot(m: &Mount, src: &Path, name: &str) {
    let out = m.snapfs(&[
        "snapshot",
        &m.target().display().to_string(),
        &src.display().to_string(),
        "--name",
        name,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn same(a: &Path, b: &Path) {
    sh(&format!("diff -r '{}' '{}'", a.display(), b.display()));
}

#[test]
fn a_second_snapshot_stores_what_changed_and_shared_chunks_outlive_their_writer() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start();
    let src = m.root.path().join("src");
    std::fs::create_dir_all(src.join("small")).unwrap();
    random_file(&src.join("big.bin"), 8 << 20);
    sqlite_db(&src.join("app.db"), 600);
    for i in 0..20 {
        std::fs::write(src.join(format!("small/{i}.txt")), format!("file {i}\n")).unwrap();
    }
    snapshot(&m, &src, "s1");
    let first = pack_bytes(&m);
    let kept = m.root.path().join("s1-copy");
    sh(&format!("cp -a '{}' '{}'", src.display(), kept.display()));

    // A few rows of the database: a few of its 4 KiB pages are stored, not the file.
    sh(&format!(
        "sqlite3 '{}' 'UPDATE t SET v = randomblob(10000) WHERE id IN (7, 300, 555)'",
        src.join("app.db").display()
    ));
    snapshot(&m, &src, "db");
    let added = pack_bytes(&m) - first;
    assert!(added < 64 * 4096, "3 rows of 10 KB cost {added} bytes");

    // A few bytes in the middle of the big file and one small file: the chunks around them.
    sh(&format!(
        "printf 'changed' | dd of='{}' bs=1 seek=4000000 conv=notrunc status=none",
        src.join("big.bin").display()
    ));
    std::fs::write(src.join("small/3.txt"), "changed\n").unwrap();
    let before = pack_bytes(&m);
    snapshot(&m, &src, "s2");
    let added = pack_bytes(&m) - before;
    // At most the two chunks the change may straddle (chunks are at most 4 MiB).
    assert!(added < 8 << 20, "7 bytes cost {added} bytes");
    let rm = m.snapfs(&[
        "rm",
        "--yes",
        &m.target().join("snapshots/db").display().to_string(),
    ]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );

    let snaps = m.target().join("snapshots");
    same(&kept, &snaps.join("s1"));
    same(&src, &snaps.join("s2"));
    let verify = m.snapfs(&["verify", &snaps.join("s2").display().to_string()]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The first snapshot wrote most of the second's chunks: they stay when it goes.
    let rm = m.snapfs(&["rm", "--yes", &snaps.join("s1").display().to_string()]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(pack_bytes(&m) >= first, "shared packs were deleted");
    m.restart();
    same(&src, &m.target().join("snapshots/s2"));

    // With the last snapshot gone, nothing of it is left, and no lease either.
    let rm = m.snapfs(&[
        "rm",
        "--yes",
        &m.target().join("snapshots/s2").display().to_string(),
    ]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert_eq!(pack_bytes(&m), 0);
    let leases = m.store_dir().join("snapfs/leases");
    let left = std::fs::read_dir(&leases).map_or(0, |d| d.count());
    assert_eq!(left, 0, "leases left in {}", leases.display());
}

/// Opens of files in `dir` seen through inotify since `watch` was made.
struct Opens {
    fd: i32,
}

impl Opens {
    fn watch(dir: &Path) -> Opens {
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) };
        assert!(wd >= 0);
        Opens { fd }
    }

    /// The names opened so far.
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return names;
            }
            let mut at = 0;
            while at < n as usize {
                let header = std::mem::size_of::<libc::inotify_event>();
                let event = unsafe { &*(buf[at..].as_ptr() as *const libc::inotify_event) };
                let name = &buf[at + header..at + header + event.len as usize];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                names.push(String::from_utf8_lossy(&name[..end]).into_owned());
                at += header + event.len as usize;
            }
        }
    }
}

impl Drop for Opens {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn unchanged_files_read_in_place_are_not_opened_again() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("same.bin"), 3 << 20);
    random_file(&src.join("edited.bin"), 3 << 20);
    snapshot(&m, &src, "one");

    sh(&format!(
        "printf x | dd of='{}' bs=1 seek=10 conv=notrunc status=none",
        src.join("edited.bin").display()
    ));
    let opens = Opens::watch(&src);
    snapshot(&m, &src, "two");
    let opened = opens.names();
    assert!(opened.contains(&"edited.bin".to_string()), "{opened:?}");
    assert!(!opened.contains(&"same.bin".to_string()), "{opened:?}");
    same(&src, &m.target().join("snapshots/two"));

    // A copy staged under uploads/ has no identity to compare: every file is read, and the
    // chunks are shared all the same.
    let before = pack_bytes(&m);
    m.upload(&src, "three");
    assert_eq!(
        pack_bytes(&m),
        before,
        "an identical upload stored nothing new"
    );
    same(&src, &m.target().join("snapshots/three"));
}

/// The first worked example of snapfs-format(5), as a shell script: roff escapes undone, and
/// the remote's folder where the page says /srv/backups.
fn recovery_script(store: &Path) -> String {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/snapfs-format.5"),
    )
    .unwrap();
    let examples = &page[page.find(".SH EXAMPLES").expect("an EXAMPLES section")..];
    let start = examples.find(".nf\n").expect("an example") + 4;
    let end = start + examples[start..].find(".fi\n").expect("its end");
    examples[start..end]
        .replace("\\e", "\\")
        .replace("\\-", "-")
        .replace("\\&", "")
        .replace("cd /srv/backups", &format!("cd '{}'", store.display()))
}

#[test]
fn the_recovery_in_the_format_page_works_with_standard_tools() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("fixtures");
    std::fs::create_dir_all(src.join("db")).unwrap();
    sqlite_db(&src.join("db/app.db"), 500);
    std::os::unix::fs::symlink("db/app.db", src.join("current")).unwrap();
    snapshot(&m, &src, "fixtures");

    let script = m.root.path().join("recover.sh");
    std::fs::write(&script, recovery_script(&m.store_dir())).unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{:?}\n{stdout}\n{stderr}\n{}",
        out.status,
        std::fs::read_to_string(&script).unwrap()
    );
    let recovered = m.store_dir().join("app.db");
    assert_eq!(
        std::fs::read(&recovered).unwrap(),
        std::fs::read(src.join("db/app.db")).unwrap()
    );
    // The listing and the size check print what the page says they print.
    let size = std::fs::metadata(&recovered).unwrap().len().to_string();
    assert!(stdout.contains("file 644"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| *l == size).count(), 2, "{stdout}");
    for f in ["manifest.json", "chunks", "frame", "chunk", "app.db"] {
        let _ = std::fs::remove_file(m.store_dir().join(f));
    }
}

/// Two daemons on one bucket: one makes snapshot after snapshot sharing most chunks with the
/// ones before, the other deletes the one two before and collects leftovers with no grace at
/// all, at the same time, with random timing. Each snapshot stores two new files, keeps the
/// smaller for two snapshots more and drops the larger, so deleting a snapshot leaves its pack
/// mostly unused but still needed: the collection repacks it while the next snapshot, which
/// uses a chunk of it, is being made. Every snapshot made reads back whole, and nothing
/// unreferenced is left after a final collection.
#[test]
fn uploads_and_gc_racing_on_one_bucket_never_lose_a_chunk() {
    use std::time::Duration;

    use snapfs_tests::conformance::{Remote, commit, runtime};
    use snapfsd::powers::{Deletes, HasLeftovers, InUse, Progress, Verifies};

    const ROUNDS: u32 = 1000;
    // Files of one chunk each (under 512 KiB), each in a frame of its own (over 64 KiB).
    const FRESH: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let remote = Remote::new(&format!("file://{}", bucket.display()), &[]);
    let maker = remote.backend(&dir.path().join("maker"));
    let sweeper = remote.backend(&dir.path().join("sweeper"));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("shared.bin"), 1 << 20);
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    for f in ["recent.bin", "fresh.bin"] {
        std::fs::write(src.join(f), dice.bytes(FRESH)).unwrap();
    }
    let idle = || InUse::default();
    let repacked = std::sync::atomic::AtomicU64::new(0);
    runtime().block_on(async {
        for round in 0..ROUNDS {
            // Kept by the next two snapshots: a quarter of this round's new pack.
            std::fs::rename(src.join("recent.bin"), src.join("old.bin")).unwrap();
            std::fs::rename(src.join("fresh.bin"), src.join("recent.bin")).unwrap();
            std::fs::write(src.join("fresh.bin"), dice.bytes(FRESH)).unwrap();
            // Dropped by the next snapshot: the rest of that pack.
            std::fs::write(src.join("dropped.bin"), dice.bytes(3 * FRESH)).unwrap();
            let (pause_make, pause_sweep) = (dice.roll(1500), dice.roll(1500));
            let make = async {
                tokio::time::sleep(Duration::from_micros(pause_make)).await;
                commit(maker.clone(), &format!("r{round}"), &src, round % 3 != 0).await
            };
            let sweep = async {
                tokio::time::sleep(Duration::from_micros(pause_sweep)).await;
                if round > 1 {
                    Deletes::delete(sweeper.as_ref(), &format!("r{}", round - 2))
                        .await
                        .unwrap();
                }
                let progress = Progress::default();
                let done = sweeper
                    .collect_leftovers(&idle, Duration::ZERO, false, &progress)
                    .await
                    .unwrap();
                // Every byte in use planned to move was counted as moved, and a repack has some.
                let planned = progress.total.into_inner();
                assert_eq!(progress.done.into_inner(), planned, "round {round}");
                assert!(done.repacked == 0 || planned > 0, "round {round}");
                repacked.fetch_add(done.repacked, std::sync::atomic::Ordering::Relaxed);
            };
            let (made, ()) = tokio::join!(make, sweep);
            made.unwrap_or_else(|e| panic!("round {round}: {e}"));
            let report =
                Verifies::verify(sweeper.as_ref(), &format!("r{round}"), &Default::default())
                    .await
                    .unwrap();
            assert!(
                report.errors.is_empty(),
                "round {round}: {:?}",
                report.errors
            );
            assert_eq!(report.bytes, (1 << 20) + 6 * FRESH as u64, "round {round}");
        }
        sweeper
            .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
            .await
            .unwrap();
    });

    // Every pack left is one the last two snapshots list.
    assert_eq!(snapfs_tests::only_listed_packs_left(&bucket), 2);
    let repacked = repacked.into_inner();
    assert!(
        repacked >= u64::from(ROUNDS) / 4,
        "packs were repacked while snapshots were made: {repacked}"
    );
    println!("{repacked} packs repacked in {ROUNDS} rounds");
}
