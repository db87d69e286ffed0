//! What a context's client asks of the API server, by namespace: requests by operation, how
//! long they took to answer and which failed (a layer of the kube client's service stack), and
//! the bytes that pass through exec sessions (counted by `exec`). A namespace's target shows its
//! own in `snapfs status` and `/metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, Uri};
use snapfs_control::wire::TargetMetrics;
use tower_layer::Layer;
use tower_service::Service;

use crate::latency::Latencies;

/// The counters of one context, by namespace ("" for requests outside any).
#[derive(Debug, Default)]
pub struct Meter {
    namespaces: Mutex<HashMap<String, Arc<Counters>>>,
}

impl Meter {
    /// The counters of namespace `ns`, made on first use.
    pub fn of(&self, ns: &str) -> Arc<Counters> {
        let mut all = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(ns.to_string()).or_default().clone()
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Reads of one object, exec and port-forward sessions.
    get_requests: AtomicU64,
    /// Listings and watches.
    list_requests: AtomicU64,
    /// Creations, updates and deletions.
    put_requests: AtomicU64,
    errors: AtomicU64,
    /// Bytes exec sessions printed, and bytes sent to their input.
    exec_out: AtomicU64,
    exec_in: AtomicU64,
    latency: Latencies,
}

impl Counters {
    /// Counts what one exec session moved.
    pub fn exec_bytes(&self, sent: u64, received: u64) {
        self.exec_in.fetch_add(sent, Ordering::Relaxed);
        self.exec_out.fetch_add(received, Ordering::Relaxed);
    }

    fn count(&self, op: &'static str, took: Duration, failed: bool) {
        let requests = match op {
            "list" | "watch" => &self.list_requests,
            "create" | "update" | "delete" => &self.put_requests,
            _ => &self.get_requests,
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(op, took);
    }

    pub fn metrics(&self, target: &str) -> TargetMetrics {
        TargetMetrics {
            target: target.to_string(),
            get_requests: self.get_requests.load(Ordering::Relaxed),
            get_bytes: self.exec_out.load(Ordering::Relaxed),
            put_requests: self.put_requests.load(Ordering::Relaxed),
            put_bytes: self.exec_in.load(Ordering::Relaxed),
            list_requests: self.list_requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            // The kube client does not retry; snapfs's own retries are not counted apart.
            retries: 0,
            latency: self.latency.snapshot(),
        }
    }
}

/// What an API request does, and the namespace it is in ("" for none).
fn classify<'a>(method: &Method, uri: &'a Uri) -> (&'static str, &'a str) {
    let path: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/…` and `/apis/GROUP/VERSION/…`.
    let rest = match path.first() {
        Some(&"api") => path.get(2..),
        Some(&"apis") => path.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let (ns, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] => (*ns, [&[*resource][..], tail].concat()),
        _ => ("", rest.to_vec()),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let op = match (rest.get(2).copied(), method) {
        (Some("exec" | "attach"), _) => "exec",
        (Some("portforward"), _) => "portforward",
        _ if watch => "watch",
        (_, &Method::GET) if rest.len() == 1 => "list",
        (_, &Method::GET) => "get",
        (_, &Method::POST) => "create",
        (_, &Method::PUT | &Method::PATCH) => "update",
        (_, &Method::DELETE) => "delete",
        _ => "other",
    };
    (op, ns)
}

/// An answer that means the request failed rather than that its object is not there or
/// already is: refused, throttled, or the server's own failure.
fn failing(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        )
}

/// The layer that counts every request of a client into its context's meter.
#[derive(Debug, Clone)]
pub struct Metering(pub Arc<Meter>);

impl<S> Layer<S> for Metering {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            meter: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S, B, R> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (op, ns) = classify(req.method(), req.uri());
        let counters = self.meter.of(ns);
        let start = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            let failed = answer.as_ref().map_or(true, |r| failing(r.status()));
            counters.count(op, start.elapsed(), failed);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, uri: &str) -> (&'static str, String) {
        let uri: Uri = uri.parse().unwrap();
        let (op, ns) = classify(&method, &uri);
        (op, ns.to_string())
    }

    #[test]
    fn requests_are_told_apart_by_what_they_do_and_where() {
        let shop = |o: &'static str| (o, "shop".to_string());
        let pods = "/api/v1/namespaces/shop/pods";
        assert_eq!(op(Method::GET, pods), shop("list"));
        assert_eq!(
            op(Method::GET, &format!("{pods}?watch=true&rv=1")),
            shop("watch")
        );
        assert_eq!(op(Method::GET, &format!("{pods}/p-0")), shop("get"));
        assert_eq!(
            op(Method::POST, &format!("{pods}/p-0/exec?command=sh")),
            shop("exec")
        );
        assert_eq!(
            op(Method::GET, &format!("{pods}/p-0/exec?command=sh")),
            shop("exec")
        );
        assert_eq!(
            op(Method::GET, &format!("{pods}/p-0/portforward?ports=8888")),
            shop("portforward")
        );
        assert_eq!(op(Method::POST, pods), shop("create"));
        assert_eq!(op(Method::PATCH, &format!("{pods}/p-0")), shop("update"));
        assert_eq!(op(Method::DELETE, &format!("{pods}/p-0")), shop("delete"));
        let snaps = "/apis/snapshot.storage.k8s.io/v1/namespaces/shop/volumesnapshots/s";
        assert_eq!(op(Method::GET, snaps), shop("get"));
        assert_eq!(
            op(Method::GET, "/api/v1/namespaces"),
            ("list", String::new())
        );
        assert_eq!(
            op(Method::GET, "/api/v1/namespaces/shop"),
            ("get", String::new())
        );
        assert_eq!(op(Method::GET, "/version"), ("get", String::new()));
    }

    #[test]
    fn failures_are_refusals_throttling_and_server_errors() {
        for code in [401, 403, 429, 500, 503] {
            assert!(failing(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 201, 101, 404, 409, 422] {
            assert!(!failing(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn each_namespace_counts_its_own() {
        let meter = Meter::default();
        meter.of("a").count("exec", Duration::from_millis(3), false);
        meter.of("a").count("watch", Duration::from_millis(3), true);
        meter.of("a").exec_bytes(10, 20);
        meter
            .of("b")
            .count("create", Duration::from_millis(3), false);
        let a = meter.of("a").metrics("k8s/c/a");
        assert_eq!((a.get_requests, a.list_requests, a.put_requests), (1, 1, 0));
        assert_eq!((a.errors, a.put_bytes, a.get_bytes), (1, 10, 20));
        assert_eq!(a.latency.len(), 2);
        let b = meter.of("b").metrics("k8s/c/b");
        assert_eq!((b.get_requests, b.put_requests), (0, 1));
    }
}
