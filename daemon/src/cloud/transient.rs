//! The HTTP client of cloud stores, counting the answers object_store's own retry loop tries
//! again (see `retry`): connection failures, timeouts, interrupted requests, 5xx, 429 and 408.
//! Those retries happen inside object_store, out of sight of the store above it; this client
//! sits below the loop and sees every attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};

/// Gives each store a client that counts its transient failures into `failures`. A request
/// that runs out of its retry budget has its last failure counted too, so the count is the
/// number of retries plus the number of requests that failed for good after retrying.
#[derive(Debug, Clone, Default)]
pub struct Counting {
    pub failures: Arc<AtomicU64>,
}

impl HttpConnector for Counting {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counted {
            inner,
            failures: self.failures.clone(),
        }))
    }
}

#[derive(Debug)]
struct Counted {
    inner: HttpClient,
    failures: Arc<AtomicU64>,
}

#[async_trait]
impl HttpService for Counted {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let answer = self.inner.execute(req).await;
        if transient(&answer) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

/// Whether object_store's retry loop tries this answer again.
fn transient(answer: &Result<HttpResponse, HttpError>) -> bool {
    match answer {
        Ok(r) => r.status().is_server_error() || matches!(r.status().as_u16(), 408 | 429),
        Err(e) => matches!(
            e.kind(),
            HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Result<HttpResponse, HttpError> {
        let mut r = HttpResponse::new(bytes::Bytes::new().into());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn server_errors_and_throttling_are_transient_and_client_errors_are_not() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(transient(&answer(status)), "{status}");
        }
        for status in [200, 206, 304, 400, 401, 403, 404, 412] {
            assert!(!transient(&answer(status)), "{status}");
        }
        let cut = HttpError::new(HttpErrorKind::Connect, std::io::Error::other("refused"));
        assert!(transient(&Err(cut)));
        let decode = HttpError::new(HttpErrorKind::Decode, std::io::Error::other("garbled"));
        assert!(!transient(&Err(decode)));
    }
}
