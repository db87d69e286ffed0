//! A namespace as an upload target (DESIGN §6): its VolumeSnapshots listed and deleted here;
//! making one (`upload`), the checks before (`preflight`), the wait for it (`readiness`), what
//! crashed runs leave (`leftovers`) and restoring one into a claim (`restore`) in the rooms
//! below.

mod early;
mod leftovers;
mod manifests;
mod preflight;
mod readiness;
mod restore;
mod transfer;
mod upload;

pub(super) use manifests::{restored_claim_spec, security};
pub(super) use preflight::enforces_restricted;

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use snapfs_control::units::parse_quantity;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo, SnapshotState};
use snapfs_fs::tree::SnapshotTree;

use super::cluster::{EXPIRES_ANNOTATION, snapshot_resource};
use super::errors::{no_snapshot_api, retry};
use super::labels::annotation;
use super::metered::Counters;
use super::reader::Readers;
use crate::config::{K8sSettings, Retention, is_dns_subdomain};
use crate::powers::Progress;
use preflight::Preflight;
use snapfs_control::wire::TargetMetrics;

/// A namespace of a context, as the job engine and the control socket use it.
pub struct KubeTarget {
    path: String,
    client: Client,
    ns: String,
    settings: Arc<K8sSettings>,
    ttl: Option<Duration>,
    pub retention: Retention,
    max_snapshots: Option<u64>,
    readers: Arc<Readers>,
    /// What the context's client asked in this namespace.
    counters: Arc<Counters>,
    preflight: Mutex<Option<(Instant, Preflight)>>,
    /// Uploads started while their files were copied (`early`).
    early: early::EarlyUploads,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JSON manifest as the typed object it describes.
fn to<T: DeserializeOwned>(v: Value, what: &str) -> Result<T, BackendError> {
    serde_json::from_value(v).map_err(|e| BackendError::Other(format!("{what}: {e}")))
}

impl KubeTarget {
    pub fn new(
        path: String,
        client: Client,
        ns: String,
        settings: Arc<K8sSettings>,
        context: &crate::config::KubeContext,
        readers: Arc<Readers>,
        counters: Arc<Counters>,
    ) -> KubeTarget {
        KubeTarget {
            path,
            client,
            ns,
            settings,
            ttl: context.ttl,
            retention: context.retention,
            max_snapshots: context.max_snapshots,
            readers,
            counters,
            preflight: Mutex::new(None),
            early: early::EarlyUploads::default(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the context's client asked and moved in this namespace.
    pub fn metrics(&self) -> TargetMetrics {
        self.counters.metrics(&self.path)
    }

    pub(super) fn snapshots_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &snapshot_resource())
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(super) fn what(&self, verb: &str, resource: &str, name: &str) -> String {
        format!("{verb} {resource} {name} in namespace {}", self.ns)
    }

    /// Every VolumeSnapshot of the namespace, in whatever state.
    async fn all_snapshots(&self) -> Result<Vec<DynamicObject>, BackendError> {
        self.snapshots_matching(&ListParams::default()).await
    }

    pub(super) async fn snapshots_matching(
        &self,
        lp: &ListParams,
    ) -> Result<Vec<DynamicObject>, BackendError> {
        let api = self.snapshots_api();
        let what = format!("list volumesnapshots in namespace {}", self.ns);
        match retry(|| api.list(lp), &what).await {
            Ok(list) => Ok(list.items),
            Err(BackendError::NotFound(_)) => Err(no_snapshot_api()),
            Err(e) => Err(e),
        }
    }

    async fn get_snapshot(&self, name: &str) -> Result<Option<DynamicObject>, BackendError> {
        let api = self.snapshots_api();
        let what = self.what("get", "volumesnapshot", name);
        match retry(|| api.get_opt(name), &what).await {
            Err(BackendError::NotFound(_)) => Err(no_snapshot_api()),
            other => other,
        }
    }

    /// Whether upload `name` may start: a name a VolumeSnapshot can have, not taken, under the
    /// limit, and a cluster where it can be made (DESIGN §6 preflight).
    pub async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        self.check_name(name)?;
        // One GET, unless the limit needs the count.
        let taken = match self.max_snapshots {
            None => self.get_snapshot(name).await?.is_some(),
            Some(max) => {
                let all = self.all_snapshots().await?;
                if all.len() as u64 >= max {
                    return Err(BackendError::Quota(max));
                }
                all.iter().any(|s| s.metadata.name.as_deref() == Some(name))
            }
        };
        if taken {
            return Err(BackendError::AlreadyExists(format!(
                "VolumeSnapshot {name} in namespace {}",
                self.ns
            )));
        }
        self.preflight(false).await.map(|_| ())
    }

    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        match self.all_snapshots().await {
            Ok(all) => Ok(all.iter().filter_map(snapshot_info).collect()),
            // A cluster without the API has no snapshots; uploads say why.
            Err(BackendError::Unsupported(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `name` of `resource` through `api`; one that is gone already is as good.
    async fn remove<K>(&self, api: &Api<K>, resource: &str, name: &str) -> Result<(), BackendError>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let what = self.what("delete", resource, name);
        let dp = DeleteParams::default();
        match retry(|| api.delete(name, &dp), &what).await {
            Ok(_) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A VolumeSnapshot in the terms of every target.
pub(super) fn snapshot_info(o: &DynamicObject) -> Option<SnapshotInfo> {
    let name = o.metadata.name.clone()?;
    let status = o.data.get("status");
    let ready = status
        .and_then(|s| s.get("readyToUse"))
        .and_then(Value::as_bool)
        == Some(true);
    let failed = status.and_then(|s| s.pointer("/error/message")).is_some();
    let state = if o.metadata.deletion_timestamp.is_some() {
        SnapshotState::Deleting
    } else if ready {
        SnapshotState::Ready
    } else if failed {
        SnapshotState::Failed
    } else {
        SnapshotState::Creating
    };
    let size = status
        .and_then(|s| s.get("restoreSize"))
        .and_then(|q| match q {
            Value::String(s) => parse_quantity(s).ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .unwrap_or(0);
    let created = status
        .and_then(|s| s.get("creationTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            o.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0))
        })
        .unwrap_or_else(Utc::now);
    let expires = annotation(&o.metadata, EXPIRES_ANNOTATION)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(SnapshotInfo {
        name,
        created,
        state,
        is_file: false,
        size,
        files: 0,
        crc32c: None,
        expires,
        id: o.metadata.uid.clone().unwrap_or_default(),
    })
}

#[async_trait]
impl Backend for KubeTarget {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        KubeTarget::list_snapshots(self).await
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "{name}: a VolumeSnapshot is read through {}/snapshots/",
            self.path
        )))
    }

    async fn read_range(
        &self,
        object: &str,
        _range: std::ops::Range<u64>,
    ) -> Result<Bytes, BackendError> {
        Err(BackendError::Unsupported(format!(
            "{object}: a VolumeSnapshot is read through {}/snapshots/",
            self.path
        )))
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        if is_dns_subdomain(name) {
            Ok(())
        } else {
            Err(BackendError::InvalidName {
                name: name.to_string(),
                reason: "a VolumeSnapshot name is a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_states_follow_the_status() {
        let obj = |status: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "s", "uid": "u"}, "status": status
            }))
            .unwrap()
        };
        let state = |v| snapshot_info(&obj(v)).unwrap().state;
        assert_eq!(state(json!({"readyToUse": false})), SnapshotState::Creating);
        assert_eq!(
            state(json!({"readyToUse": false, "error": {"message": "boom"}})),
            SnapshotState::Failed
        );
        assert_eq!(
            state(json!({"readyToUse": true, "restoreSize": "1Gi"})),
            SnapshotState::Ready
        );
    }
}
