//! A process killed at any step of an upload, or of a delete and the cleanup after it, leaves
//! a bucket that another process reads and repairs: every snapshot listed reads back whole
//! (the one being made is there complete or not at all), cleanup never takes what a snapshot
//! needs, and once the dead process's lease has run out, cleanup leaves exactly the packs that
//! manifests list. Then the same upload, made again, succeeds.
//!
//! "Killed at a step" is a store that refuses the write after the first k and everything after
//! it (tests/src/dying.rs): only writes change a bucket, so stopping before each of them in turn
//! covers every state a kill can leave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use snapfs_fs::backend::Backend;
use snapfs_fs::format::LEASE_PREFIX;
use snapfs_tests::conformance::{Remote, commit, runtime};
use snapfs_tests::dying::Dying;
use snapfs_tests::{only_listed_packs_left, random_file, sh};
use snapfsd::cloud::CloudBackend;
use snapfsd::powers::{Deletes, HasLeftovers, InUse, Progress, TakesLocalData, Verifies};

/// A folder of two packs' worth of random bytes, small files that share frames, and text.
fn make_tree(src: &Path) {
    std::fs::create_dir_all(src.join("small")).unwrap();
    random_file(&src.join("big.bin"), 12 << 20);
    for i in 0..30 {
        random_file(&src.join(format!("small/{i}")), 1_000 + i * 700);
    }
    let text: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(src.join("rows.txt"), text).unwrap();
}

/// Changes a part of the big file and one small file, and adds one.
fn change_tree(src: &Path) {
    sh(&format!(
        "set -e; cd '{s}'; head -c 1000000 /dev/urandom | dd of=big.bin bs=1M seek=5 conv=notrunc status=none
         head -c 5000 /dev/urandom > small/3; head -c 20000 /dev/urandom > small/new",
        s = src.display()
    ));
}

fn tree_bytes(src: &Path) -> u64 {
    sh(&format!("find '{}' -type f -printf '%s\\n'", src.display()))
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum()
}

/// A copy of `from` at `to`, as the bucket a trial starts from.
fn copy_bucket(from: &Path, to: &Path) {
    sh(&format!("cp -a '{}' '{}'", from.display(), to.display()));
}

fn remote_at(bucket: &Path) -> Remote {
    Remote::new(&format!("file://{}", bucket.display()), &[])
}

fn idle() -> InUse {
    InUse::default()
}

