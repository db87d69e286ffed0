//! What a namespace can do: take local data (a VolumeSnapshot made through a claim and a pod),
//! delete the snapshots snapfs made, restore one to a new claim, and collect the pods and
//! claims interrupted uploads left. Namespaces are targets nobody has to configure: the
//! contexts find them by path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{BackendError, SnapshotInfo};

use super::{Kube, KubeTarget};
use crate::powers::{
    CountsRequests, Deletes, HasLeftovers, InUse, Leftovers, Power, Powers, RestoresToClaim, Run,
    TakesLocalData,
};
use crate::registry::{FindsTargets, NewTarget};
use snapfs_control::wire::TargetMetrics;

impl KubeTarget {
    /// The namespace as a target of the mount.
    fn into_target(self: Arc<Self>) -> NewTarget {
        let path = self.path().to_string();
        NewTarget {
            kind: "k8s",
            name: path.strip_prefix("k8s/").unwrap_or(&path).to_string(),
            description: format!("Kubernetes namespace {path}"),
            backend: self.clone(),
            raw: None,
            retention: self.retention,
            powers: Powers {
                local_data: Some(self.clone()),
                restores_to_claim: Some(self.clone()),
                deletes: Some(self.clone()),
                leftovers: Some(self.clone()),
                counts: Some(self),
                reasons: vec![(
                    Power::Verifies,
                    "cannot verify: a VolumeSnapshot carries no checksums; uploads are checked as they arrive",
                )],
                ..Powers::default()
            },
        }
    }
}

#[async_trait]
impl FindsTargets for Kube {
    fn find(&self, path: &str) -> Option<NewTarget> {
        self.target(path).map(|k| Arc::new(k).into_target())
    }

    async fn in_use(&self) -> Vec<String> {
        self.namespaces_in_use().await
    }
}

#[async_trait]
impl TakesLocalData for KubeTarget {
    async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        KubeTarget::check_new(self, name).await
    }

    /// A run that finds what an earlier one of the same name made finishes or removes it, so
    /// nothing needs abandoning after a crash.
    async fn commit(
        self: Arc<Self>,
        name: &str,
        source: &Path,
        run: &Run<'_>,
    ) -> Result<SnapshotInfo, BackendError> {
        KubeTarget::commit(
            &self,
            name,
            source,
            run.id,
            run.size,
            run.progress,
            run.cancel,
        )
        .await
    }
}

#[async_trait]
impl Deletes for KubeTarget {
    /// Only the snapshots snapfs made: another tool's are never touched.
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.own_snapshots().await
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        KubeTarget::delete(self, name).await
    }
}

#[async_trait]
impl RestoresToClaim for KubeTarget {
    async fn restore_to_claim(
        &self,
        name: &str,
        claim: &str,
        size: Option<u64>,
    ) -> Result<String, BackendError> {
        KubeTarget::restore_to_claim(self, name, claim, size).await
    }
}

#[async_trait]
impl HasLeftovers for KubeTarget {
    /// Pods and claims of snapfs that no running upload or reader uses.
    async fn collect_leftovers(
        &self,
        in_use: &(dyn Fn() -> InUse + Send + Sync),
        _grace: Duration,
        dry_run: bool,
    ) -> Result<Leftovers, BackendError> {
        let other = KubeTarget::collect_leftovers(self, in_use, dry_run).await?;
        Ok(Leftovers {
            other,
            ..Leftovers::default()
        })
    }
}

impl CountsRequests for KubeTarget {
    fn metrics(&self) -> TargetMetrics {
        KubeTarget::metrics(self)
    }
}
