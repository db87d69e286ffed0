//! The `Backend` trait: what the VFS needs from a place that holds snapshots.
//!
//! A backend lists snapshots, opens one as an immutable tree, and reads byte ranges of the
//! objects that hold the data. Decompression, checksums and caching are done once, above it,
//! for every backend alike (see `vfs::blocks`). Creating snapshots is the daemon's job engine's
//! business, not the file system's.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::tree::{FileKind, SnapshotTree};

/// Failures classified by what the caller can do about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("snapshot limit reached ({0} snapshots)")]
    Quota(u64),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The backend cannot do this at all (a HiveMQ cluster has no delete).
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

pub use snapfs_control::wire::{SnapshotInfo, SnapshotState};

/// An object of the raw `objects/` view.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub name: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
    /// Changes whenever the object's content does; part of the cache key.
    pub version: String,
}

/// One level of the raw view: sub-folders and objects directly under a prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawListing {
    pub dirs: Vec<String>,
    pub objects: Vec<RawObject>,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Every snapshot, in any order.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError>;
    /// The content of a ready snapshot. Snapshots are immutable, so callers may keep it.
    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError>;
    /// Raw bytes of one object (a pack, a file); the range is within the object.
    async fn read_range(&self, object: &str, range: Range<u64>) -> Result<Bytes, BackendError>;
    /// Whether this backend can hold a snapshot of that name (syntax only, no I/O).
    fn check_name(&self, name: &str) -> Result<(), BackendError>;
}

/// Optional power: a read-only view of a store's other objects.
#[async_trait]
pub trait RawObjects: Send + Sync + 'static {
    /// Folders and objects directly under `prefix` ("" or ending in '/').
    async fn list_dir(&self, prefix: &str) -> Result<RawListing, BackendError>;
}

/// One entry of a live tree.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub perm: u16,
    pub mtime: std::time::SystemTime,
    /// Where a symlink points; None for other kinds.
    pub symlink: Option<String>,
    /// Extended attributes, names without the `user.snapfs.` prefix.
    pub xattrs: Vec<(String, String)>,
    /// This directory is the `uploads/` of a target whose path in the mount is the tree's
    /// own path joined with the entry's parent (`k8s/prod` + `shop`); the VFS serves it as it
    /// serves any target's uploads.
    pub uploads: bool,
}

/// A read-only tree whose content lives elsewhere and changes on its own (a Kubernetes context:
/// namespaces, pods, files inside containers). Nothing of it is cached beyond a request, so
/// paths are plain '/'-separated strings below the tree's own directory ("" is the directory).
#[async_trait]
pub trait LiveTree: Send + Sync + 'static {
    /// The entries of directory `path`.
    async fn list(&self, path: &str) -> Result<Vec<LiveEntry>, BackendError>;
    /// One entry; `NotFound` when it does not exist.
    async fn stat(&self, path: &str) -> Result<LiveEntry, BackendError>;
    /// Up to `len` bytes of file `path` from `offset`; fewer only at the end of the file.
    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes, BackendError>;
}
