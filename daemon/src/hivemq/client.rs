//! The HiveMQ REST client: the backup endpoints of DESIGN §7 over HTTP with basic auth,
//! retries of what can pass (connection failures, 5xx, cut-off bodies, silence) with jittered
//! backoff, and every other answer classified by what the caller can do.
//!
//! No request waits on the broker for long: a try gives up after the cluster's `timeout`
//! without a byte (to connect, for the answer, or for the next byte of its body), and tries
//! start only within `timeout` of the first, so a broker that accepts connections and never
//! answers fails a listing within twice `timeout`. There is no total limit on a try that
//! keeps receiving: a long download is never cut while its bytes flow, and one cut short after
//! bytes flowed opens a new window of `timeout` for its retries.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use snapfs_control::units::format_duration;
use snapfs_fs::backend::BackendError;

use crate::backoff::Backoff;
use crate::config::{Cluster, Endpoint, Password, Secret, SecretRef};
use crate::k8s::PodForward;
use crate::latency::Latencies;

/// The longest a try waits for a TCP connection, when the cluster's `timeout` is longer: a
/// broker that is up accepts at once, and one that is down is worth another try sooner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One backup as the API describes it; every field is optional there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub bytes: Option<u64>,
    pub state: Option<String>,
    pub fail_reason: Option<String>,
}

#[derive(Deserialize)]
struct Items {
    #[serde(default)]
    items: Vec<Backup>,
}

#[derive(Deserialize)]
struct One {
    backup: Backup,
}

/// The backups of a listing's answer (`{"items": [...]}`).
pub fn backups_of(body: &[u8]) -> Result<Vec<Backup>, serde_json::Error> {
    serde_json::from_slice::<Items>(body).map(|i| i.items)
}

/// Counters of what went to the broker.
#[derive(Debug, Default)]
pub struct Counters {
    pub get_requests: AtomicU64,
    pub get_bytes: AtomicU64,
    pub post_requests: AtomicU64,
    pub list_requests: AtomicU64,
    pub errors: AtomicU64,
    /// Tries after a request's first.
    pub retries: AtomicU64,
}

/// How one try ended when it did not succeed.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Worth another try; the reason in words.
    Retry(String),
    /// An answer that began and then broke off (not by silence): worth another try, and a sign
    /// that the broker is alive, so it opens a new window for tries.
    CutOff(String),
    Final(BackendError),
}

/// When the next try of a request may start: within a length of time after the first try, or
/// after the last answer that was cut off, and never later.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    length: Duration,
}

impl Window {
    fn open(length: Duration, now: Instant) -> Window {
        Window {
            opened: now,
            length,
        }
    }

    /// The wait before the next try after `f` at `now`, or None when that try would start
    /// after the window closes.
    fn admit(&mut self, f: &Failure, wait: Option<Duration>, now: Instant) -> Option<Duration> {
        if matches!(f, Failure::CutOff(_)) {
            self.opened = now;
        }
        let spent = now.saturating_duration_since(self.opened);
        wait.filter(|w| spent + *w < self.length)
    }
}

/// The password of basic auth, as the client has it.
enum Auth {
    Given(Secret),
    /// Read from a Secret through the forward's client when first needed, and again after
    /// the broker refused it (it may have been rotated).
    InSecret {
        forward: Arc<PodForward>,
        secret: SecretRef,
        read: tokio::sync::Mutex<Option<Secret>>,
    },
}

