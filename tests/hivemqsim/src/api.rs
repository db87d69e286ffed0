//! The HTTP front: fault switches, authentication, routing, and the five backup endpoints.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::header::{
    ACCEPT_RANGES, AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, HeaderValue,
    RANGE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::Operation;
use crate::backups::{OpError, is_valid_id};
use crate::download::{DownloadBody, Range};
use crate::server::State;

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const BACKUPS: &str = "/api/v1/management/backups";
const FILES: &str = "/api/v1/management/files/backups";

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An error answered in HiveMQ's shape: `{"errors":[{"title","detail"}]}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }

    /// Titles are the OpenAPI document's response descriptions where it has them; the others
    /// are a guess.
    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Resource not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::RANGE_NOT_SATISFIABLE => "Range not satisfiable",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily not available",
            _ => "Error",
        }
    }

    fn into_response(self) -> Response<Body> {
        let body = json!({"errors": [{"title": self.title(), "detail": self.detail}]});
        let mut resp = json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            // A guess at the realm; HiveMQ's is not documented.
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"HiveMQ\""),
            );
        }
        resp
    }
}

fn op_error(state: &State, err: OpError) -> ApiError {
    let status = match err {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Busy(_) => {
            StatusCode::from_u16(state.config.busy_status).unwrap_or(StatusCode::CONFLICT)
        }
        // A guess: 400 is the documented code closest to "not in a state that allows it".
        OpError::WrongState { .. } => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, err.to_string())
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The endpoint a path and method name, with its backup id.
fn route(method: &Method, path: &str) -> Result<(Operation, Option<String>), ApiError> {
    let (op, raw_id) = if path == BACKUPS {
        match *method {
            Method::GET => (Operation::List, None),
            Method::POST => (Operation::Create, None),
            _ => return Err(not_allowed(method, path)),
        }
    } else if let Some(id) = path.strip_prefix(BACKUPS).and_then(|p| p.strip_prefix('/'))
        && !id.contains('/')
    {
        match *method {
            Method::GET => (Operation::Get, Some(id)),
            Method::POST => (Operation::Restore, Some(id)),
            _ => return Err(not_allowed(method, path)),
        }
    } else if let Some(id) = path.strip_prefix(FILES).and_then(|p| p.strip_prefix('/'))
        && !id.contains('/')
    {
        match *method {
            Method::GET => (Operation::Download, Some(id)),
            _ => return Err(not_allowed(method, path)),
        }
    } else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No resource at {path}"),
        ));
    };
    Ok((op, raw_id.map(str::to_string)))
}

fn not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not supported on {path}"),
    )
}

/// Answers one request. Order: fault switches, authentication, routing, permission, id check.
pub(crate) fn handle<B>(state: &State, req: Request<B>) -> Response<Body> {
    state.counters.add_request();
    match answer(state, &req) {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(method = %req.method(), path = req.uri().path(), status = %err.status, detail = %err.detail, "refused");
            err.into_response()
        }
    }
}

fn answer<B>(state: &State, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    if state.faults.take_unavailable() {
        state.counters.add_unavailable();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The REST API is temporarily not available",
        ));
    }
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let access = state
        .users
        .check(authorization)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Missing or invalid credentials"))?;
    let (op, raw_id) = route(req.method(), req.uri().path())?;
    if !access.allows(op) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} {} is not permitted", req.method(), req.uri().path()),
        ));
    }
    let id = match raw_id {
        Some(raw) => match percent_decode(&raw) {
            Some(id) if is_valid_id(&id) => Some(id),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid backup id '{raw}'"),
                ));
            }
        },
        None => None,
    };
    let now = Instant::now();
    let id = id.unwrap_or_default();
    let backup = match op {
        Operation::List => {
            let items = state.backups().list(now);
            return Ok(json_response(StatusCode::OK, &json!({"items": items})));
        }
        Operation::Get => state
            .backups()
            .get(now, &id)
            .ok_or_else(|| op_error(state, OpError::NotFound(id)))?,
        Operation::Create => {
            let faults = &state.faults;
            let duration = faults.slow_backup().unwrap_or(state.config.timings.backup);
            let outcome = faults
                .backup_failure()
                .map_or(Ok(state.config.backup_size), Err);
            let made = state.backups().create(now, duration, outcome);
            let made = made.map_err(|e| op_error(state, e))?;
            state.counters.add_backup();
            made
        }
        Operation::Restore => {
            let duration = state.config.timings.restore;
            let failure = state.faults.restore_failure();
            let started = state.backups().restore(now, &id, duration, failure);
            let started = started.map_err(|e| op_error(state, e))?;
            state.counters.add_restore();
            started
        }
        Operation::Download => return download(state, req, &id, now),
    };
    Ok(json_response(StatusCode::OK, &json!({"backup": backup})))
}

fn download<B>(
    state: &State,
    req: &Request<B>,
    id: &str,
    now: Instant,
) -> Result<Response<Body>, ApiError> {
    let found = state.backups().file(now, id);
    let (backup, file) = found.map_err(|e| op_error(state, e))?;
    let len = file.len() as u64;
    let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok());
    let (status, content, content_range) = match Range::parse(range, len) {
        Range::Full => (StatusCode::OK, file, None),
        Range::Part { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            file.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        Range::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("Range outside the {len} bytes of backup '{id}'"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    state.counters.add_download();
    let body = DownloadBody::new(
        content,
        state.faults.drop_download_after(),
        state.counters.clone(),
    );
    let mut resp = Response::new(body.boxed_unsync());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A guess at the file name HiveMQ suggests.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.zip\"", backup.id)) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Some(v) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = |p: &str| route(&Method::GET, p).map_err(|e| e.status);
        assert_eq!(get(BACKUPS).unwrap(), (Operation::List, None));
        assert_eq!(
            get("/api/v1/management/backups/x").unwrap(),
            (Operation::Get, Some("x".to_string()))
        );
        assert_eq!(
            get("/api/v1/management/files/backups/x").unwrap(),
            (Operation::Download, Some("x".to_string()))
        );
        assert_eq!(
            get("/api/v1/management/backups/x/y"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            get("/api/v1/management/files/backups"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            route(&Method::DELETE, "/api/v1/management/backups/x").map_err(|e| e.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            route(&Method::POST, "/api/v1/management/files/backups/x").map_err(|e| e.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
