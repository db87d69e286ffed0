//! The HiveMQ backend (DESIGN §7): a cluster's backups as one-file snapshots `<id>.backup`,
//! read with ranged GETs of the download endpoint through the VFS's cache. HiveMQ gives no
//! checksum, so these bytes are checked for their length only, not against a CRC32C.
//! Backups and restores are started here and followed by polling; the job engine runs them.

mod client;
mod powers;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo, SnapshotState};
use snapfs_fs::format::BLOCK_SIZE;
use snapfs_fs::tree::{FileKind, SnapshotTree, TreeNode, is_file_name, raw_blocks};

use anyhow::Context;
use client::Client;
pub use client::{Backup, backups_of};
use snapfs_control::paths::Paths;
use snapfs_control::wire::{TargetMetrics, VerifyReport};

use crate::backoff::Backoff;
use crate::config::{Cluster, Endpoint};
use crate::k8s::PodForward;
use crate::powers::Progress;

/// Why a broker pod refuses connections on the REST port, most of the time.
const REST_API_OFF: &str = "HiveMQ's REST API listener is off by default; enable it in the broker's config.xml (<rest-api><enabled>true</enabled> with an <http> listener on this port) or with the Helm chart's REST API option, and check the port in `kubernetes.port`";

/// The file name of a backup's snapshot.
const SUFFIX: &str = ".backup";

/// What a backup or restore is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
}

