//! get, list, create, update, patch and delete of stored objects.

use hyper::Response;
use serde_json::{Value, json};

use super::{Body, Call, json_response, table};
use crate::error::ApiError;
use crate::meta;
use crate::patch;
use crate::resources::{NAMESPACES, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::State;

fn name_of(call: &Call) -> &str {
    call.target.name.as_deref().unwrap_or("")
}

fn render(call: &Call, obj: &Value) -> Value {
    if call.as_table {
        table::table(call.target.rt, std::slice::from_ref(obj), None)
    } else {
        obj.clone()
    }
}

pub(super) fn get(state: &State, call: &Call) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let obj = state
        .store
        .get(t.rt, t.ns(), name_of(call))
        .ok_or_else(|| ApiError::not_found(t.rt, name_of(call)))?;
    Ok(json_response(200, &render(call, &obj)))
}

/// The selectors of a list or watch.
pub(super) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_call(call: &Call) -> Result<Filter, ApiError> {
        Ok(Filter {
            labels: LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(
                call.query.get("fieldSelector").unwrap_or(""),
                call.target.rt,
            )?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// List items of built-in types carry no `kind` and `apiVersion`; CRD items do.
pub(super) fn list_item(rt: &ResourceType, obj: &Value) -> Value {
    let mut item = obj.clone();
    if rt.builtin
        && let Some(map) = item.as_object_mut()
    {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
}

pub(super) fn list(state: &State, call: &Call) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let filter = Filter::from_call(call)?;
    let (items, rv) = state.store.list(t.rt, t.namespace.as_deref());
    let mut items: Vec<Value> = items.into_iter().filter(|o| filter.matches(o)).collect();
    // Paging: the continue token is the offset into the filtered list. A guess at the
    // semantics: the real server pages over a consistent snapshot at the first page's version.
    let offset: usize = call
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid continue token {c:?}")))
        })
        .transpose()?
        .unwrap_or(0);
    let limit: usize = call
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    items.drain(..offset.min(items.len()));
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        list_meta["continue"] = json!((offset + limit).to_string());
        list_meta["remainingItemCount"] = json!(remaining);
    }
    if call.as_table {
        return Ok(json_response(200, &table::table(t.rt, &items, Some(rv))));
    }
    let items: Vec<Value> = items.iter().map(|o| list_item(t.rt, o)).collect();
    Ok(json_response(
        200,
        &json!({
            "kind": t.rt.list_kind(),
            "apiVersion": t.rt.api_version(),
            "metadata": list_meta,
            "items": items,
        }),
    ))
}

fn dry_run(call: &Call) -> bool {
    call.query.get("dryRun") == Some("All")
}

/// Checks `kind`/`apiVersion` of a body against the path and fills them in when absent.
fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            rt.kind
        )));
    }
    let api_version = rt.api_version();
    for (field, want) in [("kind", rt.kind), ("apiVersion", api_version.as_str())] {
        match obj.get(field).and_then(Value::as_str) {
            None | Some("") => obj[field] = json!(want),
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({got}) does not match the expected API version ({want})"
                )));
            }
        }
    }
    Ok(())
}

/// Creates an object from a request body in the call's namespace.
pub(super) fn create_object(state: &State, call: &Call, mut obj: Value) -> Result<Value, ApiError> {
    let t = &call.target;
    check_type(t.rt, &mut obj)?;
    let ns = t.ns().to_string();
    let body_ns = meta::namespace(&obj).to_string();
    if t.rt.namespaced {
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match state.store.get(&NAMESPACES, "", &ns) {
            None => return Err(ApiError::not_found(&NAMESPACES, &ns)),
            Some(n) if meta::is_terminating(&n) => {
                return Err(ApiError::forbidden_object(
                    t.rt,
                    meta::name(&obj),
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                ));
            }
            Some(_) => {}
        }
        meta::metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
    } else {
        meta::metadata_mut(&mut obj).remove("namespace");
    }
    if meta::name(&obj).is_empty() {
        let prefix = meta::str_at(&obj, &["metadata", "generateName"])
            .unwrap_or("")
            .to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                t.rt,
                "",
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        let name = format!("{prefix}{}", meta::random_suffix(5));
        meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
    }
    if let Some(name) = &t.name
        && name != meta::name(&obj)
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&obj)
        )));
    }
    for field in [
        "resourceVersion",
        "uid",
        "deletionTimestamp",
        "creationTimestamp",
    ] {
        meta::metadata_mut(&mut obj).remove(field);
    }
    super::admission::admit(state, t.rt, &mut obj)?;
    if dry_run(call) {
        meta::metadata_mut(&mut obj).insert("uid".into(), json!(meta::new_uid()));
        return Ok(obj);
    }
    let created = state.store.create(t.rt, obj)?;
    state.counters.add_created(t.rt.plural);
    Ok(created)
}

pub(super) fn create(state: &State, call: &Call, body: Value) -> Result<Response<Body>, ApiError> {
    let created = create_object(state, call, body)?;
    Ok(json_response(201, &render(call, &created)))
}

