//! A target that exists only in tests: it takes uploads, keeps its snapshots in memory, can be
//! told to fail or to hold a run until the test lets it go, and has leftovers to collect. It is
//! registered through the same `Registry::add` as the real ones, so the job engine, cleanup
//! and the VFS run against it with no change of their own.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo, SnapshotState};
use snapfs_fs::tree::SnapshotTree;
use tokio::sync::{Semaphore, mpsc};

use crate::config::Retention;
use crate::powers::{
    Deletes, HasLeftovers, InUse, Leftovers, Powers, Progress, Run, TakesLocalData,
};
use crate::registry::NewTarget;

/// A run the target has begun: its snapshot name, its id, and the files it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Began {
    pub name: String,
    pub id: String,
    /// Relative paths and contents of the source's files, sorted.
    pub files: Vec<(String, Vec<u8>)>,
}

pub struct FakeTarget {
    snapshots: Mutex<Vec<SnapshotInfo>>,
    /// Runs wait here for a permit when `hold` is set.
    gate: Semaphore,
    hold: AtomicBool,
    fail_next: AtomicBool,
    began: mpsc::UnboundedSender<Began>,
    abandoned: Mutex<Vec<String>>,
    /// What cleanup was told was in use, each time it asked.
    in_use_seen: Mutex<Vec<HashSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every file below `source` (or `source` itself), as relative path and content.
fn read_tree(source: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut todo = vec![(source.to_path_buf(), String::new())];
    while let Some((path, rel)) = todo.pop() {
        if path.is_dir() {
            for e in std::fs::read_dir(&path)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                todo.push((e.path(), rel));
            }
        } else {
            out.push((rel, std::fs::read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

impl FakeTarget {
    /// The target, and where it tells of each run it begins.
    pub fn new() -> (Arc<FakeTarget>, mpsc::UnboundedReceiver<Began>) {
        let (began, rx) = mpsc::unbounded_channel();
        let t = Arc::new(FakeTarget {
            snapshots: Mutex::new(Vec::new()),
            gate: Semaphore::new(0),
            hold: AtomicBool::new(false),
            fail_next: AtomicBool::new(false),
            began,
            abandoned: Mutex::new(Vec::new()),
            in_use_seen: Mutex::new(Vec::new()),
        });
        (t, rx)
    }

    /// `test/<name>`, with every power the job engine and cleanup use.
    pub fn into_target(self: &Arc<Self>, name: &str, retention: Retention) -> NewTarget {
        NewTarget {
            kind: "test",
            name: name.to_string(),
            description: "a target in memory".into(),
            backend: self.clone(),
            raw: None,
            powers: Powers {
                local_data: Some(self.clone()),
                deletes: Some(self.clone()),
                leftovers: Some(self.clone()),
                ..Powers::default()
            },
            retention,
        }
    }

    /// Runs from now on wait for `release` before they finish.
    pub fn hold(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }

    /// Lets one held run go on.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    pub fn fail_next(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }

    /// A ready snapshot made elsewhere, created at `created` and expiring at `expires`.
    pub fn put(&self, name: &str, created: DateTime<Utc>, expires: Option<DateTime<Utc>>) {
        lock(&self.snapshots).push(SnapshotInfo {
            name: name.to_string(),
            created,
            state: SnapshotState::Ready,
            is_file: false,
            size: 0,
            files: 0,
            crc32c: None,
            expires,
            id: name.to_string(),
        });
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.snapshots)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn abandoned(&self) -> Vec<String> {
        lock(&self.abandoned).clone()
    }

    pub fn in_use_seen(&self) -> Vec<HashSet<String>> {
        lock(&self.in_use_seen).clone()
    }
}

#[async_trait]
impl Backend for FakeTarget {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(lock(&self.snapshots).clone())
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        Err(BackendError::Unsupported(format!("{name}: not readable")))
    }

    async fn read_range(&self, object: &str, _range: Range<u64>) -> Result<Bytes, BackendError> {
        Err(BackendError::NotFound(object.to_string()))
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        if name.contains('_') {
            return Err(BackendError::InvalidName {
                name: name.to_string(),
                reason: "no underscores here".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl TakesLocalData for FakeTarget {
    async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        self.check_name(name)?;
        if lock(&self.snapshots).iter().any(|s| s.name == name) {
            return Err(BackendError::AlreadyExists(format!("snapshot {name}")));
        }
        Ok(())
    }

    async fn commit(
        self: Arc<Self>,
        name: &str,
        source: &Path,
        run: &Run<'_>,
    ) -> Result<SnapshotInfo, BackendError> {
        let files = read_tree(source).map_err(|e| BackendError::Other(e.to_string()))?;
        let size = files.iter().map(|(_, d)| d.len() as u64).sum();
        let _ = self.began.send(Began {
            name: name.to_string(),
            id: run.id.to_string(),
            files,
        });
        if self.hold.load(Ordering::SeqCst) {
            let permit = self.gate.acquire().await;
            permit
                .map_err(|e| BackendError::Other(e.to_string()))?
                .forget();
        }
        if run.cancel.load(Ordering::SeqCst) {
            return Err(BackendError::Other("cancelled".into()));
        }
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(BackendError::Unavailable("told to fail".into()));
        }
        run.progress.done.store(size, Ordering::SeqCst);
        run.progress.total.store(size, Ordering::SeqCst);
        self.put(name, Utc::now(), None);
        let info = lock(&self.snapshots).last().cloned();
        info.ok_or_else(|| BackendError::Other("lost the snapshot".into()))
    }

    async fn abandon(&self, id: &str) -> Result<(), BackendError> {
        lock(&self.abandoned).push(id.to_string());
        Ok(())
    }
}

#[async_trait]
impl Deletes for FakeTarget {
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.list_snapshots().await
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let mut snapshots = lock(&self.snapshots);
        let before = snapshots.len();
        snapshots.retain(|s| s.name != name);
        if snapshots.len() == before {
            return Err(BackendError::NotFound(name.to_string()));
        }
        Ok(())
    }
}

#[async_trait]
impl HasLeftovers for FakeTarget {
    /// One leftover, always; what is in use is remembered for the test to look at.
    async fn collect_leftovers(
        &self,
        in_use: &(dyn Fn() -> InUse + Send + Sync),
        _grace: Duration,
        _dry_run: bool,
        _progress: &Progress,
    ) -> Result<Leftovers, BackendError> {
        lock(&self.in_use_seen).push(in_use().running);
        Ok(Leftovers {
            other: 1,
            ..Leftovers::default()
        })
    }
}
