//! A namespace as an upload target (DESIGN §6): `uploads/NAME` becomes VolumeSnapshot NAME
//! through a claim, a short-lived pod and a tar stream over exec, checked on arrival.
//!
//! Everything made here carries `app.kubernetes.io/managed-by=snapfs`, the job's id and a
//! label naming the upload, so that a run after a crash (or `snapfs gc`) finds it. A run of
//! upload NAME first looks for VolumeSnapshot NAME: one this daemon made is waited for (the
//! crash came after step 6); otherwise whatever earlier runs of NAME left is removed and the
//! upload starts over from its staged files.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use snapfs_control::units::parse_quantity;
use snapfs_control::wire::TargetMetrics;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo, SnapshotState};
use snapfs_fs::tree::SnapshotTree;

use super::cluster::{EXPIRES_ANNOTATION, is_running, resource, snapshot_resource};
use super::reader::Readers;
use super::{exec, retry, tarball};
use crate::config::{K8sSettings, Retention, is_dns_subdomain};
use crate::powers::{InUse, Progress};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const ROLE: &str = "snapfs.io/role";
const JOB: &str = "snapfs.io/job";
/// A short digest of the upload's name (label values hold 63 bytes; names 253).
const UPLOAD: &str = "snapfs.io/upload";
/// The upload's full name, which the digest stands for.
const SNAPSHOT: &str = "snapfs.io/snapshot";
const CONTAINER: &str = "upload";
const DATA: &str = "/data";
const SCRATCH: &str = "/snapfs";
/// How long a preflight's findings are trusted.
const PREFLIGHT_TTL: Duration = Duration::from_secs(30);
/// How long an upload pod may take to start, and a deleted one to go.
const POD_LIMIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

/// A namespace of a context, as the job engine and the control socket use it.
pub struct KubeTarget {
    path: String,
    client: Client,
    ns: String,
    settings: Arc<K8sSettings>,
    ttl: Option<Duration>,
    pub retention: Retention,
    max_snapshots: Option<u64>,
    readers: Arc<Readers>,
    preflight: Mutex<Option<(Instant, Preflight)>>,
}

/// What the checks before an upload found out.
#[derive(Debug, Clone)]
struct Preflight {
    storage_class: Option<String>,
    snapshot_class: Option<String>,
    /// The namespace enforces the `restricted` Pod Security level.
    restricted: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `snapfs-up-<name>-<run>`: which upload, which run; a valid object name for any upload name.
fn resource_name(name: &str, job: &str) -> String {
    let short: String = name.chars().take(40).collect();
    let short = short.trim_end_matches(['-', '.']);
    let run: String = job
        .rsplit('-')
        .next()
        .unwrap_or(job)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    format!("snapfs-up-{short}-{}", run.to_ascii_lowercase())
}

fn name_digest(name: &str) -> String {
    format!("{:08x}", crc32c::crc32c(name.as_bytes()))
}

fn job_label(job: &str) -> String {
    job.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect()
}

fn annotation<'a>(meta: &'a kube::core::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn label<'a>(meta: &'a kube::core::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Made by snapfs for upload `name`.
fn made_for(meta: &kube::core::ObjectMeta, name: &str) -> bool {
    label(meta, MANAGED_BY) == Some("snapfs") && annotation(meta, SNAPSHOT) == Some(name)
}

fn to<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, BackendError> {
    serde_json::from_value(v).map_err(|e| BackendError::Other(format!("{what}: {e}")))
}

/// The claim size for a plan: content plus a block per entry, plus the margin, in MiB, never
/// below the floor.
fn claim_size(plan: &tarball::Plan, settings: &K8sSettings) -> u64 {
    let raw = plan.data + 4096 * plan.entries().max(1);
    let with_margin = raw.saturating_mul(100 + settings.size_margin) / 100;
    with_margin
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .max(settings.min_size)
}

impl KubeTarget {
    pub fn new(
        path: String,
        client: Client,
        ns: String,
        settings: Arc<K8sSettings>,
        context: &crate::config::KubeContext,
        readers: Arc<Readers>,
    ) -> KubeTarget {
        KubeTarget {
            path,
            client,
            ns,
            settings,
            ttl: context.ttl,
            retention: context.retention,
            max_snapshots: context.max_snapshots,
            readers,
            preflight: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn metrics(&self) -> TargetMetrics {
        TargetMetrics {
            target: self.path.clone(),
            ..TargetMetrics::default()
        }
    }

    fn snapshots_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &snapshot_resource())
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn what(&self, verb: &str, resource: &str, name: &str) -> String {
        format!("{verb} {resource} {name} in namespace {}", self.ns)
    }

    /// Every VolumeSnapshot of the namespace, in whatever state.
    async fn all_snapshots(&self) -> Result<Vec<DynamicObject>, BackendError> {
        self.snapshots_matching(&ListParams::default()).await
    }

    async fn snapshots_matching(
        &self,
        lp: &ListParams,
    ) -> Result<Vec<DynamicObject>, BackendError> {
        let api = self.snapshots_api();
        let what = format!("list volumesnapshots in namespace {}", self.ns);
        match retry(|| api.list(lp), &what).await {
            Ok(list) => Ok(list.items),
            Err(BackendError::NotFound(_)) => Err(no_snapshot_api()),
            Err(e) => Err(e),
        }
    }

    async fn get_snapshot(&self, name: &str) -> Result<Option<DynamicObject>, BackendError> {
        let api = self.snapshots_api();
        let what = self.what("get", "volumesnapshot", name);
        match retry(|| api.get_opt(name), &what).await {
            Err(BackendError::NotFound(_)) => Err(no_snapshot_api()),
            other => other,
        }
    }

    /// Whether upload `name` may start: a name a VolumeSnapshot can have, not taken, under the
    /// limit, and a cluster where it can be made (DESIGN §6 preflight).
    pub async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        self.check_name(name)?;
        // One GET, unless the limit needs the count.
        let taken = match self.max_snapshots {
            None => self.get_snapshot(name).await?.is_some(),
            Some(max) => {
                let all = self.all_snapshots().await?;
                if all.len() as u64 >= max {
                    return Err(BackendError::Quota(max));
                }
                all.iter().any(|s| s.metadata.name.as_deref() == Some(name))
            }
        };
        if taken {
            return Err(BackendError::AlreadyExists(format!(
                "VolumeSnapshot {name} in namespace {}",
                self.ns
            )));
        }
        self.preflight(false).await.map(|_| ())
    }

