//! Kubernetes contexts through a real mount, against kubesim running in this process:
//! namespaces (kept by a watch), ready VolumeSnapshots with their attributes, a live view into
//! running containers, workloads resolved to ready pods, and the errors of DESIGN §10. Uploads
//! (DESIGN §3, §6), their failures, crashes and cleanup are in the modules below.

mod k8s {
    pub mod access;
    pub mod cluster;
    pub mod crash;
    pub mod early;
    pub mod lifecycle;
    pub mod reads;
    pub mod upload_failures;
    pub mod uploads;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s::cluster::{Cluster, DB, errno, names, ns_dir, sample_tree, upload_leftovers, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use snapfs_tests::{Mount, fuse_available, sh};

#[test]
fn namespaces_snapshots_pods_and_workloads_appear_in_the_mount() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let ctx = m.mountpoint.join("k8s/kubesim");
    assert_eq!(names(&m.mountpoint.join("k8s")), ["kubesim"]);
    assert_eq!(names(&ctx), ["default", "shop"]);
    let ns = ns_dir(&m);
    assert_eq!(names(&ns), ["pods", "snapshots", "uploads", "workloads"]);

    // Snapshots: the ready one, `latest` pointing at it, and its attributes.
    assert_eq!(names(&ns.join("snapshots")), ["db-1", "latest"]);
    let latest = std::fs::read_link(ns.join("snapshots/latest")).expect("latest");
    assert_eq!(latest, Path::new("db-1"));
    let attrs = sh(&format!(
        "getfattr -d --absolute-names {}",
        ns.join("snapshots/db-1").display()
    ));
    assert!(attrs.contains("user.snapfs.state=\"ready\""), "{attrs}");
    assert!(attrs.contains("user.snapfs.size=\"1073741824\""), "{attrs}");
    assert!(
        attrs.contains("user.snapfs.expires=\"2030-01-01T00:00:00Z\""),
        "{attrs}"
    );
    assert!(attrs.contains("user.snapfs.id="), "{attrs}");
    assert!(attrs.contains("user.snapfs.created="), "{attrs}");

    // The snapshot's content, through a reader pod, as it was when the snapshot was taken.
    let volume = cluster.sim().volume_dir("shop", "data").expect("volume");
    std::fs::write(volume.join("database.db"), b"changed since").expect("volume written");
    let snap = ns.join("snapshots/db-1");
    assert_eq!(names(&snap), ["database.db", "logs"]);
    assert_eq!(std::fs::read(snap.join("database.db")).expect("read"), DB);
    assert_eq!(
        std::fs::read(ns.join("snapshots/latest/database.db")).expect("read"),
        DB
    );
    assert_eq!(
        errno(std::fs::write(snap.join("database.db"), b"x")),
        libc::EROFS
    );
    let readers: Api<Pod> = Api::namespaced(cluster.client.clone(), "shop");
    let lp =
        ListParams::default().labels("app.kubernetes.io/managed-by=snapfs,snapfs.io/role=reader");
    let found = cluster.rt.block_on(readers.list(&lp)).expect("pods listed");
    assert_eq!(found.items.len(), 1, "one reader pod for the snapshot");
    std::fs::write(volume.join("database.db"), DB).expect("volume restored");
    // A reader deleted behind the mount's back is started again.
    let reader_name = found.items[0].metadata.name.clone().expect("reader name");
    cluster
        .rt
        .block_on(readers.delete(&reader_name, &Default::default()))
        .expect("reader deleted");
    wait_for("the reader gone", || {
        let p = cluster.rt.block_on(readers.get_opt(&reader_name)).ok()?;
        p.is_none().then_some(())
    });
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        std::fs::read(snap.join("database.db")).expect("read again"),
        DB
    );

    // The DESIGN example: a file pulled out of a running pod through its workload.
    let pod = cluster.ready_pod().expect("a ready pod");
    // The reader pod is a pod like any other, as kubectl shows it.
    let mut running = vec![pod.clone(), reader_name];
    running.sort();
    assert_eq!(names(&ns.join("pods")), running);
    assert_eq!(names(&ns.join("workloads")), ["backend"]);
    let link = std::fs::read_link(ns.join("workloads/backend")).expect("workload link");
    assert_eq!(link, PathBuf::from(format!("../pods/{pod}")));
    let out = m.root.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let src = ns.join("workloads/backend/app/app/data/database.db");
    sh(&format!("cp {} {}/", src.display(), out.display()));
    assert_eq!(std::fs::read(out.join("database.db")).expect("copied"), DB);

