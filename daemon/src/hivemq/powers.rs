//! What a HiveMQ cluster can do: make its own backups and restore them in place. It deletes
//! nothing (its REST API has no delete) and takes no local data (no upload endpoint).

use std::sync::Arc;

use async_trait::async_trait;
use snapfs_fs::backend::BackendError;

use super::{HiveMqBackend, Operation};
use crate::config::Retention;
use crate::powers::{
    CountsRequests, MakesOwnSnapshots, Power, Powers, Progress, RestoresInPlace, Verifies,
};
use crate::registry::NewTarget;
use snapfs_control::wire::{TargetMetrics, VerifyReport};

impl HiveMqBackend {
    /// The cluster as a target of the mount, cluster `name`.
    pub fn into_target(self: Arc<Self>, name: String, description: String) -> NewTarget {
        NewTarget {
            kind: "hivemq",
            name,
            description,
            backend: self.clone(),
            raw: None,
            powers: Powers {
                own_snapshots: Some(self.clone()),
                restores_in_place: Some(self.clone()),
                verifies: Some(self.clone()),
                counts: Some(self),
                reasons: vec![(
                    Power::Deletes,
                    "cannot delete backups: the HiveMQ REST API has no delete; the broker removes them itself",
                )],
                ..Powers::default()
            },
            // The broker keeps and removes its backups itself.
            retention: Retention::default(),
        }
    }
}

#[async_trait]
impl MakesOwnSnapshots for HiveMqBackend {
    async fn start_snapshot(&self) -> Result<String, BackendError> {
        self.start_backup().await
    }

    async fn await_snapshot(&self, name: &str) -> Result<u64, BackendError> {
        self.follow(name, Operation::Backup).await
    }
}

#[async_trait]
impl RestoresInPlace for HiveMqBackend {
    async fn start_restore(&self, name: &str) -> Result<(), BackendError> {
        HiveMqBackend::start_restore(self, name).await
    }

    async fn await_restore(&self, name: &str) -> Result<u64, BackendError> {
        self.follow(name, Operation::Restore).await
    }
}

/// The whole backup file is read from the broker and its length checked: HiveMQ gives no
/// checksum to check it against.
#[async_trait]
impl Verifies for HiveMqBackend {
    async fn verify(&self, name: &str, progress: &Progress) -> Result<VerifyReport, BackendError> {
        HiveMqBackend::verify(self, name, progress).await
    }
}

impl CountsRequests for HiveMqBackend {
    fn metrics(&self) -> TargetMetrics {
        HiveMqBackend::metrics(self)
    }
}
