//! A context as a live tree (DESIGN §6): namespaces, their ready VolumeSnapshots (content read
//! through a reader pod), and a read-only view into running containers through exec.
//!
//! Layout below a context (paths as the `LiveTree` sees them):
//! `<ns>/snapshots/{latest,<name>/<path in the snapshot>}`, `<ns>/pods/<pod>/<container>/<path in the container>`,
//! `<ns>/workloads/<name>` → `../pods/<a ready pod>`.

mod place;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use snapfs_fs::backend::{BackendError, LiveEntry, LiveTree};
use snapfs_fs::tree::FileKind;

use super::cluster::{self, Namespaces};
use super::errors::retry;
use super::exec;
use super::metered::Meter;
use super::reader::{self, Readers};
use crate::config::is_dns_label;
use place::{Place, place};

/// One context of the kubeconfig, served as a live tree.
pub struct KubeTree {
    client: Client,
    /// The configured namespaces, shown without asking the cluster (a user may be allowed
    /// into a few namespaces but not to list them all); or, when none are configured, every
    /// namespace as a watch sees it.
    namespaces: Scope,
    readers: Arc<Readers>,
    /// Where exec sessions count their bytes, by namespace.
    meter: Arc<Meter>,
    /// Directory listings inside snapshots, by (namespace, snapshot uid, path): a snapshot
    /// never changes, so each directory is listed through its reader once.
    contents: Mutex<lru::LruCache<ContentKey, Arc<Vec<LiveEntry>>>>,
    /// Ready snapshots of each namespace as last listed. A path inside a snapshot found here
    /// costs no listing for `list_ttl`; one not found lists again, so a new snapshot is seen
    /// at once.
    listed: Mutex<HashMap<String, (Instant, Vec<cluster::Snapshot>)>>,
    list_ttl: Duration,
}

/// (namespace, snapshot uid, directory path in the reader).
type ContentKey = (String, String, String);

/// Directories of snapshot content kept listed.
const CONTENT_LISTINGS: usize = 4096;

/// The namespaces a tree shows.
pub enum Scope {
    /// The configured ones.
    Only(Vec<String>),
    /// Every namespace, as a watch sees it, and the context's own.
    All(Arc<Namespaces>),
}

impl KubeTree {
    pub fn new(
        client: Client,
        namespaces: Scope,
        list_ttl: Duration,
        readers: Arc<Readers>,
        meter: Arc<Meter>,
    ) -> Arc<KubeTree> {
        Arc::new(KubeTree {
            readers,
            meter,
            contents: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CONTENT_LISTINGS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            listed: Mutex::new(HashMap::new()),
            list_ttl,
            client,
            namespaces,
        })
    }

    pub fn readers(&self) -> &Arc<Readers> {
        &self.readers
    }

    /// Whether `ns` may be one of the tree's namespaces, as far as is known without asking
    /// the cluster: any, unless the configured ones leave it out.
    pub fn may_hold(&self, ns: &str) -> bool {
        match &self.namespaces {
            Scope::Only(names) => names.iter().any(|n| n == ns),
            Scope::All(_) => true,
        }
    }

    pub async fn namespaces(&self) -> Result<Vec<String>, BackendError> {
        match &self.namespaces {
            Scope::Only(names) => Ok(names.clone()),
            Scope::All(watched) => Ok(watched.names(&self.client).await?.into_iter().collect()),
        }
    }

    async fn check_namespace(&self, ns: &str) -> Result<(), BackendError> {
        if let Scope::All(watched) = &self.namespaces
            && watched.home() == ns
        {
            return Ok(());
        }
        if !is_dns_label(ns) || !self.namespaces().await?.iter().any(|n| n == ns) {
            return Err(not_found(ns));
        }
        Ok(())
    }

    /// Ready snapshot `snap`.
    async fn snapshot(&self, ns: &str, snap: &str) -> Result<cluster::Snapshot, BackendError> {
        self.check_namespace(ns).await?;
        let known = {
            let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
            listed
                .get(ns)
                .filter(|(at, _)| at.elapsed() < self.list_ttl)
                .and_then(|(_, list)| list.iter().find(|s| s.name == snap).cloned())
        };
        if let Some(s) = known {
            return Ok(s);
        }
        self.list_snapshots(ns)
            .await?
            .into_iter()
            .find(|s| s.name == snap)
            .ok_or_else(|| not_found(snap))
    }

