//! What a target can do beyond being read through the `Backend` trait, one trait per power.
//! A bucket takes local data, deletes and verifies its snapshots and has orphan packs to
//! collect; a HiveMQ cluster makes its own backups and restores them in place and deletes
//! nothing; a Kubernetes namespace takes local data, deletes what it made, restores to a claim
//! and has leftover pods and claims. The job engine, cleanup and the control socket ask a
//! target's `Powers` for the one they need and never look at what kind of target it is.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{BackendError, SnapshotInfo};

use snapfs_control::wire::{TargetMetrics, VerifyReport};

/// Bytes of a running job or request, shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
    /// What a running job is waiting on that the user should know (a snapshot's error).
    pub waiting: std::sync::Mutex<Option<String>>,
    /// What the user should know of how the snapshot is made (`UploadStatus::note`).
    pub note: std::sync::Mutex<Option<String>>,
}

/// One run of a job that makes a snapshot from local data.
pub struct Run<'a> {
    /// Unique to this run: what it makes carries it, so that a run interrupted by a crash can
    /// be found and cleaned up by it.
    pub id: &'a str,
    /// Size of the volume to make, where the target makes one (`snapfs snapshot --size`).
    pub size: Option<u64>,
    pub progress: &'a Progress,
    /// Set when new writes overtook the run: it stops and removes what it made.
    pub cancel: &'a AtomicBool,
    /// The source is the user's own folder read where it is (`snapfs snapshot`), not a staged
    /// copy: its files keep their identity from one run to the next, so an unchanged file can
    /// be taken from the snapshot before without being read.
    pub in_place: bool,
    /// The id under which the target stored the staged upload's files while they were
    /// copied (`StoresEarly`), if it did.
    pub early: Option<&'a str>,
}

impl Run<'_> {
    /// A new run id: sortable by time, unique across machines writing to one store.
    pub fn new_id() -> String {
        let mut b = [0u8; 8];
        let random = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        if random.is_err() {
            // No urandom: time and pid still keep concurrent runs apart.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            b = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
        }
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{hex}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))
    }
}

/// Snapshots are made from local data: `uploads/`, `snapfs snapshot TARGET SOURCE`.
#[async_trait]
pub trait TakesLocalData: Send + Sync {
    /// Whether snapshot `name` may be made now: a name the target can hold, not taken, under
    /// the target's limit, and a target able to make it.
    async fn check_new(&self, name: &str) -> Result<(), BackendError>;
    /// Makes snapshot `name` from `source`. On failure what the run made is removed.
    async fn commit(
        self: Arc<Self>,
        name: &str,
        source: &Path,
        run: &Run<'_>,
    ) -> Result<SnapshotInfo, BackendError>;
    /// Removes what run `id` made before the daemon stopped under it. Targets whose next run
    /// finds and finishes or removes such work itself keep the default.
    async fn abandon(&self, id: &str) -> Result<(), BackendError> {
        let _ = id;
        Ok(())
    }
}

/// The files of a staged upload are stored while the copy still runs (a bucket, a
/// namespace), under an id the upload keeps from its first file to its end, so that the run
/// that follows once it settles reads only what changed since. Files are named by their inode
/// in the staging folder; `name` is the upload's.
#[async_trait]
pub trait StoresEarly: Send + Sync {
    /// File `ino` of upload `id` was opened for writing, or made: what was stored of it no
    /// longer counts.
    fn writing(self: Arc<Self>, rt: &tokio::runtime::Handle, id: &str, name: &str, ino: u64);
    /// A handle that could write file `ino` of upload `id` was closed; the file is at `path`,
    /// unless it was removed.
    fn written(
        self: Arc<Self>,
        rt: &tokio::runtime::Handle,
        id: &str,
        name: &str,
        ino: u64,
        path: Option<&Path>,
    );
    /// File `ino` of upload `id` was removed: once this returns, it is not held open.
    fn removed(&self, id: &str, ino: u64);
    /// Upload `id` ended without a snapshot (discarded, failed): what it stored goes.
    async fn discard(&self, id: &str);
}

/// The target makes snapshots itself when asked (a HiveMQ backup).
#[async_trait]
pub trait MakesOwnSnapshots: Send + Sync {
    /// Starts a snapshot; answers its name.
    async fn start_snapshot(&self) -> Result<String, BackendError>;
    /// Follows snapshot `name` until it is made; answers its size.
    async fn await_snapshot(&self, name: &str) -> Result<u64, BackendError>;
}

/// A snapshot can be restored inside the target itself (a HiveMQ restore).
#[async_trait]
pub trait RestoresInPlace: Send + Sync {
    async fn start_restore(&self, name: &str) -> Result<(), BackendError>;
    /// Follows the restore of `name` until it ends; answers the bytes restored.
    async fn await_restore(&self, name: &str) -> Result<u64, BackendError>;
}

