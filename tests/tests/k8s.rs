//! Kubernetes contexts through a real mount, against kubesim running in this process:
//! namespaces (kept by a watch), ready VolumeSnapshots with their attributes, a live view into
//! running containers, workloads resolved to ready pods, and the errors of DESIGN §10.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use kubesim::{Config, KubeSim, Timings};
use serde_json::json;
use snapfs_tests::{Mount, fuse_available, sh};

const DB: &[u8] = b"SQLite format 3\0 the shop's orders, as seeded into the volume\n";

/// kubesim on its own runtime with namespace `shop`: claim `data` holding `database.db`,
/// Deployment `backend` (container `app`, the claim at /app/data) with a ready pod, and a
/// ready VolumeSnapshot `db-1` of the claim. Dropping it stops the server, then the runtime.
struct Cluster {
    sim: Option<KubeSim>,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn start() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let timings = Timings {
            pod_start: Duration::from_millis(100),
            pod_stop: Duration::from_millis(50),
            pvc_bind: Duration::from_millis(50),
            snapshot_ready: Duration::from_millis(300),
            bookmark_interval: Duration::from_millis(200),
        };
        let (sim, client) = rt.block_on(async {
            let sim = KubeSim::start(Config {
                timings,
                ..Config::default()
            })
            .await
            .expect("kubesim starts");
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).expect("yaml");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("kubeconfig loads");
            (sim, Client::try_from(config).expect("client"))
        });
        let c = Cluster {
            sim: Some(sim),
            client,
            rt,
        };
        c.seed();
        c
    }

    fn sim(&self) -> &KubeSim {
        self.sim.as_ref().expect("running")
    }

    fn create_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        self.rt
            .block_on(api.create(&PostParams::default(), &ns))
            .expect("namespace created");
    }

    fn seed(&self) {
        self.create_namespace("shop");
        let c = self.client.clone();
        self.rt.block_on(async {
            let pp = PostParams::default();
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "shop");
            let claim = serde_json::from_value(json!({
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}
            }))
            .expect("claim");
            claims.create(&pp, &claim).await.expect("claim created");
            let deployments: Api<Deployment> = Api::namespaced(c.clone(), "shop");
            let deployment = serde_json::from_value(json!({
                "metadata": {"name": "backend"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "backend"}},
                    "template": {
                        "metadata": {"labels": {"app": "backend"}},
                        "spec": {
                            "containers": [{"name": "app", "image": "busybox",
                                "volumeMounts": [{"name": "data", "mountPath": "/app/data"}]}],
                            "volumes": [{"name": "data",
                                "persistentVolumeClaim": {"claimName": "data"}}]
                        }
                    }
                }
            }))
            .expect("deployment");
            deployments
                .create(&pp, &deployment)
                .await
                .expect("deployment created");
        });
        let volume = wait_for("claim bound", || self.sim().volume_dir("shop", "data"));
        std::fs::write(volume.join("database.db"), DB).expect("seeded");
        std::fs::create_dir_all(volume.join("logs")).expect("seeded");
        wait_for("a ready pod", || self.ready_pod());
        let snapshots = self.snapshots("shop");
        let snap: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "db-1", "annotations": {"snapfs.io/expires": "2030-01-01T00:00:00Z"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}}
        }))
        .expect("snapshot");
        self.rt
            .block_on(snapshots.create(&PostParams::default(), &snap))
            .expect("snapshot created");
        wait_for("snapshot ready", || {
            let s = self.rt.block_on(snapshots.get("db-1")).ok()?;
            (s.data["status"]["readyToUse"] == json!(true)).then_some(())
        });
    }

    fn snapshots(&self, ns: &str) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: "snapshot.storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "snapshot.storage.k8s.io/v1".into(),
            kind: "VolumeSnapshot".into(),
            plural: "volumesnapshots".into(),
        };
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    /// The name of the Deployment's pod once it is Ready.
    fn ready_pod(&self) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "shop");
        let lp = ListParams::default().labels("app=backend");
        let list = self.rt.block_on(pods.list(&lp)).ok()?;
        list.items.into_iter().find_map(|p| {
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(p.metadata.name?)
        })
    }

    /// A mount whose home holds kubesim's kubeconfig; no [[kubernetes]] section, so every
    /// context (the one `kubesim`) appears.
    fn mount(&self) -> Mount {
        self.mount_with("")
    }

    fn mount_with(&self, extra: &str) -> Mount {
        let kubeconfig = self.sim().kubeconfig();
        Mount::start_with_home(
            &format!("[list]\nttl = \"100ms\"\n{extra}"),
            &[(".kube/config", kubeconfig.as_str())],
        )
    }

    /// Names of the reader pods and claims of namespace `shop`.
    fn readers(&self) -> (usize, usize) {
        let lp = ListParams::default().labels("snapfs.io/role=reader");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "shop");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), "shop");
        let p = self.rt.block_on(pods.list(&lp)).expect("pods listed");
        let c = self.rt.block_on(claims.list(&lp)).expect("claims listed");
        (p.items.len(), c.items.len())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// Polls `f` for up to 20 s.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or(0),
    }
}

fn ns_dir(m: &Mount) -> PathBuf {
    m.mountpoint.join("k8s/kubesim/shop")
}

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
    let started = Instant::now();
    assert_eq!(errno(std::fs::read_dir(&data)), libc::EIO);
    assert!(started.elapsed() < Duration::from_secs(20));
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

/// Pods and claims snapfs made for uploads in `ns` (by label).
fn upload_leftovers(cluster: &Cluster, ns: &str) -> (Vec<String>, Vec<String>) {
    let lp =
        ListParams::default().labels("app.kubernetes.io/managed-by=snapfs,snapfs.io/role=upload");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), ns);
    let p = cluster.rt.block_on(pods.list(&lp)).expect("pods listed");
    let c = cluster
        .rt
        .block_on(claims.list(&lp))
        .expect("claims listed");
    let name = |m: kube::core::ObjectMeta| m.name.unwrap_or_default();
    (
        p.items.into_iter().map(|p| name(p.metadata)).collect(),
        c.items.into_iter().map(|c| name(c.metadata)).collect(),
    )
}

/// A nested tree with modes, an empty file and folder, a symlink, and spaces and UTF-8.
fn sample_tree(root: &Path) {
    sh(&format!(
        "mkdir -p '{r}/a/b c/ü' '{r}/empty-dir' && printf 'hello' > '{r}/a/hello.txt' \
         && head -c 3000000 /dev/urandom > '{r}/a/b c/blob.bin' && : > '{r}/a/b c/ü/empty' \
         && chmod 640 '{r}/a/hello.txt' && ln -s ../a/hello.txt '{r}/empty-dir/../link'",
        r = root.display()
    ));
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