/// Reads every snapshot of `backend` back whole; `sizes` gives the bytes each must hold. Answers
/// the names listed.
async fn every_snapshot_reads(
    backend: &CloudBackend,
    sizes: &[(&str, u64)],
    what: &str,
) -> BTreeSet<String> {
    let names: BTreeSet<String> = backend
        .list_snapshots()
        .await
        .unwrap_or_else(|e| panic!("{what}: listing: {e}"))
        .into_iter()
        .map(|s| s.name)
        .collect();
    for name in &names {
        let report = Verifies::verify(backend, name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: verifying {name}: {e}"));
        assert!(
            report.errors.is_empty(),
            "{what}: {name}: {:?}",
            report.errors
        );
        let want = sizes.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
        assert_eq!(Some(report.bytes), want, "{what}: {name} holds other bytes");
    }
    names
}

/// What another process finds after the kill, and what it repairs.
async fn another_process_repairs(bucket: &Path, cache: &Path, sizes: &[(&str, u64)], what: &str) {
    let backend = remote_at(bucket).backend(cache);
    every_snapshot_reads(&backend, sizes, what).await;
    // Cleanup at once, with no grace: the dead process's lease still protects its packs.
    backend
        .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: cleanup: {e}"));
    let names = every_snapshot_reads(&backend, sizes, &format!("{what}, after cleanup")).await;
    // Once the lease has run out, cleanup takes every pack no manifest lists.
    sh(&format!(
        "d='{}'; [ ! -d \"$d\" ] || find \"$d\" -type f -exec touch -d '3 hours ago' {{}} +",
        bucket.join(LEASE_PREFIX).display()
    ));
    backend
        .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: cleanup after the lease ran out: {e}"));
    assert_eq!(
        every_snapshot_reads(&backend, sizes, &format!("{what}, after the lease ran out")).await,
        names
    );
    only_listed_packs_left(bucket);
}

/// Writes `work` makes on a healthy store over a copy of `bucket`.
async fn writes_of<F, Fut>(bucket: &Path, scratch: &Path, work: F) -> u64
where
    F: FnOnce(Arc<CloudBackend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let copy = scratch.join("counted");
    copy_bucket(bucket, &copy);
    let remote = remote_at(&copy);
    let store = Dying::after(remote.store(), u64::MAX);
    work(remote.backend_over(
        store.clone() as Arc<dyn ObjectStore>,
        &scratch.join("counting"),
    ))
    .await;
    store.made()
}

/// Runs `work` on a copy of `pristine` at `trial` through a store that dies before write
/// `k + 1`, then has another process read and repair what is left; answers the copy's remote.
async fn killed_before_write<F, Fut>(
    pristine: &Path,
    trial: &Path,
    k: u64,
    sizes: &[(&str, u64)],
    what: &str,
    work: F,
) -> Remote
where
    F: FnOnce(Arc<CloudBackend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    copy_bucket(pristine, trial);
    let remote = remote_at(trial);
    let store = Dying::after(remote.store(), k);
    work(remote.backend_over(
        store.clone() as Arc<dyn ObjectStore>,
        &trial.with_extension("dying"),
    ))
    .await;
    assert!(store.died(), "{what}: the store never refused a write");
    another_process_repairs(trial, &trial.with_extension("repair"), sizes, what).await;
    remote
}

/// The bucket trials start from, at `dir/pristine`: snapshot "base" of a folder made at
/// `dir/src`, which is then changed; with `and_next`, also snapshot "next" of the changed
/// folder. Answers the bucket, the folder and the bytes each snapshot holds.
fn pristine_bucket(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    and_next: bool,
) -> (PathBuf, PathBuf, [(&'static str, u64); 2]) {
    let (pristine, src) = (dir.join("pristine"), dir.join("src"));
    std::fs::create_dir_all(&pristine).unwrap();
    make_tree(&src);
    let base = tree_bytes(&src);
    rt.block_on(async {
        let backend = remote_at(&pristine).backend(&dir.join("first"));
        commit(backend.clone(), "base", &src, true).await.unwrap();
        change_tree(&src);
        if and_next {
            commit(backend, "next", &src, true).await.unwrap();
        }
    });
    let sizes = [("base", base), ("next", tree_bytes(&src))];
    (pristine, src, sizes)
}

#[test]
fn an_upload_killed_at_any_step_leaves_a_bucket_another_process_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (pristine, src, sizes) = pristine_bucket(dir.path(), &rt, false);
    let next = sizes[1].1;
    rt.block_on(async {
        let from = src.clone();
        let writes = writes_of(&pristine, dir.path(), |backend| async move {
            commit(backend, "next", &from, true).await.unwrap();
        })
        .await;
        assert!(
            writes >= 4,
            "an upload writes a lease, packs and a manifest: {writes}"
        );
        println!("an upload of {next} bytes makes {writes} writes; killed before each in turn");
        for k in 0..writes {
            let what = format!("upload killed before write {} of {writes}", k + 1);
            let trial = dir.path().join(format!("upload-{k}"));
            let from = src.clone();
            let remote =
                killed_before_write(&pristine, &trial, k, &sizes, &what, |dying| async move {
                    let _ = commit(dying, "next", &from, true).await;
                })
                .await;
            // The upload made again from the start succeeds.
            let again = remote.backend(&trial.with_extension("again"));
            if !again
                .list_snapshots()
                .await
                .unwrap()
                .iter()
                .any(|s| s.name == "next")
            {
                commit(again.clone(), "next", &src, true)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: made again: {e}"));
            }
            let names = every_snapshot_reads(&again, &sizes, &what).await;
            assert_eq!(names.len(), 2, "{what}: {names:?}");
            std::fs::remove_dir_all(&trial).unwrap();
        }
    });
}

#[test]
fn a_delete_and_cleanup_killed_at_any_step_never_take_what_a_snapshot_needs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (pristine, _, sizes) = pristine_bucket(dir.path(), &rt, true);
    let delete_then_clean = |backend: Arc<CloudBackend>| async move {
        let _ = Deletes::delete(backend.as_ref(), "next").await;
        let _ = backend
            .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
            .await;
    };
    rt.block_on(async {
        let writes = writes_of(&pristine, dir.path(), delete_then_clean).await;
        assert!(
            writes >= 2,
            "a delete removes a manifest and packs: {writes}"
        );
        println!("a delete and cleanup make {writes} writes; killed before each in turn");
        for k in 0..writes {
            let what = format!("delete killed before write {} of {writes}", k + 1);
            let trial = dir.path().join(format!("delete-{k}"));
            let remote =
                killed_before_write(&pristine, &trial, k, &sizes, &what, delete_then_clean).await;
            let names = every_snapshot_reads(
                &remote.backend(&trial.with_extension("after")),
                &sizes,
                &what,
            )
            .await;
            assert!(names.contains("base"), "{what}: the snapshot kept is gone");
            std::fs::remove_dir_all(&trial).unwrap();
        }
    });
}

#[test]
fn a_repack_killed_at_any_step_never_takes_what_a_snapshot_needs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (pristine, src) = (dir.path().join("pristine"), dir.path().join("src"));
    std::fs::create_dir_all(&pristine).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    // Files of one chunk each fill a first pack; the snapshot kept holds 4 of them, so once
    // the first snapshot is deleted and cleaned up, that pack is three quarters unused.
    for i in 0..20 {
        random_file(&src.join(format!("f{i:02}")), 500_000);
    }
    rt.block_on(async {
        let backend = remote_at(&pristine).backend(&dir.path().join("first"));
        commit(backend.clone(), "base", &src, true).await.unwrap();
        for i in 4..20 {
            std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
        }
        commit(backend.clone(), "next", &src, true).await.unwrap();
        Deletes::delete(backend.as_ref(), "base").await.unwrap();
    });
    let sizes = [("next", tree_bytes(&src))];
    let repack = |backend: Arc<CloudBackend>| async move {
        let _ = backend
            .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
            .await;
    };
    rt.block_on(async {
        let copy = dir.path().join("healthy");
        copy_bucket(&pristine, &copy);
        let done = remote_at(&copy)
            .backend(&dir.path().join("healthy-cache"))
            .collect_leftovers(&idle, Duration::ZERO, false, &Progress::default())
            .await
            .unwrap();
        assert_eq!(done.repacked, 1, "a repack is due: {done:?}");
        let writes = writes_of(&pristine, dir.path(), repack).await;
        assert!(
            writes >= 4,
            "a repack writes a lease, a pack, a record and removes the lease: {writes}"
        );
        println!("a repack makes {writes} writes; killed before each in turn");
        for k in 0..writes {
            let what = format!("repack killed before write {} of {writes}", k + 1);
            let trial = dir.path().join(format!("repack-{k}"));
            let remote = killed_before_write(&pristine, &trial, k, &sizes, &what, repack).await;
            let names = every_snapshot_reads(
                &remote.backend(&trial.with_extension("after")),
                &sizes,
                &what,
            )
            .await;
            assert_eq!(names.len(), 1, "{what}: {names:?}");
            std::fs::remove_dir_all(&trial).unwrap();
        }
    });
}

#[test]
fn an_abandoned_upload_leaves_neither_packs_nor_half_written_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let packs = bucket.join("snapfs/packs/dead-upload");
    std::fs::create_dir_all(&packs).unwrap();
    std::fs::write(packs.join("00000000.pack"), b"stored").unwrap();
    // A write killed half-way, as the local store names it until it renames it into place.
    std::fs::write(packs.join("00000001.pack#12"), b"half").unwrap();
    let backend = remote_at(&bucket).backend(&dir.path().join("cache"));
    runtime()
        .block_on(TakesLocalData::abandon(backend.as_ref(), "dead-upload"))
        .unwrap();
    assert!(
        !packs.exists(),
        "left: {:?}",
        std::fs::read_dir(&packs).map(|d| d.count())
    );
}
