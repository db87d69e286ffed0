//! Uploads that cannot succeed (DESIGN §3, §6, §10): refused before anything is staged or made
//! when the cluster cannot take them, or failing later (a snapshot that never gets ready or
//! reports an error, an exec session cut short on either side) with a status that says why and nothing left
//! behind in the cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject};
use snapfs_tests::{Mount, fuse_available, sh};

use super::cluster::{
    Cluster, assert_snapshot_of, cp_a, errno, names, ns_dir, sample_tree, snapfs_wait,
    upload_status, wait_for,
};

/// What the cluster holds that an upload could have made: claims, pods, VolumeSnapshots.
fn made(cluster: &Cluster) -> [u64; 3] {
    let c = cluster.sim().counters();
    [
        c.created("persistentvolumeclaims"),
        c.created("pods"),
        c.created("volumesnapshots"),
    ]
}

/// Asserts that the upload at `upload` failed, and returns what its status says.
fn assert_failed(m: &Mount, upload: &Path) -> String {
    let out = snapfs_wait(m, upload);
    assert_eq!(out.status.code(), Some(1), "{}", m.log());
    let status = upload_status(upload).expect("the failed upload keeps its status");
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().expect("an error").to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&error), "{stderr} does not tell {error}");
    error
}

/// Asserts that upload `name` of `shop` left nothing in the cluster and nothing in
/// `snapshots/`, while its files stay in `uploads/`.
fn assert_nothing_left(cluster: &Cluster, m: &Mount, name: &str) {
    cluster.wait_no_upload_objects("shop");
    wait_for("the snapshot of the failed upload removed", || {
        cluster.snapshot("shop", name).is_none().then_some(())
    });
    let ns = ns_dir(m);
    assert!(!names(&ns.join("snapshots")).contains(&name.to_string()));
    assert!(names(&ns.join("uploads")).contains(&name.to_string()));
}

#[test]
fn uploads_are_refused_before_anything_is_staged_or_made() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let uploads = ns_dir(&m).join("uploads");
    let before = made(&cluster);

    // No snapshot CRDs: ENOTSUP for a folder and for a single file.
    cluster.sim().faults().set_snapshot_api_missing(true);
    assert_eq!(errno(std::fs::create_dir(uploads.join("a"))), libc::ENOTSUP);
    assert_eq!(
        errno(std::fs::write(uploads.join("b"), b"x")),
        libc::ENOTSUP
    );
    assert!(
        m.log()
            .contains("(snapshot.storage.k8s.io/v1) is not installed")
    );
    cluster.sim().faults().set_snapshot_api_missing(false);

    // No right to create claims: EACCES, and the log names the verb and the resource.
    cluster.sim().deny(
        kubesim::ADMIN_USER,
        "create",
        "persistentvolumeclaims",
        "shop",
    );
    assert_eq!(errno(std::fs::create_dir(uploads.join("c"))), libc::EACCES);
    let log = m.log();
    assert!(
        log.contains("create persistentvolumeclaim") && log.contains("forbidden"),
        "{log}"
    );
    cluster.sim().allow_all();

    // Names a VolumeSnapshot cannot have, and a name that is taken.
    assert_eq!(
        errno(std::fs::create_dir(uploads.join("Bad_Name"))),
        libc::EINVAL
    );
    assert_eq!(
        errno(std::fs::create_dir(uploads.join("a..b"))),
        libc::EINVAL
    );
    assert_eq!(
        errno(std::fs::create_dir(uploads.join("db-1"))),
        libc::EEXIST
    );

    // No VolumeSnapshotClass for the storage class's driver.
    let classes: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource {
            group: "snapshot.storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "snapshot.storage.k8s.io/v1".into(),
            kind: "VolumeSnapshotClass".into(),
            plural: "volumesnapshotclasses".into(),
        },
    );
    cluster
        .rt
        .block_on(classes.delete(kubesim::SNAPSHOT_CLASS, &DeleteParams::default()))
        .expect("class deleted");
    assert_eq!(errno(std::fs::create_dir(uploads.join("d"))), libc::ENOTSUP);
    assert!(
        m.log()
            .contains("no VolumeSnapshotClass for driver hostpath.csi.k8s.io"),
        "{}",
        m.log()
    );

    // Nothing staged, nothing made.
    assert!(names(&uploads).is_empty(), "{:?}", names(&uploads));
    let staged = m.root.path().join("cache/snapfs/staging/k8s/kubesim/shop");
    assert!(
        !staged.exists() || names(&staged).is_empty(),
        "{:?}",
        names(&staged)
    );
    assert_eq!(made(&cluster), before);
    assert_eq!(cluster.snapshot_names("shop"), ["db-1"]);

    // Over the context's max_snapshots: EDQUOT.
    let kubeconfig = cluster.sim().kubeconfig();
    let limited = Mount::start_with_home(
        "[[kubernetes]]\ncontext = \"kubesim\"\nname = \"limited\"\nmax_snapshots = 1\n",
        &[(".kube/config", kubeconfig.as_str())],
    );
    let uploads = limited.mountpoint.join("k8s/limited/shop/uploads");
    assert_eq!(errno(std::fs::create_dir(uploads.join("e"))), libc::EDQUOT);
    assert_eq!(made(&cluster), before);
}

