//! Kubernetes contexts as live trees under `k8s/<context>/` (DESIGN §6): namespaces, their
//! ready VolumeSnapshots (content read through a reader pod), and a read-only view into running
//! containers through exec.
//!
//! Layout below a context (paths as the `LiveTree` sees them):
//! `<ns>/snapshots/{latest,<name>/<path in the snapshot>}`, `<ns>/pods/<pod>/<container>/<path in the container>`,
//! `<ns>/workloads/<name>` → `../pods/<a ready pod>`.

mod cluster;
mod exec;
mod powers;
mod reader;
mod tarball;
mod upload;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use snapfs_control::paths::Paths;
use snapfs_fs::backend::{BackendError, LiveEntry, LiveTree};
use snapfs_fs::tree::FileKind;
use snapfs_fs::vfs::LiveMount;

use crate::config::{K8sSettings, KubeContext, is_dns_label};
use cluster::Namespaces;
use reader::Readers;
pub use upload::KubeTarget;
use upload::MANAGED_BY;

/// Attempts of a request that failed because the cluster could not be reached.
const ATTEMPTS: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(200);

/// One context of the kubeconfig, served as a live tree.
pub struct KubeTree {
    client: Client,
    /// The configured namespaces, shown without asking the cluster (a user may be allowed
    /// into a few namespaces but not to list them all); or, when none are configured, every
    /// namespace as a watch sees it.
    namespaces: Scope,
    readers: Arc<Readers>,
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

enum Scope {
    Only(Vec<String>),
    All(Arc<Namespaces>),
}

/// The kubeconfig the user's kubectl would read: `$KUBECONFIG` (its first file) or
/// `~/.kube/config`; None when there is none.
fn kubeconfig_path(paths: &Paths) -> Option<PathBuf> {
    let path = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v).next()?,
        None => paths.expand("~/.kube/config"),
    };
    path.exists().then_some(path)
}

/// One context of the kubeconfig.
struct Context {
    config: KubeContext,
    client: Client,
    tree: Arc<KubeTree>,
}

/// The Kubernetes contexts of the mount: their live trees under `k8s/`, and their namespaces as
/// upload targets.
pub struct Kube {
    contexts: Vec<Context>,
    settings: Arc<K8sSettings>,
}

