//! Cleanup (DESIGN §8): snapshots past their expiry or their target's retention are deleted,
//! and packs no snapshot lists are collected, on a schedule and when `snapfs gc` asks. What goes
//! is decided by the pure `plan`; this module carries it out.

mod plan;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use snapfs_control::wire::{GcDeletion, GcError, GcReason, GcReport};
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};

use crate::cloud::CloudBackend;
use crate::config::Retention;
use crate::jobs::Jobs;
use crate::k8s::{InUse, Kube, KubeTarget};
use crate::target::TargetBackend;
use plan::plan;

type OnDeleted = Box<dyn Fn(usize, &str) + Send + Sync>;

pub struct Lifecycle {
    jobs: Arc<Jobs>,
    /// Per configured target, in the order of `jobs.backends()`; a Kubernetes namespace has
    /// its context's.
    retention: Vec<Retention>,
    /// Where namespaces with snapfs's objects are found.
    kube: Arc<Kube>,
    /// Packs no snapshot lists are left alone until their upload has been idle this long.
    orphan_grace: Duration,
    /// Told of every snapshot deleted, so the mount stops showing it at once.
    on_deleted: OnDeleted,
    /// Two cleanups at once would race to delete the same objects and report each other's
    /// work; the second waits for the first. Held across store calls on purpose, and only
    /// cleanups take it.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Lifecycle {
    pub fn new(
        jobs: Arc<Jobs>,
        retention: Vec<Retention>,
        kube: Arc<Kube>,
        orphan_grace: Duration,
        on_deleted: impl Fn(usize, &str) + Send + Sync + 'static,
    ) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            jobs,
            retention,
            kube,
            orphan_grace,
            on_deleted: Box::new(on_deleted),
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// Cleans up target `only` (an index into the job engine's backends), or every target. A
    /// target that fails does not stop the others; its error is in the report.
    pub async fn collect(&self, only: Option<usize>, dry_run: bool) -> GcReport {
        let _turn = self.one_at_a_time.lock().await;
        let mut report = GcReport {
            dry_run,
            deleted: Vec::new(),
            orphan_packs: 0,
            orphan_bytes: 0,
            leftovers: 0,
            errors: Vec::new(),
        };
        if only.is_none() {
            for path in self.kube.namespaces_in_use().await {
                self.jobs.target_index(&path);
            }
        }
        for (t, backend) in self.jobs.backends().iter().enumerate() {
            if only.is_some_and(|o| o != t) {
                continue;
            }
            let done = match backend {
                TargetBackend::Cloud(b) => self.collect_target(t, b, dry_run, &mut report).await,
                TargetBackend::Kube(k) => self.collect_namespace(t, k, dry_run, &mut report).await,
                // A HiveMQ broker removes its backups itself.
                TargetBackend::HiveMq(_) => continue,
            };
            if let Err(e) = done {
                tracing::warn!(target = backend.path(), error = %e, "cleanup incomplete");
                report.errors.push(GcError {
                    target: backend.path().to_string(),
                    message: e.to_string(),
                });
            }
        }
        report
    }

    /// Deletes a namespace's expired and retired VolumeSnapshots made by snapfs, and claims and
    /// pods that no running upload or reader uses.
    async fn collect_namespace(
        &self,
        t: usize,
        k: &Arc<KubeTarget>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), BackendError> {
        let snapshots = k.own_snapshots().await?;
        let backend = TargetBackend::Kube(k.clone());
        self.delete_planned(t, &backend, &snapshots, &k.retention, dry_run, report)
            .await?;
        report.leftovers += k
            .collect_leftovers(
                || InUse {
                    running: self.jobs.running_uploads(t),
                    pending: self.jobs.pending_names(t),
                },
                dry_run,
            )
            .await?;
        Ok(())
    }

    /// Deletes what the plan says goes; the first failure is returned after the rest is tried.
    async fn delete_planned(
        &self,
        t: usize,
        backend: &TargetBackend,
        snapshots: &[SnapshotInfo],
        retention: &Retention,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), BackendError> {
        let mut first_error = None;
        for d in plan(snapshots, Utc::now(), retention) {
            if !dry_run {
                match backend.delete(&d.name).await {
                    Ok(()) => {}
                    // Deleted by someone else since the listing: not ours to report.
                    Err(BackendError::NotFound(_)) => continue,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
                (self.on_deleted)(t, &d.name);
                tracing::info!(target = backend.path(), snapshot = d.name, reason = %describe(&d.reason), "snapshot deleted");
            }
            report.deleted.push(GcDeletion {
                target: backend.path().to_string(),
                name: d.name,
                created: d.created,
                reason: d.reason,
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn collect_target(
        &self,
        t: usize,
        backend: &Arc<CloudBackend>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), BackendError> {
        let retention = self.retention.get(t).copied().unwrap_or_default();
        let snapshots = backend.list_snapshots().await?;
        let mut first_error = self
            .delete_planned(
                t,
                &TargetBackend::Cloud(backend.clone()),
                &snapshots,
                &retention,
                dry_run,
                report,
            )
            .await
            .err();
        let running = self.jobs.running_uploads(t);
        let (mut packs, mut bytes) = (0, 0);
        for p in backend.orphan_packs(self.orphan_grace, &running).await? {
            if !dry_run && let Err(e) = backend.delete_pack(&p.key).await {
                first_error.get_or_insert(e);
                continue;
            }
            packs += 1;
            bytes += p.size;
        }
        // What writes killed half-way left in a local folder remote counts with them.
        for (file, size) in backend.partial_writes(self.orphan_grace) {
            if !dry_run && let Err(e) = tokio::fs::remove_file(&file).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let msg = format!("{}: {e}", file.display());
                    first_error.get_or_insert(BackendError::Other(msg));
                }
                continue;
            }
            // Its upload's folder goes too once empty, as the store removes emptied folders.
            if !dry_run && let Some(parent) = file.parent() {
                let _ = tokio::fs::remove_dir(parent).await;
            }
            packs += 1;
            bytes += size;
        }
        if packs > 0 && !dry_run {
            tracing::info!(
                target = backend.path(),
                packs,
                bytes,
                "orphan packs deleted"
            );
        }
        report.orphan_packs += packs;
        report.orphan_bytes += bytes;
        first_error.map_or(Ok(()), Err)
    }

    /// Cleans up every target now and then every `interval`, forever. Running at start too
    /// matters for mounts that rarely stay up a whole interval (a laptop).
    pub async fn run_every(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let report = self.collect(None, false).await;
            tracing::debug!(
                deleted = report.deleted.len(),
                orphan_packs = report.orphan_packs,
                errors = report.errors.len(),
                "scheduled cleanup done"
            );
        }
    }
}

/// The reason in words, for logs.
fn describe(reason: &GcReason) -> String {
    match reason {
        GcReason::Expired { expires } => format!("expired {}", expires.to_rfc3339()),
        GcReason::MaxDays { max_days } => format!("older than {max_days} days"),
    }
}
