//! Reader pods: a ready VolumeSnapshot's content is reached by restoring it into a claim that a
//! small pod mounts read-only (DESIGN §6); the tree then looks into that pod like any other.
//! A reader is made on first access and removed after `k8s.reader_idle` without use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use snapfs_fs::backend::BackendError;

use super::cluster::{Snapshot, is_running};
use super::errors::retry;
use super::exec;
use super::labels::{MANAGED_BY, ROLE, SNAPSHOT};
use super::namespace::{enforces_restricted, restored_claim_spec, security};
use super::watch::Watch;
use crate::config::K8sSettings;

/// How long a new reader may take to start (restore, schedule, run).
const START_LIMIT: Duration = Duration::from_secs(120);
/// A reader in use is checked this often to still run: someone may have deleted it.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The container of a reader pod, and where it mounts the snapshot.
pub const CONTAINER: &str = "reader";
pub const MOUNT: &str = "/data";

struct Reader {
    ns: String,
    name: String,
    started: tokio::sync::OnceCell<()>,
    used: Mutex<Instant>,
    checked: Mutex<Instant>,
}

pub struct Readers {
    client: Client,
    idle: Duration,
    /// The context's settings: the image of reader pods, who they run as (`k8s.pod_uid`, as
    /// upload pods) and the storage class of their claims (as uploads and restores).
    settings: Arc<K8sSettings>,
    /// By (namespace, snapshot uid): a snapshot made again under the same name is new content.
    all: Mutex<HashMap<(String, String), Arc<Reader>>>,
}

