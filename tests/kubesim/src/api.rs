//! The HTTP front of the API server: authentication, routing, and rendering of answers.

pub(crate) mod admission;
mod discovery;
mod objects;
mod openapi;
mod path;
mod pod_security;
mod secrets;
mod table;
mod watch;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::error::ApiError;
use crate::resources::SNAPSHOT_GROUP;
use crate::server::State;
use path::{Route, Target};

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn error_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}

/// Decoded query parameters, in order; repeated keys (`command=`) stay repeated.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// What one request asks, after routing.
pub(crate) struct Call {
    pub target: Target,
    pub query: Query,
    pub user: String,
    /// The client accepts `Table` answers (kubectl's human-readable output).
    pub as_table: bool,
    pub content_type: String,
}

/// Answers one HTTP request.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    state.counters.add_request();
    let latency = state.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = route(state, req).await;
    match result {
        Ok(resp) => {
            tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
            resp
        }
        Err(err) => {
            tracing::debug!(%method, %path, status = err.code, message = %err.message, "request failed");
            error_response(&err)
        }
    }
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let user = state.auth.authenticate(header(AUTHORIZATION).as_deref())?;
    let snapshots_missing = state.faults.snapshot_api_missing();
    let route = path::parse(req.uri().path()).ok_or_else(ApiError::path_not_found)?;
    match route {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Health => Ok(Response::new(full("ok"))),
        Route::OpenApiRoot => Ok(json_response(200, &openapi::root(snapshots_missing))),
        Route::OpenApi(group, version) => {
            if snapshots_missing && group == SNAPSHOT_GROUP {
                return Err(ApiError::path_not_found());
            }
            openapi::document(&group, &version)
                .map(|doc| json_response(200, &doc))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::CoreVersions => Ok(json_response(200, &discovery::core_versions(state.addr))),
        Route::CoreResources => Ok(json_response(200, &discovery::resources("", "v1"))),
        Route::Groups => Ok(json_response(200, &discovery::groups(snapshots_missing))),
        Route::Group(group) => discovery::group(&group, snapshots_missing)
            .map(|g| json_response(200, &g))
            .ok_or_else(ApiError::path_not_found),
        Route::GroupResources(group, version) => {
            if snapshots_missing && group == SNAPSHOT_GROUP {
                return Err(ApiError::path_not_found());
            }
            let list = discovery::resources(&group, &version);
            if list["resources"].as_array().is_none_or(|r| r.is_empty()) {
                return Err(ApiError::path_not_found());
            }
            Ok(json_response(200, &list))
        }
        Route::Resource(target) => {
            if snapshots_missing && target.rt.group == SNAPSHOT_GROUP {
                return Err(ApiError::path_not_found());
            }
            let call = Call {
                query: Query::parse(req.uri().query()),
                user,
                as_table: header(ACCEPT).is_some_and(|a| a.contains("as=Table")),
                content_type: header(CONTENT_TYPE).unwrap_or_default(),
                target,
            };
            resource(state, call, req).await
        }
    }
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

async fn resource(
    state: Arc<State>,
    call: Call,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let t = &call.target;
    let method = req.method().clone();
    let sub = t.sub.as_deref();
    let connect = matches!(sub, Some("exec" | "attach" | "portforward"));
    let verb = match (&method, t.name.is_some(), sub) {
        // A WebSocket upgrade is a GET, authorized as `get`; SPDY upgrades are POSTs.
        (&Method::GET, true, _) if connect => "get",
        (_, true, _) if connect => "create",
        (&Method::GET, true, _) => "get",
        (&Method::GET, false, _) if call.query.flag("watch") => "watch",
        (&Method::GET, false, _) => "list",
        (&Method::POST, false, _) => "create",
        (&Method::PUT, true, _) => "update",
        (&Method::PATCH, true, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => return Err(ApiError::method_not_supported(t.rt, method.as_str())),
    };
    let resource = (call.target.rbac_resource(), t.name.as_deref().unwrap_or(""));
    let resource = (resource.0.as_str(), resource.1);
    state
        .auth
        .authorize(&call.user, verb, t.rt, resource, t.ns())?;
    if connect && verb == "get" {
        // The API server (1.35+, AuthorizePodWebsocketUpgradeCreatePermission) also asks for
        // `create` on WebSocket upgrades, so both verbs are checked.
        state
            .auth
            .authorize(&call.user, "create", t.rt, resource, t.ns())?;
    }
    match sub {
        None | Some("status") => {}
        Some("exec" | "attach") if t.rt.is("pods") => {
            return crate::exec::handle(state, call, req).await;
        }
        Some("portforward") if t.rt.is("pods") => {
            return crate::portforward::handle(state, call, req).await;
        }
        Some("finalize") if t.rt.is("namespaces") => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    match verb {
        "get" => objects::get(&state, &call),
        "list" => objects::list(&state, &call),
        "watch" => watch::watch(state.clone(), &call),
        "create" => {
            let body = read_json(req).await?;
            objects::create(&state, &call, body)
        }
        "update" => {
            let body = read_json(req).await?;
            objects::update(&state, &call, body)
        }
        "patch" => {
            let body = read_json(req).await?;
            objects::patch(&state, &call, body)
        }
        "delete" => {
            let body = read_optional_json(req).await?;
            objects::delete(&state, &call, body)
        }
        _ => objects::delete_collection(&state, &call),
    }
}

async fn read_optional_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb&command=ls&command=-l&x=a+b&p=%zz",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.all("command"), vec!["ls", "-l"]);
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("p"), Some("%zz"));
    }
}
