//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]`.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::resources::{ALL, GROUPS, ResourceType, SNAPSHOT_GROUP};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(super) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
    })
}

fn entry(rt: &ResourceType) -> Value {
    let mut e = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
    });
    if !rt.short_names.is_empty() {
        e["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        e["categories"] = json!(rt.categories);
    }
    e
}

fn sub_entry(rt: &ResourceType, sub: &str) -> Value {
    let (kind, verbs): (&str, &[&str]) = match sub {
        "status" => (rt.kind, &["get", "patch", "update"]),
        "exec" => ("PodExecOptions", &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", &["create", "get"]),
        _ => (rt.kind, &["update"]),
    };
    json!({
        "name": format!("{}/{sub}", rt.plural),
        "singularName": "",
        "namespaced": rt.namespaced,
        "kind": kind,
        "verbs": verbs,
    })
}

pub(super) fn resources(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for rt in ALL
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        list.push(entry(rt));
        if rt.has_status {
            list.push(sub_entry(rt, "status"));
        }
        for sub in rt.subresources {
            list.push(sub_entry(rt, sub));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    })
}

fn group_entry(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(super) fn groups(snapshots_missing: bool) -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .filter(|(name, _)| !(snapshots_missing && *name == SNAPSHOT_GROUP))
        .map(|(name, version)| group_entry(name, version))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(super) fn group(name: &str, snapshots_missing: bool) -> Option<Value> {
    if snapshots_missing && name == SNAPSHOT_GROUP {
        return None;
    }
    let (name, version) = GROUPS.iter().find(|(n, _)| *n == name)?;
    let mut g = group_entry(name, version);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}
