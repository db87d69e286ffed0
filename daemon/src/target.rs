//! What the daemon can do with a configured target beyond what the VFS reads through the
//! `Backend` trait: make and follow snapshots, delete and verify them, count requests. Each kind
//! of target has its own powers (a bucket takes uploads of local data; a HiveMQ cluster makes
//! its own backups and restores them, and deletes nothing), so the job engine, the control
//! socket and cleanup ask for the kind they need rather than every backend faking the rest.

use std::sync::Arc;

use snapfs_control::wire::TargetMetrics;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};

use crate::cloud::CloudBackend;
use crate::hivemq::HiveMqBackend;
use crate::k8s::KubeTarget;

/// One target of the mount, indexed like the VFS's targets.
#[derive(Clone)]
pub enum TargetBackend {
    /// A bucket: snapshots come from local data (uploads/, `snapfs snapshot TARGET SOURCE`).
    Cloud(Arc<CloudBackend>),
    /// A HiveMQ cluster: snapshots are backups the broker makes; no source, no uploads/.
    HiveMq(Arc<HiveMqBackend>),
    /// A Kubernetes namespace: snapshots are VolumeSnapshots made from local data.
    Kube(Arc<KubeTarget>),
}

impl TargetBackend {
    /// The target's path in the mount (`cloud/local`, `hivemq/broker`).
    pub fn path(&self) -> &str {
        match self {
            TargetBackend::Cloud(b) => b.path(),
            TargetBackend::HiveMq(b) => b.path(),
            TargetBackend::Kube(b) => b.path(),
        }
    }

    /// The target as the VFS reads it.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            TargetBackend::Cloud(b) => b.clone(),
            TargetBackend::HiveMq(b) => b.clone(),
            TargetBackend::Kube(b) => b.clone(),
        }
    }

    pub fn cloud(&self) -> Option<&Arc<CloudBackend>> {
        match self {
            TargetBackend::Cloud(b) => Some(b),
            _ => None,
        }
    }

    pub fn hivemq(&self) -> Option<&Arc<HiveMqBackend>> {
        match self {
            TargetBackend::HiveMq(b) => Some(b),
            _ => None,
        }
    }

    pub fn kube(&self) -> Option<&Arc<KubeTarget>> {
        match self {
            TargetBackend::Kube(b) => Some(b),
            _ => None,
        }
    }

    /// Whether snapshots here are made from local data (uploads/, `snapfs snapshot SOURCE`).
    pub fn takes_local_data(&self) -> bool {
        !matches!(self, TargetBackend::HiveMq(_))
    }

    pub fn metrics(&self) -> TargetMetrics {
        match self {
            TargetBackend::Cloud(b) => b.metrics(),
            TargetBackend::HiveMq(b) => b.metrics(),
            TargetBackend::Kube(b) => b.metrics(),
        }
    }

    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        match self {
            TargetBackend::Cloud(b) => b.list_snapshots().await,
            TargetBackend::HiveMq(b) => b.list_snapshots().await,
            TargetBackend::Kube(b) => b.list_snapshots().await,
        }
    }

    /// Whether a snapshot `name` may be made from local data here.
    pub async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        match self {
            TargetBackend::Cloud(b) => b.check_new(name).await,
            TargetBackend::HiveMq(b) => b.check_name(name),
            TargetBackend::Kube(b) => b.check_new(name).await,
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackendError> {
        match self {
            TargetBackend::Cloud(b) => b.delete(name).await,
            TargetBackend::HiveMq(b) => Err(BackendError::Unsupported(format!(
                "{}: the HiveMQ REST API cannot delete backups; the broker removes them itself",
                b.path()
            ))),
            TargetBackend::Kube(b) => b.delete(name).await,
        }
    }

    /// Reads every byte of a snapshot from where it lives and checks it: against its CRC32C
    /// for a bucket, for its length only for a HiveMQ backup (HiveMQ gives no checksum).
    pub async fn verify(
        &self,
        name: &str,
    ) -> Result<(u64, u64, Vec<(String, String)>), BackendError> {
        match self {
            TargetBackend::Cloud(b) => b.verify(name).await,
            TargetBackend::HiveMq(b) => b.verify(name).await,
            TargetBackend::Kube(b) => Err(BackendError::Unsupported(format!(
                "{}: a VolumeSnapshot carries no checksums; uploads are checked as they arrive",
                b.path()
            ))),
        }
    }
}