impl Kube {
    /// Connects the configured contexts (`None`: every context of the kubeconfig). A context
    /// that cannot be set up is left out with a warning; it never stops the mount.
    pub async fn connect(
        configured: Option<&[KubeContext]>,
        paths: &Paths,
        list_ttl: Duration,
        reader_idle: Duration,
        settings: K8sSettings,
    ) -> Kube {
        let mut kube = Kube {
            contexts: Vec::new(),
            settings: Arc::new(settings),
        };
        let Some(path) = kubeconfig_path(paths) else {
            if configured.is_some_and(|c| !c.is_empty()) {
                tracing::warn!("[[kubernetes]] is configured but there is no kubeconfig");
            }
            return kube;
        };
        let kubeconfig = match Kubeconfig::read_from(&path) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kubeconfig unreadable; no k8s/");
                return kube;
            }
        };
        let contexts: Vec<KubeContext> = match configured {
            Some(c) => c.to_vec(),
            None => kubeconfig
                .contexts
                .iter()
                .map(|c| KubeContext::all_of(&c.name))
                .collect(),
        };
        for c in contexts {
            let options = KubeConfigOptions {
                context: Some(c.context.clone()),
                ..KubeConfigOptions::default()
            };
            let client =
                match kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options).await {
                    Ok(config) => Client::try_from(config),
                    Err(e) => Err(e.into()),
                };
            let client = match client {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(context = c.context, error = %e, "context left out");
                    continue;
                }
            };
            let namespaces = if c.namespaces.is_empty() {
                Scope::All(Namespaces::watch(
                    client.clone(),
                    list_ttl,
                    c.context.clone(),
                ))
            } else {
                Scope::Only(c.namespaces.clone())
            };
            let tree = Arc::new(KubeTree {
                readers: Readers::new(client.clone(), reader_idle),
                contents: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(CONTENT_LISTINGS)
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                )),
                listed: Mutex::new(HashMap::new()),
                list_ttl,
                client: client.clone(),
                namespaces,
            });
            kube.contexts.push(Context {
                config: c,
                client,
                tree,
            });
        }
        kube
    }

    pub fn live_mounts(&self) -> Vec<LiveMount> {
        self.contexts
            .iter()
            .map(|c| LiveMount {
                kind: "k8s",
                name: c.config.name.clone(),
                description: format!("Kubernetes context {}", c.config.context),
                tree: c.tree.clone(),
            })
            .collect()
    }

    /// The namespace at `k8s/<context>/<namespace>` as a target, if it can be one.
    pub fn target(&self, path: &str) -> Option<KubeTarget> {
        let rest = path.strip_prefix("k8s/")?;
        let (dir, ns) = rest.split_once('/')?;
        let c = self.contexts.iter().find(|c| c.config.name == dir)?;
        if !is_dns_label(ns) {
            return None;
        }
        if let Scope::Only(names) = &c.tree.namespaces
            && !names.iter().any(|n| n == ns)
        {
            return None;
        }
        Some(KubeTarget::new(
            path.to_string(),
            c.client.clone(),
            ns.to_string(),
            self.settings.clone(),
            &c.config,
            c.tree.readers.clone(),
        ))
    }

    /// Paths of the namespaces where snapfs made something (snapshots, claims, pods): what
    /// cleanup must look at. Where the whole cluster cannot be listed, the configured or
    /// known namespaces stand in.
    pub async fn namespaces_in_use(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for c in &self.contexts {
            let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
            let pods: Api<Pod> = Api::all(c.client.clone());
            let claims: Api<PersistentVolumeClaim> = Api::all(c.client.clone());
            let snaps: Api<DynamicObject> =
                Api::all_with(c.client.clone(), &cluster::snapshot_resource());
            let mut found: Vec<Option<String>> = Vec::new();
            let mut ok = true;
            match pods.list_metadata(&lp).await {
                Ok(l) => found.extend(l.items.into_iter().map(|o| o.metadata.namespace)),
                Err(_) => ok = false,
            }
            match claims.list_metadata(&lp).await {
                Ok(l) => found.extend(l.items.into_iter().map(|o| o.metadata.namespace)),
                Err(_) => ok = false,
            }
            // A cluster without the snapshot API has no snapshots to look at.
            if let Ok(l) = snaps.list(&lp).await {
                found.extend(l.items.into_iter().map(|o| o.metadata.namespace));
            }
            if !ok && let Ok(names) = c.tree.namespaces().await {
                found.extend(names.into_iter().map(Some));
            }
            for ns in found.into_iter().flatten() {
                out.insert(format!("k8s/{}/{ns}", c.config.name));
            }
        }
        out.into_iter().collect()
    }

    /// Removes every reader pod and claim, as the mount goes away.
    pub async fn shutdown(&self) {
        for c in &self.contexts {
            c.tree.readers.remove_all().await;
        }
    }
}

