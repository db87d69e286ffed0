//! The daemon's side of the control socket.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use snapfs_control::wire::{ErrorCode, Info, Metrics, PROTOCOL, Request, Response, StatusReport};
use snapfs_fs::backend::BackendError;
use snapfs_fs::cache::BlockCache;
use snapfs_fs::vfs::{Vfs, VfsError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::jobs::Jobs;
use crate::lifecycle::Lifecycle;
use crate::powers::{Power, Progress};
use crate::registry::{Entry, Registry};

pub struct Server {
    pub mountpoint: PathBuf,
    pub registry: Arc<Registry>,
    pub jobs: Arc<Jobs>,
    pub cache: Arc<BlockCache>,
    pub lifecycle: Arc<Lifecycle>,
    /// The mount, to have the kernel told of a change before answering that it happened.
    pub vfs: Weak<Vfs>,
    /// Told when a client asks the daemon to stop.
    pub stop: Arc<tokio::sync::Notify>,
}

/// Binds the socket (mode 0600) and serves until the task is dropped.
pub fn listen(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        snapfs_control::paths::make_private_dir(dir)?;
    }
    // A socket file left by a daemon that died is in the way.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn backend_error(e: BackendError) -> Response {
    let code = match e {
        BackendError::NotFound(_) => ErrorCode::NotFound,
        BackendError::AlreadyExists(_)
        | BackendError::InvalidName { .. }
        | BackendError::Quota(_)
        | BackendError::Unsupported(_) => ErrorCode::Invalid,
        _ => ErrorCode::Failed,
    };
    error(code, e.to_string())
}

fn vfs_error(e: VfsError) -> Response {
    let code = match e {
        VfsError::NotFound => ErrorCode::NotFound,
        VfsError::InvalidName(_) | VfsError::Exists(_) | VfsError::Quota(_) => ErrorCode::Invalid,
        _ => ErrorCode::Failed,
    };
    error(code, e.to_string())
}

/// The span a request runs in: its op and the target and snapshot it names. Warn level, like the
/// file system's, so any warning shown carries its request.
fn request_span(req: &Request) -> tracing::Span {
    let (op, target, name) = match req {
        Request::Info => ("info", None, None),
        Request::Status => ("status", None, None),
        Request::List { target } => ("list", Some(target), None),
        Request::Snapshot { target, name, .. } => ("snapshot", Some(target), Some(name)),
        Request::RestoreClaim { target, name, .. } => ("restore_claim", Some(target), Some(name)),
        Request::Backup { target } => ("backup", Some(target), None),
        Request::Restore { target, name } => ("restore", Some(target), Some(name)),
        Request::Wait { target, name } => ("wait", Some(target), Some(name)),
        Request::Remove { target, name } => ("remove", Some(target), Some(name)),
        Request::Verify { target, name, .. } => ("verify", Some(target), Some(name)),
        Request::Gc { target, .. } => ("gc", target.as_ref(), None),
        Request::Unmount => ("unmount", None, None),
    };
    tracing::warn_span!(
        "request",
        op,
        target = target.map(String::as_str),
        name = name.map(String::as_str)
    )
}

/// How often a request that asked for progress reports it.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

fn checking(progress: &Progress) -> Response {
    Response::Checking {
        done: progress.done.load(Ordering::Relaxed),
        total: progress.total.load(Ordering::Relaxed),
    }
}

/// How long an answer waits for the kernel to forget changed names.
const KERNEL_TOLD_BOUND: Duration = Duration::from_secs(10);

