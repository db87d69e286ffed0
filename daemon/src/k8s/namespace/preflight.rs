//! The checks before an upload (DESIGN §6 preflight): the namespace's Pod Security level, the
//! storage class and the VolumeSnapshotClass for its driver, and dry runs of what an upload
//! makes, so a cluster that cannot take one says so before anything is made.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use snapfs_fs::backend::BackendError;

use super::{KubeTarget, lock, to};
use crate::k8s::cluster::resource;
use crate::k8s::errors::{no_snapshot_api, retry};
use crate::k8s::labels::{annotation, label};

/// How long a preflight's findings are trusted.
const PREFLIGHT_TTL: Duration = Duration::from_secs(30);

/// What the checks before an upload found out.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub storage_class: Option<String>,
    pub snapshot_class: Option<String>,
    /// The namespace enforces the `restricted` Pod Security level.
    pub restricted: bool,
}

impl KubeTarget {
    /// The findings, checked again when `fresh` or when the last ones are too old.
    pub(super) async fn preflight(&self, fresh: bool) -> Result<Preflight, BackendError> {
        if !fresh
            && let Some((at, p)) = &*lock(&self.preflight)
            && at.elapsed() < PREFLIGHT_TTL
        {
            return Ok(p.clone());
        }
        let restricted = enforces_restricted(&self.client, &self.ns).await?;
        let storage_class = self.storage_class().await?;
        let snapshot_class = self.snapshot_class(storage_class.as_ref()).await?;
        let p = Preflight {
            storage_class: storage_class.map(|(name, _)| name),
            snapshot_class,
            restricted,
        };
        // May this user make what an upload makes? Asked with dry runs, which the API server
        // authorizes (and admits: Pod Security) like the real thing.
        let probe = "snapfs-preflight";
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let claim: PersistentVolumeClaim = to(
            self.claim_spec(probe, "preflight", "", &p, 1 << 30),
            "claim",
        )?;
        let claims = self.claims();
        let what = self.what("create", "persistentvolumeclaim", probe);
        retry(|| claims.create(&dry, &claim), &what).await?;
        let pod: Pod = to(self.pod_spec(probe, "preflight", "", &p, 600), "pod")?;
        let pods = self.pods();
        let what = self.what("create", "pod", probe);
        retry(|| pods.create(&dry, &pod), &what).await?;
        let snap: DynamicObject = to(
            self.snapshot_spec(probe, "preflight", probe, &p),
            "snapshot",
        )?;
        let snaps = self.snapshots_api();
        let what = self.what("create", "volumesnapshot", probe);
        retry(|| snaps.create(&dry, &snap), &what).await?;
        *lock(&self.preflight) = Some((Instant::now(), p.clone()));
        Ok(p)
    }

    /// The storage class of upload claims and its driver; None when storage classes cannot be
    /// read (the claim then asks for the default, and the driver check is left to the cluster).
    async fn storage_class(&self) -> Result<Option<(String, String)>, BackendError> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource("storage.k8s.io", "StorageClass", "storageclasses"),
        );
        let lp = ListParams::default();
        let list = match retry(|| api.list(&lp), "list storageclasses").await {
            Ok(l) => l.items,
            Err(BackendError::PermissionDenied(e)) => {
                tracing::info!(
                    error = e,
                    "storage classes cannot be read; the claim asks for the default"
                );
                return Ok(self
                    .settings
                    .storage_class
                    .clone()
                    .map(|c| (c, String::new())));
            }
            Err(e) => return Err(e),
        };
        let driver = |o: &DynamicObject| {
            o.data
                .get("provisioner")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let chosen = match &self.settings.storage_class {
            Some(want) => list
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(want))
                .ok_or_else(|| {
                    BackendError::Unsupported(format!(
                        "StorageClass {want} (k8s.storage_class) does not exist"
                    ))
                })?,
            None => list
                .iter()
                .find(|o| {
                    annotation(&o.metadata, "storageclass.kubernetes.io/is-default-class")
                        == Some("true")
                })
                .ok_or_else(|| {
                    BackendError::Unsupported(
                        "the cluster has no default StorageClass; set k8s.storage_class".into(),
                    )
                })?,
        };
        Ok(Some((
            chosen.metadata.name.clone().unwrap_or_default(),
            driver(chosen),
        )))
    }

    /// The VolumeSnapshotClass to name, if one must be named; refuses a cluster with none for
    /// the storage class's driver.
    async fn snapshot_class(
        &self,
        storage: Option<&(String, String)>,
    ) -> Result<Option<String>, BackendError> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource(
                "snapshot.storage.k8s.io",
                "VolumeSnapshotClass",
                "volumesnapshotclasses",
            ),
        );
        let lp = ListParams::default();
        let list = match retry(|| api.list(&lp), "list volumesnapshotclasses").await {
            Ok(l) => l.items,
            Err(BackendError::NotFound(_)) => return Err(no_snapshot_api()),
            Err(BackendError::PermissionDenied(e)) => {
                tracing::info!(
                    error = e,
                    "snapshot classes cannot be read; the cluster picks one"
                );
                return Ok(self.settings.snapshot_class.clone());
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = &self.settings.snapshot_class {
            if !list
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(want))
            {
                return Err(BackendError::Unsupported(format!(
                    "VolumeSnapshotClass {want} (k8s.snapshot_class) does not exist"
                )));
            }
            return Ok(Some(want.clone()));
        }
        let Some((class, driver)) = storage.filter(|(_, d)| !d.is_empty()) else {
            return Ok(None);
        };
        let mut fitting: Vec<&DynamicObject> = list
            .iter()
            .filter(|o| o.data.get("driver").and_then(Value::as_str) == Some(driver))
            .collect();
        fitting.sort_by_key(|o| {
            let default = annotation(
                &o.metadata,
                "snapshot.storage.kubernetes.io/is-default-class",
            ) == Some("true");
            (!default, o.metadata.name.clone())
        });
        match fitting.first() {
            Some(o) => Ok(o.metadata.name.clone()),
            None => Err(BackendError::Unsupported(format!(
                "no VolumeSnapshotClass for driver {driver} (of StorageClass {class}): create one, or name another storage class in k8s.storage_class"
            ))),
        }
    }
}

/// Whether namespace `ns` enforces Pod Security `restricted`. A namespace that cannot be read
/// is taken to: a restricted pod is admitted at every level.
pub(in crate::k8s) async fn enforces_restricted(
    client: &Client,
    ns: &str,
) -> Result<bool, BackendError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let what = format!("get namespace {ns}");
    match retry(|| api.get_opt(ns), &what).await {
        Ok(Some(n)) => {
            Ok(label(&n.metadata, "pod-security.kubernetes.io/enforce") == Some("restricted"))
        }
        Ok(None) => Err(BackendError::NotFound(format!("namespace {ns}"))),
        Err(BackendError::PermissionDenied(_)) => Ok(true),
        Err(e) => Err(e),
    }
}