    async fn preflight(&self, fresh: bool) -> Result<Preflight, BackendError> {
        if !fresh
            && let Some((at, p)) = &*lock(&self.preflight)
            && at.elapsed() < PREFLIGHT_TTL
        {
            return Ok(p.clone());
        }
        let restricted = self.restricted().await?;
        let storage_class = self.storage_class().await?;
        let snapshot_class = self.snapshot_class(storage_class.as_ref()).await?;
        let p = Preflight {
            storage_class: storage_class.map(|(name, _)| name),
            snapshot_class,
            restricted,
        };
        // May this user make what an upload makes? Asked with dry runs, which the API server
        // authorizes (and admits: Pod Security) like the real thing.
        let probe = "snapfs-preflight";
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let claim: PersistentVolumeClaim = to(
            self.claim_spec(probe, "preflight", "", &p, 1 << 30),
            "claim",
        )?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", probe);
        retry(|| claims.create(&dry, &claim), &what).await?;
        let pod: Pod = to(self.pod_spec(probe, "preflight", "", &p, 600), "pod")?;
        let pods = self.pods();
        let what = self.what("create", "pod", probe);
        retry(|| pods.create(&dry, &pod), &what).await?;
        let snap: DynamicObject = to(
            self.snapshot_spec(probe, "preflight", probe, &p),
            "snapshot",
        )?;
        let snaps = self.snapshots_api();
        let what = self.what("create", "volumesnapshot", probe);
        retry(|| snaps.create(&dry, &snap), &what).await?;
        *lock(&self.preflight) = Some((Instant::now(), p.clone()));
        Ok(p)
    }

    /// Whether the namespace enforces Pod Security `restricted`. A namespace that cannot be
    /// read is taken to: a restricted pod is admitted at every level.
    async fn restricted(&self) -> Result<bool, BackendError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let what = format!("get namespace {}", self.ns);
        match retry(|| api.get_opt(&self.ns), &what).await {
            Ok(Some(n)) => {
                Ok(label(&n.metadata, "pod-security.kubernetes.io/enforce") == Some("restricted"))
            }
            Ok(None) => Err(BackendError::NotFound(format!("namespace {}", self.ns))),
            Err(BackendError::PermissionDenied(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The storage class of upload claims and its driver; None when storage classes cannot be
    /// read (the claim then asks for the default, and the driver check is left to the cluster).
    async fn storage_class(&self) -> Result<Option<(String, String)>, BackendError> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource("storage.k8s.io", "StorageClass", "storageclasses"),
        );
        let lp = ListParams::default();
        let list = match retry(|| api.list(&lp), "list storageclasses").await {
            Ok(l) => l.items,
            Err(BackendError::PermissionDenied(e)) => {
                tracing::info!(
                    error = e,
                    "storage classes cannot be read; the claim asks for the default"
                );
                return Ok(self
                    .settings
                    .storage_class
                    .clone()
                    .map(|c| (c, String::new())));
            }
            Err(e) => return Err(e),
        };
        let driver = |o: &DynamicObject| {
            o.data
                .get("provisioner")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let chosen = match &self.settings.storage_class {
            Some(want) => list
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(want))
                .ok_or_else(|| {
                    BackendError::Unsupported(format!(
                        "StorageClass {want} (k8s.storage_class) does not exist"
                    ))
                })?,
            None => list
                .iter()
                .find(|o| {
                    annotation(&o.metadata, "storageclass.kubernetes.io/is-default-class")
                        == Some("true")
                })
                .ok_or_else(|| {
                    BackendError::Unsupported(
                        "the cluster has no default StorageClass; set k8s.storage_class".into(),
                    )
                })?,
        };
        Ok(Some((
            chosen.metadata.name.clone().unwrap_or_default(),
            driver(chosen),
        )))
    }

    /// The VolumeSnapshotClass to name, if one must be named; refuses a cluster with none for
    /// the storage class's driver.
    async fn snapshot_class(
        &self,
        storage: Option<&(String, String)>,
    ) -> Result<Option<String>, BackendError> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource(
                "snapshot.storage.k8s.io",
                "VolumeSnapshotClass",
                "volumesnapshotclasses",
            ),
        );
        let lp = ListParams::default();
        let list = match retry(|| api.list(&lp), "list volumesnapshotclasses").await {
            Ok(l) => l.items,
            Err(BackendError::NotFound(_)) => return Err(no_snapshot_api()),
            Err(BackendError::PermissionDenied(e)) => {
                tracing::info!(
                    error = e,
                    "snapshot classes cannot be read; the cluster picks one"
                );
                return Ok(self.settings.snapshot_class.clone());
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = &self.settings.snapshot_class {
            if !list
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(want))
            {
                return Err(BackendError::Unsupported(format!(
                    "VolumeSnapshotClass {want} (k8s.snapshot_class) does not exist"
                )));
            }
            return Ok(Some(want.clone()));
        }
        let Some((class, driver)) = storage.filter(|(_, d)| !d.is_empty()) else {
            return Ok(None);
        };
        let mut fitting: Vec<&DynamicObject> = list
            .iter()
            .filter(|o| o.data.get("driver").and_then(Value::as_str) == Some(driver))
            .collect();
        fitting.sort_by_key(|o| {
            let default = annotation(
                &o.metadata,
                "snapshot.storage.kubernetes.io/is-default-class",
            ) == Some("true");
            (!default, o.metadata.name.clone())
        });
        match fitting.first() {
            Some(o) => Ok(o.metadata.name.clone()),
            None => Err(BackendError::Unsupported(format!(
                "no VolumeSnapshotClass for driver {driver} (of StorageClass {class}): create one, or name another storage class in k8s.storage_class"
            ))),
        }
    }