impl Auth {
    async fn password(&self) -> Result<Secret, BackendError> {
        match self {
            Auth::Given(s) => Ok(s.clone()),
            Auth::InSecret {
                forward,
                secret,
                read,
            } => {
                let mut read = read.lock().await;
                if let Some(s) = read.as_ref() {
                    return Ok(s.clone());
                }
                let s = Secret::new(forward.secret(secret).await?);
                *read = Some(s.clone());
                Ok(s)
            }
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    /// `http://host:port/api/v1/management`.
    base: String,
    /// The user and where the password comes from.
    auth: Option<(String, Auth)>,
    /// The port-forward whose socket the connections go to; held so that it lives as long.
    _forward: Option<Arc<PodForward>>,
    backoff: Backoff,
    /// Silence that ends a try; also how long after a request's first try others may start.
    timeout: Duration,
    /// The target path, for messages (`hivemq/broker`).
    what: String,
    pub counters: Counters,
    /// How long each try took, by request.
    pub latency: Latencies,
}

impl Client {
    /// A client of `cluster`'s REST API; `forward` carries its connections where the cluster
    /// is reached by Kubernetes coordinates.
    pub fn new(
        what: String,
        cluster: &Cluster,
        forward: Option<Arc<PodForward>>,
    ) -> anyhow::Result<Client> {
        // reqwest is built without a TLS provider of its own; ring is the one the workspace
        // uses. Installing fails harmlessly when a provider is there already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A read timeout, not a total one: it covers the wait for the answer and each read of
        // the body, and a download that keeps receiving goes on for as long as it takes.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cluster.timeout.min(CONNECT_TIMEOUT))
            .read_timeout(cluster.timeout);
        let url = match (&cluster.endpoint, &forward) {
            (Endpoint::Url(url), _) => url.trim_end_matches('/').to_string(),
            (Endpoint::Kubernetes(_), Some(f)) => {
                builder = builder.unix_socket(f.socket());
                // The host is not used to connect; the broker sees it as the Host header.
                "http://hivemq".to_string()
            }
            (Endpoint::Kubernetes(_), None) => {
                anyhow::bail!("{what}: a cluster found by Kubernetes coordinates needs a forward")
            }
        };
        let http = builder.build()?;
        let password = match (&cluster.password, forward.clone()) {
            (None, _) => Auth::Given(Secret::default()),
            (Some(Password::Given(s)), _) => Auth::Given(s.clone()),
            (Some(Password::InSecret(secret)), Some(forward)) => Auth::InSecret {
                forward,
                secret: secret.clone(),
                read: tokio::sync::Mutex::new(None),
            },
            (Some(Password::InSecret(_)), None) => {
                anyhow::bail!("{what}: password_secret needs Kubernetes coordinates")
            }
        };
        Ok(Client {
            http,
            base: format!("{url}/api/v1/management"),
            auth: cluster.username.clone().map(|u| (u, password)),
            _forward: forward,
            backoff: Backoff {
                first: cluster.retry_start,
                max: cluster.retry_start.saturating_mul(16),
                retries: Some(cluster.retry_max),
                jitter: true,
            },
            timeout: cluster.timeout,
            what,
            counters: Counters::default(),
            latency: Latencies::default(),
        })
    }

    pub async fn list(&self) -> Result<Vec<Backup>, BackendError> {
        self.counters.list_requests.fetch_add(1, Ordering::Relaxed);
        let body = self.call("list", Method::GET, "backups", None).await?;
        backups_of(&body).map_err(|e| self.unreadable(e))
    }

    pub async fn get(&self, id: &str) -> Result<Backup, BackendError> {
        self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
        let body = self
            .call(
                "get",
                Method::GET,
                &format!("backups/{}", checked(id)?),
                None,
            )
            .await?;
        Ok(self.parse::<One>(&body)?.backup)
    }

    /// Starts a backup; the answer is the backup in IN_PROGRESS.
    pub async fn create(&self) -> Result<Backup, BackendError> {
        self.counters.post_requests.fetch_add(1, Ordering::Relaxed);
        let body = self.call("create", Method::POST, "backups", None).await?;
        Ok(self.parse::<One>(&body)?.backup)
    }

    /// Starts restoring backup `id` into the cluster.
    pub async fn restore(&self, id: &str) -> Result<Backup, BackendError> {
        self.counters.post_requests.fetch_add(1, Ordering::Relaxed);
        let body = self
            .call(
                "restore",
                Method::POST,
                &format!("backups/{}", checked(id)?),
                None,
            )
            .await?;
        Ok(self.parse::<One>(&body)?.backup)
    }

    /// Exactly the bytes `range` of backup `id`'s file, or an error; never other bytes.
    pub async fn download(&self, id: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
        let path = format!("files/backups/{}", checked(id)?);
        let bytes = self
            .call("download", Method::GET, &path, Some(range))
            .await?;
        self.counters
            .get_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, BackendError> {
        serde_json::from_slice(body).map_err(|e| self.unreadable(e))
    }

    fn unreadable(&self, e: serde_json::Error) -> BackendError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        BackendError::Other(format!("{}: unreadable answer: {e}", self.what))
    }

    /// One request, tried again while it fails in a way that can pass, within the budget: at
    /// most `retry_max` more tries, none starting later than `timeout` after the first (or
    /// after the last answer that was cut off).
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, BackendError> {
        let mut tries = 0u32;
        let mut window = Window::open(self.timeout, Instant::now());
        let outcome = (|| {
            tries += 1;
            let attempt = self.attempt(method.clone(), path, range.clone());
            self.latency.time(op, attempt)
        })
        .retry(self.backoff)
        .when(|f| !matches!(f, Failure::Final(_)))
        .adjust(|f, wait| window.admit(f, wait, Instant::now()))
        .notify(|f, wait| {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target = self.what, path, error = ?f, ?wait, "retrying");
        })
        .await;
        let e = match outcome {
            Ok(body) => return Ok(body),
            Err(Failure::Final(e)) => prefixed(&self.what, e),
            Err(Failure::Retry(why) | Failure::CutOff(why)) => BackendError::Unavailable(format!(
                "{}: {why} (gave up after {tries} tries)",
                self.what
            )),
        };
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        Err(e)
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, Failure> {
        let mut req = self.http.request(method, format!("{}/{path}", self.base));
        if let Some((user, auth)) = &self.auth {
            let password = auth.password().await.map_err(Failure::Final)?;
            req = req.basic_auth(user, Some(password.expose()));
        }
        if let Some(r) = &range {
            if r.is_empty() {
                return Ok(Bytes::new());
            }
            req = req.header(header::RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let timeout = self.timeout;
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Retry(why(&e, timeout)))?;
        let status = resp.status();
        if !status.is_success() {
            if status == StatusCode::UNAUTHORIZED
                && let Some((_, Auth::InSecret { read, .. })) = &self.auth
            {
                read.lock().await.take();
            }
            let body = resp.bytes().await.unwrap_or_default();
            return Err(classify(status, &body));
        }
        let expected = resp.content_length();
        match range {
            Some(r) if status == StatusCode::PARTIAL_CONTENT => {
                let want = format!("bytes {}-{}/", r.start, r.end - 1);
                let got = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !got.starts_with(&want) {
                    return Err(Failure::Retry(format!(
                        "asked for {want}…, the answer holds {got:?}"
                    )));
                }
                let body = resp.bytes().await.map_err(|e| cut_off(&e, timeout))?;
                exact(body, r.end - r.start, expected)
            }
            // The whole file although a range was asked for: skip to the range and take it.
            Some(r) => skip_to(resp, r, timeout).await,
            None => {
                let body = resp.bytes().await.map_err(|e| cut_off(&e, timeout))?;
                match expected {
                    Some(n) => exact(body, n, expected),
                    None => Ok(body),
                }
            }
        }
    }
}

/// The range `r` out of a response carrying the whole file, read as a stream.
/// `timeout` is the client's, for messages.
async fn skip_to(
    mut resp: reqwest::Response,
    r: Range<u64>,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let mut out = BytesMut::with_capacity((r.end - r.start) as usize);
    let mut pos = 0u64;
    while pos < r.end {
        let Some(chunk) = resp.chunk().await.map_err(|e| cut_off(&e, timeout))? else {
            return Err(Failure::CutOff(format!(
                "the download ended at byte {pos}, before byte {}",
                r.end
            )));
        };
        let (from, to) = (pos, pos + chunk.len() as u64);
        if to > r.start {
            let a = r.start.saturating_sub(from) as usize;
            let b = (r.end.min(to) - from) as usize;
            out.extend_from_slice(&chunk[a..b]);
        }
        pos = to;
    }
    Ok(out.freeze())
}

/// `body` if it has exactly `want` bytes (and as many as Content-Length said).
fn exact(body: Bytes, want: u64, content_length: Option<u64>) -> Result<Bytes, Failure> {
    let len = body.len() as u64;
    if len != want || content_length.is_some_and(|n| n != len) {
        return Err(Failure::CutOff(format!(
            "expected {want} bytes, got {len} (Content-Length {content_length:?})"
        )));
    }
    Ok(body)
}

/// A body that broke off: by silence (nothing new from the broker), or otherwise.
fn cut_off(e: &reqwest::Error, timeout: Duration) -> Failure {
    let why = format!("download cut off: {}", why(e, timeout));
    if e.is_timeout() {
        Failure::Retry(why)
    } else {
        Failure::CutOff(why)
    }
}

/// Why a request got no (more) answer, in words a user reads.
fn why(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", format_duration(timeout))
    } else {
        chain(e)
    }
}

/// An id as it may go into a URL path: what HiveMQ ids look like, nothing to escape.
pub(super) fn checked(id: &str) -> Result<&str, BackendError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(id)
    } else {
        Err(BackendError::NotFound(format!("backup {id:?}")))
    }
}

