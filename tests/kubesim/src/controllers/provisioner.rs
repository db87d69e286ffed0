//! The PV controller and the CSI external-provisioner of the hostpath driver: claims become
//! Bound to a new volume, a directory on this machine, empty or restored from a snapshot or a
//! claim; released volumes are deleted; claims in use are protected from deletion.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use snapfs_control::units::parse_quantity;

use super::recorder::{Level, record};
use crate::meta;
use crate::resources::{PODS, PVCS, PVS, SNAPSHOT_GROUP, STORAGECLASSES, VOLUMESNAPSHOTS};
use crate::server::{DRIVER, State};

const COMPONENT: &str = "hostpath.csi.k8s.io_kubesim";
/// How often a failing provisioning is retried. A guess: the real provisioner backs off
/// exponentially from one second.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Provisioner {
    first_seen: HashMap<String, Instant>,
    retry_at: HashMap<String, Instant>,
}

/// Copies a directory tree with `cp -a`, keeping modes, owners, times and links.
pub(super) async fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(to).await?;
    let status = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp -a {} {} failed: {status}",
            from.display(),
            to.display()
        )))
    }
}

fn in_use(pods: &[Value], ns: &str, claim: &str) -> bool {
    pods.iter().any(|p| {
        meta::namespace(p) == ns
            && !matches!(
                meta::str_at(p, &["status", "phase"]),
                Some("Succeeded" | "Failed")
            )
            && p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vols| {
                    vols.iter().any(|v| {
                        meta::str_at(v, &["persistentVolumeClaim", "claimName"]) == Some(claim)
                    })
                })
    })
}

impl Provisioner {
    pub(crate) async fn reconcile(&mut self, state: &State) {
        let now = Instant::now();
        let (pvcs, _) = state.store.list(&PVCS, None);
        let (pods, _) = state.store.list(&PODS, None);
        for pvc in &pvcs {
            let (ns, name, uid) = (meta::namespace(pvc), meta::name(pvc), meta::uid(pvc));
            if meta::is_terminating(pvc) {
                if !in_use(&pods, ns, name) {
                    let _ = state.store.modify(&PVCS, ns, name, |p| {
                        if let Some(list) = p["metadata"]["finalizers"].as_array_mut() {
                            list.retain(|f| f != "kubernetes.io/pvc-protection");
                        }
                        Ok(())
                    });
                }
                continue;
            }
            if pvc.pointer("/spec/volumeName").is_some() {
                continue;
            }
            let seen = *self.first_seen.entry(uid.to_string()).or_insert(now);
            let retry = self.retry_at.get(uid).is_none_or(|at| now >= *at);
            if now.duration_since(seen) < state.timings.pvc_bind || !retry {
                continue;
            }
            if let Err(message) = self.provision(state, pvc).await {
                self.retry_at.insert(uid.to_string(), now + RETRY);
                if let Some((level, reason, message)) = message {
                    record(state, &PVCS, pvc, level, reason, &message, COMPONENT);
                }
            }
        }
        let live: HashSet<&str> = pvcs.iter().map(meta::uid).collect();
        self.first_seen.retain(|uid, _| live.contains(uid.as_str()));
        self.retry_at.retain(|uid, _| live.contains(uid.as_str()));
        self.release(state, &live).await;
    }

    /// Deletes volumes whose claim is gone (reclaim policy Delete).
    async fn release(&self, state: &State, live_claims: &HashSet<&str>) {
        for pv in state.store.list(&PVS, None).0 {
            let claim_uid = meta::str_at(&pv, &["spec", "claimRef", "uid"]).unwrap_or("");
            if live_claims.contains(claim_uid) {
                continue;
            }
            let policy = meta::str_at(&pv, &["spec", "persistentVolumeReclaimPolicy"]);
            if policy == Some("Delete") {
                let _ = tokio::fs::remove_dir_all(state.volumes_dir().join(meta::name(&pv))).await;
                let _ = state.store.delete(&PVS, "", meta::name(&pv), false);
            } else if meta::str_at(&pv, &["status", "phase"]) != Some("Released") {
                let _ = state.store.modify(&PVS, "", meta::name(&pv), |v| {
                    v["status"]["phase"] = json!("Released");
                    Ok(())
                });
            }
        }
    }

