//! `GET /metrics` over HTTP when `[metrics] listen` is set: what `snapfs status --prometheus`
//! shows, and the FUSE operations by type, outcome and latency, in the Prometheus text
//! format. A small HTTP/1.1 responder, one request per connection, is all a scraper needs.

use std::sync::Arc;
use std::time::Duration;

use snapfs_control::prometheus::{self, Text};
use snapfs_fs::fuse::OpStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control::server::Server;

/// A request head longer than this is refused: a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 << 10;
/// A client that sends no whole request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/metrics` shows.
pub struct Exposition {
    pub server: Arc<Server>,
    pub ops: Arc<OpStats>,
}

impl Exposition {
    pub fn render(&self) -> String {
        let mut text = Text::new();
        let status = self.server.status();
        prometheus::status(&mut text, &[(self.server.mountpoint.as_path(), &status)]);
        let ops = self.ops.snapshot();
        text.family(
            "snapfs_fuse_operations_total",
            "counter",
            "FUSE operations answered, by operation and outcome (ok, or the errno).",
            ops.iter().flat_map(|o| {
                o.outcomes
                    .iter()
                    .map(move |(outcome, n)| (format!("op=\"{}\",outcome=\"{outcome}\"", o.op), *n))
            }),
        );
        text.histogram(
            "snapfs_fuse_operation_seconds",
            "How long FUSE operations took to answer.",
            ops.into_iter()
                .map(|o| (format!("op=\"{}\"", o.op), o.latency)),
        );
        text.finish()
    }
}

/// Serves `exposition` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, exposition: Arc<Exposition>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let exposition = exposition.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &exposition).await {
                        tracing::debug!(%peer, error = %e, "metrics connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, exposition: &Exposition) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    let (status, content_type, body, with_body) = match head.as_deref().and_then(route) {
        Some(Route::Metrics { with_body }) => (
            "200 OK",
            prometheus::CONTENT_TYPE,
            exposition.render(),
            with_body,
        ),
        Some(Route::NotFound) => ("404 Not Found", PLAIN, "see /metrics\n".into(), true),
        Some(Route::NotAllowed) => ("405 Method Not Allowed", PLAIN, String::new(), true),
        None => ("400 Bad Request", PLAIN, String::new(), true),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nAllow: GET, HEAD\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if with_body {
        reply.push_str(&body);
    }
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head up to its blank line; None when it is too long or cut short.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8(buf).ok())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { with_body: bool },
    NotFound,
    NotAllowed,
}

/// Where a request head goes; None for one that is not HTTP/1.x.
fn route(head: &str) -> Option<Route> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics {
            with_body: method == "GET",
        },
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::NotAllowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests() {
        let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(get), Some(Route::Metrics { with_body: true }));
        assert_eq!(
            route("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Route::Metrics { with_body: false })
        );
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Route::NotAllowed)
        );
        assert_eq!(route("GET /metrics\r\n\r\n"), None);
        assert_eq!(route("hello\r\n\r\n"), None);
    }
}
