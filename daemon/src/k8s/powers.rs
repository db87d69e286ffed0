//! What a namespace can do: take local data (a VolumeSnapshot made through a claim and a pod),
//! delete the snapshots snapfs made, restore one to a new claim, and collect the pods and
//! claims interrupted uploads left. Namespaces are targets nobody has to configure: the
//! contexts find them by path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{BackendError, SnapshotInfo};

use kube::api::{DeleteParams, ListParams};

use super::errors::retry;
use super::labels::MANAGED_BY;
use super::namespace::snapshot_info;
use super::{Kube, KubeTarget};
use crate::powers::{
    CountsRequests, Deletes, HasLeftovers, InUse, Leftovers, Power, Powers, Progress,
    RestoresToClaim, Run, TakesLocalData,
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
                stores_early: Some(self.clone()),
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
            run.early,
            run.progress,
            run.cancel,
        )
        .await
    }
}

#[async_trait]
impl Deletes for KubeTarget {
    /// The VolumeSnapshots snapfs made here, the only ones its cleanup may delete: a
    /// namespace also holds the snapshots of other tools, which keep their own schedules.
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
        match self.snapshots_matching(&lp).await {
            Ok(own) => Ok(own.iter().filter_map(snapshot_info).collect()),
            // A cluster without the API has no snapshots; uploads say why.
            Err(BackendError::Unsupported(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let api = self.snapshots_api();
        let what = self.what("delete", "volumesnapshot", name);
        let dp = DeleteParams::default();
        retry(|| api.delete(name, &dp), &what).await.map(|_| ())
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
        _progress: &Progress,
    ) -> Result<Leftovers, BackendError> {
        let other = KubeTarget::collect_leftovers(self, in_use, dry_run).await?;
        Ok(Leftovers {
            other,
            ..Leftovers::default()
        })
    }
}

impl CountsRequests for KubeTarget {
    /// Requests to the API server are not counted yet: the target is named, with zeros.
    fn metrics(&self) -> TargetMetrics {
        KubeTarget::metrics(self)
    }
}