/// Applies a whole-object change respecting the status subresource: the main endpoint keeps
/// the stored status, `/status` changes only the status.
fn write_through(call: &Call, old: &Value, mut new: Value) -> Result<Value, ApiError> {
    let t = &call.target;
    let main = call.target.sub.is_none();
    if t.rt.has_status {
        if main {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        } else {
            let status = new.get("status").cloned().unwrap_or(json!({}));
            new = old.clone();
            new["status"] = status;
        }
    }
    check_type(t.rt, &mut new)?;
    if t.rt.is("secrets") {
        super::secrets::normalize(&mut new)?;
        super::secrets::check_update(old, &new)?;
    }
    if main && old.get("spec") != new.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
    }
    Ok(new)
}

fn precondition(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    given: Option<&str>,
) -> Result<(), ApiError> {
    match given {
        Some(rv) if Some(rv) != meta::resource_version(old) => Err(ApiError::modified(rt, name)),
        _ => Ok(()),
    }
}

pub(super) fn update(state: &State, call: &Call, body: Value) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let name = name_of(call).to_string();
    if meta::name(&body) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&body)
        )));
    }
    let given = meta::resource_version(&body).map(str::to_string);
    rewrite(state, call, &name, |stored| {
        precondition(t.rt, &name, stored, given.as_deref())?;
        write_through(call, stored, body)
    })
}

/// Replaces stored object `name` with what `make` builds from it (a dry run only answers what
/// it would be), and answers the result.
fn rewrite(
    state: &State,
    call: &Call,
    name: &str,
    make: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let dry = dry_run(call);
    let mut result = None;
    let stored = state.store.modify(t.rt, t.ns(), name, |stored| {
        let new = make(stored)?;
        if dry {
            result = Some(new);
        } else {
            *stored = new;
        }
        Ok(())
    })?;
    Ok(json_response(200, &render(call, &result.unwrap_or(stored))))
}

pub(super) fn patch(state: &State, call: &Call, body: Value) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let name = name_of(call).to_string();
    let content_type = call.content_type.split(';').next().unwrap_or("").trim();
    let apply = content_type == "application/apply-patch+yaml";
    if apply {
        if call.query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                t.rt,
                "",
                &[(
                    "fieldManager".into(),
                    "Required value: is required for apply patch".into(),
                )],
            ));
        }
        if state.store.get(t.rt, t.ns(), &name).is_none() {
            let created = create_object(state, call, body)?;
            return Ok(json_response(201, &render(call, &created)));
        }
    }
    if content_type == "application/strategic-merge-patch+json" && !t.rt.builtin {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let given = meta::resource_version(&body).map(str::to_string);
    rewrite(state, call, &name, |stored| {
        let mut new = stored.clone();
        match content_type {
            "application/merge-patch+json" => patch::merge(&mut new, &body),
            "application/strategic-merge-patch+json" => patch::strategic(&mut new, &body),
            "application/json-patch+json" => patch::json_patch(&mut new, &body)?,
            "application/apply-patch+yaml" => patch::apply(&mut new, &body),
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        if content_type != "application/json-patch+json" {
            precondition(t.rt, &name, stored, given.as_deref())?;
        }
        write_through(call, stored, new)
    })
}

/// `gracePeriodSeconds` from the query or a DeleteOptions body.
fn grace_period(call: &Call, options: &Value) -> Option<i64> {
    call.query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64))
}

fn delete_one(
    state: &State,
    call: &Call,
    ns: &str,
    name: &str,
    options: &Value,
) -> Result<(Value, bool), ApiError> {
    let t = &call.target;
    let stored = state
        .store
        .get(t.rt, ns, name)
        .ok_or_else(|| ApiError::not_found(t.rt, name))?;
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        && uid != meta::uid(&stored)
    {
        return Err(ApiError::conflict(
            t.rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&stored)
            ),
        ));
    }
    let given = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str);
    precondition(t.rt, name, &stored, given)?;
    // Pods on a node end gracefully (the kubelet removes them); namespaces are emptied by the
    // namespace controller first.
    let graceful = (t.rt.is("pods")
        && grace_period(call, options) != Some(0)
        && stored.pointer("/spec/nodeName").is_some())
        || t.rt.is("namespaces");
    if dry_run(call) {
        return Ok((stored, !graceful));
    }
    let outcome = state.store.delete(t.rt, ns, name, graceful)?;
    state.counters.add_deleted(t.rt.plural);
    Ok(outcome)
}

pub(super) fn delete(
    state: &State,
    call: &Call,
    options: Value,
) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let name = name_of(call);
    let (obj, gone) = delete_one(state, call, t.ns(), name, &options)?;
    if !gone {
        return Ok(json_response(200, &obj));
    }
    let mut details = json!({"name": name, "kind": t.rt.plural, "uid": meta::uid(&obj)});
    if !t.rt.group.is_empty() {
        details["group"] = json!(t.rt.group);
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }),
    ))
}

pub(super) fn delete_collection(state: &State, call: &Call) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let filter = Filter::from_call(call)?;
    let (items, rv) = state.store.list(t.rt, t.namespace.as_deref());
    let mut deleted = Vec::new();
    for obj in items.iter().filter(|o| filter.matches(o)) {
        match delete_one(
            state,
            call,
            meta::namespace(obj),
            meta::name(obj),
            &Value::Null,
        ) {
            Ok((obj, _)) => deleted.push(list_item(t.rt, &obj)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": t.rt.list_kind(),
            "apiVersion": t.rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": deleted,
        }),
    ))
}