    /// Binds a claim to a new volume. Err carries the event to record, if any.
    async fn provision(
        &mut self,
        state: &State,
        pvc: &Value,
    ) -> Result<(), Option<(Level, &'static str, String)>> {
        let (ns, name) = (meta::namespace(pvc), meta::name(pvc));
        let class_name = meta::str_at(pvc, &["spec", "storageClassName"]).unwrap_or("");
        if class_name.is_empty() {
            return Err(Some((
                Level::Normal,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            )));
        }
        let Some(class) = state.store.get(&STORAGECLASSES, "", class_name) else {
            return Err(Some((
                Level::Warning,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            )));
        };
        let provisioner = meta::str_at(&class, &["provisioner"]).unwrap_or("");
        if provisioner != DRIVER {
            return Err(Some((
                Level::Normal,
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
                ),
            )));
        }
        record(
            state,
            &PVCS,
            pvc,
            Level::Normal,
            "Provisioning",
            &format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""),
            COMPONENT,
        );
        let size_text = meta::str_at(pvc, &["spec", "resources", "requests", "storage"])
            .unwrap_or("0")
            .to_string();
        let requested = parse_quantity(&size_text).unwrap_or(0);
        let failed = |why: String| {
            Some((
                Level::Warning,
                "ProvisioningFailed",
                format!("failed to provision volume with StorageClass \"{class_name}\": {why}"),
            ))
        };
        let source = self.data_source(state, pvc, requested).map_err(&failed)?;
        let volume = format!("pvc-{}", meta::uid(pvc));
        let dir = state.volumes_dir().join(&volume);
        let made = match &source {
            Some(from) => copy_tree(from, &dir).await,
            None => tokio::fs::create_dir_all(&dir).await,
        };
        made.map_err(|e| failed(format!("rpc error: code = Internal desc = {e}")))?;
        let pv = json!({
            "metadata": {"name": volume, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
            "spec": {
                "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                "capacity": {"storage": size_text},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                             "name": name, "uid": meta::uid(pvc),
                             "resourceVersion": meta::resource_version(pvc).unwrap_or("")},
                "csi": {"driver": DRIVER, "volumeHandle": meta::new_uid(),
                        "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "kubesim"}},
                "persistentVolumeReclaimPolicy": meta::str_at(&class, &["reclaimPolicy"]).unwrap_or("Delete"),
                "storageClassName": class_name,
                "volumeMode": "Filesystem",
            },
            "status": {"phase": "Bound"},
        });
        super::create(state, &PVS, pv).map_err(|e| failed(e.message))?;
        let bound = state.store.modify(&PVCS, ns, name, |p| {
            let annotations = meta::metadata_mut(p)
                .entry("annotations")
                .or_insert(json!({}));
            for (k, v) in [
                ("pv.kubernetes.io/bind-completed", "yes"),
                ("pv.kubernetes.io/bound-by-controller", "yes"),
                ("volume.beta.kubernetes.io/storage-provisioner", DRIVER),
                ("volume.kubernetes.io/storage-provisioner", DRIVER),
            ] {
                annotations[k] = json!(v);
            }
            p["spec"]["volumeName"] = json!(volume);
            p["status"] = json!({
                "phase": "Bound",
                "accessModes": p.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
                "capacity": {"storage": size_text},
            });
            Ok(())
        });
        if bound.is_err() {
            // The claim went away meanwhile; the volume is released on the next pass.
            return Ok(());
        }
        record(
            state,
            &PVCS,
            pvc,
            Level::Normal,
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {volume}"),
            COMPONENT,
        );
        Ok(())
    }

    /// The directory a new volume starts as a copy of, from `dataSource`, with the
    /// external-provisioner's error messages.
    fn data_source(
        &self,
        state: &State,
        pvc: &Value,
        requested: u64,
    ) -> Result<Option<std::path::PathBuf>, String> {
        let Some(ds) = pvc.pointer("/spec/dataSource") else {
            return Ok(None);
        };
        let ns = meta::namespace(pvc);
        let src = meta::str_at(ds, &["name"]).unwrap_or("");
        let kind = meta::str_at(ds, &["kind"]).unwrap_or("");
        let group = meta::str_at(ds, &["apiGroup"]).unwrap_or("");
        match (group, kind) {
            (SNAPSHOT_GROUP, "VolumeSnapshot") => {
                let prefix = format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {src}"
                );
                let Some(vs) = state.store.get(&VOLUMESNAPSHOTS, ns, src) else {
                    return Err(format!(
                        "{prefix}: error getting snapshot {src} from api server: volumesnapshots.snapshot.storage.k8s.io \"{src}\" not found"
                    ));
                };
                if vs.pointer("/status/readyToUse").and_then(Value::as_bool) != Some(true) {
                    return Err(format!("{prefix}: snapshot {src} is not Ready"));
                }
                let content =
                    meta::str_at(&vs, &["status", "boundVolumeSnapshotContentName"]).unwrap_or("");
                let size = meta::str_at(&vs, &["status", "restoreSize"])
                    .and_then(|q| parse_quantity(q).ok())
                    .unwrap_or(0);
                if requested < size {
                    return Err(format!(
                        "{prefix}: requested volume size {requested} is less than the size {size} for the source snapshot {src}"
                    ));
                }
                let dir = state.snapshots_dir().join(content);
                if !dir.is_dir() {
                    return Err(format!("{prefix}: snapshot {src} is not Ready"));
                }
                Ok(Some(dir))
            }
            ("", "PersistentVolumeClaim") => {
                let prefix = format!(
                    "error getting handle for DataSource Type PersistentVolumeClaim by Name {src}"
                );
                let source = state
                    .store
                    .get(&PVCS, ns, src)
                    .ok_or_else(|| format!("{prefix}: claim {src} not found"))?;
                let volume = meta::str_at(&source, &["spec", "volumeName"])
                    .ok_or_else(|| format!("{prefix}: claim {src} is not bound"))?;
                Ok(Some(state.volumes_dir().join(volume)))
            }
            _ => Err(format!("the source {kind} {src} is not supported")),
        }
    }
}
