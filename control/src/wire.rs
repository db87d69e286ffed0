//! The control protocol between `snapfs` and `snapfsd`: one JSON request per line on a Unix
//! socket, one JSON response per line back. Both sides use these types and nothing else.

mod cache;
mod job;
mod snapshot;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use cache::CacheStats;
pub use job::{JobKind, UploadState, UploadStatus};
pub use snapshot::{SnapshotInfo, SnapshotState};

/// Bumped when a request or response changes incompatibly.
pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who is serving: mount point, pid, targets.
    Info,
    /// Jobs and metrics.
    Status,
    /// Snapshots of a target (`cloud/local`), newest first.
    List { target: String },
    /// Make snapshot `name` of a local file or folder, read in place (no staging copy).
    Snapshot {
        target: String,
        source: PathBuf,
        name: String,
        /// Size of the volume to make, where the target makes one (Kubernetes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Make claim `claim` from snapshot `name` of a Kubernetes namespace, at least `size`
    /// bytes; answers what was made.
    RestoreClaim {
        target: String,
        name: String,
        claim: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Make a snapshot where the target makes its own (a HiveMQ backup); answers the job,
    /// which carries the new snapshot's name. Follow it with `Wait`.
    Backup { target: String },
    /// Restore snapshot `name` inside its target (a HiveMQ restore); answers the job. Follow
    /// it with `Wait`.
    Restore { target: String, name: String },
    /// Block until the upload or job `name` of `target` ends; answers its final status.
    Wait { target: String, name: String },
    /// Delete a snapshot (manifest first, then its data).
    Remove { target: String, name: String },
    /// Read every block of a snapshot and check its checksum. With `progress`, `Checking`
    /// lines come before the answer while it runs, and one when it is done.
    Verify {
        target: String,
        name: String,
        #[serde(default)]
        progress: bool,
    },
    /// Delete expired and retired snapshots and orphan packs of one target (`cloud/local`) or
    /// of every target, or with `dry_run` only say what would go. With `progress`, `Checking`
    /// lines come while it runs: the bytes still in use that repacking moves out of mostly
    /// unused packs (0 of 0 while there are none).
    Gc {
        target: Option<String>,
        dry_run: bool,
        #[serde(default)]
        progress: bool,
    },
    /// Unmount and stop the daemon.
    Unmount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Info(Info),
    Status(StatusReport),
    Snapshots {
        snapshots: Vec<SnapshotInfo>,
    },
    Job(UploadStatus),
    Verified(VerifyReport),
    /// How far a request that asked for progress has come: `done` of `total` bytes (0: not
    /// known yet). The answer follows.
    Checking {
        done: u64,
        total: u64,
    },
    Gc(GcReport),
    /// Something was made; what, in one line.
    Made {
        description: String,
    },
    Done,
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// What kind of failure, so the client can pick its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such target, snapshot or job.
    NotFound,
    /// A name or argument the daemon refuses (bad name, name taken, over the limit).
    Invalid,
    /// The operation was tried and failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub protocol: u32,
    pub version: String,
    pub pid: u32,
    pub mountpoint: PathBuf,
    /// Target paths (`cloud/local`).
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub jobs: Vec<UploadStatus>,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Per target: bytes and requests that went to the store.
    pub targets: Vec<TargetMetrics>,
    pub cache: CacheStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetMetrics {
    pub target: String,
    pub get_requests: u64,
    pub get_bytes: u64,
    pub put_requests: u64,
    pub put_bytes: u64,
    pub list_requests: u64,
    pub errors: u64,
    /// Tries of a request after its first, where the target's client makes them.
    #[serde(default)]
    pub retries: u64,
    /// How long store requests took to answer, by operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<OpLatency>,
}

/// The latencies of one kind of store request: how many fell at or below each of
/// [`STORE_LATENCY_BOUNDS`] (not cumulative; one more count for the rest) and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpLatency {
    pub op: String,
    pub counts: Vec<u64>,
    pub sum_micros: u64,
}

/// Upper bounds in seconds of the store latency buckets: a cached object store answer is a
/// millisecond, a large download through a slow link many seconds.
pub const STORE_LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl OpLatency {
    pub fn new(op: &str) -> OpLatency {
        OpLatency {
            op: op.to_string(),
            counts: vec![0; STORE_LATENCY_BOUNDS.len() + 1],
            sum_micros: 0,
        }
    }

    pub fn observe(&mut self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let bucket = STORE_LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(STORE_LATENCY_BOUNDS.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum_micros = self
            .sum_micros
            .saturating_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub files: u64,
    pub bytes: u64,
    /// Paths whose data failed a check, with the reason.
    pub errors: Vec<(String, String)>,
}

/// What a cleanup deleted, or would delete when `dry_run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Snapshots, oldest first within each target.
    pub deleted: Vec<GcDeletion>,
    /// Pack objects that no snapshot lists, left by interrupted uploads or deletions.
    pub orphan_packs: u64,
    pub orphan_bytes: u64,
    /// Claims and pods in Kubernetes that no running upload or reader uses, and snapshots
    /// that uploads abandoned unfinished.
    #[serde(default)]
    pub leftovers: u64,
    /// Packs mostly unused whose chunks in use were moved to new packs, and the bytes in them
    /// no snapshot uses, freed once cleanup deletes them after its grace period.
    #[serde(default)]
    pub repacked_packs: u64,
    #[serde(default)]
    pub repacked_bytes: u64,
    /// Targets that could not be cleaned up (fully), with the reason.
    pub errors: Vec<GcError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcDeletion {
    /// Target path (`cloud/local`).
    pub target: String,
    pub name: String,
    pub created: DateTime<Utc>,
    pub reason: GcReason,
}

/// Why a snapshot is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GcReason {
    /// Its recorded expiry (from the target's `ttl`) has passed.
    Expired { expires: DateTime<Utc> },
    /// It is older than the target's `retention.max_days`.
    MaxDays { max_days: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcError {
    pub target: String,
    pub message: String,
}

/// A running daemon's record in the runtime directory (`<id>.json` beside `<id>.sock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    pub socket: PathBuf,
    pub pid: u32,
}
