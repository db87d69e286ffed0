//! The server handle: listener, shared state, start-up objects, restart and shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::faults::{Counters, Faults};
use crate::meta;
use crate::resources::{self, ResourceType};
use crate::routes::{PortRoute, RouteTarget, Routes};
use crate::sandbox::Sandbox;
use crate::store::Store;

/// The driver of the default StorageClass and VolumeSnapshotClass (the CSI hostpath driver's).
pub const DRIVER: &str = "hostpath.csi.k8s.io";
/// The default StorageClass.
pub const STORAGE_CLASS: &str = "csi-hostpath-sc";
/// The default VolumeSnapshotClass.
pub const SNAPSHOT_CLASS: &str = "csi-hostpath-snapclass";
/// The bearer token of the kubeconfig's user, `kubesim-admin`.
pub const ADMIN_TOKEN: &str = "kubesim-admin-token";
/// The user the admin token authenticates as.
pub const ADMIN_USER: &str = "kubesim-admin";
/// The node every pod is scheduled to.
pub const NODE: &str = "kubesim-node";

/// How long the simulated controllers take. Real clusters take seconds; tests want less.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Scheduled pod → Running.
    pub pod_start: Duration,
    /// Pod deletion requested → pod gone.
    pub pod_stop: Duration,
    /// PVC created → Bound.
    pub pvc_bind: Duration,
    /// VolumeSnapshotContent created → `readyToUse: true`.
    pub snapshot_ready: Duration,
    /// Interval of BOOKMARK events on watches that allow them. A guess: the real server sends
    /// one about every minute.
    pub bookmark_interval: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            pod_start: Duration::from_millis(300),
            pod_stop: Duration::from_millis(200),
            pvc_bind: Duration::from_millis(100),
            snapshot_ready: Duration::from_millis(500),
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where volumes, snapshots and container files live; None makes a temporary directory that
    /// is removed with the server.
    pub data_dir: Option<PathBuf>,
    pub timings: Timings,
    /// The static busybox binary exec runs.
    pub busybox: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            data_dir: None,
            timings: Timings::default(),
            busybox: PathBuf::from("/usr/bin/busybox"),
        }
    }
}

/// Everything request handlers and controllers share.
pub(crate) struct State {
    pub store: Store,
    pub faults: Faults,
    pub counters: Counters,
    pub auth: Auth,
    pub timings: Timings,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub sandbox: Sandbox,
    /// Where port-forwards to pod ports really connect.
    pub routes: Routes,
    /// Bumped to drop every connection (API server restart or shutdown).
    pub epoch: watch::Sender<u64>,
}

impl State {
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }
}

/// A running Kubernetes test server. Dropping it stops it.
pub struct KubeSim {
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
    controllers: Vec<JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    let mut epoch = state.epoch.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = epoch.changed() => return,
        };
        let state = state.clone();
        let mut conn_epoch = state.epoch.subscribe();
        tokio::spawn(async move {
            let service = {
                let state = state.clone();
                service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(crate::api::handle(state, req).await) }
                })
            };
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = conn_epoch.changed() => {}
            }
        });
    }
}

