//! A skeleton OpenAPI v3 document per group-version: paths and their operations only, no
//! schemas. kubectl reads it to learn that the server validates fields itself
//! (`fieldValidation` on PATCH), so it sends objects without client-side validation. The
//! server does not actually reject unknown fields (a simplification).

use serde_json::{Map, Value, json};

use crate::resources::{ALL, GROUPS, SNAPSHOT_GROUP};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub(super) fn root(snapshots_missing: bool) -> Value {
    let mut paths = Map::new();
    let gvs = std::iter::once(("", "v1")).chain(GROUPS.iter().copied());
    for (group, version) in gvs {
        if snapshots_missing && group == SNAPSHOT_GROUP {
            continue;
        }
        let path = gv_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=kubesim")}),
        );
    }
    json!({"paths": paths})
}

fn operation(group: &str, version: &str, kind: &str) -> Value {
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .iter()
        .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    json!({
        "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
    })
}

pub(super) fn document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for rt in ALL
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{base}/{}/{{name}}", rt.plural)
        };
        let op = operation(group, version, rt.kind);
        paths.insert(
            item,
            json!({"get": op, "put": op, "patch": op, "delete": op}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