pub struct HiveMqBackend {
    /// Target path in the mount (`hivemq/broker`).
    path: String,
    client: Client,
    poll: Backoff,
    /// Backups by snapshot name as the last listing showed them.
    known: Mutex<HashMap<String, Backup>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The backup id behind a snapshot name.
pub fn id_of(name: &str) -> Option<&str> {
    name.strip_suffix(SUFFIX).filter(|id| !id.is_empty())
}

fn downloadable(state: &str) -> bool {
    state == "COMPLETED" || state.starts_with("RESTORE_")
}

/// How a listing shows a backup; None for one it cannot show (no id, or one that could not be
/// a file name or be asked for again; unknown state; downloadable with no size, whose bytes
/// could not be told from a short read).
pub fn info_of(b: &Backup) -> Option<SnapshotInfo> {
    let id = b.id.as_deref().filter(|id| client::checked(id).is_ok())?;
    let name = format!("{id}{SUFFIX}");
    if !is_file_name(&name) {
        return None;
    }
    let state = match b.state.as_deref()? {
        "IN_PROGRESS" => SnapshotState::Creating,
        "FAILED" => SnapshotState::Failed,
        s if downloadable(s) && b.bytes.is_some() => SnapshotState::Ready,
        _ => return None,
    };
    Some(SnapshotInfo {
        name,
        created: b.created_at.unwrap_or_default(),
        state,
        is_file: true,
        size: b.bytes.unwrap_or(0),
        files: 1,
        crc32c: None,
        expires: None,
        id: id.to_string(),
    })
}

/// A one-file tree whose blocks are ranges of the backup's download.
fn tree_of(id: &str, size: u64, created: SystemTime) -> Result<SnapshotTree, BackendError> {
    let mut node = TreeNode::new(FileKind::File, 0o444, created);
    node.size = size;
    node.blocks = raw_blocks(id, size);
    SnapshotTree::build([(String::new(), node)]).map_err(|e| BackendError::Corrupt(e.to_string()))
}

impl HiveMqBackend {
    /// The backend of `cluster`; one found by Kubernetes coordinates gets a port-forward whose
    /// socket lies in `paths`' runtime directory. Must be called within the runtime.
    pub fn new(cluster: &Cluster, paths: &Paths) -> anyhow::Result<HiveMqBackend> {
        let path = format!("hivemq/{}", cluster.name);
        let forward = match &cluster.endpoint {
            Endpoint::Url(_) => None,
            Endpoint::Kubernetes(coords) => Some(
                PodForward::start(coords.clone(), paths.clone(), REST_API_OFF.into())
                    .context("opening the port-forward socket")?,
            ),
        };
        Ok(HiveMqBackend {
            client: Client::new(path.clone(), cluster, forward)?,
            path,
            poll: Backoff {
                first: cluster.poll_start,
                max: cluster.poll_max,
                retries: None,
                jitter: false,
            },
            known: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn metrics(&self) -> TargetMetrics {
        let c = &self.client.counters;
        TargetMetrics {
            target: self.path.clone(),
            get_requests: c.get_requests.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            put_requests: c.post_requests.load(Ordering::Relaxed),
            put_bytes: 0,
            list_requests: c.list_requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            latency: self.client.latency.snapshot(),
        }
    }

    /// A backup by snapshot name: from the last listing if it was downloadable there (that
    /// never changes), else asked of the broker.
    async fn backup(&self, name: &str) -> Result<Backup, BackendError> {
        let id = id_of(name).ok_or_else(|| BackendError::NotFound(format!("snapshot {name}")))?;
        let listed = lock(&self.known).get(name).cloned();
        if let Some(b) = listed.filter(|b| b.state.as_deref().is_some_and(downloadable)) {
            return Ok(b);
        }
        self.client.get(id).await
    }

    /// Starts a backup; answers its snapshot name.
    pub async fn start_backup(&self) -> Result<String, BackendError> {
        let b = self.client.create().await?;
        let id = b.id.ok_or_else(|| {
            BackendError::Other(format!("{}: the new backup has no id", self.path))
        })?;
        tracing::info!(target = self.path, backup = id, "backup started");
        Ok(format!("{id}{SUFFIX}"))
    }

    /// Starts restoring snapshot `name` into the cluster.
    pub async fn start_restore(&self, name: &str) -> Result<(), BackendError> {
        let id = id_of(name).ok_or_else(|| BackendError::NotFound(format!("snapshot {name}")))?;
        self.client.restore(id).await?;
        tracing::info!(target = self.path, backup = id, "restore started");
        Ok(())
    }

    /// Polls snapshot `name` until `op` ends (backoff from `poll_start` to `poll_max`);
    /// answers its size, or why it failed. A broker that is unreachable for a while is polled
    /// again; only a definite answer ends the wait.
    pub async fn follow(&self, name: &str, op: Operation) -> Result<u64, BackendError> {
        let id = id_of(name).ok_or_else(|| BackendError::NotFound(format!("snapshot {name}")))?;
        let (running, done, failed) = match op {
            Operation::Backup => ("IN_PROGRESS", "COMPLETED", "FAILED"),
            Operation::Restore => ("RESTORE_IN_PROGRESS", "RESTORE_COMPLETED", "RESTORE_FAILED"),
        };
        let mut waits = self.poll.build();
        loop {
            // A poll has no retry count, so its waits never run out.
            tokio::time::sleep(waits.next().unwrap_or(self.poll.max)).await;
            let b = match self.client.get(id).await {
                Ok(b) => b,
                Err(BackendError::Unavailable(e)) => {
                    tracing::warn!(target = self.path, backup = id, error = e, "still waiting");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match b.state.as_deref() {
                Some(s) if s == running => {}
                Some(s) if s == done => return Ok(b.bytes.unwrap_or(0)),
                Some(s) if s == failed => {
                    let why = b.fail_reason.unwrap_or_else(|| "no reason given".into());
                    return Err(BackendError::Other(format!("{s}: {why}")));
                }
                other => {
                    return Err(BackendError::Other(format!(
                        "backup {id} is in state {} while a {op:?} was awaited",
                        other.unwrap_or("(none)")
                    )));
                }
            }
        }
    }

    /// Reads the whole backup file from the broker and checks its length (there is no
    /// checksum to check it against).
    pub async fn verify(
        &self,
        name: &str,
        progress: &Progress,
    ) -> Result<VerifyReport, BackendError> {
        let b = self.backup(name).await?;
        let (Some(id), Some(size)) = (b.id.as_deref(), b.bytes) else {
            return Err(BackendError::NotFound(format!(
                "snapshot {name} (not downloadable)"
            )));
        };
        progress.total.fetch_add(size, Ordering::Relaxed);
        let mut start = 0;
        while start < size {
            let end = (start + BLOCK_SIZE as u64).min(size);
            if let Err(e) = self.client.download(id, start..end).await {
                return Ok(VerifyReport {
                    files: 1,
                    bytes: start,
                    errors: vec![(name.to_string(), e.to_string())],
                });
            }
            progress.done.fetch_add(end - start, Ordering::Relaxed);
            start = end;
        }
        Ok(VerifyReport {
            files: 1,
            bytes: size,
            errors: Vec::new(),
        })
    }
}

#[async_trait]
impl Backend for HiveMqBackend {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        let backups = self.client.list().await?;
        let mut known = HashMap::new();
        let mut out = Vec::new();
        for b in backups {
            if let Some(info) = info_of(&b) {
                known.insert(info.name.clone(), b);
                out.push(info);
            }
        }
        *lock(&self.known) = known;
        Ok(out)
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        let b = self.backup(name).await?;
        let info = info_of(&b)
            .filter(|i| i.state == SnapshotState::Ready)
            .ok_or_else(|| BackendError::NotFound(format!("snapshot {name}")))?;
        Ok(Arc::new(tree_of(&info.id, info.size, info.created.into())?))
    }

    async fn read_range(&self, object: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.client.download(object, range).await
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        Err(BackendError::InvalidName {
            name: name.to_string(),
            reason: "HiveMQ backups are made with `snapfs snapshot` and named by the broker".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(state: &str, bytes: Option<u64>) -> Backup {
        Backup {
            id: Some("20261122-101500".into()),
            created_at: Some("2026-11-22T10:15:00.000Z".parse().unwrap()),
            bytes,
            state: Some(state.into()),
            fail_reason: None,
        }
    }

    #[test]
    fn states_map_onto_snapshot_states() {
        let state = |s, bytes| info_of(&backup(s, bytes)).map(|i| i.state);
        assert_eq!(state("COMPLETED", Some(9)), Some(SnapshotState::Ready));
        assert_eq!(state("RESTORE_FAILED", Some(9)), Some(SnapshotState::Ready));
        assert_eq!(state("IN_PROGRESS", None), Some(SnapshotState::Creating));
        assert_eq!(state("FAILED", None), Some(SnapshotState::Failed));
        assert_eq!(state("COMPLETED", None), None);
        assert_eq!(state("SOMETHING_NEW", Some(9)), None);
        let i = info_of(&backup("COMPLETED", Some(9))).unwrap();
        assert_eq!(i.name, "20261122-101500.backup");
        assert_eq!((i.size, i.is_file, i.crc32c), (9, true, None));
        assert_eq!(id_of(&i.name), Some("20261122-101500"));
        assert_eq!(id_of(".backup"), None);
        assert_eq!(id_of("x.zip"), None);
    }

    #[test]
    fn ids_that_cannot_be_file_names_are_not_shown() {
        let shown = |id: &str| {
            let mut b = backup("COMPLETED", Some(1));
            b.id = Some(id.to_owned());
            info_of(&b).map(|i| i.name)
        };
        for id in ["a/b", "..", "", "a\0b", "caf\u{e9}", &"x".repeat(249)] {
            assert_eq!(shown(id), None, "{id:?}");
        }
        assert_eq!(shown(&"x".repeat(248)).map(|n| n.len()), Some(255));
    }

    #[test]
    fn trees_cut_the_file_into_blocks() {
        let size = 2 * BLOCK_SIZE as u64 + 5;
        let t = tree_of("b", size, SystemTime::UNIX_EPOCH).unwrap();
        let root = t.node(SnapshotTree::ROOT).unwrap();
        assert_eq!(root.size, size);
        let spans: Vec<(u64, u32)> = root.blocks.iter().map(|b| (b.offset, b.len)).collect();
        let bs = BLOCK_SIZE as u32;
        assert_eq!(
            spans,
            [(0, bs), (u64::from(bs), bs), (2 * u64::from(bs), 5)]
        );
        let empty = tree_of("b", 0, SystemTime::UNIX_EPOCH).unwrap();
        assert!(empty.node(SnapshotTree::ROOT).unwrap().blocks.is_empty());
    }
}
