//! Patch bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and approximations of
//! strategic merge patch and server-side apply.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    let target = crate::meta::object_mut(target);
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field in the built-in types, per the `patchMergeKey` tags of the
/// Kubernetes API types. Only the lists snapfs and kubectl touch are listed.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "volumeClaimTemplates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Strategic merge patch, approximated (a guess at the common cases, not the full algorithm):
/// like a merge patch, except that lists with a known merge key merge element by element,
/// elements marked `$patch: delete` are removed, and `$setElementOrder/...`, `$retainKeys` and
/// `$deleteFromPrimitiveList/...` directives are dropped.
pub(crate) fn strategic(target: &mut Value, patch: &Value) {
    merge_with_lists(target, patch, true);
}

/// Server-side apply, approximated (a guess): the applied configuration merges into the live
/// object like a strategic merge patch, but `null` does not delete. Field ownership, managed
/// fields and conflicts are not simulated.
pub(crate) fn apply(target: &mut Value, patch: &Value) {
    merge_with_lists(target, patch, false);
}

fn merge_with_lists(target: &mut Value, patch: &Value, null_deletes: bool) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    let target = crate::meta::object_mut(target);
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            if null_deletes {
                target.remove(k);
            }
            continue;
        }
        match (merge_key(k), v, target.get_mut(k)) {
            (Some(key), Value::Array(items), Some(Value::Array(existing))) => {
                merge_list(existing, items, key, null_deletes);
            }
            (_, Value::Object(_), Some(slot)) if slot.is_object() => {
                merge_with_lists(slot, v, null_deletes)
            }
            _ => {
                let mut fresh = Value::Null;
                merge_with_lists(&mut fresh, v, null_deletes);
                target.insert(k.clone(), strip_directives(fresh));
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str, null_deletes: bool) {
    for item in items {
        let Some(id) = item.get(key).cloned() else {
            existing.push(strip_directives(item.clone()));
            continue;
        };
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = existing.iter().position(|e| e.get(key) == Some(&id));
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => merge_with_lists(&mut existing[i], item, null_deletes),
            (None, true) => {}
            (None, false) => existing.push(strip_directives(item.clone())),
        }
    }
}

fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok((parent.to_string(), unescape(last)))
}

/// RFC 6902 `add`, `remove`, `replace`, `test`, `copy` and `move`.
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        let from = op.get("from").and_then(Value::as_str).unwrap_or("");
        match kind {
            "add" | "replace" => put(target, path, value, kind == "add")?,
            "remove" => {
                take(target, path)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value) {
                    return Err(ApiError::internal(format!("testing value {path} failed")));
                }
            }
            "copy" => {
                let v = target.pointer(from).cloned().ok_or_else(|| missing(from))?;
                put(target, path, v, true)?;
            }
            "move" => {
                let v = take(target, from)?;
                put(target, path, v, true)?;
            }
            other => {
                return Err(ApiError::bad_request(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(())
}

fn missing(path: &str) -> ApiError {
    ApiError::internal(format!(
        "jsonpatch operation does not apply: doc is missing path: {path}"
    ))
}

fn put(target: &mut Value, path: &str, value: Value, insert: bool) -> Result<(), ApiError> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            if !insert && !map.contains_key(&last) {
                return Err(missing(path));
            }
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse().map_err(|_| missing(path))?
            };
            if insert && index <= items.len() {
                items.insert(index, value);
                Ok(())
            } else if !insert && index < items.len() {
                items[index] = value;
                Ok(())
            } else {
                Err(missing(path))
            }
        }
        _ => Err(missing(path)),
    }
}

fn take(target: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing(path)),
        },
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut v, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}});
        strategic(
            &mut v,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "y"}, {"name": "b", "$patch": "delete"}]}}),
        );
        assert_eq!(
            v,
            json!({"spec": {"containers": [{"name": "a", "image": "y"}]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "l": [1]});
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/l/-", "value": 2},
                {"op": "test", "path": "/l/1", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(v, json!({"metadata": {"labels": {"b": "2"}}, "l": [1, 2]}));
        assert!(
            json_patch(
                &mut v,
                &json!([{"op": "replace", "path": "/x", "value": 1}])
            )
            .is_err()
        );
    }
}
