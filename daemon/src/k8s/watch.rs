//! Waiting for one object to change, through kube's `watch_object` (the watch under
//! `await_condition`) instead of a GET every few hundred milliseconds. Unlike
//! `await_condition`, a wait here has a time limit, can be cancelled, and outlasts a broken
//! watch: kube's watcher lists again after a backoff. Only an answer that waiting cannot
//! change (denied, no such resource) ends it early.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watch_object};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use snapfs_fs::backend::BackendError;
use tokio::time::Instant;

use super::errors::{cancelled, classify};

/// How often a wait looks at its cancel flag.
const LOOK: Duration = Duration::from_millis(250);

/// Why a wait stopped before the object got where it was awaited.
pub enum Stop {
    Cancelled,
    TimedOut,
    Failed(BackendError),
}

impl Stop {
    /// The error the wait ends with; `timed_out` says what did not happen in time.
    pub fn error(self, timed_out: impl FnOnce() -> String) -> BackendError {
        match self {
            Stop::Cancelled => cancelled(),
            Stop::TimedOut => BackendError::Unavailable(timed_out()),
            Stop::Failed(e) => e,
        }
    }
}

type States<K> = BoxStream<'static, Result<Option<K>, watcher::Error>>;

/// The states of object `name`, as a watch sees them, until a time limit.
pub struct Watch<'a, K> {
    api: Api<K>,
    name: String,
    /// `watch <resource> <name> in namespace <ns>`, for errors.
    what: String,
    states: States<K>,
    deadline: Instant,
    cancel: Option<&'a AtomicBool>,
}

impl<'a, K> Watch<'a, K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    pub fn new(api: Api<K>, name: &str, limit: Duration, what: String) -> Watch<'a, K> {
        Watch {
            states: states(api.clone(), name),
            api,
            name: name.to_string(),
            what,
            deadline: Instant::now() + limit,
            cancel: None,
        }
    }

    /// Stops the wait once `cancel` is set.
    pub fn cancelled_by(self, cancel: &'a AtomicBool) -> Watch<'a, K> {
        Watch {
            cancel: Some(cancel),
            ..self
        }
    }

    /// The object's next state: None while it does not exist (also at first, if it does not).
    pub async fn next(&mut self) -> Result<Option<K>, Stop> {
        loop {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Stop::Cancelled);
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Err(Stop::TimedOut);
            }
            let wake = self.deadline.min(now + LOOK);
            match tokio::time::timeout_at(wake, self.states.next()).await {
                Err(_) => {}
                Ok(Some(Ok(state))) => return Ok(state),
                Ok(Some(Err(e))) => {
                    if let Some(e) = lasting(&e, &self.what) {
                        return Err(Stop::Failed(e));
                    }
                    tracing::debug!(object = self.name, error = %e, "watch interrupted; waiting on");
                }
                // A watch does not end by itself; should one, another takes its place.
                Ok(None) => self.states = states(self.api.clone(), &self.name),
            }
        }
    }
}

fn states<K>(api: Api<K>, name: &str) -> States<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watch_object(api, name).default_backoff().boxed()
}

/// A watch error that waiting will not mend, as the error the wait ends with.
fn lasting(e: &watcher::Error, what: &str) -> Option<BackendError> {
    let e = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => classify(e, what),
        watcher::Error::WatchError(s) if s.code == 401 || s.code == 403 => {
            BackendError::PermissionDenied(format!("{what}: {}", s.message))
        }
        // 410 Gone and the like: the watcher lists again.
        _ => return None,
    };
    matches!(
        e,
        BackendError::PermissionDenied(_) | BackendError::NotFound(_)
    )
    .then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("no", "Because").with_code(code).boxed())
    }

    #[test]
    fn only_answers_that_waiting_cannot_change_end_a_wait() {
        let what = "watch pod p in namespace shop";
        let denied = lasting(&watcher::Error::InitialListFailed(api(403)), what);
        assert!(matches!(denied, Some(BackendError::PermissionDenied(m)) if m.contains(what)));
        let unknown = lasting(&watcher::Error::WatchStartFailed(api(404)), what);
        assert!(matches!(unknown, Some(BackendError::NotFound(_))));
        let forbidden = Status::failure("no", "Forbidden").with_code(403).boxed();
        assert!(lasting(&watcher::Error::WatchError(forbidden), what).is_some());
        for passing in [
            watcher::Error::WatchFailed(api(503)),
            watcher::Error::InitialListFailed(api(500)),
            watcher::Error::WatchError(Status::failure("old", "Expired").with_code(410).boxed()),
            watcher::Error::NoResourceVersion,
        ] {
            assert!(lasting(&passing, what).is_none(), "{passing}");
        }
    }
}
