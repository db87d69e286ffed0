//! `Table` answers for kubectl's human-readable output, with the columns the real server prints.

use serde_json::{Value, json};

use crate::meta;
use crate::resources::ResourceType;

/// How long ago an RFC 3339 time was, in kubectl's short style (`5s`, `3m2s`, `4h`, `2d`).
pub(crate) fn age(timestamp: &str) -> String {
    let Ok(then) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - then.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> Value {
    if v.is_empty() {
        json!("<none>")
    } else {
        json!(v)
    }
}

fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(|mode| match mode {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn pod_status(obj: &Value) -> String {
    if meta::is_terminating(obj) {
        return "Terminating".into();
    }
    let waiting = obj
        .pointer("/status/containerStatuses/0/state/waiting/reason")
        .and_then(Value::as_str);
    waiting.unwrap_or(s(obj, "/status/phase")).to_string()
}

fn pod_ready(obj: &Value) -> String {
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let total = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.map_or(0, |list| {
        list.iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count()
    });
    format!("{ready}/{total}")
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Column names and types after `Name`, and the cells of one object. `Age` ends every row.
fn columns(rt: &ResourceType) -> Vec<(&'static str, &'static str)> {
    match rt.plural {
        "pods" => vec![
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        "namespaces" => vec![("Status", "string")],
        "persistentvolumeclaims" => vec![
            ("Status", "string"),
            ("Volume", "string"),
            ("Capacity", "string"),
            ("Access Modes", "string"),
            ("StorageClass", "string"),
            ("VolumeAttributesClass", "string"),
        ],
        "persistentvolumes" => vec![
            ("Capacity", "string"),
            ("Access Modes", "string"),
            ("Reclaim Policy", "string"),
            ("Status", "string"),
            ("Claim", "string"),
            ("StorageClass", "string"),
            ("VolumeAttributesClass", "string"),
            ("Reason", "string"),
        ],
        "deployments" => vec![
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
        ],
        "statefulsets" => vec![("Ready", "string")],
        "secrets" => vec![("Type", "string"), ("Data", "string")],
        "storageclasses" => vec![
            ("Provisioner", "string"),
            ("ReclaimPolicy", "string"),
            ("VolumeBindingMode", "string"),
            ("AllowVolumeExpansion", "string"),
        ],
        "volumesnapshots" => vec![
            ("ReadyToUse", "boolean"),
            ("SourcePVC", "string"),
            ("SourceSnapshotContent", "string"),
            ("RestoreSize", "string"),
            ("SnapshotClass", "string"),
            ("SnapshotContent", "string"),
            ("CreationTime", "date"),
        ],
        "volumesnapshotcontents" => vec![
            ("ReadyToUse", "boolean"),
            ("RestoreSize", "integer"),
            ("DeletionPolicy", "string"),
            ("Driver", "string"),
            ("VolumeSnapshotClass", "string"),
            ("VolumeSnapshot", "string"),
            ("VolumeSnapshotNamespace", "string"),
        ],
        "volumesnapshotclasses" => vec![("Driver", "string"), ("DeletionPolicy", "string")],
        "events" => vec![
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        _ => vec![],
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let opt = |p: &str| o.pointer(p).cloned().unwrap_or(Value::Null);
    match rt.plural {
        "pods" => vec![json!(pod_ready(o)), json!(pod_status(o)), json!("0")],
        "namespaces" => vec![json!(s(o, "/status/phase"))],
        "persistentvolumeclaims" => vec![
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            json!("<unset>"),
        ],
        "persistentvolumes" => vec![
            json!(s(o, "/spec/capacity/storage")),
            json!(access_modes(o.pointer("/spec/accessModes"))),
            json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(s(o, "/status/phase")),
            json!(format!(
                "{}/{}",
                s(o, "/spec/claimRef/namespace"),
                s(o, "/spec/claimRef/name")
            )),
            json!(s(o, "/spec/storageClassName")),
            json!("<unset>"),
            json!(s(o, "/status/reason")),
        ],
        "deployments" => vec![
            json!(format!(
                "{}/{}",
                int(o, "/status/readyReplicas"),
                int(o, "/spec/replicas")
            )),
            json!(int(o, "/status/updatedReplicas")),
            json!(int(o, "/status/availableReplicas")),
        ],
        "statefulsets" => vec![json!(format!(
            "{}/{}",
            int(o, "/status/readyReplicas"),
            int(o, "/spec/replicas")
        ))],
        "secrets" => vec![
            json!(s(o, "/type")),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |d| d.len())
            ),
        ],
        "storageclasses" => vec![
            json!(s(o, "/provisioner")),
            json!(s(o, "/reclaimPolicy")),
            json!(s(o, "/volumeBindingMode")),
            json!(
                o.get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()
            ),
        ],
        "volumesnapshots" => vec![
            opt("/status/readyToUse"),
            opt("/spec/source/persistentVolumeClaimName"),
            opt("/spec/source/volumeSnapshotContentName"),
            opt("/status/restoreSize"),
            opt("/spec/volumeSnapshotClassName"),
            opt("/status/boundVolumeSnapshotContentName"),
            o.pointer("/status/creationTime")
                .and_then(Value::as_str)
                .map_or(Value::Null, |t| json!(age(t))),
        ],
        "volumesnapshotcontents" => vec![
            opt("/status/readyToUse"),
            opt("/status/restoreSize"),
            opt("/spec/deletionPolicy"),
            opt("/spec/driver"),
            opt("/spec/volumeSnapshotClassName"),
            opt("/spec/volumeSnapshotRef/name"),
            opt("/spec/volumeSnapshotRef/namespace"),
        ],
        "volumesnapshotclasses" => vec![opt("/driver"), opt("/deletionPolicy")],
        "events" => vec![
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            )),
            json!(s(o, "/message")),
        ],
        _ => vec![],
    }
}

fn row(rt: &ResourceType, obj: &Value) -> Value {
    let mut name = meta::name(obj).to_string();
    if rt.is("storageclasses")
        && s(
            obj,
            "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
        ) == "true"
    {
        name.push_str(" (default)");
    }
    let mut c = vec![json!(name)];
    c.extend(cells(rt, obj));
    c.push(or_none(&age(s(obj, "/metadata/creationTimestamp"))));
    // The whole object rides along (as with includeObject=Object); kubectl reads what it needs.
    json!({"cells": c, "object": obj})
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub(crate) fn table(rt: &ResourceType, objects: &[Value], rv: Option<u64>) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for (name, kind) in columns(rt) {
        defs.push(
            json!({"name": name, "type": kind, "format": "", "description": "", "priority": 0}),
        );
    }
    defs.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(rt, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let ago = |secs: i64| {
            (chrono::Utc::now() - chrono::Duration::seconds(secs))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        assert_eq!(age(&ago(5)), "5s");
        assert_eq!(age(&ago(182)), "3m2s");
        assert_eq!(age(&ago(3600)), "60m");
        assert_eq!(age(&ago(5 * 3600)), "5h");
        assert_eq!(age(&ago(3 * 86400)), "3d");
    }
}
