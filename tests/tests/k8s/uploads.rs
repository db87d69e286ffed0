//! Uploads that succeed (DESIGN §3, §6): one file, a tree over the v4 exec protocol, a tree
//! into a namespace that enforces the `restricted` Pod Security level, and 1 GiB with its
//! progress watched while it flows.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use snapfs_tests::{fuse_available, sh};

use super::cluster::{
    Cluster, assert_uploaded, cp_a, names, ns_dir, upload_sample, upload_status, wait_for,
};

#[test]
fn a_single_file_becomes_a_snapshot_holding_that_file() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("orders.db");
    sh(&format!(
        "head -c 200000 /dev/urandom > '{f}' && chmod 600 '{f}'",
        f = file.display()
    ));
    let upload = ns.join("uploads/orders-db");
    cp_a(&file, &upload);
    assert_uploaded(&m, &upload);

    // The snapshot holds the one file, under the upload's name, with its mode.
    let data = cluster
        .sim()
        .snapshot_dir("shop", "orders-db")
        .expect("snapshot data");
    assert_eq!(names(&data), ["orders-db"]);
    let arrived = std::fs::metadata(data.join("orders-db")).expect("file");
    assert_eq!(arrived.mode() & 0o777, 0o600);
    let snap = wait_for("the snapshot listed", || {
        let dir = ns.join("snapshots/orders-db");
        dir.exists().then_some(dir)
    });
    assert_eq!(names(&snap), ["orders-db"]);
    assert_eq!(
        std::fs::read(snap.join("orders-db")).expect("read through the mount"),
        std::fs::read(&file).expect("source")
    );
    assert!(!names(&ns.join("uploads")).contains(&"orders-db".to_string()));
    cluster.wait_no_upload_objects("shop");

    // What the client asked and moved in the namespace shows as its target's metrics: the
    // tar stream sent in, the file read back out, and each kind of request with its latency.
    let target = ns.strip_prefix(&m.mountpoint).expect("in the mount");
    let target = target.to_str().expect("utf-8");
    let k8s = m
        .status()
        .metrics
        .targets
        .into_iter()
        .find(|t| t.target == target)
        .expect("the namespace's metrics");
    assert!(
        k8s.put_bytes >= 200_000 && k8s.get_bytes >= 200_000,
        "{k8s:?}"
    );
    assert!(
        k8s.get_requests > 0 && k8s.list_requests > 0 && k8s.put_requests > 0,
        "{k8s:?}"
    );
    let ops: Vec<&str> = k8s.latency.iter().map(|l| l.op.as_str()).collect();
    for op in ["create", "get", "exec"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
}

#[test]
fn many_files_with_long_names_go_up_compressed_and_are_checked_each() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    // Hundreds of files whose size lines run long: the pod's lines of them must not be cut
    // into each other. Text, so the stream is compressed on its way.
    let data = upload_sample(&cluster, &m, "shop", "many", |src| {
        sh(&format!(
            "cd '{}' && mkdir many && for i in $(seq 600); do \
               seq -f 'line %g of a text that compresses well' 2000 \
                 > \"many/file $i with a name long enough that a few dozen checksum lines fill a pipe buffer.txt\"; \
             done",
            src.display()
        ));
    });
    assert_eq!(names(&data.join("many")).len(), 600);
    let sent = m
        .status()
        .metrics
        .targets
        .into_iter()
        .find(|t| t.target == "k8s/kubesim/shop")
        .expect("the namespace's metrics")
        .put_bytes;
    let tree = sh(&format!(
        "du -sb --apparent-size '{}' | cut -f1",
        data.display()
    ));
    let tree: u64 = tree.trim().parse().expect("a size");
    assert!(sent < tree / 4, "{sent} bytes sent for a tree of {tree}");
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn an_image_with_zstd_gets_the_stream_in_zstd_and_busybox_in_lzop() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let log = |src: &Path| {
        sh(&format!(
            "seq -f 'line %g of a log that compresses' 200000 > '{}/app.log'",
            src.display()
        ));
    };
    let m = cluster.mount_with("[k8s]\nimage = \"busybox-zstd\"\n");
    let data = upload_sample(&cluster, &m, "shop", "zstd-tree", log);
    assert!(data.join("app.log").is_file());
    let said = m.log();
    assert!(said.contains("codec=Zstd"), "{said}");
    cluster.wait_no_upload_objects("shop");
    drop(m);

    let m = cluster.mount();
    upload_sample(&cluster, &m, "shop", "lzop-tree", log);
    let said = m.log();
    assert!(said.contains("codec=Lzop"), "{said}");
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_tree_goes_up_over_the_v4_exec_protocol_with_its_owners() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // Like an API server before 1.30: no way to close stdin without closing the session.
    cluster.sim().faults().set_exec_v4_only(true);
    let m = cluster.mount();
    let data = upload_sample(&cluster, &m, "shop", "v4-tree", |src| {
        sh(&format!("chown 1234:2345 '{}/a/hello.txt'", src.display()));
    });
    // A root upload pod keeps owners, as `kubectl cp` does.
    let hello = std::fs::metadata(data.join("a/hello.txt")).expect("file");
    assert_eq!((hello.uid(), hello.gid()), (1234, 2345));
    assert_eq!(hello.mode() & 0o777, 0o640);
    cluster.wait_no_upload_objects("shop");
}

