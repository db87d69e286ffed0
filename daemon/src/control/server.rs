//! The daemon's side of the control socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapfs_control::wire::{
    ErrorCode, Info, Metrics, PROTOCOL, Request, Response, StatusReport, VerifyReport,
};
use snapfs_fs::backend::BackendError;
use snapfs_fs::vfs::{Vfs, VfsError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::jobs::Jobs;
use crate::lifecycle::Lifecycle;

pub struct Server {
    pub mountpoint: PathBuf,
    pub jobs: Arc<Jobs>,
    pub vfs: Arc<Vfs>,
    pub lifecycle: Arc<Lifecycle>,
    /// Told when a client asks the daemon to stop.
    pub stop: Arc<tokio::sync::Notify>,
}

/// Binds the socket (mode 0600) and serves until the task is dropped.
pub fn listen(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
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

impl Server {
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
                Ok(req) => self.handle(req).await,
                Err(e) => error(ErrorCode::Invalid, format!("unreadable request: {e}")),
            };
            let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
            out.push(b'\n');
            write.write_all(&out).await?;
        }
        Ok(())
    }

    fn target(&self, path: &str) -> Result<usize, Response> {
        self.jobs
            .target_index(path.trim_matches('/'))
            .ok_or_else(|| error(ErrorCode::NotFound, format!("no target {path}")))
    }

    fn backend(&self, t: usize) -> Result<crate::target::TargetBackend, Response> {
        self.jobs
            .backend(t)
            .ok_or_else(|| error(ErrorCode::NotFound, "no such target"))
    }

    async fn handle(&self, req: Request) -> Response {
        match self.dispatch(req).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn dispatch(&self, req: Request) -> Result<Response, Response> {
        Ok(match req {
            Request::Info => Response::Info(Info {
                protocol: PROTOCOL,
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                mountpoint: self.mountpoint.clone(),
                targets: self
                    .jobs
                    .backends()
                    .iter()
                    .map(|b| b.path().to_string())
                    .collect(),
            }),
            Request::Status => Response::Status(StatusReport {
                jobs: self.jobs.all(),
                metrics: Metrics {
                    targets: self.jobs.backends().iter().map(|b| b.metrics()).collect(),
                    cache: self.vfs.cache().stats(),
                },
            }),
            Request::List { target } => {
                let t = self.target(&target)?;
                let mut snapshots = self
                    .backend(t)?
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
                    .snapshot_local(t, &name, source, size)
                    .await
                    .map_err(vfs_error)?;
                Response::Done
            }
            Request::Backup { target } => {
                let t = self.target(&target)?;
                Response::Job(self.jobs.backup(t).await.map_err(backend_error)?)
            }
            Request::Restore { target, name } => {
                let t = self.target(&target)?;
                Response::Job(self.jobs.restore(t, &name).await.map_err(backend_error)?)
            }
            Request::RestoreClaim {
                target,
                name,
                claim,
                size,
            } => {
                let t = self.target(&target)?;
                let backend = self.backend(t)?;
                let Some(k) = backend.kube() else {
                    return Err(error(
                        ErrorCode::Invalid,
                        format!("{target} is not a Kubernetes namespace: --pvc needs one"),
                    ));
                };
                let description = k
                    .restore_to_claim(&name, &claim, size)
                    .await
                    .map_err(backend_error)?;
                Response::Made { description }
            }
            Request::Wait { target, name } => {
                let t = self.target(&target)?;
                match self.jobs.wait(t, &name).await {
                    Some(status) => Response::Job(status),
                    None => {
                        // No job: fine if the snapshot is there already.
                        let list = self
                            .backend(t)?
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
                self.backend(t)?
                    .delete(&name)
                    .await
                    .map_err(backend_error)?;
                self.vfs.entry_changed(t, &name);
                Response::Done
            }
            Request::Verify { target, name } => {
                let t = self.target(&target)?;
                let (files, bytes, errors) = self
                    .backend(t)?
                    .verify(&name)
                    .await
                    .map_err(backend_error)?;
                Response::Verified(VerifyReport {
                    files,
                    bytes,
                    errors,
                })
            }
            Request::Gc { target, dry_run } => {
                let only = target.as_deref().map(|t| self.target(t)).transpose()?;
                Response::Gc(self.lifecycle.collect(only, dry_run).await)
            }
            Request::Unmount => {
                self.stop.notify_one();
                Response::Done
            }
        })
    }
}
