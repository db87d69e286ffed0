//! Reading snapshot content lazily, and contexts whose credentials come from an exec plugin.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use snapfs_tests::{Mount, fuse_available, sh};

use super::cluster::{Cluster, errno, names, ns_dir, wait_for};

const MIB: u64 = 1 << 20;

#[test]
fn one_file_of_a_big_snapshot_moves_about_its_own_bytes_through_exec() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // 2 GiB in the volume: one big file and the small one that will be read.
    let volume = cluster.sim().volume_dir("shop", "data").expect("volume");
    sh(&format!(
        "head -c {} /dev/zero > '{v}/big.bin' && head -c {} /dev/urandom > '{v}/one.bin'",
        2048 * MIB - MIB,
        MIB,
        v = volume.display()
    ));
    let one = std::fs::read(volume.join("one.bin")).expect("seeded");
    cluster.create_snapshot("shop", json!({"name": "big"}), "data");
    wait_for("snapshot ready", || {
        cluster.ready("shop", "big").then_some(())
    });

    let m = cluster.mount();
    let snap = ns_dir(&m).join("snapshots/big");
    // The reader starts and the top directory is listed; then only the file's bytes move.
    assert!(names(&snap).contains(&"one.bin".to_string()));
    let c = cluster.sim().counters();
    let (out_before, sessions_before) = (c.exec_bytes_out(), c.exec_sessions());
    let got = std::fs::read(snap.join("one.bin")).expect("read through the mount");
    assert_eq!(got, one);
    let moved = c.exec_bytes_out() - out_before;
    assert!(
        (MIB..MIB + MIB / 4).contains(&moved),
        "reading 1 MiB moved {moved} bytes through exec"
    );

    // The snapshot never changes, so its directories are not listed through exec again.
    let sessions = c.exec_sessions();
    assert!(sessions > sessions_before);
    for _ in 0..3 {
        assert!(names(&snap).contains(&"big.bin".to_string()));
        let size = std::fs::metadata(snap.join("big.bin")).expect("stat").len();
        assert_eq!(size, 2048 * MIB - MIB);
    }
    assert_eq!(
        c.exec_sessions(),
        sessions,
        "a listing of an immutable snapshot was repeated"
    );
}

#[test]
fn a_context_whose_token_comes_from_an_exec_plugin_works_as_that_user() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    cluster.sim().add_user("from-the-plugin", "plugin-user");
    cluster
        .sim()
        .deny("plugin-user", "create", "pods/exec", "shop");
    // The plugin prints an ExecCredential, as cloud CLIs (aws eks get-token, gke-gcloud-auth-
    // plugin) do; the kubeconfig names it instead of a token.
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("get-token");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\
         \"kind\":\"ExecCredential\",\"status\":{\"token\":\"from-the-plugin\"}}'\n",
    )
    .expect("plugin written");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let kubeconfig = cluster.sim().kubeconfig();
    let user_start = kubeconfig
        .find("  user:\n    token:")
        .expect("a token user");
    let kubeconfig = format!(
        "{}  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\npreferences: {{}}\n",
        &kubeconfig[..user_start],
        plugin.display()
    );
    let m = Mount::start_with_home(
        "[list]\nttl = \"100ms\"\n",
        &[(".kube/config", kubeconfig.as_str())],
    );

    // Namespaces and snapshots are listed with the plugin's token...
    assert_eq!(
        names(&m.mountpoint.join("k8s/kubesim")),
        ["default", "shop"]
    );
    assert!(names(&ns_dir(&m).join("snapshots")).contains(&"db-1".to_string()));
    // ...and what that user may not do is refused as that user.
    let pod = cluster.ready_pod().expect("a ready pod");
    let app = ns_dir(&m).join(format!("pods/{pod}/app/app"));
    assert_eq!(errno(std::fs::read_dir(&app)), libc::EACCES);
    let log = m.log();
    assert!(log.contains("plugin-user"), "{log}");
}

/// The claim a reader pod reads a snapshot from is of the configured storage class, as the
/// claims of uploads and restores are, not the cluster's default.
#[test]
fn a_reader_claim_is_of_the_configured_storage_class() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let classes: kube::Api<k8s_openapi::api::storage::v1::StorageClass> =
        kube::Api::all(cluster.client.clone());
    let class = serde_json::from_value(json!({
        "metadata": {"name": "fast"},
        "provisioner": kubesim::DRIVER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate"
    }))
    .expect("a storage class");
    cluster
        .rt
        .block_on(classes.create(&kube::api::PostParams::default(), &class))
        .expect("class created");
    let m = cluster.mount_with("[k8s]\nstorage_class = \"fast\"\n");
    let got = std::fs::read(ns_dir(&m).join("snapshots/db-1/database.db")).expect("read");
    assert_eq!(got, super::cluster::DB);
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(cluster.client.clone(), "shop");
    let lp = kube::api::ListParams::default().labels("snapfs.io/role=reader");
    let readers = cluster
        .rt
        .block_on(claims.list(&lp))
        .expect("claims listed");
    let classes: Vec<_> = readers
        .items
        .iter()
        .map(|c| c.spec.as_ref().and_then(|s| s.storage_class_name.clone()))
        .collect();
    assert_eq!(classes, [Some("fast".to_string())]);
}
