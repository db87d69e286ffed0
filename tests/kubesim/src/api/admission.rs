//! Defaults and validation applied to new objects, per kind, with the API server's messages,
//! then, for pods, PodSecurity admission.

use serde_json::{Value, json};
use snapfs_control::units::parse_quantity;

use crate::error::ApiError;
use crate::meta;
use crate::resources::{ResourceType, STORAGECLASSES};
use crate::server::State;

type Causes = Vec<(String, String)>;

fn required(causes: &mut Causes, field: &str, detail: &str) {
    let msg = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    causes.push((field.to_string(), msg));
}

/// Defaults and validates `obj`, a new object of type `rt` whose name and namespace are set.
pub(crate) fn admit(
    state: &State,
    rt: &'static ResourceType,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let name = meta::name(obj).to_string();
    let mut causes = Causes::new();
    let bad_name = if rt.is("namespaces") {
        meta::check_label(&name)
    } else {
        meta::check_subdomain(&name)
    };
    if let Some(msg) = bad_name {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {msg}"),
        ));
    }
    if obj.get("spec").is_some_and(|s| s.is_object()) {
        meta::metadata_mut(obj).insert("generation".into(), json!(1));
    }
    match rt.plural {
        "namespaces" => namespace(obj, &name),
        "pods" => pod(obj, &mut causes),
        "persistentvolumeclaims" => pvc(state, obj, &mut causes),
        "volumesnapshots" => snapshot(obj, &mut causes),
        "deployments" | "statefulsets" => workload(obj, &mut causes),
        "secrets" => super::secrets::normalize(obj)?,
        "storageclasses" => {
            let o = meta::object_mut(obj);
            o.entry("reclaimPolicy").or_insert(json!("Delete"));
            o.entry("volumeBindingMode").or_insert(json!("Immediate"));
        }
        _ => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, &causes));
    }
    if rt.is("pods") {
        // The PodSecurity plugin validates after the object's own validation has passed.
        super::pod_security::admit_pod(state, obj)?;
    }
    Ok(())
}

fn namespace(obj: &mut Value, name: &str) {
    meta::metadata_mut(obj)
        .entry("labels")
        .or_insert(json!({}))
        .as_object_mut()
        .map(|l| l.insert("kubernetes.io/metadata.name".into(), json!(name)));
    meta::child_mut(obj, "spec").insert("finalizers".into(), json!(["kubernetes"]));
    *meta::child_mut(obj, "status") = json!({"phase": "Active"})
        .as_object()
        .cloned()
        .unwrap_or_default();
}

fn pod(obj: &mut Value, causes: &mut Causes) {
    let spec = meta::child_mut(obj, "spec");
    let containers = spec.get_mut("containers").and_then(Value::as_array_mut);
    match containers {
        None => required(causes, "spec.containers", ""),
        Some(list) if list.is_empty() => required(causes, "spec.containers", ""),
        Some(list) => {
            for (i, c) in list.iter_mut().enumerate() {
                if meta::str_at(c, &["name"]).is_none_or(str::is_empty) {
                    required(causes, &format!("spec.containers[{i}].name"), "");
                }
                let image = meta::str_at(c, &["image"]).unwrap_or("").to_string();
                if image.is_empty() {
                    required(causes, &format!("spec.containers[{i}].image"), "");
                }
                let c = meta::object_mut(c);
                let tagged = image
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(':'));
                let policy = if tagged && !image.ends_with(":latest") {
                    "IfNotPresent"
                } else {
                    "Always"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
            }
        }
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
        ("priority", json!(0)),
    ] {
        spec.entry(k).or_insert(v);
    }
    *meta::child_mut(obj, "status") = json!({"phase": "Pending", "qosClass": "BestEffort"})
        .as_object()
        .cloned()
        .unwrap_or_default();
}

fn pvc(state: &State, obj: &mut Value, causes: &mut Causes) {
    let spec = meta::child_mut(obj, "spec");
    if spec
        .get("accessModes")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        required(
            causes,
            "spec.accessModes",
            "at least 1 access mode is required",
        );
    }
    match spec
        .get("resources")
        .and_then(|r| r.pointer("/requests/storage"))
    {
        None => required(causes, "spec.resources[storage]", ""),
        Some(q) => {
            let text = q
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string());
            if parse_quantity(&text).ok().is_none_or(|b| b == 0) {
                causes.push((
                    "spec.resources[storage]".into(),
                    format!("Invalid value: \"{text}\": must be greater than zero"),
                ));
            }
        }
    }
    spec.entry("volumeMode").or_insert(json!("Filesystem"));
    if !spec.contains_key("storageClassName")
        && let Some(class) = default_storage_class(state)
    {
        // The DefaultStorageClass admission plugin.
        spec.insert("storageClassName".into(), json!(class));
    }
    if let Some(ds) = spec.get("dataSource").cloned() {
        spec.entry("dataSourceRef").or_insert(ds);
    }
    // The StorageObjectInUseProtection admission plugin.
    meta::metadata_mut(obj).insert("finalizers".into(), json!(["kubernetes.io/pvc-protection"]));
    *meta::child_mut(obj, "status") = json!({"phase": "Pending"})
        .as_object()
        .cloned()
        .unwrap_or_default();
}

/// The StorageClass annotated as default, if any.
pub(crate) fn default_storage_class(state: &State) -> Option<String> {
    state
        .store
        .list(&STORAGECLASSES, None)
        .0
        .iter()
        .find(|sc| {
            meta::str_at(
                sc,
                &[
                    "metadata",
                    "annotations",
                    "storageclass.kubernetes.io/is-default-class",
                ],
            ) == Some("true")
        })
        .map(|sc| meta::name(sc).to_string())
}

fn snapshot(obj: &mut Value, causes: &mut Causes) {
    let source = obj.pointer("/spec/source");
    let pvc = source
        .and_then(|s| s.get("persistentVolumeClaimName"))
        .is_some();
    let content = source
        .and_then(|s| s.get("volumeSnapshotContentName"))
        .is_some();
    if pvc == content {
        // The CEL rule of the VolumeSnapshot CRD.
        causes.push((
            "spec.source".into(),
            "Invalid value: \"object\": Exactly one of persistentVolumeClaimName and volumeSnapshotContentName should be specified".into(),
        ));
    }
}

fn workload(obj: &mut Value, causes: &mut Causes) {
    let spec = meta::child_mut(obj, "spec");
    spec.entry("replicas").or_insert(json!(1));
    let selector = spec.get("selector").cloned();
    let labels = spec
        .get("template")
        .and_then(|t| t.pointer("/metadata/labels"))
        .cloned();
    match selector {
        None => required(causes, "spec.selector", ""),
        Some(sel) => {
            let sel = crate::selector::LabelSelector::from_object(&sel);
            let template = json!({"metadata": {"labels": labels.clone().unwrap_or(json!({}))}});
            if sel.is_empty() || !sel.matches(&template) {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        labels.unwrap_or(json!({}))
                    ),
                ));
            }
        }
    }
    *meta::child_mut(obj, "status") = serde_json::Map::new();
}
