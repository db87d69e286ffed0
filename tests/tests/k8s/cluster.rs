//! The cluster the Kubernetes tests run against: kubesim in this process, seeded with a
//! namespace, a claim, a Deployment and a ready VolumeSnapshot, and what the tests ask of it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use kubesim::{Config, KubeSim, Timings};
use serde_json::{Value, json};
use snapfs_tests::{Mount, sh};

pub const DB: &[u8] = b"SQLite format 3\0 the shop's orders, as seeded into the volume\n";

/// Managed by snapfs, made for an upload: what a run of an upload leaves when it stops early.
pub const UPLOAD_OBJECTS: &str = "app.kubernetes.io/managed-by=snapfs,snapfs.io/role=upload";

/// Fast controllers: tests wait for nothing they do not look at.
pub fn fast() -> Timings {
    Timings {
        pod_start: Duration::from_millis(100),
        pod_stop: Duration::from_millis(50),
        pvc_bind: Duration::from_millis(50),
        snapshot_ready: Duration::from_millis(300),
        bookmark_interval: Duration::from_millis(200),
    }
}

/// kubesim on its own runtime with namespace `shop`: claim `data` holding `database.db`,
/// Deployment `backend` (container `app`, the claim at /app/data) with a ready pod, and a
/// ready VolumeSnapshot `db-1` of the claim. Dropping it stops the server, then the runtime.
pub struct Cluster {
    sim: Option<KubeSim>,
    pub client: Client,
    pub rt: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(fast())
    }

    pub fn start_with(timings: Timings) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
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

    pub fn sim(&self) -> &KubeSim {
        self.sim.as_ref().expect("running")
    }

    pub fn create_namespace(&self, name: &str) {
        self.create_namespace_labelled(name, json!({}));
    }

    pub fn create_namespace_labelled(&self, name: &str, labels: Value) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace");
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
        self.create_snapshot(
            "shop",
            json!({"name": "db-1", "annotations": {"snapfs.io/expires": "2030-01-01T00:00:00Z"}}),
            "data",
        );
        wait_for("snapshot ready", || {
            self.ready("shop", "db-1").then_some(())
        });
    }

    /// Creates a VolumeSnapshot of claim `claim` with `metadata`, as any tool would.
    pub fn create_snapshot(&self, ns: &str, metadata: Value, claim: &str) {
        let snap: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": metadata,
            "spec": {"source": {"persistentVolumeClaimName": claim}}
        }))
        .expect("snapshot");
        self.rt
            .block_on(self.snapshots(ns).create(&PostParams::default(), &snap))
            .expect("snapshot created");
    }

    pub fn snapshots(&self, ns: &str) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: "snapshot.storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "snapshot.storage.k8s.io/v1".into(),
            kind: "VolumeSnapshot".into(),
            plural: "volumesnapshots".into(),
        };
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    /// VolumeSnapshot `name` of `ns`, if it exists.
    pub fn snapshot(&self, ns: &str, name: &str) -> Option<DynamicObject> {
        self.rt
            .block_on(self.snapshots(ns).get_opt(name))
            .expect("snapshot read")
    }

    /// Whether VolumeSnapshot `name` exists and is ready to use.
    pub fn ready(&self, ns: &str, name: &str) -> bool {
        self.snapshot(ns, name)
            .is_some_and(|s| s.data["status"]["readyToUse"] == json!(true))
    }

    /// Names of the VolumeSnapshots of `ns`, sorted.
    pub fn snapshot_names(&self, ns: &str) -> Vec<String> {
        let list = self
            .rt
            .block_on(self.snapshots(ns).list(&ListParams::default()))
            .expect("snapshots listed");
        let mut v: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        v.sort();
        v
    }

    /// The name of the Deployment's pod once it is Ready.
    pub fn ready_pod(&self) -> Option<String> {
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
    pub fn mount(&self) -> Mount {
        self.mount_with("")
    }

    pub fn mount_with(&self, extra: &str) -> Mount {
        let kubeconfig = self.sim().kubeconfig();
        Mount::start_with_home(
            &format!(
                "[list]\nttl = \"100ms\"\n[upload]\nsettle = \"{}\"\n{extra}",
                snapfs_tests::TEST_SETTLE
            ),
            &[(".kube/config", kubeconfig.as_str())],
        )
    }

    /// Names of the pods and claims of `ns` that match `selector`.
    pub fn pods_and_claims(&self, ns: &str, selector: &str) -> (Vec<String>, Vec<String>) {
        let lp = ListParams::default().labels(selector);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let p = self.rt.block_on(pods.list(&lp)).expect("pods listed");
        let c = self.rt.block_on(claims.list(&lp)).expect("claims listed");
        let name = |m: kube::core::ObjectMeta| m.name.unwrap_or_default();
        (
            p.items.into_iter().map(|p| name(p.metadata)).collect(),
            c.items.into_iter().map(|c| name(c.metadata)).collect(),
        )
    }

    /// How many reader pods and claims namespace `shop` has.
    pub fn readers(&self) -> (usize, usize) {
        let (p, c) = self.pods_and_claims("shop", "snapfs.io/role=reader");
        (p.len(), c.len())
    }

    /// Waits until no pod or claim of an upload is left in `ns` (deleted ones take a moment
    /// to go), and checks that every pod deleted there ended on SIGTERM.
    pub fn wait_no_upload_objects(&self, ns: &str) {
        wait_for("no upload pod or claim left", || {
            let (p, c) = self.pods_and_claims(ns, UPLOAD_OBJECTS);
            (p.is_empty() && c.is_empty()).then_some(())
        });
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let killed: Vec<String> = self
            .rt
            .block_on(events.list(&ListParams::default()))
            .expect("events listed")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ExceededGracePeriod"))
            .filter_map(|e| e.message)
            .collect();
        assert!(
            killed.is_empty(),
            "pods waited out their grace period when deleted: {killed:?}"
        );
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
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_up_to(Duration::from_secs(20), what, f)
}

/// Polls `f` every 100 ms until it answers or `limit` has passed.
pub fn wait_up_to<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or(0),
    }
}

