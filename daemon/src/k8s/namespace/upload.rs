//! Upload of `uploads/NAME` (DESIGN §6): VolumeSnapshot NAME through a claim, a short-lived
//! pod and a tar stream over exec, checked on arrival.
//!
//! Everything made here carries `app.kubernetes.io/managed-by=snapfs`, the job's id and a
//! label naming the upload, so that a run after a crash (or `snapfs gc`) finds it. A run of
//! upload NAME first looks for VolumeSnapshot NAME: one this daemon made is waited for (the
//! crash came after step 6); otherwise whatever earlier runs of NAME left is removed and the
//! upload starts over from its staged files.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use snapfs_fs::backend::{BackendError, SnapshotInfo};

use super::early::Early;
use super::manifests::{self, claim_size};
use super::preflight::Preflight;
use super::{KubeTarget, Progress, lock, to};
use crate::k8s::cluster::is_running;
use crate::k8s::errors::retry;
use crate::k8s::labels::{made_for, resource_name};
use crate::k8s::tarball;
use crate::k8s::watch::Watch;

/// How long an upload pod may take to start, and a deleted one to go.
const POD_LIMIT: Duration = Duration::from_secs(300);

impl KubeTarget {
    /// Makes VolumeSnapshot `name` from `source` (DESIGN §6 steps 1–8), or finishes the one an
    /// earlier run made. `size` overrides the claim size. `early` is the id under which the
    /// upload started while its files were copied (`early`), if it did: the run takes that
    /// over, and what it does not use goes.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        name: &str,
        source: &Path,
        job: &str,
        size: Option<u64>,
        early: Option<&str>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let started = early.and_then(|id| self.take_early(id));
        let made = self
            .commit_with(
                name,
                source,
                job,
                size,
                started.as_deref(),
                progress,
                cancel,
            )
            .await;
        if let Some(e) = started.as_deref().filter(|e| !e.used()) {
            self.give_up(e).await;
        }
        if made.is_ok()
            && let Some(id) = early
        {
            self.forget_early(id);
        }
        made
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_with(
        &self,
        name: &str,
        source: &Path,
        job: &str,
        size: Option<u64>,
        early: Option<&Early>,
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
            self.remove_leftovers(name, None).await?;
            return info;
        }
        self.remove_leftovers(name, early.map(Early::rname)).await?;
        let plan = {
            let (source, name) = (source.to_path_buf(), name.to_string());
            tokio::task::spawn_blocking(move || tarball::plan(&source, &name))
                .await
                .map_err(|e| BackendError::Other(format!("planning the upload: {e}")))?
                .map_err(|e| BackendError::Other(format!("reading the upload: {e}")))?
        };
        progress.total.store(plan.total, Ordering::Relaxed);
        // What went while the copy ran and was still on its way is waited for, and counted.
        let start = Instant::now();
        let started = match early {
            Some(e) => match self.early_for(e, &plan, size, progress, cancel).await {
                Ok(stream) => Some((e, stream)),
                Err(why) => {
                    self.start_again(name, e, &why).await;
                    None
                }
            },
            None => None,
        };
        let made = match started {
            Some((e, (feed, session, linked))) => {
                self.note_owners(name, &p, progress);
                match feed.finish(session, linked, progress, cancel).await {
                    Ok(()) => {
                        self.arrived(name, start, progress);
                        self.snapshot_from(name, job, e.rname(), &p, progress, cancel)
                            .await
                    }
                    // A connection that went while the stream waited for the copy to end is
                    // found only now, when the tree goes.
                    Err(BackendError::Unavailable(why)) if !cancel.load(Ordering::Relaxed) => {
                        self.start_again(name, e, &why).await;
                        self.make(name, job, &p, plan, size, progress, cancel).await
                    }
                    Err(err) => Err(err),
                }
            }
            None => self.make(name, job, &p, plan, size, progress, cancel).await,
        };
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
        if let Err(e) = self.remove_leftovers(name, None).await {
            tracing::warn!(snapshot = name, error = %e, "leftovers of the upload not removed");
        }
        made
    }

    /// Gives the upload started during the copy up, for `why`.
    async fn start_again(&self, name: &str, e: &Early, why: &str) {
        tracing::info!(
            target = self.path,
            snapshot = name,
            "the upload started during the copy is started again: {why}"
        );
        self.give_up(e).await;
    }

    /// Steps 2–7 on a claim of the plan's size, or of `size`.
    #[allow(clippy::too_many_arguments)]
    async fn make(
        &self,
        name: &str,
        job: &str,
        p: &Preflight,
        plan: tarball::Plan,
        size: Option<u64>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let size = size.unwrap_or_else(|| claim_size(&plan, &self.settings));
        let rname = resource_name(name, job);
        // 2, 3; the pod's deadline allows 5 MiB/s after ten minutes to start
        let deadline = Duration::from_secs(600 + plan.total / (5 << 20));
        self.claim_and_pod(&rname, name, job, p, size, deadline, cancel)
            .await?;
        // 4. the data
        let start = Instant::now();
        let as_root = self.note_owners(name, p, progress);
        self.transfer(&rname, plan, !as_root, progress, cancel, deadline)
            .await?;
        self.arrived(name, start, progress);
        self.snapshot_from(name, job, &rname, p, progress, cancel)
            .await
    }

    /// Steps 2 and 3: claim `rname` of `size` bytes, and the pod that mounts it, running, for
    /// at most `deadline`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim_and_pod(
        &self,
        rname: &str,
        name: &str,
        job: &str,
        p: &Preflight,
        size: u64,
        deadline: Duration,
        cancel: &AtomicBool,
    ) -> Result<(), BackendError> {
        let pp = PostParams::default();
        let claim: PersistentVolumeClaim = to(self.claim_spec(rname, name, job, p, size), "claim")?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", rname);
        retry(|| claims.create(&pp, &claim), &what).await?;
        let pod: Pod = to(
            self.pod_spec(rname, name, job, p, deadline.as_secs()),
            "pod",
        )?;
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
        Ok(())
    }

    /// Whether the upload pod runs as root; where it does not, the user is told that file
    /// owners are not kept.
    fn note_owners(&self, name: &str, p: &Preflight, progress: &Progress) -> bool {
        let as_root = manifests::as_root(self.settings.pod_uid, p.restricted);
        if !as_root {
            let note = if p.restricted {
                "the namespace enforces the restricted Pod Security level: the upload pod runs as non-root, so file owners are not kept (modes and times are)"
            } else {
                "k8s.pod_uid makes the upload pod run as non-root, so file owners are not kept (modes and times are)"
            };
            tracing::info!(target = self.path, snapshot = name, "{note}");
            *lock(&progress.note) = Some(note.to_string());
        }
        as_root
    }

    /// Logs that the stream, of `progress`'s total, arrived and was checked.
    fn arrived(&self, name: &str, start: Instant, progress: &Progress) {
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!(
            target = self.path,
            snapshot = name,
            bytes = progress.total.load(Ordering::Relaxed),
            seconds,
            "data arrived and checked"
        );
    }

    /// Steps 5–7: the pod goes, the snapshot of claim `rname` is asked for and waited for.
    async fn snapshot_from(
        &self,
        name: &str,
        job: &str,
        rname: &str,
        p: &Preflight,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        // 5. the pod goes, so the volume is unmounted whole before it is snapshotted
        self.delete_pod(rname).await?;
        // 6. the snapshot
        let pp = PostParams::default();
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
        let what = self.what("watch", "pod", rname);
        let mut watch = Watch::new(self.pods(), rname, POD_LIMIT, what).cancelled_by(cancel);
        loop {
            let pod = watch.next().await.map_err(|stop| {
                stop.error(|| {
                    format!(
                        "upload pod {rname} did not start in {POD_LIMIT:?} (is the claim bound?)"
                    )
                })
            })?;
            let Some(p) = pod else {
                return Err(BackendError::Other(format!(
                    "upload pod {rname} was deleted"
                )));
            };
            if is_running(&p) {
                return Ok(());
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Failed" | "Succeeded")) {
                let why = p.status.as_ref().and_then(|s| s.message.clone());
                return Err(BackendError::Other(format!(
                    "upload pod {rname} ended before the data arrived: {}",
                    why.unwrap_or_else(|| phase.unwrap_or_default().to_string())
                )));
            }
        }
    }

    /// Deletes pod `rname` and waits until it is gone.
    pub(super) async fn delete_pod(&self, rname: &str) -> Result<(), BackendError> {
        let pods = self.pods();
        self.remove(&pods, "pod", rname).await?;
        let what = self.what("watch", "pod", rname);
        let mut watch = Watch::new(pods, rname, POD_LIMIT, what);
        let still = || format!("upload pod {rname} still terminating after {POD_LIMIT:?}");
        while watch
            .next()
            .await
            .map_err(|stop| stop.error(still))?
            .is_some()
        {}
        Ok(())
    }
}
