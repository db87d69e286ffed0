//! A snapshot as listings show it: the file system lists these, the daemon sends them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Creating,
    Ready,
    Failed,
    Deleting,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
            SnapshotState::Failed => "failed",
            SnapshotState::Deleting => "deleting",
        }
    }
}

/// One snapshot as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub created: DateTime<Utc>,
    pub state: SnapshotState,
    /// True when the snapshot is a single file rather than a folder tree.
    pub is_file: bool,
    pub size: u64,
    pub files: u64,
    pub crc32c: Option<u32>,
    pub expires: Option<DateTime<Utc>>,
    /// The backend's own identifier (object key, resource name).
    pub id: String,
}
