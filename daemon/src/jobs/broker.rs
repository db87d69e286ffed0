//! Jobs a backend runs itself (HiveMQ backups and restores): started with one request, then
//! followed by polling until they end. Their state lives in the broker, so nothing is recorded
//! on disk: after a restart, `snapfs list` still shows a running backup as creating.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use snapfs_fs::backend::BackendError;
use snapfs_fs::vfs::{JobKind, UploadState, UploadStatus};

use super::record::Source;
use super::{Job, Jobs, lock};
use crate::hivemq::{HiveMqBackend, Operation};
use crate::target::TargetBackend;

impl Jobs {
    /// Starts a backup of a target that makes its own snapshots; the job's snapshot name is
    /// the new backup's.
    pub async fn backup(self: &Arc<Self>, target: usize) -> Result<UploadStatus, BackendError> {
        let hive = self.broker(target, "snapshots of local data: give a SOURCE")?;
        let name = hive.start_backup().await?;
        Ok(self.follow(target, hive, name, JobKind::Backup))
    }

    /// Starts restoring snapshot `name` inside its target (the broker), and follows it.
    pub async fn restore(
        self: &Arc<Self>,
        target: usize,
        name: &str,
    ) -> Result<UploadStatus, BackendError> {
        let hive = self.broker(target, "restores to a local DEST only: give one")?;
        hive.start_restore(name).await?;
        Ok(self.follow(target, hive, name.to_string(), JobKind::Restore))
    }

    fn broker(&self, target: usize, otherwise: &str) -> Result<Arc<HiveMqBackend>, BackendError> {
        match self.backend(target) {
            Some(TargetBackend::HiveMq(b)) => Ok(b),
            Some(t) => Err(BackendError::Unsupported(format!(
                "{} takes {otherwise}",
                t.path()
            ))),
            None => Err(BackendError::NotFound(format!("target {target}"))),
        }
    }

    fn follow(
        self: &Arc<Self>,
        target: usize,
        hive: Arc<HiveMqBackend>,
        name: String,
        kind: JobKind,
    ) -> UploadStatus {
        let mut job = Job::new(hive.path(), &name, Source::Backend, UploadState::Uploading);
        job.status.kind = kind;
        job.run = self.runs.fetch_add(1, Ordering::Relaxed);
        let (run, status) = (job.run, job.current());
        lock(&self.jobs).insert((target, name.clone()), job);
        self.notify();
        let this = self.clone();
        tokio::spawn(async move {
            let op = match kind {
                JobKind::Restore => Operation::Restore,
                JobKind::Backup | JobKind::Upload => Operation::Backup,
            };
            let result = hive.follow(&name, op).await;
            this.ended(target, &name, run, result);
        });
        status
    }

    fn ended(&self, target: usize, name: &str, run: u64, result: Result<u64, BackendError>) {
        let path = self.path_of(target);
        let path = path.as_str();
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs
            .get_mut(&(target, name.to_string()))
            .filter(|j| j.run == run)
        else {
            return;
        };
        let kind = job.status.kind;
        let made = match result {
            Ok(bytes) => {
                tracing::info!(target = path, snapshot = name, ?kind, bytes, "finished");
                job.status.state = UploadState::Done;
                job.status.bytes_done = bytes;
                job.status.bytes_total = bytes;
                kind == JobKind::Backup
            }
            Err(e) => {
                tracing::warn!(target = path, snapshot = name, ?kind, error = %e, "failed");
                job.status.state = UploadState::Failed;
                job.status.error = Some(e.to_string());
                false
            }
        };
        drop(jobs);
        if made && let Some(f) = self.on_ready.get() {
            f(target, name);
        }
        self.notify();
    }
}
