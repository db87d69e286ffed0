//! What happens to snapshots and to snapfs's pods and claims after an upload (DESIGN §6, §8):
//! expiry recorded and collected, leftovers collected, readers removed on a clean stop, and
//! restores to a new claim and to a local folder.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use snapfs_tests::{fuse_available, sh};

use super::cluster::{
    Cluster, DB, assert_same_tree, assert_uploaded, cp_a, names, ns_dir, sample_tree, wait_for,
};

/// A pod and a claim named `name` with `labels`, as a crashed daemon leaves them.
fn leave_pod_and_claim(cluster: &Cluster, name: &str, labels: Value) {
    let pp = PostParams::default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), "shop");
    let claim = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("claim");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "shop");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": name}}]}
    }))
    .expect("pod");
    cluster.rt.block_on(async {
        claims.create(&pp, &claim).await.expect("claim created");
        pods.create(&pp, &pod).await.expect("pod created");
    });
}

#[test]
fn gc_deletes_expired_snapshots_of_snapfs_and_leftover_pods_and_claims() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // No scheduled cleanup: what goes, goes because `snapfs gc` said so.
    let m = cluster.mount_with(
        "[lifecycle]\ninterval = \"0s\"\n\
         [[kubernetes]]\ncontext = \"kubesim\"\nname = \"kubesim\"\nttl = \"1h\"\n",
    );
    let ns = ns_dir(&m);

    // The context's ttl is recorded on what it uploads.
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    let upload = ns.join("uploads/fresh");
    cp_a(src.path(), &upload);
    assert_uploaded(&m, &upload);
    let fresh = cluster.snapshot("shop", "fresh").expect("fresh");
    let expires =
        fresh.metadata.annotations.as_ref().expect("annotations")["snapfs.io/expires"].clone();
    let at: DateTime<Utc> = expires.parse().expect("RFC 3339");
    let left = at - Utc::now();
    assert!(
        left > chrono::Duration::minutes(58) && left <= chrono::Duration::minutes(60),
        "{expires}"
    );
    let attrs = sh(&format!(
        "getfattr -d --absolute-names '{}'",
        ns.join("snapshots/fresh").display()
    ));
    assert!(
        attrs.contains(&format!("user.snapfs.expires=\"{expires}\"")),
        "{attrs}"
    );

    // Expired: one snapfs made, one another tool made (not snapfs's to delete).
    let expired = "2020-01-01T00:00:00Z";
    cluster.create_snapshot(
        "shop",
        json!({"name": "old",
               "labels": {"app.kubernetes.io/managed-by": "snapfs", "snapfs.io/role": "snapshot"},
               "annotations": {"snapfs.io/snapshot": "old", "snapfs.io/expires": expired}}),
        "data",
    );
    cluster.create_snapshot(
        "shop",
        json!({"name": "foreign", "annotations": {"snapfs.io/expires": expired}}),
        "data",
    );
    for name in ["old", "foreign"] {
        wait_for("snapshot ready", || {
            cluster.ready("shop", name).then_some(())
        });
    }
    // What crashed runs leave: an upload's pod and claim, a reader's pod and claim.
    leave_pod_and_claim(
        &cluster,
        "snapfs-up-gone-20200101",
        json!({"app.kubernetes.io/managed-by": "snapfs", "snapfs.io/role": "upload",
               "snapfs.io/job": "20200101T000000Z-dead", "snapfs.io/upload": "0badf00d"}),
    );
    leave_pod_and_claim(
        &cluster,
        "snapfs-read-db-1-gone",
        json!({"app.kubernetes.io/managed-by": "snapfs", "snapfs.io/role": "reader"}),
    );
    // A snapshot a crashed upload requested that no job will come back for (the upload was
    // removed while the daemon was down): never ready, holding the upload's claim.
    cluster.sim().faults().set_snapshot_never_ready(true);
    cluster.create_snapshot(
        "shop",
        json!({"name": "abandoned",
               "labels": {"app.kubernetes.io/managed-by": "snapfs", "snapfs.io/role": "snapshot",
                          "snapfs.io/job": "20200101T000000Z-dead"},
               "annotations": {"snapfs.io/snapshot": "abandoned"}}),
        "snapfs-up-gone-20200101",
    );
    let theirs = "app.kubernetes.io/managed-by=snapfs";

    // A dry run names what would go and deletes nothing.
    let dry = m.snapfs(&["gc", "--json"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let report: Value = serde_json::from_slice(&dry.stdout).expect("gc JSON");
    assert_eq!(deleted_names(&report), ["old"], "{report}");
    assert_eq!(report["leftovers"], 5, "{report}");
    assert!(cluster.snapshot("shop", "old").is_some());
    let (p, c) = cluster.pods_and_claims("shop", theirs);
    assert_eq!((p.len(), c.len()), (2, 2));

    let gc = m.snapfs(&["gc", "--yes", "--json"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let report: Value = serde_json::from_slice(&gc.stdout).expect("gc JSON");
    assert_eq!(deleted_names(&report), ["old"], "{report}");
    assert_eq!(report["leftovers"], 5, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    wait_for("the expired snapshot gone", || {
        cluster.snapshot("shop", "old").is_none().then_some(())
    });
    wait_for("leftovers gone", || {
        let (p, c) = cluster.pods_and_claims("shop", theirs);
        (p.is_empty() && c.is_empty()).then_some(())
    });
    assert_eq!(cluster.snapshot_names("shop"), ["db-1", "foreign", "fresh"]);
    assert_eq!(
        names(&ns.join("snapshots")),
        ["db-1", "foreign", "fresh", "latest"]
    );
}

fn deleted_names(report: &Value) -> Vec<String> {
    report["deleted"]
        .as_array()
        .expect("deleted")
        .iter()
        .map(|d| d["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn readers_go_on_a_clean_unmount_and_leftover_readers_with_gc() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let mut m = cluster.mount();
    let db = ns_dir(&m).join("snapshots/db-1/database.db");
    assert_eq!(std::fs::read(&db).expect("snapshot read"), DB);
    assert_eq!(cluster.readers(), (1, 1));
    let out = m.snapfs(&["unmount", &m.mountpoint.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("readers removed on unmount", || {
        (cluster.readers() == (0, 0)).then_some(())
    });

    // Killed, a daemon removes nothing; the next one's gc does.
    m.stop();
    m.relaunch();
    assert_eq!(std::fs::read(&db).expect("snapshot read"), DB);
    assert_eq!(cluster.readers(), (1, 1));
    m.kill9();
    assert_eq!(cluster.readers(), (1, 1));
    m.relaunch();
    let gc = m.snapfs(&["gc", "--yes"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    wait_for("leftover readers removed", || {
        (cluster.readers() == (0, 0)).then_some(())
    });
}

#[test]
fn a_snapshot_restores_to_a_new_claim_and_to_a_local_folder() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let snap = ns_dir(&m).join("snapshots/db-1");
    let snap_arg = snap.to_string_lossy().into_owned();

    // To a claim, as big as asked.
    let out = m.snapfs(&["restore", &snap_arg, "--pvc", "restored", "--size", "2Gi"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("restored") && text.contains("db-1"), "{text}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), "shop");
    let claim = cluster.rt.block_on(claims.get("restored")).expect("claim");
    let spec = claim.spec.expect("spec");
    let source = spec.data_source.expect("a data source");
    assert_eq!(
        (source.kind.as_str(), source.name.as_str()),
        ("VolumeSnapshot", "db-1")
    );
    let asked = &spec
        .resources
        .expect("resources")
        .requests
        .expect("requests")["storage"];
    assert_eq!(snapfsd_quantity(&asked.0), 2 << 30);
    let volume = wait_for("the restored claim bound", || {
        cluster.sim().volume_dir("shop", "restored")
    });
    assert_eq!(
        std::fs::read(volume.join("database.db")).expect("restored"),
        DB
    );
    // A claim name Kubernetes cannot hold is refused.
    let bad = m.snapfs(&["restore", &snap_arg, "--pvc", "Bad_Claim"]);
    assert!(!bad.status.success());

    // To a local folder: the same tree as the snapshot's.
    let dest = m.root.path().join("restored-db");
    let out = m.snapfs(&["restore", &snap_arg, &dest.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = cluster
        .sim()
        .snapshot_dir("shop", "db-1")
        .expect("snapshot data");
    assert_same_tree(&data, &dest);
    assert_eq!(names(&dest), ["database.db", "logs"]);
}

/// Bytes of a quantity such as `2Gi` or `2147483648`.
fn snapfsd_quantity(q: &str) -> u64 {
    match q.strip_suffix("Gi") {
        Some(n) => n.parse::<u64>().expect("number") << 30,
        None => q.parse().expect("bytes"),
    }
}
