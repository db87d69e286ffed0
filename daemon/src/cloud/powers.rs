//! What a bucket can do: take local data, delete and verify its snapshots, and collect the
//! packs that interrupted uploads left.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};

use std::sync::atomic::Ordering;

use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use snapfs_fs::format::{self, EntryKind};

use super::{CloudBackend, lock, store_error};
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
    /// Whether a new snapshot `name` may be made: not taken, not over the limit.
    async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        self.check_name(name)?;
        // Without a limit to count against, one HEAD answers; a listing grows with the remote.
        if self.max_snapshots.is_none() {
            let key = StorePath::from(format::manifest_key(name).as_str());
            return match self.store.head(&key).await {
                Ok(_) => Err(BackendError::AlreadyExists(format!("snapshot {name}"))),
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed(store_error(&format!("snapshot {name}"), e))),
            };
        }
        let existing = self.manifest_objects().await?;
        if existing.iter().any(|(n, _)| n == name) {
            return Err(BackendError::AlreadyExists(format!("snapshot {name}")));
        }
        if let Some(max) = self.max_snapshots
            && existing.len() as u64 >= max
        {
            return Err(BackendError::Quota(max));
        }
        Ok(())
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

    /// Deletes a snapshot: its manifest first, so it vanishes at once, then the packs it
    /// listed that no other snapshot lists. A manifest may name packs of another snapshot
    /// (one written by hand or by another tool can): those stay. Whatever cannot be decided
    /// now is left to cleanup, which collects only packs no manifest lists.
    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let version = self.version_of(name).await?;
        let packs = match self.manifest(name, &version).await {
            Ok(m) => m.packs.clone(),
            Err(e) => {
                tracing::warn!(snapshot = name, error = %e, "unreadable manifest deleted; its packs are left to cleanup");
                Vec::new()
            }
        };
        let key = StorePath::from(format::manifest_key(name).as_str());
        self.store
            .delete(&key)
            .await
            .map_err(|e| self.failed(store_error(&format!("snapshot {name}"), e)))?;
        lock(&self.versions).remove(name);
        if packs.is_empty() {
            return Ok(());
        }
        let referenced = match self.referenced_packs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(snapshot = name, error = %e, "packs left to cleanup");
                return Ok(());
            }
        };
        for pack in packs.iter().filter(|p| !referenced.contains(*p)) {
            if let Err(e) = self.store.delete(&StorePath::from(pack.as_str())).await {
                // The snapshot is gone already; a pack left behind is garbage for cleanup.
                tracing::warn!(pack, error = %e, "could not delete a pack");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Verifies for CloudBackend {
    /// Reads every block of a snapshot straight from the store and checks it.
    async fn verify(&self, name: &str) -> Result<VerifyReport, BackendError> {
        let version = self.version_of(name).await?;
        let manifest = self.manifest(name, &version).await?;
        let (mut files, mut bytes, mut errors) = (0u64, 0u64, Vec::new());
        for e in &manifest.entries {
            let EntryKind::File { blocks, .. } = &e.kind else {
                continue;
            };
            files += 1;
            for b in blocks {
                let Some(pack) = manifest.packs.get(b.pack as usize) else {
                    errors.push((e.path.clone(), "pack index out of range".into()));
                    break;
                };
                let range = b.offset..b.offset + u64::from(b.clen);
                let checked = match self.read_range(pack, range).await {
                    Ok(frame) => format::decode_block(&frame, b).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match checked {
                    Ok(data) => bytes += data.len() as u64,
                    Err(why) => {
                        errors.push((e.path.clone(), why));
                        break;
                    }
                }
            }
        }
        Ok(VerifyReport {
            files,
            bytes,
            errors,
        })
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
        let c = &self.counters;
        TargetMetrics {
            target: self.path.clone(),
            get_requests: c.get_requests.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            put_requests: c.put_requests.load(Ordering::Relaxed),
            put_bytes: c.put_bytes.load(Ordering::Relaxed),
            list_requests: c.list_requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}
