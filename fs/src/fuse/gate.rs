//! The requests in flight, and how they are ended early: when the mount stops (a request still
//! inside the runtime when it shuts down would panic its thread and leave the caller hanging),
//! and when the process waiting for one is killed (it stays in the kernel until the answer).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::caller;
use crate::vfs::VfsError;

/// How long requests in flight may go on once the mount stops, before they are cancelled.
const FINISH_GRACE: Duration = Duration::from_secs(2);
/// How long cancelled requests get to leave the runtime (their futures are dropped at their
/// next await, so this is only ever short).
const LEAVE_LIMIT: Duration = Duration::from_secs(5);

pub(super) struct Gate {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    cancel: watch::Sender<bool>,
}

fn stopping_error() -> VfsError {
    VfsError::Io("the mount is stopping".into())
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            cancel: watch::channel(false).0,
        }
    }

    /// Runs `f` on `rt` unless the mount is stopping; a request cancelled meanwhile fails with
    /// EIO. With a `caller` (the pid of a request that is safe to drop halfway), the request
    /// ends with EINTR as soon as that caller is seen killed.
    pub(super) fn run<T>(
        &self,
        rt: &tokio::runtime::Handle,
        caller: Option<u32>,
        f: impl std::future::Future<Output = Result<T, VfsError>>,
    ) -> Result<T, VfsError> {
        // Counted before the flag is read, so `stop` either sees this request or it sees the flag.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = if self.stopping.load(Ordering::SeqCst) {
            Err(stopping_error())
        } else {
            let mut cancelled = self.cancel.subscribe();
            rt.block_on(async move {
                tokio::select! {
                    r = f => r,
                    _ = cancelled.wait_for(|c| *c) => Err(stopping_error()),
                    () = caller::killed(caller.unwrap_or(0)) => {
                        tracing::info!(pid = caller, "the caller was killed; request ended");
                        Err(VfsError::Interrupted)
                    }
                }
            })
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Refuses new requests, lets those in flight finish for a moment, then cancels the rest;
    /// answers whether none is left inside the runtime.
    pub(super) fn stop(&self) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        let idle = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while self.in_flight.load(Ordering::SeqCst) > 0 {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        };
        if idle(FINISH_GRACE) {
            return true;
        }
        tracing::info!(
            requests = self.in_flight.load(Ordering::SeqCst),
            "cancelling requests still in flight"
        );
        self.cancel.send_replace(true);
        idle(LEAVE_LIMIT)
    }
}
