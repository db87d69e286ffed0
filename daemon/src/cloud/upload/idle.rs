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
fn nicest() {
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
                    nicest();
                    loop {
                        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        // A job that panics drops its answer, and its caller hears of it;
                        // the thread goes on.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
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
    BackendError::Other("a worker thread stopped".into())
}

/// Hands `f` to `start` as a job that sends its answer back, and answers the future of that
/// answer: `f` runs whether or not it is awaited.
fn started<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    start: impl FnOnce(Job) -> Result<(), BackendError>,
) -> impl Future<Output = Result<T, BackendError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = start(Box::new(move || {
        // The caller may have stopped waiting.
        let _ = tx.send(f());
    }));
    async move {
        started?;
        rx.await.map_err(|_| lost())
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
                nicest();
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