    /// The ready snapshots of `ns`, asked of the cluster now, and kept for `snapshot`.
    async fn list_snapshots(&self, ns: &str) -> Result<Vec<cluster::Snapshot>, BackendError> {
        let list = cluster::snapshots(&self.client, ns).await?;
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.to_string(), (Instant::now(), list.clone()));
        Ok(list)
    }

    /// The running reader pod of ready snapshot `snap`.
    async fn reader(&self, ns: &str, snap: &str) -> Result<String, BackendError> {
        let s = self.snapshot(ns, snap).await?;
        self.readers.pod(ns, &s).await
    }

    /// Directory `path` (absolute in the reader) of snapshot `snap`, listed once.
    async fn snapshot_dir(
        &self,
        ns: &str,
        snap: &str,
        path: &str,
    ) -> Result<Arc<Vec<LiveEntry>>, BackendError> {
        let s = self.snapshot(ns, snap).await?;
        let key = (ns.to_string(), s.uid.clone(), path.to_string());
        let cached = self
            .contents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(list) = cached {
            return Ok(list);
        }
        let pod = self.readers.pod(ns, &s).await?;
        let list = Arc::new(exec::list(&self.exec_pods(ns), &pod, reader::CONTAINER, path).await?);
        self.contents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, list.clone());
        Ok(list)
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn exec_pods(&self, ns: &str) -> exec::Pods {
        exec::Pods {
            api: self.pods(ns),
            counters: self.meter.of(ns),
        }
    }

    /// The running pod `pod`, or NotFound.
    async fn pod(&self, ns: &str, pod: &str) -> Result<Pod, BackendError> {
        let api = self.pods(ns);
        let what = format!("get pod {pod} in namespace {ns}");
        let p = retry(|| api.get_opt(pod), &what).await?;
        p.filter(cluster::is_running).ok_or_else(|| not_found(pod))
    }

    async fn check_container(&self, ns: &str, pod: &str, c: &str) -> Result<(), BackendError> {
        let p = self.pod(ns, pod).await?;
        if containers(&p).iter().any(|n| n == c) {
            Ok(())
        } else {
            Err(not_found(c))
        }
    }

    async fn snapshot_entries(&self, ns: &str) -> Result<Vec<LiveEntry>, BackendError> {
        let list = self.list_snapshots(ns).await?;
        let newest = list
            .iter()
            .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        let mut out: Vec<LiveEntry> = newest
            .map(|s| symlink("latest", Some(s.name.clone())))
            .into_iter()
            .collect();
        for s in &list {
            let mut xattrs = vec![
                ("state".to_string(), "ready".to_string()),
                (
                    "created".into(),
                    s.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                ("size".into(), s.size.to_string()),
                ("id".into(), s.uid.clone()),
            ];
            if let Some(e) = s.expires {
                let e = e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                xattrs.push(("expires".into(), e));
            }
            out.push(LiveEntry {
                mtime: s.created.into(),
                xattrs,
                ..dir(&s.name)
            });
        }
        Ok(out)
    }
}

fn dir(name: &str) -> LiveEntry {
    LiveEntry {
        name: name.to_string(),
        kind: FileKind::Dir,
        size: 0,
        perm: 0o555,
        mtime: SystemTime::UNIX_EPOCH,
        symlink: None,
        xattrs: Vec::new(),
        uploads: false,
    }
}

/// A namespace's `uploads/`, which the VFS serves as the namespace target's.
fn uploads_dir() -> LiveEntry {
    LiveEntry {
        perm: 0o755,
        uploads: true,
        ..dir("uploads")
    }
}

fn symlink(name: &str, target: Option<String>) -> LiveEntry {
    LiveEntry {
        kind: FileKind::Symlink,
        perm: 0o777,
        symlink: target,
        ..dir(name)
    }
}

fn not_found(path: &str) -> BackendError {
    BackendError::NotFound(path.to_string())
}