#[test]
fn a_snapshot_never_ready_or_in_error_fails_the_upload_and_is_removed() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount_with("[k8s]\nready_timeout = \"2s\"\n");
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());

    // Never ready: the timeout ends it.
    cluster.sim().faults().set_snapshot_never_ready(true);
    let stuck = ns.join("uploads/stuck");
    cp_a(src.path(), &stuck);
    let error = assert_failed(&m, &stuck);
    assert!(
        error.contains("VolumeSnapshot stuck was not ready after 2s"),
        "{error}"
    );
    let attrs = sh(&format!(
        "getfattr -d --absolute-names '{}'",
        stuck.display()
    ));
    assert!(attrs.contains("user.snapfs.state=\"failed\""), "{attrs}");
    assert_nothing_left(&cluster, &m, "stuck");
    cluster.sim().faults().set_snapshot_never_ready(false);

    // An error: shown in the status while it waits, and in the failure.
    let message = "failed to take snapshot of the volume: rpc error: disk on fire";
    cluster.sim().faults().set_snapshot_error(Some(message));
    let broken = ns.join("uploads/broken");
    cp_a(src.path(), &broken);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = upload_status(&broken).expect("a status");
        let error = status["error"].as_str().unwrap_or_default();
        if status["state"] == "uploading" && error == format!("still waiting: {message}") {
            break;
        }
        assert!(
            status["state"] != "failed" && Instant::now() < deadline,
            "the snapshot's error never shown while waiting: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = assert_failed(&m, &broken);
    assert!(error.contains(message), "{error}");
    assert_nothing_left(&cluster, &m, "broken");
}

/// A new write into failed upload `name` of namespace shop (copied from `src`) starts it
/// again, and now it goes through: its snapshot holds `src` with the new file.
fn a_new_write_uploads_it(cluster: &Cluster, m: &Mount, src: &Path, name: &str) {
    let upload = ns_dir(m).join(format!("uploads/{name}"));
    std::fs::write(src.join("retry.txt"), b"once more").expect("source");
    std::fs::write(upload.join("retry.txt"), b"once more").expect("written into the upload");
    assert_snapshot_of(cluster, m, &upload, src);
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_stream_damaged_on_the_way_fails_the_upload_and_a_new_write_retries_it() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    sh(&format!(
        "seq -f 'line %g of a log that compresses' 100000 > '{}/app.log'",
        src.path().display()
    ));

    // One bit of the stream flips on its way into the pod, well inside the first frame: the
    // pod's check of that block refuses it, and nothing half-made stays.
    cluster
        .sim()
        .faults()
        .set_exec_damage_stdin_at(Some(20_000));
    let upload = ns.join("uploads/damaged");
    cp_a(src.path(), &upload);
    let error = assert_failed(&m, &upload);
    assert!(error.contains("lzop: "), "{error}");
    assert_nothing_left(&cluster, &m, "damaged");

    cluster.sim().faults().set_exec_damage_stdin_at(None);
    a_new_write_uploads_it(&cluster, &m, src.path(), "damaged");
}

#[test]
fn an_exec_cut_mid_stream_fails_the_upload_and_a_new_write_retries_it() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // The run's own stream is cut here; a stream cut while the copy runs is started again by
    // the run (tests/tests/k8s/early.rs).
    let m = cluster.mount_with("early = false\n");
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());

    // The session dies once the pod starts answering: the data went in, the check never
    // came back.
    cluster.sim().faults().set_exec_drop_after(Some(8));
    let upload = ns.join("uploads/cut");
    cp_a(src.path(), &upload);
    let error = assert_failed(&m, &upload);
    assert!(
        error.contains("exec in pod snapfs-up-cut-") && error.contains("container upload"),
        "{error}"
    );
    assert_nothing_left(&cluster, &m, "cut");

    cluster.sim().faults().set_exec_drop_after(None);
    a_new_write_uploads_it(&cluster, &m, src.path(), "cut");

    // Every connection cut while the data flows in (the API server restarts).
    sh(&format!(
        "head -c 48M /dev/urandom > '{}/volume.bin'",
        src.path().display()
    ));
    let upload = ns.join("uploads/cut-in");
    let sent_before = cluster.sim().counters().exec_bytes_in();
    cp_a(src.path(), &upload);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.sim().counters().exec_bytes_in() < sent_before + (4 << 20) {
        assert!(Instant::now() < deadline, "the data never started to flow");
        std::thread::sleep(Duration::from_millis(2));
    }
    cluster
        .rt
        .block_on(cluster.sim().restart_api(Duration::from_millis(200)))
        .expect("restarted");
    assert!(cluster.sim().counters().exec_bytes_in() < sent_before + (48 << 20));
    let error = assert_failed(&m, &upload);
    assert!(error.contains("exec in pod snapfs-up-cut-in-"), "{error}");
    assert_nothing_left(&cluster, &m, "cut-in");
}
