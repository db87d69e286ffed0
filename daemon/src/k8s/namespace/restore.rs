//! Restore (DESIGN §6): a new claim from a ready VolumeSnapshot, at least as big as it.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::PostParams;
use serde_json::json;
use snapfs_fs::backend::{BackendError, SnapshotState};

use super::manifests::restored_claim_spec;
use super::{KubeTarget, snapshot_info, to};
use crate::config::is_dns_subdomain;
use crate::k8s::errors::retry;
use crate::k8s::labels::SNAPSHOT;

impl KubeTarget {
    /// Creates claim `claim` from ready VolumeSnapshot `name`, at least as big as it.
    pub async fn restore_to_claim(
        &self,
        name: &str,
        claim: &str,
        size: Option<u64>,
    ) -> Result<String, BackendError> {
        if !is_dns_subdomain(claim) {
            return Err(BackendError::InvalidName {
                name: claim.to_string(),
                reason: "a claim name is a DNS-1123 subdomain".into(),
            });
        }
        let snap = self
            .get_snapshot(name)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("VolumeSnapshot {name}")))?;
        let info = snapshot_info(&snap)
            .filter(|i| i.state == SnapshotState::Ready)
            .ok_or_else(|| BackendError::Other(format!("VolumeSnapshot {name} is not ready")))?;
        let size = size.unwrap_or(0).max(info.size).max(1 << 20);
        let spec = restored_claim_spec(&self.settings, name, size);
        let pvc: PersistentVolumeClaim = to(
            json!({"metadata": {"name": claim, "annotations": {SNAPSHOT: name}}, "spec": spec}),
            "claim",
        )?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", claim);
        let pp = PostParams::default();
        retry(|| claims.create(&pp, &pvc), &what).await?;
        Ok(format!(
            "PersistentVolumeClaim {claim} in namespace {} ({size} bytes) from VolumeSnapshot {name}",
            self.ns
        ))
    }
}
