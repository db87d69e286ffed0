//! Events about objects, aggregated by object, reason and message as the event recorder does.

use serde_json::{Value, json};

use crate::meta;
use crate::resources::{EVENTS, ResourceType};
use crate::server::State;

#[derive(Clone, Copy)]
pub(super) enum Level {
    Normal,
    Warning,
}

/// Records an event about `obj`, or counts one more of the same.
pub(super) fn record(
    state: &State,
    rt: &ResourceType,
    obj: &Value,
    level: Level,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = match meta::namespace(obj) {
        "" => "default",
        ns => ns,
    };
    let uid = meta::uid(obj);
    let now = meta::now_rfc3339();
    let existing = state.store.list(&EVENTS, Some(ns)).0.into_iter().find(|e| {
        meta::str_at(e, &["involvedObject", "uid"]) == Some(uid)
            && meta::str_at(e, &["reason"]) == Some(reason)
            && meta::str_at(e, &["message"]) == Some(message)
    });
    if let Some(event) = existing {
        let _ = state.store.modify(&EVENTS, ns, meta::name(&event), |e| {
            let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
            e["count"] = json!(count + 1);
            e["lastTimestamp"] = json!(now);
            Ok(())
        });
        return;
    }
    let level = match level {
        Level::Normal => "Normal",
        Level::Warning => "Warning",
    };
    let name = format!(
        "{}.{}",
        meta::name(obj),
        &meta::new_uid().replace('-', "")[..16]
    );
    let event = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": rt.kind,
            "apiVersion": rt.api_version(),
            "namespace": meta::namespace(obj),
            "name": meta::name(obj),
            "uid": uid,
            "resourceVersion": meta::resource_version(obj).unwrap_or(""),
        },
        "reason": reason,
        "message": message,
        "type": level,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": "",
        "source": {"component": component},
    });
    if let Err(e) = super::create(state, &EVENTS, event) {
        tracing::debug!(error = %e, "recording an event failed");
    }
}
