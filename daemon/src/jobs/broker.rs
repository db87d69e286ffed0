//! Jobs a target runs itself (HiveMQ backups and restores): started with one request, then
//! followed until they end. Their state lives in the target, so nothing is recorded on disk:
//! after a restart, `snapfs list` still shows a running backup as creating.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use snapfs_fs::backend::BackendError;
use snapfs_fs::vfs::{JobKind, TargetId, UploadState, UploadStatus};
use tracing::Instrument;

use super::record::Source;
use super::{Job, Jobs, key, lock};
use crate::powers::Power;
use crate::registry::Entry;

/// Waits for a job the target runs; answers its size.
type Following = Pin<Box<dyn Future<Output = Result<u64, BackendError>> + Send>>;

impl Jobs {
    fn entry_or_not_found(&self, target: TargetId) -> Result<Arc<Entry>, BackendError> {
        self.entry(target)
            .ok_or_else(|| BackendError::NotFound(format!("target {target}")))
    }

    /// Has a target that makes its own snapshots start one; the job's snapshot name is the new
    /// snapshot's.
    pub async fn backup(self: &Arc<Self>, target: TargetId) -> Result<UploadStatus, BackendError> {
        let entry = self.entry_or_not_found(target)?;
        let own = entry.need(&entry.powers.own_snapshots, Power::OwnSnapshots)?;
        let name = own.start_snapshot().await?;
        let waited = name.clone();
        let following: Following = Box::pin(async move { own.await_snapshot(&waited).await });
        Ok(self.follow(&entry, name, JobKind::Backup, following))
    }

    /// Starts restoring snapshot `name` inside its target, and follows it.
    pub async fn restore(
        self: &Arc<Self>,
        target: TargetId,
        name: &str,
    ) -> Result<UploadStatus, BackendError> {
        let entry = self.entry_or_not_found(target)?;
        let restores = entry.need(&entry.powers.restores_in_place, Power::RestoresInPlace)?;
        restores.start_restore(name).await?;
        let waited = name.to_string();
        let following: Following = Box::pin(async move { restores.await_restore(&waited).await });
        Ok(self.follow(&entry, name.to_string(), JobKind::Restore, following))
    }

    fn follow(
        self: &Arc<Self>,
        entry: &Entry,
        name: String,
        kind: JobKind,
        following: Following,
    ) -> UploadStatus {
        let target = entry.id();
        let mut job = Job::new(entry.path(), &name, Source::Backend, UploadState::Uploading);
        job.status.kind = kind;
        job.run = self.runs.fetch_add(1, Ordering::Relaxed);
        let (run, status) = (job.run, job.current());
        lock(&self.jobs).insert(key(target, &name), job);
        self.notify();
        let span = tracing::info_span!("job", target = entry.path(), snapshot = %name, run, ?kind);
        let this = self.clone();
        tokio::spawn(
            async move {
                let result = following.await;
                this.ended(target, &name, run, result);
            }
            .instrument(span),
        );
        status
    }

    fn ended(&self, target: TargetId, name: &str, run: u64, result: Result<u64, BackendError>) {
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs.get_mut(&key(target, name)).filter(|j| j.run == run) else {
            return;
        };
        let kind = job.status.kind;
        match result {
            Ok(bytes) => {
                tracing::info!(bytes, "finished");
                job.status.state = UploadState::Done;
                job.status.bytes_done = bytes;
                job.status.bytes_total = bytes;
                if kind == JobKind::Backup {
                    self.registry.changed(target, name);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed");
                job.status.state = UploadState::Failed;
                job.status.error = Some(e.to_string());
            }
        }
        drop(jobs);
        self.notify();
    }
}
