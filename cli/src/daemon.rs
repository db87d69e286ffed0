//! Talking to one `snapfsd`: a request in, a response out, daemon errors as typed errors.

use std::path::Path;

use anyhow::Context;
use snapfs_control::client::Client;
use snapfs_control::wire::{Info, Request, Response};

use crate::exit::DaemonError;

/// Sends one request on a fresh connection and turns `Response::Error` into [`DaemonError`].
pub fn call(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    call_watching(socket, req, |_, _| {})
}

/// Like [`call`], for a request that asked for progress, which is passed to `progress` as
/// (done, total) bytes.
pub fn call_watching(
    socket: &Path,
    req: &Request,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<Response> {
    let mut client = Client::connect(socket).context("snapfsd is not answering")?;
    match client.call_watching(req, progress)? {
        Response::Error { code, message } => Err(DaemonError { code, message }.into()),
        other => Ok(other),
    }
}

/// Who serves the mount behind `socket`.
pub fn info(socket: &Path) -> anyhow::Result<Info> {
    match call(socket, &Request::Info)? {
        Response::Info(info) => Ok(info),
        other => Err(unexpected(&other)),
    }
}

/// An answer that does not fit the request: a daemon of another version, most likely.
pub fn unexpected(resp: &Response) -> anyhow::Error {
    let kind = serde_json::to_value(resp)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    anyhow::anyhow!("snapfsd answered with an unexpected `{kind}` (is it the same version?)")
}