#[test]
fn a_restricted_namespace_gets_a_non_root_upload_pod() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    cluster.create_namespace_labelled(
        "locked",
        serde_json::json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    );
    let m = cluster.mount();
    let data = upload_sample(&cluster, &m, "locked", "hardened", |_| {});
    // Modes arrive; owners are the pod's user, as restricted pods cannot run as root.
    let hello = std::fs::metadata(data.join("a/hello.txt")).expect("file");
    assert_eq!(hello.mode() & 0o777, 0o640);
    assert_ne!(hello.uid(), 0);
    assert!(m.log().contains("owners are not kept"), "{}", m.log());
    // ...and the job's status says so too.
    let jobs = m.status().jobs;
    let job = jobs
        .iter()
        .find(|j| j.snapshot == "hardened")
        .expect("the job");
    let note = job.note.as_deref().unwrap_or_default();
    assert!(note.contains("owners are not kept"), "{job:?}");
    cluster.wait_no_upload_objects("locked");
    // The snapshot reads back through a reader pod fitted to the namespace's level too.
    let ns = m.mountpoint.join("k8s/kubesim/locked");
    let snap = wait_for("the snapshot listed", || {
        let dir = ns.join("snapshots/hardened");
        dir.exists().then_some(dir)
    });
    assert_eq!(
        std::fs::read(snap.join("a/hello.txt")).expect("read through a reader pod"),
        std::fs::read(data.join("a/hello.txt")).expect("arrived")
    );
}

/// One observation of an upload's progress.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub done: u64,
    pub total: u64,
}

#[test]
fn a_gigabyte_upload_shows_exact_progress_while_it_flows() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    sh(&format!(
        "cd '{}' && head -c 64M /dev/urandom > f00 \
         && for i in 01 02 03 04 05 06 07 08 09 10 11 12 13 14 15; do cp f00 f$i; done",
        src.path().display()
    ));
    let upload = ns.join("uploads/big");
    cp_a(src.path(), &upload);

    // Watch uploads/big.status until the job ends, and `snapfs status --json` once mid-way.
    let mut seen: Vec<Seen> = Vec::new();
    let mut from_cli: Option<Seen> = None;
    // A guard against a hang, not a clock on the upload: it fails only when nothing moved
    // for two minutes, however slow a loaded machine makes the whole.
    let mut moved = (Instant::now(), Value::Null);
    while let Some(status) = upload_status(&upload) {
        if status != moved.1 {
            moved = (Instant::now(), status.clone());
        }
        assert!(
            moved.0.elapsed() < Duration::from_secs(120),
            "upload stalled: {status}"
        );
        if status["state"] == "uploading" {
            let s = Seen {
                done: status["bytes_done"].as_u64().expect("bytes_done"),
                total: status["bytes_total"].as_u64().expect("bytes_total"),
            };
            if from_cli.is_none() && s.done > 0 && s.done < s.total {
                from_cli = cli_progress(&m, "big").filter(|c| c.done < c.total);
            }
            seen.push(s);
        }
        if status["state"] == "failed" {
            panic!("upload failed: {status}\n{}", m.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_uploaded(&m, &upload);
    let end = cli_progress(&m, "big").expect("the finished job in snapfs status");
    assert_eq!(end.done, end.total, "{end:?}");
    assert!(end.total > 1 << 30, "the tar stream holds 1 GiB: {end:?}");

    // Mid-way at least once, and the total known from the first byte on.
    let mid: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.done > 0 && s.done < s.total)
        .collect();
    assert!(!mid.is_empty(), "never seen mid-way: {seen:?}");
    for s in seen.iter().filter(|s| s.done > 0) {
        assert_eq!(s.total, end.total, "{seen:?}");
    }
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress went back: {seen:?}"
    );
    let cli = from_cli.expect("snapfs status --json seen mid-way");
    assert!(cli.done > 0 && cli.total == end.total, "{cli:?}");

    let data = cluster
        .sim()
        .snapshot_dir("shop", "big")
        .expect("snapshot data");
    assert_eq!(names(&data), names(src.path()));
    sh(&format!(
        "cmp '{}/f15' '{}/f15'",
        src.path().display(),
        data.display()
    ));
    cluster.wait_no_upload_objects("shop");
}

/// The progress of job `name` as `snapfs status --json` shows it.
pub fn cli_progress(m: &snapfs_tests::Mount, name: &str) -> Option<Seen> {
    let out = m.snapfs(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let job = all
        .as_array()?
        .iter()
        .flat_map(|mount| {
            mount["status"]["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|j| j["snapshot"] == name)?;
    Some(Seen {
        done: job["bytes_done"].as_u64()?,
        total: job["bytes_total"].as_u64()?,
    })
}
