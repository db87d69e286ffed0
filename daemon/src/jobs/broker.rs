//! Jobs a target runs itself (HiveMQ backups and restores): started with one request, then
//! followed until they end. The broker keeps their state; a record on disk says only that
//! one is being followed, so that a restarted daemon follows it again and `snapfs status`
//! shows it to the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use snapfs_fs::backend::BackendError;
use snapfs_fs::vfs::{JobKind, TargetId, UploadState, UploadStatus};
use tracing::Instrument;

use super::record::{Record, Source};
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
        let (status, record) = self.follow(&entry, name, JobKind::Backup)?;
        self.persist(record).await;
        Ok(status)
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
        let (status, record) = self.follow(&entry, name.to_string(), JobKind::Restore)?;
        self.persist(record).await;
        Ok(status)
    }

    /// Follows again the backups and restores a previous run of the daemon was following.
    pub(super) fn recover_followed(self: &Arc<Self>, entry: &Entry) {
        if entry.powers.own_snapshots.is_none() && entry.powers.restores_in_place.is_none() {
            return;
        }
        for (name, p) in self.store.load_all(entry.path()) {
            if p.source != Source::Backend || p.status.state.is_final() {
                continue;
            }
            tracing::info!(target = entry.path(), snapshot = name, kind = ?p.status.kind, "following again");
            if let Err(e) = self.follow(entry, name.clone(), p.status.kind) {
                tracing::warn!(target = entry.path(), snapshot = name, error = %e, "cannot follow again");
            }
        }
    }

    /// Records and follows a job the target runs; answers its status and the record to write.
    fn follow(
        self: &Arc<Self>,
        entry: &Entry,
        name: String,
        kind: JobKind,
    ) -> Result<(UploadStatus, Option<Record>), BackendError> {
        let following: Following = match kind {
            JobKind::Restore => {
                let restores =
                    entry.need(&entry.powers.restores_in_place, Power::RestoresInPlace)?;
                let waited = name.clone();
                Box::pin(async move { restores.await_restore(&waited).await })
            }
            _ => {
                let own = entry.need(&entry.powers.own_snapshots, Power::OwnSnapshots)?;
                let waited = name.clone();
                Box::pin(async move { own.await_snapshot(&waited).await })
            }
        };
        let target = entry.id();
        let mut job = Job::new(entry.path(), &name, Source::Backend, UploadState::Uploading);
        job.status.kind = kind;
        job.run = self.runs.fetch_add(1, Ordering::Relaxed);
        let (run, status) = (job.run, job.current());
        let record = self.record(target, &name, &job, true);
        lock(&self.jobs).insert(key(target, &name), job);
        self.notify();
        let span = tracing::info_span!("job", target = entry.path(), snapshot = %name, run, ?kind);
        let this = self.clone();
        tokio::spawn(
            async move {
                let result = following.await;
                this.ended(target, &name, run, result).await;
            }
            .instrument(span),
        );
        Ok((status, record))
    }

    async fn ended(
        &self,
        target: TargetId,
        name: &str,
        run: u64,
        result: Result<u64, BackendError>,
    ) {
        if let Some(record) = self.end(target, name, run, result) {
            self.persist(Some(record)).await;
        }
        self.notify();
    }

    /// Sets the job's final state; answers the record to write, none for a job replaced by a
    /// later run.
    fn end(
        &self,
        target: TargetId,
        name: &str,
        run: u64,
        result: Result<u64, BackendError>,
    ) -> Option<Record> {
        let path = self.path_of(target);
        let mut jobs = lock(&self.jobs);
        let job = jobs.get_mut(&key(target, name)).filter(|j| j.run == run)?;
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
        // Followed to its end: nothing is left to follow after a restart.
        Some(self.store.record(&path, name, None))
    }
}