/// A snapshot can become a new volume claim (`snapfs restore … --pvc`).
#[async_trait]
pub trait RestoresToClaim: Send + Sync {
    /// Makes claim `claim` of at least `size` bytes from snapshot `name`; answers what was made.
    async fn restore_to_claim(
        &self,
        name: &str,
        claim: &str,
        size: Option<u64>,
    ) -> Result<String, BackendError>;
}

/// Snapshots can be deleted, by `snapfs rm` and by cleanup.
#[async_trait]
pub trait Deletes: Send + Sync {
    /// The snapshots cleanup may delete once they expire or fall out of retention (in a
    /// namespace, only those snapfs made).
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError>;
    async fn delete(&self, name: &str) -> Result<(), BackendError>;
}

/// Every byte of a snapshot can be read back from where it lives and checked.
#[async_trait]
pub trait Verifies: Send + Sync {
    /// Checks snapshot `name`, counting the bytes to read and those read into `progress`.
    async fn verify(&self, name: &str, progress: &Progress) -> Result<VerifyReport, BackendError>;
}

/// What the job engine is doing in a target, which cleanup must leave alone.
#[derive(Debug, Default)]
pub struct InUse {
    /// Ids of the runs writing now.
    pub running: HashSet<String>,
    /// Names of the jobs that have not ended: a run to come may still finish what an earlier
    /// one made for them.
    pub pending: HashSet<String>,
}

/// What one cleanup of leftovers removed (or, on a dry run, would remove).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Packs no snapshot lists, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Other things interrupted work left (pods, claims).
    pub other: u64,
    /// Packs mostly unused whose frames in use were moved to new packs, and the bytes of them
    /// no snapshot uses (freed once the cleanup after the grace period deletes them).
    pub repacked: u64,
    pub repacked_bytes: u64,
}

/// Interrupted work can leave things behind that cleanup collects.
#[async_trait]
pub trait HasLeftovers: Send + Sync {
    /// Removes what nothing uses any more and has been idle for `grace`. `in_use` is asked
    /// after the target listed what it has, so that work starting in between is either in the
    /// answer or made nothing that was listed. Where it moves data that is still in use out
    /// of mostly unused packs, `progress` counts those bytes: their sum once planned, into
    /// `total`, then each as it is moved (or given up), into `done`.
    async fn collect_leftovers(
        &self,
        in_use: &(dyn Fn() -> InUse + Send + Sync),
        grace: Duration,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<Leftovers, BackendError>;
}

/// The target counts its requests for `snapfs status` and the metrics.
pub trait CountsRequests: Send + Sync {
    fn metrics(&self) -> TargetMetrics;
}

/// A power, named in messages about a target that lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    LocalData,
    OwnSnapshots,
    RestoresInPlace,
    RestoresToClaim,
    Deletes,
    Verifies,
}

impl Power {
    /// What a target without this power tells the user, unless it says more itself.
    fn missing(self) -> &'static str {
        match self {
            Power::LocalData => "makes its own snapshots: give no SOURCE",
            Power::OwnSnapshots => "takes snapshots of local data: give a SOURCE",
            Power::RestoresInPlace => "restores to a local DEST only: give one",
            Power::RestoresToClaim => "is not a Kubernetes namespace: --pvc needs one",
            Power::Deletes => "cannot delete snapshots",
            Power::Verifies => "cannot verify snapshots",
        }
    }
}

/// The powers of one target, each present or not.
#[derive(Clone, Default)]
pub struct Powers {
    pub local_data: Option<Arc<dyn TakesLocalData>>,
    pub stores_early: Option<Arc<dyn StoresEarly>>,
    pub own_snapshots: Option<Arc<dyn MakesOwnSnapshots>>,
    pub restores_in_place: Option<Arc<dyn RestoresInPlace>>,
    pub restores_to_claim: Option<Arc<dyn RestoresToClaim>>,
    pub deletes: Option<Arc<dyn Deletes>>,
    pub verifies: Option<Arc<dyn Verifies>>,
    pub leftovers: Option<Arc<dyn HasLeftovers>>,
    pub counts: Option<Arc<dyn CountsRequests>>,
    /// Why the target lacks a power, where it has more to say than the plain words.
    pub reasons: Vec<(Power, &'static str)>,
}

impl Powers {
    /// Why a target at `path` cannot do what `power` is for, in words for the user.
    pub fn why_not(&self, path: &str, power: Power) -> String {
        let why = self
            .reasons
            .iter()
            .find(|(p, _)| *p == power)
            .map_or(power.missing(), |(_, why)| why);
        format!("{path} {why}")
    }

    /// The error for a target at `path` that lacks `power`.
    pub fn lacking(&self, path: &str, power: Power) -> BackendError {
        BackendError::Unsupported(self.why_not(path, power))
    }
}
