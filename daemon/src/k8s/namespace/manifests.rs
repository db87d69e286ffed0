//! The objects an upload makes, as manifests (DESIGN §6 steps 1–3 and 6): the claim sized for
//! the staged tree, the pod fitted to the namespace's Pod Security level, the VolumeSnapshot.

use chrono::Utc;
use serde_json::{Value, json};

use super::KubeTarget;
use super::preflight::Preflight;
use crate::config::{K8sSettings, PodUid};
use crate::k8s::cluster::EXPIRES_ANNOTATION;
use crate::k8s::labels::{SNAPSHOT, labels};
use crate::k8s::{exec, tarball};
use crate::lifecycle::expiry;

/// The upload pod's container, where it mounts the claim, and its scratch space.
pub const CONTAINER: &str = "upload";
pub const DATA: &str = "/data";
const SCRATCH: &str = "/snapfs";

/// Bytes a file takes on a volume besides its content.
pub const PER_FILE: u64 = 4096;

/// Bytes a plan's tree takes on a volume: its content and a block per entry.
pub fn on_volume(plan: &tarball::Plan) -> u64 {
    plan.data + PER_FILE * plan.entries().max(1)
}

/// `raw` bytes with the claim's margin (`k8s.size_margin`).
pub fn with_margin(raw: u64, settings: &K8sSettings) -> u64 {
    raw.saturating_mul(100 + settings.size_margin) / 100
}

/// The claim size for a plan: content plus a block per entry, plus the margin, in MiB, never
/// below the floor.
pub fn claim_size(plan: &tarball::Plan, settings: &K8sSettings) -> u64 {
    with_margin(on_volume(plan), settings)
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .max(settings.min_size)
}

/// The uid a non-root upload pod runs as when none is configured.
const NON_ROOT_UID: u32 = 1000;

/// Whether the upload pod runs as root, and so keeps file owners.
pub fn as_root(uid: PodUid, restricted: bool) -> bool {
    match uid {
        PodUid::Auto => !restricted,
        PodUid::Fixed(uid) => uid == 0,
        PodUid::Namespace => false,
    }
}

/// The pod's and the container's security contexts (DESIGN §6 step 3): root with the few
/// capabilities tar needs to keep owners, unless the namespace is `restricted` or `pod_uid`
/// asks for a user; then non-root, with an fsGroup so the volume is writable, or with no ids
/// at all where the namespace assigns them. Reader pods run the same way, to read what
/// uploads wrote.
pub(in crate::k8s) fn security(uid: PodUid, restricted: bool) -> (Value, Value) {
    if as_root(uid, restricted) {
        return (
            json!({"runAsUser": 0, "runAsGroup": 0,
                   "seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"allowPrivilegeEscalation": false,
                   "capabilities": {"drop": ["ALL"],
                                    "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}}),
        );
    }
    let mut pod = json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    let id = match uid {
        PodUid::Fixed(uid) => Some(uid),
        PodUid::Auto => Some(NON_ROOT_UID),
        PodUid::Namespace => None,
    };
    if let Some(id) = id {
        pod["runAsUser"] = json!(id);
        pod["runAsGroup"] = json!(id);
        pod["fsGroup"] = json!(id);
        pod["fsGroupChangePolicy"] = json!("OnRootMismatch");
    }
    (
        pod,
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
    )
}

/// The spec of a claim of `size` bytes, of storage class `class`, else the cluster's default.
fn claim(size: u64, class: Option<&String>) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size.to_string()}},
    });
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    spec
}

/// The spec of a claim of `size` bytes restored from VolumeSnapshot `snapshot`, of the
/// configured storage class: for restores and reader pods.
pub(in crate::k8s) fn restored_claim_spec(
    settings: &K8sSettings,
    snapshot: &str,
    size: u64,
) -> Value {
    let mut spec = claim(size, settings.storage_class.as_ref());
    spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                "name": snapshot});
    spec
}

impl KubeTarget {
    pub(super) fn claim_spec(
        &self,
        rname: &str,
        name: &str,
        job: &str,
        p: &Preflight,
        size: u64,
    ) -> Value {
        json!({
            "metadata": {"name": rname, "labels": labels("upload", name, job),
                         "annotations": {SNAPSHOT: name}},
            "spec": claim(size, p.storage_class.as_ref()),
        })
    }

    /// The upload pod, fitted to the namespace's Pod Security level (DESIGN §6 step 3).
    pub(super) fn pod_spec(
        &self,
        rname: &str,
        name: &str,
        job: &str,
        p: &Preflight,
        deadline: u64,
    ) -> Value {
        let (pod_security, container_security) = security(self.settings.pod_uid, p.restricted);
        json!({
            "metadata": {"name": rname, "labels": labels("upload", name, job),
                         "annotations": {SNAPSHOT: name}},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": deadline,
                "automountServiceAccountToken": false,
                "securityContext": pod_security,
                "containers": [{
                    "name": CONTAINER,
                    "image": self.settings.image,
                    "command": exec::idle(deadline),
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": container_security,
                    "volumeMounts": [{"name": "data", "mountPath": DATA},
                                     {"name": "scratch", "mountPath": SCRATCH}]
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": rname}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": "16Mi"}}]
            }
        })
    }

    pub(super) fn snapshot_spec(&self, name: &str, job: &str, claim: &str, p: &Preflight) -> Value {
        let mut annotations = json!({SNAPSHOT: name});
        // A TTL past what a date can hold means the snapshot never expires.
        if let Some(at) = self.ttl.and_then(|ttl| expiry(Utc::now(), ttl)) {
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            annotations[EXPIRES_ANNOTATION] = json!(at);
        }
        let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
        if let Some(c) = &p.snapshot_class {
            spec["volumeSnapshotClassName"] = json!(c);
        }
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": labels("snapshot", name, job),
                         "annotations": annotations},
            "spec": spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_run_as_configured() {
        let (pod, c) = security(PodUid::Auto, false);
        assert_eq!(pod["runAsUser"], 0);
        assert_eq!(c["capabilities"]["add"][0], "CHOWN");
        let (pod, c) = security(PodUid::Auto, true);
        assert_eq!(
            (pod["runAsUser"].clone(), pod["fsGroup"].clone()),
            (json!(1000), json!(1000))
        );
        assert_eq!(pod["runAsNonRoot"], true);
        assert!(c["capabilities"].get("add").is_none());
        let (pod, _) = security(PodUid::Fixed(5000), false);
        assert_eq!(
            (pod["runAsUser"].clone(), pod["runAsNonRoot"].clone()),
            (json!(5000), json!(true))
        );
        assert_eq!(security(PodUid::Fixed(0), true).0["runAsUser"], 0);
        // OpenShift and the like assign the uid, the group and the fsGroup themselves.
        let (pod, c) = security(PodUid::Namespace, false);
        for key in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(pod.get(key).is_none(), "{key} in {pod}");
        }
        assert_eq!(pod["runAsNonRoot"], true);
        assert_eq!(c["allowPrivilegeEscalation"], false);
    }

    #[test]
    fn claims_get_the_margin_and_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![0u8; 10 << 20]).unwrap();
        let plan = tarball::plan(dir.path(), "x").unwrap();
        let mut s = K8sSettings {
            min_size: 1 << 20,
            ..K8sSettings::default()
        };
        let size = claim_size(&plan, &s);
        assert!((12 << 20..=13 << 20).contains(&size), "{size}");
        assert_eq!(size % (1 << 20), 0);
        s.min_size = 1 << 30;
        assert_eq!(claim_size(&plan, &s), 1 << 30);
    }
}