    // `ls -l` of the pod's container and of the volume inside it.
    let pod_dir = ns.join(format!("pods/{pod}"));
    assert_eq!(names(&pod_dir), ["app"]);
    let listing = sh(&format!("ls -l {}", pod_dir.join("app/app/data").display()));
    assert!(
        listing.contains("database.db") && listing.contains(&DB.len().to_string()),
        "{listing}"
    );
    assert!(listing.contains("logs"), "{listing}");
    assert!(names(&pod_dir.join("app")).contains(&"bin".to_string()));
    let ranged = sh(&format!("tail -c 10 {}", src.display()));
    assert_eq!(ranged.as_bytes(), &DB[DB.len() - 10..]);

    // Read-only everywhere.
    let db = pod_dir.join("app/app/data/database.db");
    assert_eq!(errno(std::fs::write(&db, b"x")), libc::EROFS);
    assert_eq!(
        errno(std::fs::create_dir(ns.join("snapshots/new"))),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::write(pod_dir.join("app/new"), b"x")),
        libc::EROFS
    );
    assert_eq!(errno(std::fs::metadata(ns.join("pods/nope"))), libc::ENOENT);

    // A namespace made later shows up through the watch.
    cluster.create_namespace("later");
    wait_for("the new namespace", || {
        names(&ctx).contains(&"later".to_string()).then_some(())
    });
}

#[test]
fn rbac_denial_is_eacces_with_verb_and_resource() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    cluster
        .sim()
        .deny(kubesim::ADMIN_USER, "create", "pods/exec", "shop");
    let m = cluster.mount();
    let pod = cluster.ready_pod().expect("a ready pod");
    let app = ns_dir(&m).join(format!("pods/{pod}/app"));
    assert_eq!(errno(std::fs::read_dir(app.join("app"))), libc::EACCES);
    let log = m.log();
    assert!(log.contains("pods/exec") && log.contains("create"), "{log}");
    // What does not need exec still works.
    assert_eq!(names(&ns_dir(&m).join("snapshots")), ["db-1", "latest"]);
}

#[test]
fn an_unreachable_cluster_is_eio_and_the_rest_of_the_mount_works() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let ns = ns_dir(&m);
    assert_eq!(names(&ns.join("snapshots")), ["db-1", "latest"]);
    std::thread::scope(|s| {
        let restart = s.spawn(|| {
            cluster
                .rt
                .block_on(cluster.sim().restart_api(Duration::from_secs(4)))
                .expect("restarted")
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(errno(std::fs::read_dir(ns.join("pods"))), libc::EIO);
        // cloud/local does not depend on the cluster.
        assert_eq!(names(&m.target()), ["objects", "snapshots", "uploads"]);
        std::fs::write(m.target().join("uploads/note"), b"still writable").expect("upload");
        restart.join().expect("restart thread");
    });
    wait_for("the cluster back", || {
        std::fs::read_dir(ns.join("pods")).ok()
    });
    assert_eq!(names(&ns.join("snapshots")), ["db-1", "latest"]);
}

#[test]
fn without_a_kubeconfig_there_is_no_k8s_directory() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    assert!(!names(&m.mountpoint).contains(&"k8s".to_string()));
}

#[test]
fn idle_readers_go_missing_snapshot_crds_empty_snapshots_and_cut_execs_fail() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount_with("[k8s]\nreader_idle = \"1s\"\n");
    let ns = ns_dir(&m);
    let pod = cluster.ready_pod().expect("a ready pod");
    let data = ns.join(format!("pods/{pod}/app/app/data"));

    // An idle reader goes, claim and all.
    let db = ns.join("snapshots/db-1/database.db");
    assert_eq!(std::fs::read(&db).expect("snapshot read"), DB);
    assert_eq!(cluster.readers(), (1, 1));
    wait_for("the idle reader gone", || {
        (cluster.readers() == (0, 0)).then_some(())
    });
    assert_eq!(std::fs::read(&db).expect("read after the reader went"), DB);
    assert_eq!(names(&data), ["database.db", "logs"]);

    cluster.sim().faults().set_snapshot_api_missing(true);
    assert!(names(&ns.join("snapshots")).is_empty());
    assert!(
        m.log()
            .contains("snapshot.storage.k8s.io/v1) is not installed")
    );
    cluster.sim().faults().set_snapshot_api_missing(false);
    assert_eq!(names(&ns.join("snapshots")), ["db-1", "latest"]);

    // A connection cut mid-answer is an error, never a hang or a short file.
    cluster.sim().faults().set_exec_drop_after(Some(8));
    assert_eq!(errno(std::fs::read_dir(&data)), libc::EIO);
    cluster.sim().faults().set_exec_drop_after(None);
    assert_eq!(std::fs::read(data.join("database.db")).expect("read"), DB);
}