impl Server {
    /// The jobs and the metrics of the targets and the cache, as `snapfs status` shows them.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            jobs: self.jobs.all(),
            metrics: Metrics {
                targets: self
                    .registry
                    .entries()
                    .iter()
                    .map(|e| e.metrics())
                    .collect(),
                cache: self.cache.stats(),
            },
        }
    }

    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.connection(stream).await {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, stream: UnixStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Some(line) = lines.next_line().await? {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.answer(req, &mut write).await?,
                Err(e) => error(ErrorCode::Invalid, format!("unreadable request: {e}")),
            };
            send(&mut write, &response).await?;
        }
        Ok(())
    }

    /// Carries out a request; one that asked for progress has `Checking` lines sent meanwhile,
    /// and a last one once it is done. A client that hangs up cancels the request.
    async fn answer(&self, req: Request, write: &mut OwnedWriteHalf) -> std::io::Result<Response> {
        let watched = matches!(
            req,
            Request::Verify { progress: true, .. } | Request::Gc { progress: true, .. }
        );
        let progress = Progress::default();
        let work = self.handle(req, &progress);
        if !watched {
            return Ok(work.await);
        }
        tokio::pin!(work);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let response = loop {
            tokio::select! {
                response = &mut work => break response,
                _ = tick.tick() => send(write, &checking(&progress)).await?,
            }
        };
        send(write, &checking(&progress)).await?;
        Ok(response)
    }

    fn target(&self, path: &str) -> Result<Arc<Entry>, Response> {
        self.registry
            .find(path)
            .ok_or_else(|| error(ErrorCode::NotFound, format!("no target {path}")))
    }

    async fn handle(&self, req: Request, progress: &Progress) -> Response {
        let span = request_span(&req);
        // After these, the client looks at the mount and must see what it was told.
        let changes = matches!(
            req,
            Request::Snapshot { .. }
                | Request::Backup { .. }
                | Request::Wait { .. }
                | Request::Remove { .. }
                | Request::Gc { .. }
        );
        let response = match self.dispatch(req, progress).instrument(span.clone()).await {
            Ok(r) | Err(r) => r,
        };
        if changes {
            self.kernel_told().instrument(span).await;
        }
        response
    }

    /// Waits until the kernel forgot the names that changed so far. A request on the same
    /// directory that is stuck on a backend holds the kernel up; past a bound the answer goes
    /// anyway and the kernel's cache lifetimes end the stale view.
    async fn kernel_told(&self) {
        let Some(vfs) = self.vfs.upgrade() else {
            return;
        };
        if tokio::time::timeout(KERNEL_TOLD_BOUND, vfs.kernel_told())
            .await
            .is_err()
        {
            tracing::warn!(
                "the kernel did not take a cache notice within {}s; the mount may show the old \
                 entry until its cache lifetime ends",
                KERNEL_TOLD_BOUND.as_secs()
            );
        }
    }

    async fn dispatch(&self, req: Request, progress: &Progress) -> Result<Response, Response> {
        Ok(match req {
            Request::Info => Response::Info(Info {
                protocol: PROTOCOL,
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                mountpoint: self.mountpoint.clone(),
                targets: self
                    .registry
                    .entries()
                    .iter()
                    .map(|e| e.path().to_string())
                    .collect(),
            }),
            Request::Status => Response::Status(self.status()),
            Request::List { target } => {
                let t = self.target(&target)?;
                let mut snapshots = t
                    .target
                    .backend
                    .list_snapshots()
                    .await
                    .map_err(backend_error)?;
                snapshots
                    .sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
                Response::Snapshots { snapshots }
            }
            Request::Snapshot {
                target,
                source,
                name,
                size,
            } => {
                let t = self.target(&target)?;
                if !source.is_absolute() {
                    return Err(error(
                        ErrorCode::Invalid,
                        "the source must be an absolute path",
                    ));
                }
                if let Err(e) = std::fs::symlink_metadata(&source) {
                    return Err(error(
                        ErrorCode::Invalid,
                        format!("{}: {e}", source.display()),
                    ));
                }
                self.jobs
                    .snapshot_local(t.id(), &name, source, size)
                    .await
                    .map_err(vfs_error)?;
                Response::Done
            }
            Request::Backup { target } => {
                let t = self.target(&target)?;
                Response::Job(self.jobs.backup(t.id()).await.map_err(backend_error)?)
            }
            Request::Restore { target, name } => {
                let t = self.target(&target)?;
                Response::Job(
                    self.jobs
                        .restore(t.id(), &name)
                        .await
                        .map_err(backend_error)?,
                )
            }
            Request::RestoreClaim {
                target,
                name,
                claim,
                size,
            } => {
                let t = self.target(&target)?;
                let description = t
                    .need(&t.powers.restores_to_claim, Power::RestoresToClaim)
                    .map_err(backend_error)?
                    .restore_to_claim(&name, &claim, size)
                    .await
                    .map_err(backend_error)?;
                Response::Made { description }
            }
            Request::Wait { target, name } => {
                let t = self.target(&target)?;
                match self.jobs.wait(t.id(), &name).await {
                    Some(status) => Response::Job(status),
                    None => {
                        // No job: fine if the snapshot is there already.
                        let list = t
                            .target
                            .backend
                            .list_snapshots()
                            .await
                            .map_err(backend_error)?;
                        let Some(s) = list.into_iter().find(|s| s.name == name) else {
                            return Err(error(
                                ErrorCode::NotFound,
                                format!("no upload or snapshot {name} in {target}"),
                            ));
                        };
                        Response::Job(snapfs_fs::vfs::UploadStatus {
                            kind: Default::default(),
                            state: snapfs_fs::vfs::UploadState::Done,
                            bytes_done: s.size,
                            bytes_total: s.size,
                            target: target.trim_matches('/').to_string(),
                            snapshot: name,
                            error: None,
                            note: None,
                        })
                    }
                }
            }
            Request::Remove { target, name } => {
                let t = self.target(&target)?;
                t.need(&t.powers.deletes, Power::Deletes)
                    .map_err(backend_error)?
                    .delete(&name)
                    .await
                    .map_err(backend_error)?;
                self.registry.changed(t.id(), &name);
                Response::Done
            }
            Request::Verify { target, name, .. } => {
                let t = self.target(&target)?;
                let report = t
                    .need(&t.powers.verifies, Power::Verifies)
                    .map_err(backend_error)?
                    .verify(&name, progress)
                    .await
                    .map_err(backend_error)?;
                Response::Verified(report)
            }
            Request::Gc {
                target, dry_run, ..
            } => {
                let only = target.as_deref().map(|t| self.target(t)).transpose()?;
                Response::Gc(
                    self.lifecycle
                        .collect(only.as_deref(), dry_run, progress)
                        .await,
                )
            }
            Request::Unmount => {
                self.stop.notify_one();
                Response::Done
            }
        })
    }
}
