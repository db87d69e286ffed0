//! The restricted checks: the hardening a pod must opt into.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    Pod, Violation, added, at, containers_named, name, plural, quoted, seccomp_profile, security,
    setters, violation,
};

pub(super) fn allow_privilege_escalation(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| security(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(|c| name(c))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_named(&bad)
        ),
    )
}

pub(super) fn capabilities_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    let (mut keep_some, mut adding) = (Vec::new(), Vec::new());
    let mut capabilities = BTreeSet::new();
    for c in &pod.containers {
        let drops_all = at(c, &["securityContext", "capabilities", "drop"])
            .and_then(Value::as_array)
            .is_some_and(|drop| drop.iter().any(|cap| cap.as_str() == Some("ALL")));
        if !drops_all {
            keep_some.push(name(c));
        }
        let extra: Vec<&str> = added(c).filter(|cap| *cap != "NET_BIND_SERVICE").collect();
        if !extra.is_empty() {
            adding.push(name(c));
            capabilities.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !keep_some.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&keep_some)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            quoted(&capabilities)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// Inline volume sources the restricted level allows.
const ALLOWED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Inline volume sources the restricted level refuses by name; others are reported as
/// "unknown".
const RESTRICTED_VOLUMES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

pub(super) fn restricted_volumes(pod: &Pod) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in pod.volumes() {
        let sources: Vec<&str> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, value)| *key != "name" && !value.is_null())
            .map(|(key, _)| key.as_str())
            .collect();
        // A volume without a source is defaulted to an emptyDir.
        if sources.is_empty() || sources.iter().any(|s| ALLOWED_VOLUMES.contains(s)) {
            continue;
        }
        bad.push(name(v));
        types.insert(
            RESTRICTED_VOLUMES
                .into_iter()
                .find(|t| sources.contains(t))
                .unwrap_or("unknown"),
        );
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural(bad.len(), "volume", "volumes"),
            quoted(&bad),
            plural(bad.len(), "uses", "use"),
            plural(
                types.len(),
                "restricted volume type",
                "restricted volume types"
            ),
            quoted(&types)
        ),
    )
}

pub(super) fn run_as_non_root(pod: &Pod) -> Option<Violation> {
    let pod_value = pod.security("runAsNonRoot").and_then(Value::as_bool);
    let (mut bad, mut unset) = (Vec::new(), Vec::new());
    for c in &pod.containers {
        match security(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => bad.push(name(c)),
            Some(true) => {}
            None if pod_value != Some(true) => unset.push(name(c)),
            None => {}
        }
    }
    let bad_pod = pod_value == Some(false);
    if bad_pod || !bad.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(bad_pod, &bad)
            ),
        );
    }
    if unset.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_named(&unset)
        ),
    )
}

pub(super) fn run_as_user(pod: &Pod) -> Option<Violation> {
    let root = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let bad_pod = root(pod.security("runAsUser"));
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| root(security(c, "runAsUser")))
        .map(|c| name(c))
        .collect();
    if !bad_pod && bad.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters(bad_pod, &bad)),
    )
}

pub(super) fn seccomp_profile_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    seccomp_profile(pod, true)
}