/// A kube error as the file system reports it: 403 keeps the API server's message, which
/// names the verb and the resource; anything short of an answer is `Unavailable`.
pub(crate) fn classify(e: kube::Error, what: &str) -> BackendError {
    match e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => {
            BackendError::PermissionDenied(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 => BackendError::NotFound(what.to_string()),
        kube::Error::Api(s) if s.code == 409 => BackendError::AlreadyExists(what.to_string()),
        kube::Error::Api(s) if s.code >= 500 => {
            BackendError::Unavailable(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) => BackendError::Other(format!("{what}: {}", s.message)),
        other => BackendError::Unavailable(format!("{what}: {other}")),
    }
}

/// Runs a request, again after a short wait while the cluster cannot be reached.
pub(crate) async fn retry<T, F, Fut>(mut f: F, what: &str) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut wait = FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match f().await.map_err(|e| classify(e, what)) {
            Err(BackendError::Unavailable(msg)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = msg, "retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            other => return other,
        }
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

/// Where a path of the tree points.
enum Place<'a> {
    Context,
    Namespace(&'a str),
    Snapshots(&'a str),
    Uploads(&'a str),
    Snapshot(&'a str, &'a str),
    /// A path inside a snapshot's content, absolute in its reader pod.
    InSnapshot {
        ns: &'a str,
        snap: &'a str,
        path: String,
    },
    Pods(&'a str),
    Pod(&'a str, &'a str),
    /// A path inside a container, absolute ("/" for its root).
    Container {
        ns: &'a str,
        pod: &'a str,
        container: &'a str,
        path: String,
    },
    Workloads(&'a str),
    Workload(&'a str, &'a str),
}

fn place(path: &str) -> Option<Place<'_>> {
    if path.is_empty() {
        return Some(Place::Context);
    }
    let parts: Vec<&str> = path.split('/').collect();
    Some(match parts.as_slice() {
        [ns] => Place::Namespace(ns),
        [ns, "snapshots"] => Place::Snapshots(ns),
        [ns, "uploads"] => Place::Uploads(ns),
        [ns, "snapshots", s] => Place::Snapshot(ns, s),
        [ns, "snapshots", snap, rest @ ..] => Place::InSnapshot {
            ns,
            snap,
            path: format!("{}/{}", reader::MOUNT, rest.join("/")),
        },
        [ns, "pods"] => Place::Pods(ns),
        [ns, "pods", pod] => Place::Pod(ns, pod),
        [ns, "pods", pod, container, rest @ ..] => Place::Container {
            ns,
            pod,
            container,
            path: format!("/{}", rest.join("/")),
        },
        [ns, "workloads"] => Place::Workloads(ns),
        [ns, "workloads", w] => Place::Workload(ns, w),
        _ => return None,
    })
}

impl KubeTree {
    async fn namespaces(&self) -> Result<Vec<String>, BackendError> {
        match &self.namespaces {
            Scope::Only(names) => Ok(names.clone()),
            Scope::All(watched) => Ok(watched.names(&self.client).await?.into_iter().collect()),
        }
    }

    async fn check_namespace(&self, ns: &str) -> Result<(), BackendError> {
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
        let list = Arc::new(exec::list(&self.pods(ns), &pod, reader::CONTAINER, path).await?);
        self.contents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, list.clone());
        Ok(list)
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
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
            } => exec::list(&self.pods(ns), pod, container, &path).await,
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
                        exec::stat(&self.pods(ns), &pod, reader::CONTAINER, &path).await
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
                exec::stat(&self.pods(ns), pod, container, &inside).await
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
            } => exec::read(&self.pods(ns), pod, container, &inside, offset, len).await,
            Place::InSnapshot { ns, snap, path } => {
                let pod = self.reader(ns, snap).await?;
                let pods = self.pods(ns);
                exec::read(&pods, &pod, reader::CONTAINER, &path, offset, len).await
            }
            _ => Err(BackendError::Other(format!("{path}: not a file"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_places() {
        assert!(matches!(place(""), Some(Place::Context)));
        assert!(matches!(place("shop"), Some(Place::Namespace("shop"))));
        assert!(matches!(
            place("shop/snapshots/db"),
            Some(Place::Snapshot("shop", "db"))
        ));
        assert!(matches!(
            place("shop/workloads/web"),
            Some(Place::Workload("shop", "web"))
        ));
        match place("shop/pods/web-1/app/data/db.sqlite") {
            Some(Place::Container {
                pod,
                container,
                path,
                ..
            }) => {
                assert_eq!(
                    (pod, container, path.as_str()),
                    ("web-1", "app", "/data/db.sqlite")
                );
            }
            _ => panic!("not a container path"),
        }
        match place("shop/pods/web-1/app") {
            Some(Place::Container { path, .. }) => assert_eq!(path, "/"),
            _ => panic!("not a container path"),
        }
        assert!(place("shop/other").is_none());
        match place("shop/snapshots/db/x/y") {
            Some(Place::InSnapshot { snap, path, .. }) => {
                assert_eq!((snap, path.as_str()), ("db", "/data/x/y"));
            }
            _ => panic!("not a snapshot path"),
        }
    }
}