pub fn ns_dir(m: &Mount) -> PathBuf {
    m.mountpoint.join("k8s/kubesim/shop")
}

/// Pods and claims snapfs made for uploads in `ns` (by label).
pub fn upload_leftovers(cluster: &Cluster, ns: &str) -> (Vec<String>, Vec<String>) {
    cluster.pods_and_claims(ns, UPLOAD_OBJECTS)
}

/// A nested tree with modes, an empty file and folder, a symlink, and spaces and UTF-8.
pub fn sample_tree(root: &Path) {
    sh(&format!(
        "mkdir -p '{r}/a/b c/ü' '{r}/empty-dir' && printf 'hello' > '{r}/a/hello.txt' \
         && head -c 3000000 /dev/urandom > '{r}/a/b c/blob.bin' && : > '{r}/a/b c/ü/empty' \
         && chmod 640 '{r}/a/hello.txt' && ln -s ../a/hello.txt '{r}/empty-dir/../link'",
        r = root.display()
    ));
}

/// Copies a `sample_tree` (after `prepare` ran on it) into `uploads/NAME` of namespace `ns`,
/// waits for the snapshot and checks it holds the same tree; answers where its data is.
pub fn upload_sample(
    cluster: &Cluster,
    m: &Mount,
    ns: &str,
    name: &str,
    prepare: impl FnOnce(&Path),
) -> PathBuf {
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    prepare(src.path());
    let upload = m
        .mountpoint
        .join(format!("k8s/kubesim/{ns}/uploads/{name}"));
    cp_a(src.path(), &upload);
    assert_snapshot_of(cluster, m, &upload, src.path())
}

/// Asserts the upload at `k8s/kubesim/NS/uploads/NAME` ends as VolumeSnapshot NAME of NS
/// holding the same tree as `src`; answers where its data is.
pub fn assert_snapshot_of(cluster: &Cluster, m: &Mount, upload: &Path, src: &Path) -> PathBuf {
    assert_uploaded(m, upload);
    let part = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .expect("an upload path")
    };
    let (name, ns) = (
        part(Some(upload)),
        part(upload.parent().and_then(Path::parent)),
    );
    let data = cluster
        .sim()
        .snapshot_dir(&ns, &name)
        .expect("snapshot data");
    assert_same_tree(src, &data);
    data
}

/// Copies `src` to `dest` with `cp -a`, as a user would.
pub fn cp_a(src: &Path, dest: &Path) {
    sh(&format!("cp -a '{}' '{}'", src.display(), dest.display()));
}

/// `snapfs wait PATH`.
pub fn snapfs_wait(m: &Mount, upload: &Path) -> Output {
    m.snapfs(&["wait", &upload.to_string_lossy()])
}

/// Asserts the upload at `upload` ends as a snapshot.
pub fn assert_uploaded(m: &Mount, upload: &Path) {
    let out = snapfs_wait(m, upload);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
}

/// Asserts `a` and `b` hold the same tree (symlinks compared as links).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .expect("diff runs");
    assert!(
        diff.status.success(),
        "{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
}

/// `uploads/NAME.status`, parsed; None while there is none.
pub fn upload_status(upload: &Path) -> Option<Value> {
    let mut path = upload.as_os_str().to_owned();
    path.push(".status");
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}