fn containers(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

#[async_trait]
impl LiveTree for KubeTree {
    async fn list(&self, path: &str) -> Result<Vec<LiveEntry>, BackendError> {
        match place(path).ok_or_else(|| not_found(path))? {
            Place::Context => Ok(self.namespaces().await?.iter().map(|n| dir(n)).collect()),
            Place::Namespace(ns) => {
                self.check_namespace(ns).await?;
                let mut out = ["snapshots", "pods", "workloads"].map(dir).to_vec();
                out.push(uploads_dir());
                Ok(out)
            }
            Place::Snapshots(ns) => {
                self.check_namespace(ns).await?;
                self.snapshot_entries(ns).await
            }
            Place::Snapshot(ns, "latest") => Err(not_found(ns)),
            Place::Snapshot(ns, snap) => {
                Ok(self.snapshot_dir(ns, snap, reader::MOUNT).await?.to_vec())
            }
            Place::InSnapshot { ns, snap, path } => {
                Ok(self.snapshot_dir(ns, snap, &path).await?.to_vec())
            }
            Place::Pods(ns) => {
                self.check_namespace(ns).await?;
                let pods = cluster::running_pods(&self.client, ns).await?;
                Ok(pods
                    .iter()
                    .filter_map(|p| p.metadata.name.as_deref().map(dir))
                    .collect())
            }
            Place::Pod(ns, pod) => {
                let p = self.pod(ns, pod).await?;
                Ok(containers(&p).iter().map(|c| dir(c)).collect())
            }
            Place::Container {
                ns,
                pod,
                container,
                path,
            } => exec::list(&self.exec_pods(ns), pod, container, &path).await,
            Place::Workloads(ns) => {
                self.check_namespace(ns).await?;
                let names = cluster::workloads(&self.client, ns).await?;
                Ok(names.iter().map(|n| symlink(n, None)).collect())
            }
            Place::Workload(..) => Err(BackendError::Other("not a directory".into())),
            // The VFS serves it; the tree only names it.
            Place::Uploads(ns) => Err(not_found(&format!("{ns}/uploads"))),
        }
    }

    async fn stat(&self, path: &str) -> Result<LiveEntry, BackendError> {
        let name = path.rsplit('/').next().unwrap_or(path);
        match place(path).ok_or_else(|| not_found(path))? {
            Place::Context => Ok(dir("")),
            Place::Namespace(ns) => {
                self.check_namespace(ns).await?;
                Ok(dir(ns))
            }
            Place::Uploads(ns) => {
                self.check_namespace(ns).await?;
                Ok(uploads_dir())
            }
            Place::Snapshots(ns) | Place::Pods(ns) | Place::Workloads(ns) => {
                self.check_namespace(ns).await?;
                Ok(dir(name))
            }
            Place::Snapshot(ns, snap) => {
                self.check_namespace(ns).await?;
                let all = self.snapshot_entries(ns).await?;
                all.into_iter()
                    .find(|e| e.name == snap)
                    .ok_or_else(|| not_found(path))
            }
            Place::InSnapshot { ns, snap, path } => {
                // From the listing of its directory, unless that leaves a link's target out.
                let (parent, leaf) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                let listed = self.snapshot_dir(ns, snap, parent).await?;
                match listed.iter().find(|e| e.name == leaf) {
                    Some(e) if e.kind != FileKind::Symlink || e.symlink.is_some() => Ok(e.clone()),
                    Some(_) => {
                        let pod = self.reader(ns, snap).await?;
                        exec::stat(&self.exec_pods(ns), &pod, reader::CONTAINER, &path).await
                    }
                    None => Err(not_found(&path)),
                }
            }
            Place::Pod(ns, pod) => {
                self.pod(ns, pod).await?;
                Ok(dir(pod))
            }
            Place::Container {
                ns,
                pod,
                container,
                path: inside,
            } => {
                if inside == "/" {
                    self.check_container(ns, pod, container).await?;
                    return Ok(dir(container));
                }
                exec::stat(&self.exec_pods(ns), pod, container, &inside).await
            }
            Place::Workload(ns, w) => {
                let pod = cluster::ready_pod_of(&self.client, ns, w).await?;
                Ok(symlink(w, Some(format!("../pods/{pod}"))))
            }
        }
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        match place(path).ok_or_else(|| not_found(path))? {
            Place::Container {
                ns,
                pod,
                container,
                path: inside,
            } => exec::read(&self.exec_pods(ns), pod, container, &inside, offset, len).await,
            Place::InSnapshot { ns, snap, path } => {
                let pod = self.reader(ns, snap).await?;
                let pods = self.exec_pods(ns);
                exec::read(&pods, &pod, reader::CONTAINER, &path, offset, len).await
            }
            _ => Err(BackendError::Other(format!("{path}: not a file"))),
        }
    }
}