fn initial_objects() -> Vec<(&'static ResourceType, Value)> {
    vec![
        (
            &resources::NAMESPACES,
            json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        ),
        (
            &resources::STORAGECLASSES,
            json!({"metadata": {"name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                   "provisioner": DRIVER, "reclaimPolicy": "Delete",
                   "volumeBindingMode": "Immediate", "allowVolumeExpansion": true}),
        ),
        (
            &resources::VOLUMESNAPSHOTCLASSES,
            json!({"metadata": {"name": SNAPSHOT_CLASS,
                    "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
                   "driver": DRIVER, "deletionPolicy": "Delete"}),
        ),
    ]
}

impl KubeSim {
    /// Starts a server on 127.0.0.1 with the default namespace, StorageClass and
    /// VolumeSnapshotClass, and its controllers.
    pub async fn start(config: Config) -> io::Result<KubeSim> {
        let (data_dir, temp) = match &config.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new().prefix("kubesim-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        for sub in ["volumes", "snapshots", "pods"] {
            std::fs::create_dir_all(data_dir.join(sub))?;
        }
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let (epoch, _) = watch::channel(0);
        let state = Arc::new(State {
            store: Store::new(),
            faults: Faults::default(),
            counters: Counters::default(),
            auth: Auth::default(),
            timings: config.timings.clone(),
            addr,
            data_dir,
            sandbox: Sandbox::new(config.busybox.clone()),
            routes: Routes::default(),
            epoch,
        });
        state.auth.add_token(ADMIN_TOKEN, ADMIN_USER);
        for (rt, mut obj) in initial_objects() {
            obj["kind"] = json!(rt.kind);
            obj["apiVersion"] = json!(rt.api_version());
            state
                .store
                .create(rt, obj)
                .map_err(|e| io::Error::other(e.message))?;
        }
        let controllers = crate::controllers::spawn_all(&state);
        let accept = tokio::spawn(accept_loop(state.clone(), listener));
        tracing::info!(%addr, "kubesim listening");
        Ok(KubeSim {
            state,
            accept: Mutex::new(Some(accept)),
            controllers,
            _temp: temp,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// A kubeconfig with one context, `kubesim`, whose user holds the admin token.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    namespace: default\n    user: {ADMIN_USER}\ncurrent-context: kubesim\nusers:\n- name: {ADMIN_USER}\n  user:\n    token: {ADMIN_TOKEN}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Where volumes, snapshots and container files live.
    pub fn data_dir(&self) -> &Path {
        &self.state.data_dir
    }

    /// Accepts `token` as user `user`.
    pub fn add_user(&self, token: &str, user: &str) {
        self.state.auth.add_token(token, user);
    }

    /// Denies a verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...) on a
    /// resource (`pods`, `pods/exec`, `volumesnapshots`) with 403. Empty or `"*"` for `user`,
    /// `verb` or `namespace` means any; `"*"` as resource means every resource.
    pub fn deny(&self, user: &str, verb: &str, resource: &str, namespace: &str) {
        self.state.auth.deny(user, verb, resource, namespace);
    }

    /// Removes every deny rule.
    pub fn allow_all(&self) {
        self.state.auth.allow_all();
    }

    /// Port-forwards to `port` of pod `namespace/pod` connect to `target`.
    pub fn register_port(&self, namespace: &str, pod: &str, port: u16, target: SocketAddr) {
        self.add_route(&PortRoute {
            namespace: namespace.to_string(),
            target: RouteTarget::Pod(pod.to_string()),
            port,
            addr: target,
        });
    }

    /// Port-forwards to `port` of every pod of StatefulSet `namespace/statefulset`, present and
    /// future (recreated pods included), connect to `target`. A pod's own route wins.
    pub fn register_statefulset_port(
        &self,
        namespace: &str,
        statefulset: &str,
        port: u16,
        target: SocketAddr,
    ) {
        self.add_route(&PortRoute {
            namespace: namespace.to_string(),
            target: RouteTarget::StatefulSet(statefulset.to_string()),
            port,
            addr: target,
        });
    }

    /// Adds a route (as parsed from `NAMESPACE/POD:PORT=HOST:PORT`).
    pub fn add_route(&self, route: &PortRoute) {
        self.state.routes.add(route);
    }

    /// The root directory of a container of a running pod (its `/`), to put files in.
    pub fn container_root(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        let obj = self.state.store.get(&resources::PODS, namespace, pod)?;
        let dir = self.state.pods_dir().join(meta::uid(&obj)).join(container);
        dir.is_dir().then_some(dir)
    }

    /// The directory holding the data of a bound PVC.
    pub fn volume_dir(&self, namespace: &str, pvc: &str) -> Option<PathBuf> {
        let obj = self.state.store.get(&resources::PVCS, namespace, pvc)?;
        let volume = meta::str_at(&obj, &["spec", "volumeName"])?;
        let dir = self.state.volumes_dir().join(volume);
        dir.is_dir().then_some(dir)
    }

    /// The directory holding the data of a VolumeSnapshot that has a content.
    pub fn snapshot_dir(&self, namespace: &str, snapshot: &str) -> Option<PathBuf> {
        let obj = self
            .state
            .store
            .get(&resources::VOLUMESNAPSHOTS, namespace, snapshot)?;
        let content = meta::str_at(&obj, &["status", "boundVolumeSnapshotContentName"])?;
        let dir = self.state.snapshots_dir().join(content);
        dir.is_dir().then_some(dir)
    }

    /// Forgets the watch history, as an etcd compaction does: watches from an earlier
    /// resourceVersion get a 410 Expired ERROR event.
    pub fn compact(&self) {
        self.state.store.compact();
    }

    /// Simulates an API server restart: every connection (watches, exec, port-forward) drops,
    /// the port refuses connections for `downtime`, then the same address serves the same
    /// objects again.
    pub async fn restart_api(&self, downtime: Duration) -> io::Result<()> {
        self.stop_serving().await;
        tokio::time::sleep(downtime).await;
        let listener = TcpListener::bind(self.state.addr).await?;
        let accept = tokio::spawn(accept_loop(self.state.clone(), listener));
        *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = Some(accept);
        Ok(())
    }

    async fn stop_serving(&self) {
        self.state.epoch.send_modify(|e| *e += 1);
        let accept = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(accept) = accept {
            // The accept loop returns on the epoch change; joining makes sure the port is free.
            let _ = accept.await;
        }
    }

    /// Stops serving and stops the controllers, then removes a temporary data directory.
    pub async fn shutdown(mut self) {
        self.stop_serving().await;
        for c in self.controllers.drain(..) {
            c.abort();
            // Joined so that no controller still writes into the data directory being removed.
            let _ = c.await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.state.epoch.send_modify(|e| *e += 1);
        if let Some(accept) = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take() {
            accept.abort();
        }
        for c in &self.controllers {
            c.abort();
        }
    }
}
