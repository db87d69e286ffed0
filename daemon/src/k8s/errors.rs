//! Kube errors as the file system and the job engine see them, and the one retry of requests
//! that failed because the cluster could not be reached.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;
use futures::TryFutureExt;
use snapfs_fs::backend::BackendError;

use crate::backoff::Backoff;

/// Three tries. With jitter the two waits fall in 200–400 ms and 400–800 ms: never less in
/// all than an API server restart of half a second needs.
const REQUESTS: Backoff = Backoff {
    first: Duration::from_millis(400),
    max: Duration::from_secs(2),
    retries: Some(2),
    jitter: true,
};

/// A kube error as the file system reports it: 403 keeps the API server's message, which
/// names the verb and the resource; anything short of an answer is `Unavailable`.
pub(crate) fn classify(e: &kube::Error, what: &str) -> BackendError {
    match e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => {
            BackendError::PermissionDenied(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 => BackendError::NotFound(what.to_string()),
        kube::Error::Api(s) if s.code == 409 => BackendError::AlreadyExists(what.to_string()),
        kube::Error::Api(s) if s.code >= 500 => {
            BackendError::Unavailable(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) => BackendError::Other(format!("{what}: {}", s.message)),
        // A credential plugin that fails when the token is renewed: waiting will not help.
        kube::Error::Auth(a) => {
            BackendError::PermissionDenied(format!("{what}: {}", super::credentials::line(a)))
        }
        other => BackendError::Unavailable(format!("{what}: {other}")),
    }
}

/// Runs a request, again after a short wait while the cluster cannot be reached.
pub(crate) async fn retry<T, F, Fut>(mut f: F, what: &str) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    (move || f().map_err(move |e| classify(&e, what)))
        .retry(REQUESTS)
        .when(|e| matches!(e, BackendError::Unavailable(_)))
        .notify(|e, wait| tracing::debug!(error = %e, ?wait, "retrying"))
        .await
}

/// What a cluster without the snapshot CRDs answers to anything about VolumeSnapshots.
pub(crate) fn no_snapshot_api() -> BackendError {
    BackendError::Unsupported(
        "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed in this cluster: install the snapshot CRDs and controller (kubernetes-csi/external-snapshotter)"
            .into(),
    )
}

/// How a job that was told to stop ends.
pub(crate) fn cancelled() -> BackendError {
    BackendError::Other("cancelled".into())
}