    fn labels(&self, role: &str, name: &str, job: &str) -> Value {
        json!({
            MANAGED_BY: "snapfs",
            ROLE: role,
            JOB: job_label(job),
            UPLOAD: name_digest(name),
        })
    }

    fn claim_spec(&self, rname: &str, name: &str, job: &str, p: &Preflight, size: u64) -> Value {
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size.to_string()}},
        });
        if let Some(c) = &p.storage_class {
            spec["storageClassName"] = json!(c);
        }
        json!({
            "metadata": {"name": rname, "labels": self.labels("upload", name, job),
                         "annotations": {SNAPSHOT: name}},
            "spec": spec,
        })
    }

    /// The upload pod, fitted to the namespace's Pod Security level (DESIGN §6 step 3).
    fn pod_spec(&self, rname: &str, name: &str, job: &str, p: &Preflight, deadline: u64) -> Value {
        let (pod_security, container_security) = if p.restricted {
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let (uid, gid) = if uid == 0 { (1000, 1000) } else { (uid, gid) };
            (
                json!({"runAsNonRoot": true, "runAsUser": uid, "runAsGroup": gid,
                       "fsGroup": gid, "fsGroupChangePolicy": "OnRootMismatch",
                       "seccompProfile": {"type": "RuntimeDefault"}}),
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
            )
        } else {
            (
                json!({"runAsUser": 0, "runAsGroup": 0,
                       "seccompProfile": {"type": "RuntimeDefault"}}),
                json!({"allowPrivilegeEscalation": false,
                       "capabilities": {"drop": ["ALL"],
                                        "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}}),
            )
        };
        json!({
            "metadata": {"name": rname, "labels": self.labels("upload", name, job),
                         "annotations": {SNAPSHOT: name}},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": deadline,
                "automountServiceAccountToken": false,
                "securityContext": pod_security,
                "containers": [{
                    "name": CONTAINER,
                    "image": self.settings.image,
                    "command": ["sleep", deadline.to_string()],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": container_security,
                    "volumeMounts": [{"name": "data", "mountPath": DATA},
                                     {"name": "scratch", "mountPath": SCRATCH}]
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": rname}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": "16Mi"}}]
            }
        })
    }

    fn snapshot_spec(&self, name: &str, job: &str, claim: &str, p: &Preflight) -> Value {
        let mut annotations = json!({SNAPSHOT: name});
        if let Some(ttl) = self.ttl
            && let Ok(ttl) = chrono::Duration::from_std(ttl)
        {
            let at = (Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            annotations[EXPIRES_ANNOTATION] = json!(at);
        }
        let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
        if let Some(c) = &p.snapshot_class {
            spec["volumeSnapshotClassName"] = json!(c);
        }
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": self.labels("snapshot", name, job),
                         "annotations": annotations},
            "spec": spec,
        })
    }

    /// Makes VolumeSnapshot `name` from `source` (DESIGN §6 steps 1–8), or finishes the one an
    /// earlier run made. `size` overrides the claim size.
    pub async fn commit(
        &self,
        name: &str,
        source: &Path,
        job: &str,
        size: Option<u64>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let p = self.preflight(true).await?;
        if let Some(existing) = self.get_snapshot(name).await? {
            if !made_for(&existing.metadata, name) {
                return Err(BackendError::AlreadyExists(format!(
                    "VolumeSnapshot {name} in namespace {}",
                    self.ns
                )));
            }
            tracing::info!(
                target = self.path,
                snapshot = name,
                "an earlier run made the snapshot; waiting for it"
            );
            let info = self.wait_ready(name, progress, cancel).await;
            self.remove_leftovers(name).await?;
            return info;
        }
        self.remove_leftovers(name).await?;
        let plan = {
            let (source, name) = (source.to_path_buf(), name.to_string());
            tokio::task::spawn_blocking(move || tarball::plan(&source, &name))
                .await
                .map_err(|e| BackendError::Other(format!("planning the upload: {e}")))?
                .map_err(|e| BackendError::Other(format!("reading the upload: {e}")))?
        };
        progress.total.store(plan.total, Ordering::Relaxed);
        let size = size.unwrap_or_else(|| claim_size(&plan, &self.settings));
        let rname = resource_name(name, job);
        let made = self
            .make(name, job, &rname, &p, plan, size, progress, cancel)
            .await;
        if made.is_err() {
            // Nothing half-made stays: the pod, the claim, and a snapshot that never got ready.
            if let Ok(Some(s)) = self.get_snapshot(name).await
                && made_for(&s.metadata, name)
            {
                let api = self.snapshots_api();
                if let Err(e) = api.delete(name, &DeleteParams::default()).await {
                    tracing::warn!(snapshot = name, error = %e, "VolumeSnapshot of a failed upload not removed");
                }
            }
        }
        if let Err(e) = self.remove_leftovers(name).await {
            tracing::warn!(snapshot = name, error = %e, "leftovers of the upload not removed");
        }
        made
    }

    #[allow(clippy::too_many_arguments)]
    async fn make(
        &self,
        name: &str,
        job: &str,
        rname: &str,
        p: &Preflight,
        plan: tarball::Plan,
        size: u64,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let pp = PostParams::default();
        // 2. the claim
        let claim: PersistentVolumeClaim = to(self.claim_spec(rname, name, job, p, size), "claim")?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", rname);
        retry(|| claims.create(&pp, &claim), &what).await?;
        // 3. the pod; its deadline allows 5 MiB/s after ten minutes to start
        let deadline = 600 + plan.total / (5 << 20);
        let pod: Pod = to(self.pod_spec(rname, name, job, p, deadline), "pod")?;
        let pods = self.pods();
        let what = self.what("create", "pod", rname);
        retry(|| pods.create(&pp, &pod), &what).await?;
        self.wait_running(rname, cancel).await?;
        tracing::info!(
            target = self.path,
            snapshot = name,
            pod = rname,
            size,
            "upload pod running"
        );
        // 4. the data
        let (bytes, start) = (plan.total, Instant::now());
        if p.restricted {
            let note = "the namespace enforces the restricted Pod Security level: the upload pod runs as non-root, so file owners are not kept (modes and times are)";
            tracing::info!(target = self.path, snapshot = name, "{note}");
            *lock(&progress.note) = Some(note.to_string());
        }
        self.transfer(
            rname,
            plan,
            p.restricted,
            progress,
            cancel,
            Duration::from_secs(deadline),
        )
        .await?;
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!(
            target = self.path,
            snapshot = name,
            bytes,
            seconds,
            "data arrived and checked"
        );
        // 5. the pod goes, so the volume is unmounted whole before it is snapshotted
        self.delete_pod(rname).await?;
        // 6. the snapshot
        let snap: DynamicObject = to(self.snapshot_spec(name, job, rname, p), "snapshot")?;
        let snaps = self.snapshots_api();
        let what = self.what("create", "volumesnapshot", name);
        retry(|| snaps.create(&pp, &snap), &what).await?;
        tracing::info!(
            target = self.path,
            snapshot = name,
            "VolumeSnapshot requested"
        );
        // 7. ready; 8. the caller removes the claim
        self.wait_ready(name, progress, cancel).await
    }

    async fn wait_running(&self, rname: &str, cancel: &AtomicBool) -> Result<(), BackendError> {
        let pods = self.pods();
        let what = self.what("get", "pod", rname);
        let start = Instant::now();
        loop {
            check_cancel(cancel)?;
            let pod = retry(|| pods.get_opt(rname), &what).await?;
            match pod {
                Some(p) if is_running(&p) => return Ok(()),
                Some(p) => {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    if matches!(phase, Some("Failed" | "Succeeded")) {
                        let why = p.status.as_ref().and_then(|s| s.message.clone());
                        return Err(BackendError::Other(format!(
                            "upload pod {rname} ended before the data arrived: {}",
                            why.unwrap_or_else(|| phase.unwrap_or_default().to_string())
                        )));
                    }
                }
                None => {
                    return Err(BackendError::Other(format!(
                        "upload pod {rname} was deleted"
                    )));
                }
            }
            if start.elapsed() > POD_LIMIT {
                return Err(BackendError::Unavailable(format!(
                    "upload pod {rname} did not start in {POD_LIMIT:?} (is the claim bound?)"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Streams the tar into the pod, exactly `plan.total` bytes read by `head -c`, and checks
    /// what arrived: the stream's MD5 as the pod computed it, and every file's size.
    async fn transfer(
        &self,
        pod: &str,
        plan: tarball::Plan,
        restricted: bool,
        progress: &Progress,
        cancel: &AtomicBool,
        limit: Duration,
    ) -> Result<(), BackendError> {
        // `dd` takes exactly the stream (whole MiB), so the end of stdin never matters; then
        // every file that arrived is read back for its MD5, several at a time.
        let script = format!(
            "set -e\n\
             dd bs={chunk} count=\"$1\" iflag=fullblock 2>/dev/null | tar -x -f - -C {DATA} \"$2\"\n\
             cd {DATA} && {{ find . -type f -print0 | xargs -0 -r -P 4 -n 64 md5sum 2>/dev/null || true; }}",
            chunk = tarball::CHUNK
        );
        // As root tar keeps owners by number; as anyone else it cannot, and is told so.
        let owners = if restricted { "-o" } else { "--numeric-owner" };
        let total = plan.total;
        let blocks = (total / tarball::CHUNK as u64).to_string();
        let command = exec::sh(&script, &[&blocks, owners]);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stop = Arc::new(AtomicBool::new(false));
        // Bytes handed to the exec session; the channel holds at most a few pieces of them.
        let sent = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(plan);
        // The files' MD5s are taken beside the stream, on another core where there is one.
        let hasher = {
            let plan = plan.clone();
            tokio::task::spawn_blocking(move || tarball::digests(&plan))
        };
        let producer = {
            let (plan, stop, sent) = (plan.clone(), stop.clone(), sent.clone());
            let pod_name = pod.to_string();
            tokio::task::spawn_blocking(move || {
                tarball::write(&plan, |piece| {
                    if stop.load(Ordering::Relaxed) {
                        return Err(std::io::Error::other("cancelled"));
                    }
                    let len = piece.len() as u64;
                    tx.blocking_send(piece).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::BrokenPipe,
                            "the exec session ended",
                        )
                    })?;
                    sent.fetch_add(len, Ordering::Relaxed);
                    Ok(())
                })
                .inspect(|_| tracing::info!(pod = pod_name, "stream sent; checking what arrived"))
            })
        };
        let pods = self.pods();
        let session =
            exec::run_with_input(&pods, pod, CONTAINER, command, Some((rx, total)), limit);
        tokio::pin!(session);
        // Progress and cancellation are looked at while the bytes flow.
        let out = loop {
            tokio::select! {
                out = &mut session => break out,
                () = tokio::time::sleep(POLL) => {
                    progress.done.store(sent.load(Ordering::Relaxed), Ordering::Relaxed);
                    if cancel.load(Ordering::Relaxed) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        let streamed = producer
            .await
            .map_err(|e| BackendError::Other(format!("tar stream: {e}")))?;
        check_cancel(cancel)?;
        match streamed {
            Ok(()) => {}
            // The session ended before it took the whole stream: it tells why.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                let out = out?;
                return Err(match &out.failure {
                    Some(f) => exec::failed(DATA, &out, f),
                    None => BackendError::Other(format!(
                        "upload pod {pod} ended before it took the whole stream"
                    )),
                });
            }
            Err(e) => return Err(BackendError::Other(format!("tar stream: {e}"))),
        }
        let digests = hasher
            .await
            .map_err(|e| BackendError::Other(format!("checksums: {e}")))?
            .map_err(|e| BackendError::Other(format!("reading the upload: {e}")))?;
        let out = out?;
        progress.done.store(total, Ordering::Relaxed);
        if let Some(f) = &out.failure {
            return Err(exec::failed(DATA, &out, f));
        }
        check_arrival(&String::from_utf8_lossy(&out.stdout), &plan.files, &digests)
    }

    async fn delete_pod(&self, rname: &str) -> Result<(), BackendError> {
        let pods = self.pods();
        let what = self.what("delete", "pod", rname);
        let dp = DeleteParams::default();
        match retry(|| pods.delete(rname, &dp), &what).await {
            Ok(_) | Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let what = self.what("get", "pod", rname);
        let start = Instant::now();
        while retry(|| pods.get_opt(rname), &what).await?.is_some() {
            if start.elapsed() > POD_LIMIT {
                return Err(BackendError::Unavailable(format!(
                    "upload pod {rname} still terminating after {POD_LIMIT:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Watches VolumeSnapshot `name` until it is ready, telling its error while it waits.
    async fn wait_ready(
        &self,
        name: &str,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let timeout = self.settings.ready_timeout;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(self.snapshots_api(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let start = Instant::now();
        let mut last_error: Option<String> = None;
        loop {
            check_cancel(cancel)?;
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                let why = last_error.map_or(String::new(), |e| format!(": {e}"));
                return Err(BackendError::Unavailable(format!(
                    "VolumeSnapshot {name} was not ready after {timeout:?}{why}"
                )));
            }
            let next = tokio::time::timeout(left.min(Duration::from_secs(1)), events.next()).await;
            let obj = match next {
                Err(_) => continue,
                Ok(None) => {
                    return Err(BackendError::Unavailable(format!(
                        "watching VolumeSnapshot {name} ended"
                    )));
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(snapshot = name, error = %e, "snapshot watch interrupted");
                    continue;
                }
                Ok(Some(Ok(o))) => o,
            };
            if let Some(info) = snapshot_info(&obj).filter(|i| i.state == SnapshotState::Ready) {
                *lock(&progress.waiting) = None;
                return Ok(info);
            }
            let error = obj
                .data
                .pointer("/status/error/message")
                .and_then(Value::as_str)
                .map(str::to_string);
            if error.is_some() && error != last_error {
                tracing::warn!(
                    target = self.path,
                    snapshot = name,
                    error = error.as_deref().unwrap_or_default(),
                    "VolumeSnapshot reports an error; still waiting"
                );
                *lock(&progress.waiting) = error.clone();
                last_error = error;
            }
        }
    }

    /// Removes pods and claims that runs of upload `name` left (not the snapshot).
    async fn remove_leftovers(&self, name: &str) -> Result<(), BackendError> {
        let selector = format!(
            "{MANAGED_BY}=snapfs,{ROLE}=upload,{UPLOAD}={}",
            name_digest(name)
        );
        let lp = ListParams::default().labels(&selector);
        let pods = self.pods();
        let what = format!("list pods in namespace {}", self.ns);
        for p in retry(|| pods.list(&lp), &what).await?.items {
            if made_for(&p.metadata, name)
                && let Some(n) = p.metadata.name.as_deref()
            {
                self.delete_pod(n).await?;
            }
        }
        let claims = self.claims();
        let dp = DeleteParams::default();
        let what = format!("list persistentvolumeclaims in namespace {}", self.ns);
        for c in retry(|| claims.list(&lp), &what).await?.items {
            if made_for(&c.metadata, name)
                && let Some(n) = c.metadata.name.as_deref()
            {
                let what = self.what("delete", "persistentvolumeclaim", n);
                match retry(|| claims.delete(n, &dp), &what).await {
                    Ok(_) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Removes pods and claims of snapfs in this namespace that no running job or reader
    /// uses: what a crash left. Returns how many went (or would go, on a dry run).
    ///
    /// `running` (the ids of the uploads running now) is asked after the listing: an upload
    /// that starts between the two is then either in the answer or made nothing listed.
    pub async fn collect_leftovers(
        &self,
        in_use: impl FnOnce() -> InUse,
        dry_run: bool,
    ) -> Result<u64, BackendError> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
        let pods = self.pods();
        let what = format!("list pods in namespace {}", self.ns);
        let listed_pods = retry(|| pods.list(&lp), &what).await?.items;
        let claims = self.claims();
        let what = format!("list persistentvolumeclaims in namespace {}", self.ns);
        let listed_claims = retry(|| claims.list(&lp), &what).await?.items;
        let snapshots = match self.snapshots_matching(&lp).await {
            Ok(snaps) => snaps,
            Err(BackendError::Unsupported(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        // A reader is known before its pod and claim are made, so asking now is as safe.
        let readers = self.readers.in_use(&self.ns);
        let jobs = in_use();
        let running: HashSet<String> = jobs.running.iter().map(|id| job_label(id)).collect();
        // A snapshot of ours that is not ready and that no job will come back for (its staged
        // upload was removed while the daemon was down) goes, and with it the claim it holds.
        let orphans: Vec<&str> = snapshots
            .iter()
            .filter(|s| pending_source(s).is_some())
            .filter(|s| !label(&s.metadata, JOB).is_some_and(|j| running.contains(j)))
            .filter_map(|s| s.metadata.name.as_deref())
            .filter(|name| !jobs.pending.contains(*name))
            .collect();
        let mut n = 0;
        let api = self.snapshots_api();
        let dp = DeleteParams::default();
        for name in &orphans {
            tracing::info!(
                snapshot = name,
                namespace = self.ns,
                dry_run,
                "VolumeSnapshot of an abandoned upload"
            );
            if !dry_run {
                let what = self.what("delete", "volumesnapshot", name);
                match retry(|| api.delete(name, &dp), &what).await {
                    Ok(_) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            n += 1;
        }
        // A claim that a snapshot of ours is still being taken from stays: without it the
        // snapshot would never be ready, and the upload that is resumed waits for it.
        let sources: HashSet<String> = snapshots
            .iter()
            .filter(|s| {
                !s.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| orphans.contains(&n))
            })
            .filter_map(pending_source)
            .collect();
        let leftover = |meta: &kube::core::ObjectMeta| match label(meta, ROLE) {
            Some("upload") => !label(meta, JOB).is_some_and(|j| running.contains(j)),
            Some("reader") => !meta.name.as_ref().is_some_and(|n| readers.contains(n)),
            _ => false,
        };
        for name in listed_pods
            .iter()
            .filter(|p| leftover(&p.metadata))
            .filter_map(|p| p.metadata.name.as_deref())
        {
            tracing::info!(pod = name, namespace = self.ns, dry_run, "leftover pod");
            if !dry_run {
                let what = self.what("delete", "pod", name);
                match retry(|| pods.delete(name, &dp), &what).await {
                    Ok(_) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            n += 1;
        }
        for name in listed_claims
            .iter()
            .filter(|c| leftover(&c.metadata))
            .filter_map(|c| c.metadata.name.as_deref())
            .filter(|name| !sources.contains(*name))
        {
            tracing::info!(claim = name, namespace = self.ns, dry_run, "leftover claim");
            if !dry_run {
                let what = self.what("delete", "persistentvolumeclaim", name);
                match retry(|| claims.delete(name, &dp), &what).await {
                    Ok(_) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            n += 1;
        }
        Ok(n)
    }

    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        match self.all_snapshots().await {
            Ok(all) => Ok(all.iter().filter_map(snapshot_info).collect()),
            // A cluster without the API has no snapshots; uploads say why.
            Err(BackendError::Unsupported(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The VolumeSnapshots snapfs made here, the only ones its cleanup may delete: a
    /// namespace also holds the snapshots of other tools, which keep their own schedules.
    pub async fn own_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
        match self.snapshots_matching(&lp).await {
            Ok(own) => Ok(own.iter().filter_map(snapshot_info).collect()),
            Err(BackendError::Unsupported(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let api = self.snapshots_api();
        let what = self.what("delete", "volumesnapshot", name);
        let dp = DeleteParams::default();
        retry(|| api.delete(name, &dp), &what).await.map(|_| ())
    }

    /// Creates claim `claim` from ready VolumeSnapshot `name`, at least as big as it.
    pub async fn restore_to_claim(
        &self,
        name: &str,
        claim: &str,
        size: Option<u64>,
    ) -> Result<String, BackendError> {
        if !is_dns_subdomain(claim) {
            return Err(BackendError::InvalidName {
                name: claim.to_string(),
                reason: "a claim name is a DNS-1123 subdomain".into(),
            });
        }
        let snap = self
            .get_snapshot(name)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("VolumeSnapshot {name}")))?;
        let info = snapshot_info(&snap)
            .filter(|i| i.state == SnapshotState::Ready)
            .ok_or_else(|| BackendError::Other(format!("VolumeSnapshot {name} is not ready")))?;
        let size = size.unwrap_or(0).max(info.size).max(1 << 20);
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size.to_string()}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                           "name": name}
        });
        if let Some(c) = &self.settings.storage_class {
            spec["storageClassName"] = json!(c);
        }
        let pvc: PersistentVolumeClaim = to(
            json!({"metadata": {"name": claim, "annotations": {SNAPSHOT: name}}, "spec": spec}),
            "claim",
        )?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", claim);
        let pp = PostParams::default();
        retry(|| claims.create(&pp, &pvc), &what).await?;
        Ok(format!(
            "PersistentVolumeClaim {claim} in namespace {} ({size} bytes) from VolumeSnapshot {name}",
            self.ns
        ))
    }
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), BackendError> {
    if cancel.load(Ordering::Relaxed) {
        Err(BackendError::Other("cancelled".into()))
    } else {
        Ok(())
    }
}

fn no_snapshot_api() -> BackendError {
    BackendError::Unsupported(
        "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed in this cluster: install the snapshot CRDs and controller (kubernetes-csi/external-snapshotter)"
            .into(),
    )
}

/// Compares `md5sum` lines (`HASH  ./path`) with what was sent.
fn check_arrival(
    md5sum: &str,
    files: &[(String, u64)],
    digests: &[[u8; 16]],
) -> Result<(), BackendError> {
    let arrived: BTreeMap<&str, &str> = md5sum
        .lines()
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ")?;
            Some((path.strip_prefix("./")?, hash))
        })
        .collect();
    for ((path, size), digest) in files.iter().zip(digests) {
        match arrived.get(path.as_str()) {
            Some(h) if *h == hex(digest) => {}
            Some(_) => {
                return Err(BackendError::Corrupt(format!(
                    "{path} ({size} bytes) arrived with other content than was sent"
                )));
            }
            None => return Err(BackendError::Corrupt(format!("{path} did not arrive"))),
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The claim a VolumeSnapshot is being taken from, while it is not ready yet.
fn pending_source(o: &DynamicObject) -> Option<String> {
    let state = snapshot_info(o)?.state;
    if matches!(state, SnapshotState::Ready | SnapshotState::Deleting) {
        return None;
    }
    let claim = o.data.pointer("/spec/source/persistentVolumeClaimName")?;
    claim.as_str().map(str::to_string)
}

/// A VolumeSnapshot in the terms of every target.
fn snapshot_info(o: &DynamicObject) -> Option<SnapshotInfo> {
    let name = o.metadata.name.clone()?;
    let status = o.data.get("status");
    let ready = status
        .and_then(|s| s.get("readyToUse"))
        .and_then(Value::as_bool)
        == Some(true);
    let failed = status.and_then(|s| s.pointer("/error/message")).is_some();
    let state = if o.metadata.deletion_timestamp.is_some() {
        SnapshotState::Deleting
    } else if ready {
        SnapshotState::Ready
    } else if failed {
        SnapshotState::Failed
    } else {
        SnapshotState::Creating
    };
    let size = status
        .and_then(|s| s.get("restoreSize"))
        .and_then(|q| match q {
            Value::String(s) => parse_quantity(s).ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .unwrap_or(0);
    let created = status
        .and_then(|s| s.get("creationTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            o.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0))
        })
        .unwrap_or_else(Utc::now);
    let expires = annotation(&o.metadata, EXPIRES_ANNOTATION)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(SnapshotInfo {
        name,
        created,
        state,
        is_file: false,
        size,
        files: 0,
        crc32c: None,
        expires,
        id: o.metadata.uid.clone().unwrap_or_default(),
    })
}

#[async_trait]
impl Backend for KubeTarget {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        KubeTarget::list_snapshots(self).await
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "{name}: a VolumeSnapshot is read through {}/snapshots/",
            self.path
        )))
    }

    async fn read_range(
        &self,
        object: &str,
        _range: std::ops::Range<u64>,
    ) -> Result<Bytes, BackendError> {
        Err(BackendError::Unsupported(format!(
            "{object}: a VolumeSnapshot is read through {}/snapshots/",
            self.path
        )))
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        if is_dns_subdomain(name) {
            Ok(())
        } else {
            Err(BackendError::InvalidName {
                name: name.to_string(),
                reason: "a VolumeSnapshot name is a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_valid_for_any_upload_name() {
        let n = resource_name(&"a.b-".repeat(60), "20261122T010203Z-0123456789ABCDEF");
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("snapfs-up-a.b-a"), "{n}");
        assert!(n.ends_with("-0123456789"), "{n}");
        assert_eq!(name_digest("db"), name_digest("db"));
        assert_ne!(name_digest("db"), name_digest("db2"));
        assert_eq!(job_label("20261122T010203Z-ab_cd"), "20261122T010203Z-abcd");
    }

    #[test]
    fn claims_get_the_margin_and_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![0u8; 10 << 20]).unwrap();
        let plan = tarball::plan(dir.path(), "x").unwrap();
        let mut s = K8sSettings {
            min_size: 1 << 20,
            ..K8sSettings::default()
        };
        let size = claim_size(&plan, &s);
        assert!((12 << 20..=13 << 20).contains(&size), "{size}");
        assert_eq!(size % (1 << 20), 0);
        s.min_size = 1 << 30;
        assert_eq!(claim_size(&plan, &s), 1 << 30);
    }

    #[test]
    fn arrivals_are_checked_file_by_file() {
        use md5::{Digest, Md5};
        let files = vec![("a b/c.txt".to_string(), 5), ("d".to_string(), 0)];
        let digests: Vec<[u8; 16]> = vec![Md5::digest(b"hello").into(), Md5::digest(b"").into()];
        let good = format!(
            "{}  ./a b/c.txt\n{}  ./d\n{}  ./lost+found/x\n",
            hex(&digests[0]),
            hex(&digests[1]),
            hex(&digests[1])
        );
        assert!(check_arrival(&good, &files, &digests).is_ok());
        let missing = format!("{}  ./a b/c.txt\n", hex(&digests[0]));
        let e = check_arrival(&missing, &files, &digests).unwrap_err();
        assert!(e.to_string().contains("d did not arrive"), "{e}");
        let wrong = format!(
            "{}  ./a b/c.txt\n{}  ./d\n",
            hex(&digests[1]),
            hex(&digests[1])
        );
        let e = check_arrival(&wrong, &files, &digests).unwrap_err();
        assert!(e.to_string().contains("a b/c.txt"), "{e}");
    }

    #[test]
    fn snapshot_states_follow_the_status() {
        let obj = |status: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "s", "uid": "u"}, "status": status
            }))
            .unwrap()
        };
        let state = |v| snapshot_info(&obj(v)).unwrap().state;
        assert_eq!(state(json!({"readyToUse": false})), SnapshotState::Creating);
        assert_eq!(
            state(json!({"readyToUse": false, "error": {"message": "boom"}})),
            SnapshotState::Failed
        );
        assert_eq!(
            state(json!({"readyToUse": true, "restoreSize": "1Gi"})),
            SnapshotState::Ready
        );
    }

    #[test]
    fn a_snapshot_holds_its_source_claim_until_it_is_ready() {
        let obj = |status: Value, deleting: bool| -> DynamicObject {
            let mut meta = json!({"name": "s", "uid": "u"});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": meta, "status": status,
                "spec": {"source": {"persistentVolumeClaimName": "snapfs-up-s-1"}}
            }))
            .unwrap()
        };
        let held = Some("snapfs-up-s-1".to_string());
        assert_eq!(pending_source(&obj(json!({}), false)), held);
        assert_eq!(
            pending_source(&obj(json!({"error": {"message": "retrying"}}), false)),
            held
        );
        assert_eq!(
            pending_source(&obj(json!({"readyToUse": true}), false)),
            None
        );
        assert_eq!(pending_source(&obj(json!({}), true)), None);
    }
}
