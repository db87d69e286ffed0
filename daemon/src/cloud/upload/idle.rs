//! Where the work of an upload runs: on tokio's blocking threads, or, for files stored while
//! they are still being copied into the mount, on threads that run only when a core is idle
//! (SCHED_IDLE, with idle I/O priority). A copy into `uploads/` waits on a round trip through
//! the daemon for every file; hashing and compressing beside it at the same priority delay
//! each of those round trips. Even nice 19 keeps a fair share of a busy core: on two cores the
//! copy took longer with it than with SCHED_IDLE (see bench/uploads.sh). Once a run waits on
//! what is left, the rest goes at normal priority (`early.rs`).

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use snapfs_fs::backend::BackendError;

type Job = Box<dyn FnOnce() + Send>;

/// I/O priority class "idle" (linux/ioprio.h), shifted into place: served only when no other
/// I/O waits on the disk.
const IOPRIO_IDLE: libc::c_long = 3 << 13;
/// `who` of ioprio_set: a thread by its id.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// Puts the calling thread, for good, where it runs only on a core nothing else wants
/// (SCHED_IDLE), and its reads and writes wait for everyone else's. Where that is refused the
/// thread runs as before.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both calls touch only this thread's own scheduling, named by id 0 (the caller).
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_IDLE,
        );
    }
}

/// The threads at the lowest priority, started when first used: one per core but one, which
/// the copy itself keeps busy (cp, the kernel and the daemon's FUSE threads). Even idle work on
/// every core slowed the copy: on two cores, one thread gave the shorter cp + wait.
fn idle_threads() -> Option<&'static Sender<Job>> {
    static POOL: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads =
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
        let mut started = 0;
        for n in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("snapfs-idle-{n}"))
                .spawn(move || {
                    lowest_priority();
                    // Jobs never panic: `started` catches what they run.
                    while let Ok(job) = rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
                        job();
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a thread for idle work"),
            }
        }
        (started > 0).then_some(tx)
    })
    .as_ref()
}

fn lost() -> BackendError {
    BackendError::Other(
        "an upload worker ended without an answer; the daemon may be stopping".into(),
    )
}

/// What a panic says, as an error of the upload it stopped.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> BackendError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    BackendError::Other(format!("an upload worker panicked: {what}"))
}

/// Hands `f` to `start` as a job that sends its answer back (or what stopped it, if it
/// panics), and answers the future of that answer: `f` runs whether or not it is awaited.
fn started<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    start: impl FnOnce(Job) -> Result<(), BackendError>,
) -> impl Future<Output = Result<T, BackendError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = start(Box::new(move || {
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(panicked);
        // The caller may have stopped waiting.
        let _ = tx.send(answer);
    }));
    async move {
        started?;
        rx.await.map_err(|_| lost())?
    }
}

/// Runs `job` on one of tokio's blocking threads.
fn blocking(job: Job) -> Result<(), BackendError> {
    drop(tokio::task::spawn_blocking(job));
    Ok(())
}

/// Starts `f`, which may wait on others for long (a reader handing on chunks), off the runtime:
/// on a thread of its own at the lowest priority when `idle`, else on a blocking thread.
pub(super) fn run_alone<T: Send + 'static>(
    idle: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, BackendError>> {
    started(f, move |job| {
        if !idle {
            return blocking(job);
        }
        std::thread::Builder::new()
            .name("snapfs-idle-read".into())
            .spawn(move || {
                lowest_priority();
                job();
            })
            .map(drop)
            .map_err(|e| BackendError::Other(format!("could not start a thread: {e}")))
    })
}

/// Starts `f`, which never waits on other work, off the runtime: at the lowest priority when
/// `idle`, else on a blocking thread.
pub(super) fn run<T: Send + 'static>(
    idle: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, BackendError>> {
    started(f, move |job| match idle.then(idle_threads).flatten() {
        Some(pool) => pool.send(job).map_err(|_| lost()),
        None => blocking(job),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_with_its_message_and_the_threads_go_on() {
        for idle in [false, true] {
            let e = run(idle, || -> u32 { panic!("boom") }).await.unwrap_err();
            assert!(e.to_string().contains("boom"), "{e}");
            assert_eq!(run(idle, || 7).await.unwrap(), 7);
            let e = run_alone(idle, || -> u32 { panic!("{}", String::from("bang")) })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("bang"), "{e}");
        }
    }

    #[tokio::test]
    async fn work_runs_without_being_awaited() {
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = run_alone(true, move || tx.send(()).is_ok());
        // Answered before the future is polled.
        rx.recv().unwrap();
        assert!(answer.await.unwrap());
    }
}