fn prefixed(what: &str, e: BackendError) -> BackendError {
    match e {
        BackendError::NotFound(m) => BackendError::NotFound(format!("{what}: {m}")),
        BackendError::PermissionDenied(m) => BackendError::PermissionDenied(format!("{what}: {m}")),
        BackendError::Other(m) => BackendError::Other(format!("{what}: {m}")),
        other => other,
    }
}

/// An error with its causes, on one line (reqwest's own text omits the cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// What an error answer means for the caller.
fn classify(status: StatusCode, body: &[u8]) -> Failure {
    let reason = status.canonical_reason().unwrap_or("");
    let detail = error_line(body);
    let said = if detail.is_empty() {
        format!("{} {reason}", status.as_u16())
    } else {
        format!("{} {reason}: {detail}", status.as_u16())
    };
    match status.as_u16() {
        401 => Failure::Final(BackendError::PermissionDenied(format!(
            "credentials rejected ({said})"
        ))),
        403 => Failure::Final(BackendError::PermissionDenied(said)),
        404 => Failure::Final(BackendError::NotFound(said)),
        409 => Failure::Final(BackendError::Other(format!(
            "another backup or restore is running on the cluster ({said})"
        ))),
        429 | 500 | 502 | 503 | 504 => Failure::Retry(said),
        _ => Failure::Final(BackendError::Other(said)),
    }
}

