//! Uploads that start while `cp` still runs (DESIGN §6): each file goes into the upload pod
//! once it is closed, and the run after the copy settles sends only what changed since, the
//! rest as links to what arrived. A file open for writing keeps the upload from settling, so
//! each test holds one open while it changes the tree, and nothing depends on timing.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use snapfs_tests::{Mount, fuse_available, sh};

use super::cluster::{
    Cluster, assert_snapshot_of, ns_dir, sample_tree, upload_leftovers, wait_for,
};
use super::uploads::cli_progress;

/// The files that arrived early in the claim of the upload running in `shop`.
fn arrived_early(cluster: &Cluster) -> Vec<PathBuf> {
    let (_, claims) = upload_leftovers(cluster, "shop");
    let mut out = Vec::new();
    for claim in claims {
        let Some(volume) = cluster.sim().volume_dir("shop", &claim) else {
            continue;
        };
        let Ok(dirs) = std::fs::read_dir(&volume) else {
            continue;
        };
        for dir in dirs.flatten() {
            if dir
                .file_name()
                .to_string_lossy()
                .starts_with(".snapfs-early-")
                && let Ok(files) = std::fs::read_dir(dir.path())
            {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    out
}

fn files_in(root: &Path) -> usize {
    sh(&format!("find '{}' -type f | wc -l", root.display()))
        .trim()
        .parse()
        .expect("a count")
}

/// Copies a sample tree into `uploads/NAME` with a file `holder` held open in it, and waits
/// until every file copied arrived in the pod. Answers the source, the upload's path and the
/// open holder.
fn copy_holding(cluster: &Cluster, m: &Mount, name: &str) -> (tempfile::TempDir, PathBuf, File) {
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    sh(&format!(
        "printf 'one' > '{0}/a/rewritten' && printf 'two' > '{0}/a/removed' \
         && printf 'three' > '{0}/a/renamed' && printf 'four' > '{0}/a/chmodded'",
        src.path().display()
    ));
    let upload = ns_dir(m).join("uploads").join(name);
    std::fs::create_dir(&upload).expect("upload made");
    let holder = File::create(upload.join("holder")).expect("holder open");
    sh(&format!(
        "cp -a '{}/.' '{}/'",
        src.path().display(),
        upload.display()
    ));
    let copied = files_in(src.path());
    wait_for("the copied files in the pod", || {
        (arrived_early(cluster).len() >= copied).then_some(())
    });
    (src, upload, holder)
}

#[test]
fn files_go_up_as_they_close_and_the_run_sends_only_what_changed_after() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let (src, upload, holder) = copy_holding(&cluster, &m, "early");
    // Changed after they arrived, alike on both sides: new content of the same size, gone,
    // moved, another mode.
    for dir in [src.path(), upload.as_path()] {
        sh(&format!(
            "printf 'ONE' > '{0}/a/rewritten' && rm '{0}/a/removed' \
             && mv '{0}/a/renamed' '{0}/a/b c/renamed' && chmod 600 '{0}/a/chmodded'",
            dir.display()
        ));
    }
    std::fs::write(src.path().join("holder"), "held").expect("holder in the source");
    std::io::Write::write_all(&mut &holder, b"held").expect("holder written");
    drop(holder);
    let data = assert_snapshot_of(&cluster, &m, &upload, src.path());
    let mode = std::fs::metadata(data.join("a/chmodded"))
        .expect("chmodded")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Every file went early but the chmodded one, whose mode changed after: the rewritten
    // one went again as it closed, and the holder went as it closed, before the tree.
    let log = m.log();
    let used = log
        .lines()
        .find(|l| l.contains("files sent during the copy are used"))
        .unwrap_or_else(|| panic!("no early upload in the log:\n{log}"));
    let linked = files_in(src.path()) - 1;
    assert!(used.contains(&format!("files={linked} ")), "{used}");
    // Its progress ended whole: what was still on its way from the copy, then the tree.
    let end = cli_progress(&m, "early").expect("the finished job in snapfs status");
    assert!(end.total > 0 && end.done == end.total, "{end:?}");
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_tree_larger_than_the_early_claim_goes_up_whole_on_a_claim_of_its_size() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount_with("[k8s]\nmin_size = \"4Mi\"\n");
    let (src, upload, holder) = copy_holding(&cluster, &m, "grown");
    for dir in [src.path(), upload.as_path()] {
        sh(&format!(
            "head -c 8M /dev/zero > '{}/big.bin'",
            dir.display()
        ));
    }
    drop(holder);
    std::fs::write(src.path().join("holder"), "").expect("holder in the source");
    assert_snapshot_of(&cluster, &m, &upload, src.path());
    let log = m.log();
    assert!(log.contains("outgrow the early claim"), "{log}");
    assert!(log.contains("is started again"), "{log}");
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_removed_upload_takes_its_early_pod_and_claim_with_it() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let (_src, upload, holder) = copy_holding(&cluster, &m, "dropped");
    drop(holder);
    std::fs::remove_dir_all(&upload).expect("upload removed");
    cluster.wait_no_upload_objects("shop");
    assert!(
        cluster
            .snapshot_names("shop")
            .iter()
            .all(|n| n != "dropped")
    );
}

#[test]
fn a_daemon_killed_during_the_copy_makes_the_snapshot_from_the_staged_files_and_leaves_nothing() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let mut m = cluster.mount();
    let (src, upload, holder) = copy_holding(&cluster, &m, "killed");
    m.kill9();
    drop(holder);
    m.relaunch();
    // A file was open when the daemon went, so the upload waits for it to be written again.
    std::fs::write(upload.join("holder"), "again").expect("holder written again");
    std::fs::write(src.path().join("holder"), "again").expect("holder in the source");
    assert_snapshot_of(&cluster, &m, &upload, src.path());
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_stream_cut_during_the_copy_is_started_again_by_the_run() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let (src, upload, holder) = copy_holding(&cluster, &m, "cut");
    // Every connection cut, the early stream's with them (the API server restarts).
    cluster
        .rt
        .block_on(cluster.sim().restart_api(Duration::from_millis(200)))
        .expect("restarted");
    drop(holder);
    std::fs::write(src.path().join("holder"), "").expect("holder in the source");
    assert_snapshot_of(&cluster, &m, &upload, src.path());
    let log = m.log();
    assert!(log.contains("is started again"), "{log}");
    cluster.wait_no_upload_objects("shop");
}
