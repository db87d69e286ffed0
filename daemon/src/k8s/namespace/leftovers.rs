//! What runs of an upload leave behind: removed when upload NAME runs again, and swept from
//! the namespace by cleanup after a crash (DESIGN §6: everything made carries the labels that
//! find it).

use std::collections::HashSet;

use kube::api::{DynamicObject, ListParams};
use snapfs_fs::backend::{BackendError, SnapshotState};

use super::{KubeTarget, snapshot_info};
use crate::k8s::errors::retry;
use crate::k8s::labels::{JOB, MANAGED_BY, ROLE, UPLOAD, job_label, label, made_for, name_digest};
use crate::powers::InUse;

impl KubeTarget {
    /// Removes pods and claims that runs of upload `name` left (not the snapshot), but for
    /// the pod and claim named `keep`.
    pub(super) async fn remove_leftovers(
        &self,
        name: &str,
        keep: Option<&str>,
    ) -> Result<(), BackendError> {
        let selector = format!(
            "{MANAGED_BY}=snapfs,{ROLE}=upload,{UPLOAD}={}",
            name_digest(name)
        );
        let lp = ListParams::default().labels(&selector);
        let pods = self.pods();
        let what = format!("list pods in namespace {}", self.ns);
        for p in retry(|| pods.list(&lp), &what).await?.items {
            if made_for(&p.metadata, name)
                && let Some(n) = p.metadata.name.as_deref()
                && keep != Some(n)
            {
                self.delete_pod(n).await?;
            }
        }
        let claims = self.claims();
        let what = format!("list persistentvolumeclaims in namespace {}", self.ns);
        for c in retry(|| claims.list(&lp), &what).await?.items {
            if made_for(&c.metadata, name)
                && let Some(n) = c.metadata.name.as_deref()
                && keep != Some(n)
            {
                self.remove(&claims, "persistentvolumeclaim", n).await?;
            }
        }
        Ok(())
    }

    /// Removes pods and claims of snapfs in this namespace that no running job or reader
    /// uses: what a crash left. Returns how many went (or would go, on a dry run).
    ///
    /// `running` (the ids of the uploads running now) is asked after the listing: an upload
    /// that starts between the two is then either in the answer or made nothing listed.
    pub async fn collect_leftovers(
        &self,
        in_use: impl FnOnce() -> InUse,
        dry_run: bool,
    ) -> Result<u64, BackendError> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
        let pods = self.pods();
        let what = format!("list pods in namespace {}", self.ns);
        let listed_pods = retry(|| pods.list(&lp), &what).await?.items;
        let claims = self.claims();
        let what = format!("list persistentvolumeclaims in namespace {}", self.ns);
        let listed_claims = retry(|| claims.list(&lp), &what).await?.items;
        let snapshots = match self.snapshots_matching(&lp).await {
            Ok(snaps) => snaps,
            Err(BackendError::Unsupported(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        // A reader is known before its pod and claim are made, so asking now is as safe.
        let readers = self.readers.in_use(&self.ns);
        let jobs = in_use();
        let running: HashSet<String> = jobs.running.iter().map(|id| job_label(id)).collect();
        // A snapshot of ours that is not ready and that no job will come back for (its staged
        // upload was removed while the daemon was down) goes, and with it the claim it holds.
        let orphans: Vec<&str> = snapshots
            .iter()
            .filter(|s| pending_source(s).is_some())
            .filter(|s| !label(&s.metadata, JOB).is_some_and(|j| running.contains(j)))
            .filter_map(|s| s.metadata.name.as_deref())
            .filter(|name| !jobs.pending.contains(*name))
            .collect();
        let mut n = 0;
        let api = self.snapshots_api();
        for name in &orphans {
            tracing::info!(
                snapshot = name,
                namespace = self.ns,
                dry_run,
                "VolumeSnapshot of an abandoned upload"
            );
            if !dry_run {
                self.remove(&api, "volumesnapshot", name).await?;
            }
            n += 1;
        }
        // A claim that a snapshot of ours is still being taken from stays: without it the
        // snapshot would never be ready, and the upload that is resumed waits for it.
        let sources: HashSet<String> = snapshots
            .iter()
            .filter(|s| {
                !s.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| orphans.contains(&n))
            })
            .filter_map(pending_source)
            .collect();
        let leftover = |meta: &kube::core::ObjectMeta| match label(meta, ROLE) {
            Some("upload") => !label(meta, JOB).is_some_and(|j| running.contains(j)),
            Some("reader") => !meta.name.as_ref().is_some_and(|n| readers.contains(n)),
            _ => false,
        };
        for name in listed_pods
            .iter()
            .filter(|p| leftover(&p.metadata))
            .filter_map(|p| p.metadata.name.as_deref())
        {
            tracing::info!(pod = name, namespace = self.ns, dry_run, "leftover pod");
            if !dry_run {
                self.remove(&pods, "pod", name).await?;
            }
            n += 1;
        }
        for name in listed_claims
            .iter()
            .filter(|c| leftover(&c.metadata))
            .filter_map(|c| c.metadata.name.as_deref())
            .filter(|name| !sources.contains(*name))
        {
            tracing::info!(claim = name, namespace = self.ns, dry_run, "leftover claim");
            if !dry_run {
                self.remove(&claims, "persistentvolumeclaim", name).await?;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The claim a VolumeSnapshot is being taken from, while it is not ready yet.
fn pending_source(o: &DynamicObject) -> Option<String> {
    let state = snapshot_info(o)?.state;
    if matches!(state, SnapshotState::Ready | SnapshotState::Deleting) {
        return None;
    }
    let claim = o.data.pointer("/spec/source/persistentVolumeClaimName")?;
    claim.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn a_snapshot_holds_its_source_claim_until_it_is_ready() {
        let obj = |status: Value, deleting: bool| -> DynamicObject {
            let mut meta = json!({"name": "s", "uid": "u"});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": meta, "status": status,
                "spec": {"source": {"persistentVolumeClaimName": "snapfs-up-s-1"}}
            }))
            .unwrap()
        };
        let held = Some("snapfs-up-s-1".to_string());
        assert_eq!(pending_source(&obj(json!({}), false)), held);
        assert_eq!(
            pending_source(&obj(json!({"error": {"message": "retrying"}}), false)),
            held
        );
        assert_eq!(
            pending_source(&obj(json!({"readyToUse": true}), false)),
            None
        );
        assert_eq!(pending_source(&obj(json!({}), true)), None);
    }
}