#[test]
fn configured_namespaces_need_no_right_to_list_namespaces() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    cluster
        .sim()
        .deny(kubesim::ADMIN_USER, "list", "namespaces", "");
    let kubeconfig = cluster.sim().kubeconfig();
    let m = Mount::start_with_home(
        "[[kubernetes]]\ncontext = \"kubesim\"\nname = \"sim\"\nnamespaces = [\"shop\"]\n",
        &[(".kube/config", kubeconfig.as_str())],
    );
    let ctx = m.mountpoint.join("k8s/sim");
    assert_eq!(names(&m.mountpoint.join("k8s")), ["sim"]);
    assert_eq!(names(&ctx), ["shop"]);
    assert_eq!(names(&ctx.join("shop/snapshots")), ["db-1", "latest"]);
    assert_eq!(names(&ctx.join("shop/workloads")), ["backend"]);
}

#[test]
fn a_folder_copied_into_uploads_becomes_a_volume_snapshot() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let m = cluster.mount();
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    let ns = ns_dir(&m);
    sh(&format!(
        "cp -a '{}' '{}'",
        src.path().display(),
        ns.join("uploads/orders-1").display()
    ));
    let out = m.snapfs(&["wait", &ns.join("uploads/orders-1").to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );

    // The snapshot is there, ready, with what was copied; the upload is gone.
    let snap = wait_for("the snapshot listed", || {
        names(&ns.join("snapshots"))
            .contains(&"orders-1".to_string())
            .then(|| ns.join("snapshots/orders-1"))
    });
    assert!(!names(&ns.join("uploads")).contains(&"orders-1".to_string()));
    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(src.path())
        .arg(&snap)
        .output()
        .expect("diff runs");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let volume = cluster
        .sim()
        .snapshot_dir("shop", "orders-1")
        .expect("snapshot data");
    let mode = std::fs::metadata(volume.join("a/hello.txt"))
        .expect("file")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o640
    );

    // Labelled as snapfs's; nothing of the upload left in the cluster.
    let s = cluster
        .rt
        .block_on(cluster.snapshots("shop").get("orders-1"))
        .expect("snapshot");
    let labels = s.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("snapfs")
    );
    assert!(labels.contains_key("snapfs.io/job"), "{labels:?}");
    let (pods, claims) = wait_for("upload pod and claim removed", || {
        let l = upload_leftovers(&cluster, "shop");
        (l.0.is_empty() && l.1.is_empty()).then_some(l)
    });
    assert!(pods.is_empty() && claims.is_empty());

    // `snapfs list` and `snapfs status` know the namespace as a target.
    let list = m.snapfs(&["list", &ns.to_string_lossy()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("orders-1") && text.contains("db-1"), "{text}");
}

#[test]
fn pods_and_snapshots_read_over_the_v4_exec_protocol() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // Like an API server before 1.30: a client that closes stdin closes the whole session,
    // and the output of a command that reads no input is lost with it.
    cluster.sim().faults().set_exec_v4_only(true);
    let m = cluster.mount();
    let ns = ns_dir(&m);
    let db = ns.join("workloads/backend/app/app/data/database.db");
    assert_eq!(std::fs::read(&db).expect("read from the pod over v4"), DB);
    let listing = sh(&format!("ls -l {}", db.parent().expect("dir").display()));
    assert!(listing.contains("database.db"), "{listing}");
    let snap = ns.join("snapshots/db-1");
    assert_eq!(names(&snap), ["database.db", "logs"]);
    assert_eq!(
        std::fs::read(snap.join("database.db")).expect("read through a reader pod over v4"),
        DB
    );
}