impl Readers {
    /// Starts the idle sweep, which ends with the last reference to the returned value.
    pub fn new(client: Client, idle: Duration, settings: Arc<K8sSettings>) -> Arc<Readers> {
        let readers = Arc::new(Readers {
            client,
            idle,
            settings,
            all: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&readers)));
        readers
    }

    /// The name of a running reader pod for `snap`, made if needed.
    pub async fn pod(&self, ns: &str, snap: &Snapshot) -> Result<String, BackendError> {
        let key = (ns.to_string(), snap.uid.clone());
        let reader = self.reader(&key, &snap.name);
        *reader.used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        reader
            .started
            .get_or_try_init(|| self.start(&reader, snap))
            .await?;
        let due = {
            let mut checked = reader.checked.lock().unwrap_or_else(|e| e.into_inner());
            let due = checked.elapsed() > CHECK_EVERY;
            if due {
                *checked = Instant::now();
            }
            due
        };
        if due {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let what = format!("get pod {} in namespace {ns}", reader.name);
            let running = retry(|| pods.get_opt(&reader.name), &what)
                .await?
                .is_some_and(|p| is_running(&p));
            if !running {
                // Gone or going: a new reader takes its place (start() waits the old one out).
                tracing::info!(
                    pod = reader.name,
                    namespace = ns,
                    "reader pod gone; starting again"
                );
                self.all
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let fresh = self.reader(&key, &snap.name);
                fresh
                    .started
                    .get_or_try_init(|| self.start(&fresh, snap))
                    .await?;
            }
        }
        Ok(reader.name.clone())
    }

    /// Removes every reader, as the mount goes away.
    pub async fn remove_all(&self) {
        let all: Vec<Arc<Reader>> = {
            let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
            all.drain().map(|(_, r)| r).collect()
        };
        for r in all {
            self.remove(&r).await;
        }
    }

    /// Deletes a reader's pod, then its claim.
    async fn remove(&self, r: &Reader) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &r.ns);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &r.ns);
        let dp = DeleteParams::default();
        if let Err(e) = pods.delete(&r.name, &dp).await {
            tracing::warn!(pod = r.name, namespace = r.ns, error = %e, "reader pod not removed");
        }
        if let Err(e) = claims.delete(&r.name, &dp).await {
            tracing::warn!(claim = r.name, namespace = r.ns, error = %e, "reader claim not removed");
        }
    }

    /// Names of the readers of namespace `ns` this daemon uses now.
    pub fn in_use(&self, ns: &str) -> HashSet<String> {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.values()
            .filter(|r| r.ns == ns)
            .map(|r| r.name.clone())
            .collect()
    }

    fn reader(&self, key: &(String, String), snap: &str) -> Arc<Reader> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Reader {
                    ns: key.0.clone(),
                    name: reader_name(snap, &key.1),
                    started: tokio::sync::OnceCell::new(),
                    used: Mutex::new(Instant::now()),
                    checked: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    async fn start(&self, r: &Reader, snap: &Snapshot) -> Result<(), BackendError> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &r.ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &r.ns);
        let labels = json!({MANAGED_BY: "snapfs", ROLE: "reader"});
        // A snapshot's name may be longer than a label value can be.
        let annotations = json!({SNAPSHOT: snap.name});
        // The restore must hold at least the snapshot; a claim of unknown size asks for 1Gi.
        let size = if snap.size > 0 { snap.size } else { 1 << 30 };
        let spec = restored_claim_spec(&self.settings, &snap.name, size);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": r.name, "labels": labels, "annotations": annotations},
            "spec": spec
        }))
        .map_err(|e| BackendError::Other(format!("reader claim: {e}")))?;
        // Fitted to the namespace's Pod Security level, as upload pods are.
        let restricted = enforces_restricted(&self.client, &r.ns).await?;
        let (pod_security, container_security) = security(self.settings.pod_uid, restricted);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": r.name, "labels": labels, "annotations": annotations},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": pod_security,
                "containers": [{
                    "name": CONTAINER,
                    "image": self.settings.image,
                    "command": exec::idle(i32::MAX as u64),
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": container_security,
                    "volumeMounts": [{"name": "snapshot", "mountPath": MOUNT, "readOnly": true}]
                }],
                "volumes": [{"name": "snapshot",
                             "persistentVolumeClaim": {"claimName": r.name, "readOnly": true}}]
            }
        }))
        .map_err(|e| BackendError::Other(format!("reader pod: {e}")))?;
        let pp = PostParams::default();
        let what = format!(
            "create persistentvolumeclaim {} in namespace {}",
            r.name, r.ns
        );
        // One left by an earlier run of the daemon is as good as a new one.
        match retry(|| claims.create(&pp, &claim), &what).await {
            Ok(_) | Err(BackendError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let create = format!("create pod {} in namespace {}", r.name, r.ns);
        let what = format!("watch pod {} in namespace {}", r.name, r.ns);
        let mut watch = Watch::new(pods.clone(), &r.name, START_LIMIT, what);
        loop {
            let state = watch.next().await.map_err(|stop| {
                stop.error(|| {
                    format!(
                        "reader pod {} for snapshot {} did not start in {START_LIMIT:?}",
                        r.name, snap.name
                    )
                })
            })?;
            match state {
                Some(p) if is_running(&p) => return Ok(()),
                // Starting, or an earlier one still terminating: wait.
                Some(_) => {}
                None => match retry(|| pods.create(&pp, &pod), &create).await {
                    Ok(_) | Err(BackendError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

/// Removes idle readers, their pod and then their claim.
async fn sweep(weak: Weak<Readers>) {
    loop {
        let Some(every) = weak
            .upgrade()
            .map(|r| (r.idle / 10).max(Duration::from_millis(100)))
        else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(readers) = weak.upgrade() else {
            return;
        };
        let idle: Vec<Arc<Reader>> = {
            let mut all = readers.all.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<_> = all
                .iter()
                .filter(|(_, r)| {
                    r.used.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > readers.idle
                })
                .map(|(k, _)| k.clone())
                .collect();
            gone.iter().filter_map(|k| all.remove(k)).collect()
        };
        for r in idle {
            readers.remove(&r).await;
        }
    }
}

/// `snapfs-read-<snapshot>-<uid>`, short enough for a label value and a pod name.
fn reader_name(snap: &str, uid: &str) -> String {
    let snap: String = snap.chars().take(36).collect();
    let snap = snap.trim_end_matches(['-', '.']);
    let uid: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("snapfs-read-{snap}-{}", uid.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names_are_short_and_tell_the_snapshot() {
        let n = reader_name("db-1", "5f0c2a1e-77aa-4b1c-9d0e-123456789abc");
        assert_eq!(n, "snapfs-read-db-1-5f0c2a1e");
        let long = reader_name(&"a".repeat(200), "X-Y");
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-xy"));
        assert_eq!(reader_name("db-.x", "u"), "snapfs-read-db-.x-u");
    }
}
