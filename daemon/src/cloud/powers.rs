//! What a bucket can do: take local data, delete and verify its snapshots, and collect the
//! packs that interrupted uploads left.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};

use super::CloudBackend;
use crate::config::Retention;
use crate::powers::{
    CountsRequests, Deletes, HasLeftovers, InUse, Leftovers, Powers, Run, TakesLocalData, Verifies,
};
use crate::registry::NewTarget;
use snapfs_control::wire::{TargetMetrics, VerifyReport};

impl CloudBackend {
    /// The bucket as a target of the mount, remote `name`.
    pub fn into_target(
        self: Arc<Self>,
        name: String,
        description: String,
        retention: Retention,
    ) -> NewTarget {
        NewTarget {
            kind: "cloud",
            name,
            description,
            backend: self.clone(),
            raw: Some(self.clone()),
            powers: Powers {
                local_data: Some(self.clone()),
                deletes: Some(self.clone()),
                verifies: Some(self.clone()),
                leftovers: Some(self.clone()),
                counts: Some(self),
                ..Powers::default()
            },
            retention,
        }
    }
}

#[async_trait]
impl TakesLocalData for CloudBackend {
    async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        CloudBackend::check_new(self, name).await
    }

    async fn commit(
        self: Arc<Self>,
        name: &str,
        source: &Path,
        run: &Run<'_>,
    ) -> Result<SnapshotInfo, BackendError> {
        CloudBackend::commit(&self, name, source, run.id, run.progress, run.cancel).await
    }

    /// An interrupted upload's packs are removed and it starts over.
    async fn abandon(&self, id: &str) -> Result<(), BackendError> {
        self.delete_upload(id).await
    }
}

#[async_trait]
impl Deletes for CloudBackend {
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.list_snapshots().await
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        CloudBackend::delete(self, name).await
    }
}

#[async_trait]
impl Verifies for CloudBackend {
    async fn verify(&self, name: &str) -> Result<VerifyReport, BackendError> {
        CloudBackend::verify(self, name).await
    }
}

#[async_trait]
impl HasLeftovers for CloudBackend {
    /// Packs no snapshot lists whose upload is not running and has been idle for `grace`, and
    /// what writes killed half-way left in a local folder remote.
    async fn collect_leftovers(
        &self,
        in_use: &(dyn Fn() -> InUse + Send + Sync),
        grace: Duration,
        dry_run: bool,
    ) -> Result<Leftovers, BackendError> {
        let running = in_use().running;
        let mut done = Leftovers::default();
        let mut first_error = None;
        for p in self.orphan_packs(grace, &running).await? {
            if !dry_run && let Err(e) = self.delete_pack(&p.key).await {
                first_error.get_or_insert(e);
                continue;
            }
            done.packs += 1;
            done.bytes += p.size;
        }
        for (file, size) in self.partial_writes(grace) {
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
            done.packs += 1;
            done.bytes += size;
        }
        if done.packs > 0 && !dry_run {
            tracing::info!(
                target = self.path(),
                packs = done.packs,
                bytes = done.bytes,
                "orphan packs deleted"
            );
        }
        first_error.map_or(Ok(done), Err)
    }
}

impl CountsRequests for CloudBackend {
    fn metrics(&self) -> TargetMetrics {
        CloudBackend::metrics(self)
    }
}