/// The API's `{"errors":[{"title","detail"}]}` as one line; other bodies shortened.
fn error_line(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        title: Option<String>,
        detail: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .map(|i| match (i.title, i.detail) {
                (Some(t), Some(d)) if !d.is_empty() => format!("{t}: {d}"),
                (Some(t), _) => t,
                (None, Some(d)) => d,
                (None, None) => String::new(),
            })
            .filter(|p| !p.is_empty())
            .collect();
        return parts.join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_of(status: u16, body: &str) -> BackendError {
        match classify(StatusCode::from_u16(status).unwrap(), body.as_bytes()) {
            Failure::Final(e) => e,
            Failure::Retry(why) | Failure::CutOff(why) => panic!("{status} retried: {why}"),
        }
    }

    #[test]
    fn answers_are_classified_by_what_the_caller_can_do() {
        let body = r#"{"errors":[{"title":"Unauthorized","detail":"bad credentials"}]}"#;
        assert_eq!(
            final_of(401, body),
            BackendError::PermissionDenied(
                "credentials rejected (401 Unauthorized: Unauthorized: bad credentials)".into()
            )
        );
        assert!(matches!(
            final_of(403, r#"{"errors":[{"title":"Forbidden"}]}"#),
            BackendError::PermissionDenied(m) if m == "403 Forbidden: Forbidden"
        ));
        assert!(matches!(final_of(404, ""), BackendError::NotFound(m) if m == "404 Not Found"));
        assert!(
            matches!(final_of(409, ""), BackendError::Other(m) if m.contains("another backup"))
        );
        assert!(
            matches!(final_of(400, "oops\n  here"), BackendError::Other(m) if m == "400 Bad Request: oops here")
        );
        for status in [429, 500, 502, 503, 504] {
            let f = classify(StatusCode::from_u16(status).unwrap(), b"");
            assert!(matches!(f, Failure::Retry(_)), "{status}: {f:?}");
        }
    }

    #[test]
    fn error_bodies_become_one_line() {
        let body = r#"{"errors":[{"title":"A","detail":"one"},{"title":"B","detail":""},{"detail":"three"}]}"#;
        assert_eq!(error_line(body.as_bytes()), "A: one; B; three");
        assert_eq!(error_line(b""), "");
        assert_eq!(error_line(&[b'x'; 500]).len(), 200);
    }

    #[test]
    fn only_plain_ids_reach_a_url() {
        assert_eq!(checked("20261122-101500").unwrap(), "20261122-101500");
        for bad in ["", ".", "..", "a/b", "a b", "a?b", "%2e"] {
            assert!(checked(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tries_start_within_the_window_which_a_cut_off_answer_opens_again() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let silent = Failure::Retry("no answer within 10s".into());
        let cut = Failure::CutOff("download cut off".into());
        let mut w = Window::open(s(10), t0);
        assert_eq!(w.admit(&silent, Some(s(1)), t0 + s(2)), Some(s(1)));
        // The first try's window has no room left for a try after silence.
        assert_eq!(w.admit(&silent, Some(s(1)), t0 + s(10)), None);
        assert_eq!(w.admit(&silent, Some(s(3)), t0 + s(8)), None);
        // A download cut off after a long flow of bytes is tried again.
        assert_eq!(w.admit(&cut, Some(s(1)), t0 + s(300)), Some(s(1)));
        assert_eq!(w.admit(&silent, Some(s(1)), t0 + s(305)), Some(s(1)));
        assert_eq!(w.admit(&silent, Some(s(1)), t0 + s(311)), None);
        // The retry count runs out whatever the window says.
        assert_eq!(w.admit(&cut, None, t0 + s(400)), None);
    }

    #[test]
    fn exact_lengths_only() {
        assert!(exact(Bytes::from_static(b"abc"), 3, Some(3)).is_ok());
        assert!(exact(Bytes::from_static(b"ab"), 3, Some(2)).is_err());
        assert!(exact(Bytes::from_static(b"abc"), 3, Some(4)).is_err());
    }
}
