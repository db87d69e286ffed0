//! The snapshot controller and the CSI snapshotter sidecar of the hostpath driver:
//! VolumeSnapshot → checks → VolumeSnapshotContent (a copy of the claim's directory) → ready.
//! Error messages follow external-snapshotter's wording.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::{Value, json};
use snapfs_control::units::{format_size, parse_quantity};

use super::recorder::{Level, record};
use crate::meta;
use crate::resources::{
    PVCS, PVS, STORAGECLASSES, VOLUMESNAPSHOTCLASSES, VOLUMESNAPSHOTCONTENTS, VOLUMESNAPSHOTS,
};
use crate::server::State;

const COMPONENT: &str = "snapshot-controller";
const AS_SOURCE: &str = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
const BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const CONTENT_BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

#[derive(Default)]
pub(crate) struct SnapshotController {
    /// When each content was cut, to time its readiness.
    cut_at: HashMap<String, Instant>,
    /// Snapshots failed by the injected error: they stay failed.
    failed: HashSet<String>,
}

fn content_name(vs: &Value) -> String {
    format!("snapcontent-{}", meta::uid(vs))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

fn set_error(state: &State, vs: &Value, message: &str) {
    if meta::str_at(vs, &["status", "error", "message"]) == Some(message) {
        return;
    }
    let _ = state
        .store
        .modify(&VOLUMESNAPSHOTS, meta::namespace(vs), meta::name(vs), |v| {
            v["status"]["error"] = json!({"message": message, "time": meta::now_rfc3339()});
            v["status"]["readyToUse"] = json!(false);
            Ok(())
        });
    record(
        state,
        &VOLUMESNAPSHOTS,
        vs,
        Level::Warning,
        "SnapshotCreationFailed",
        message,
        COMPONENT,
    );
}

/// The class a snapshot uses: its own, or the default class for the claim's driver.
fn class_for(state: &State, vs: &Value, driver: &str) -> Result<Value, String> {
    let name = meta::str_at(vs, &["spec", "volumeSnapshotClassName"]).unwrap_or("");
    if !name.is_empty() {
        return state
            .store
            .get(&VOLUMESNAPSHOTCLASSES, "", name)
            .ok_or_else(|| format!(
                "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{name}\" not found"
            ));
    }
    let defaults: Vec<Value> = state
        .store
        .list(&VOLUMESNAPSHOTCLASSES, None)
        .0
        .into_iter()
        .filter(|c| {
            meta::str_at(c, &["driver"]) == Some(driver)
                && meta::str_at(
                    c,
                    &[
                        "metadata",
                        "annotations",
                        "snapshot.storage.kubernetes.io/is-default-class",
                    ],
                ) == Some("true")
        })
        .collect();
    match defaults.len() {
        0 => Err(
            "Failed to set default snapshot class with error cannot find default snapshot class"
                .into(),
        ),
        1 => Ok(defaults[0].clone()),
        n => Err(format!(
            "Failed to set default snapshot class with error {n} default snapshot classes were found"
        )),
    }
}

impl SnapshotController {
    pub(crate) async fn reconcile(&mut self, state: &State) {
        let (snapshots, _) = state.store.list(&VOLUMESNAPSHOTS, None);
        for vs in &snapshots {
            if meta::is_terminating(vs) {
                self.finish_deletion(state, vs);
            } else if vs.pointer("/status/readyToUse").and_then(Value::as_bool) == Some(true)
                || self.failed.contains(meta::uid(vs))
            {
                continue;
            } else if state
                .store
                .get(&VOLUMESNAPSHOTCONTENTS, "", &content_name(vs))
                .is_some()
            {
                self.maybe_ready(state, vs);
            } else if let Some(message) = state.faults.snapshot_error() {
                self.failed.insert(meta::uid(vs).to_string());
                set_error(state, vs, &message);
            } else if let Err(message) = self.cut(state, vs).await {
                set_error(state, vs, &message);
            }
        }
        self.contents(state, &snapshots).await;
        let live: HashSet<&str> = snapshots.iter().map(meta::uid).collect();
        self.failed.retain(|uid| live.contains(uid.as_str()));
    }

    /// Validates a new snapshot, copies the claim's data and creates its content.
    async fn cut(&mut self, state: &State, vs: &Value) -> Result<(), String> {
        let (ns, name) = (meta::namespace(vs), meta::name(vs));
        let Some(claim) = meta::str_at(vs, &["spec", "source", "persistentVolumeClaimName"]) else {
            return Err(format!(
                "pre-provisioned VolumeSnapshotContent for snapshot {ns}/{name} is not simulated"
            ));
        };
        // external-snapshotter wraps the cause with Go's %q twice; Debug quoting matches it
        // for ASCII text.
        let input_error = |cause: String| {
            format!(
                "Failed to create snapshot content with error failed to get input parameters to create snapshot {name}: {cause:?}"
            )
        };
        let pvc = state.store.get(&PVCS, ns, claim).ok_or_else(|| {
            let inner = format!("persistentvolumeclaim \"{claim}\" not found");
            input_error(format!(
                "failed to retrieve PVC {claim} from the lister: {inner:?}"
            ))
        })?;
        let volume = meta::str_at(&pvc, &["spec", "volumeName"]).unwrap_or("");
        if meta::str_at(&pvc, &["status", "phase"]) != Some("Bound") || volume.is_empty() {
            return Err(input_error(format!(
                "the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot"
            )));
        }
        let pv = state.store.get(&PVS, "", volume).unwrap_or(Value::Null);
        let sc_name = meta::str_at(&pvc, &["spec", "storageClassName"]).unwrap_or("");
        let driver = state
            .store
            .get(&STORAGECLASSES, "", sc_name)
            .and_then(|sc| meta::str_at(&sc, &["provisioner"]).map(str::to_string))
            .unwrap_or_default();
        let class = class_for(state, vs, &driver)?;
        let class_name = meta::name(&class).to_string();
        record(
            state,
            &VOLUMESNAPSHOTS,
            vs,
            Level::Normal,
            "CreatingSnapshot",
            &format!("Waiting for a snapshot {ns}/{name} to be created by the CSI driver."),
            COMPONENT,
        );
        let content = content_name(vs);
        crate::controllers::provisioner::copy_tree(
            &state.volumes_dir().join(volume),
            &state.snapshots_dir().join(&content),
        )
        .await
        .map_err(|e| format!("Failed to create snapshot: failed to take snapshot of the volume {volume}: \"rpc error: code = Internal desc = {e}\""))?;
        let restore_size = meta::str_at(&pvc, &["status", "capacity", "storage"])
            .and_then(|q| parse_quantity(q).ok())
            .unwrap_or(0);
        let obj = json!({
            "metadata": {"name": content, "finalizers": [CONTENT_BOUND]},
            "spec": {
                "deletionPolicy": meta::str_at(&class, &["deletionPolicy"]).unwrap_or("Delete"),
                "driver": meta::str_at(&class, &["driver"]).unwrap_or(&driver),
                "source": {"volumeHandle": pv.pointer("/spec/csi/volumeHandle").cloned().unwrap_or(json!(volume))},
                "sourceVolumeMode": "Filesystem",
                "volumeSnapshotClassName": class_name,
                "volumeSnapshotRef": {
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "name": name, "namespace": ns, "uid": meta::uid(vs),
                    "resourceVersion": meta::resource_version(vs).unwrap_or(""),
                },
            },
            "status": {
                "creationTime": now_ns(),
                "readyToUse": false,
                "restoreSize": restore_size,
                "snapshotHandle": meta::new_uid(),
            },
        });
        super::create(state, &VOLUMESNAPSHOTCONTENTS, obj).map_err(|e| e.message)?;
        self.cut_at.insert(content.clone(), Instant::now());
        let _ = state.store.modify(&VOLUMESNAPSHOTS, ns, name, |v| {
            v["spec"]["volumeSnapshotClassName"] = json!(class_name);
            let finalizers = meta::metadata_mut(v)
                .entry("finalizers")
                .or_insert(json!([]));
            if let Some(list) = finalizers.as_array_mut() {
                for f in [AS_SOURCE, BOUND] {
                    if !list.iter().any(|x| x == f) {
                        list.push(json!(f));
                    }
                }
            }
            v["status"] = json!({"boundVolumeSnapshotContentName": content, "readyToUse": false});
            Ok(())
        });
        record(
            state,
            &VOLUMESNAPSHOTS,
            vs,
            Level::Normal,
            "SnapshotCreated",
            &format!("Snapshot {ns}/{name} was successfully created by the CSI driver."),
            COMPONENT,
        );
        Ok(())
    }

    fn maybe_ready(&mut self, state: &State, vs: &Value) {
        let content = content_name(vs);
        let cut = *self
            .cut_at
            .entry(content.clone())
            .or_insert_with(Instant::now);
        if cut.elapsed() < state.timings.snapshot_ready || state.faults.snapshot_never_ready() {
            return;
        }
        let Ok(c) = state
            .store
            .modify(&VOLUMESNAPSHOTCONTENTS, "", &content, |c| {
                c["status"]["readyToUse"] = json!(true);
                Ok(())
            })
        else {
            return;
        };
        let created_ns = c
            .pointer("/status/creationTime")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let created = chrono::DateTime::from_timestamp_nanos(created_ns)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let size = c
            .pointer("/status/restoreSize")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let (ns, name) = (meta::namespace(vs), meta::name(vs));
        let _ = state.store.modify(&VOLUMESNAPSHOTS, ns, name, |v| {
            v["status"] = json!({
                "boundVolumeSnapshotContentName": content,
                "creationTime": created,
                "readyToUse": true,
                "restoreSize": format_size(size),
            });
            Ok(())
        });
        record(
            state,
            &VOLUMESNAPSHOTS,
            vs,
            Level::Normal,
            "SnapshotReady",
            &format!("Snapshot {ns}/{name} is ready to use."),
            COMPONENT,
        );
    }

    /// A deleted snapshot: its content goes too under policy Delete, then its finalizers.
    fn finish_deletion(&mut self, state: &State, vs: &Value) {
        let content = content_name(vs);
        if let Some(c) = state.store.get(&VOLUMESNAPSHOTCONTENTS, "", &content)
            && meta::str_at(&c, &["spec", "deletionPolicy"]) == Some("Delete")
        {
            let _ = state
                .store
                .delete(&VOLUMESNAPSHOTCONTENTS, "", &content, false);
        }
        let _ = state
            .store
            .modify(&VOLUMESNAPSHOTS, meta::namespace(vs), meta::name(vs), |v| {
                if let Some(list) = v["metadata"]["finalizers"].as_array_mut() {
                    list.retain(|f| f != AS_SOURCE && f != BOUND);
                }
                Ok(())
            });
    }

    /// Deleted contents lose their data; contents whose snapshot is gone are deleted under
    /// policy Delete.
    async fn contents(&mut self, state: &State, snapshots: &[Value]) {
        let live: HashSet<&str> = snapshots.iter().map(meta::uid).collect();
        for c in state.store.list(&VOLUMESNAPSHOTCONTENTS, None).0 {
            let name = meta::name(&c).to_string();
            if meta::is_terminating(&c) {
                let _ = tokio::fs::remove_dir_all(state.snapshots_dir().join(&name)).await;
                let _ = state.store.modify(&VOLUMESNAPSHOTCONTENTS, "", &name, |c| {
                    if let Some(list) = c["metadata"]["finalizers"].as_array_mut() {
                        list.retain(|f| f != CONTENT_BOUND);
                    }
                    Ok(())
                });
                self.cut_at.remove(&name);
                continue;
            }
            let owner = meta::str_at(&c, &["spec", "volumeSnapshotRef", "uid"]).unwrap_or("");
            if !live.contains(owner)
                && meta::str_at(&c, &["spec", "deletionPolicy"]) == Some("Delete")
            {
                let _ = state
                    .store
                    .delete(&VOLUMESNAPSHOTCONTENTS, "", &name, false);
            }
        }
    }
}
