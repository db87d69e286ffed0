//! Test doubles: an in-memory backend that serves snapshots in the real pack format and counts
//! and falsifies what it serves, upload hooks whose answers a test sets, and a set of targets
//! a test adds to.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use snapfs_fs::backend::{Backend, BackendError, RawListing, RawObject, RawObjects, SnapshotInfo};
use snapfs_fs::tree::SnapshotTree;
use snapfs_fs::vfs::{Target, TargetId, TargetSet, UploadHooks, UploadStatus, VfsError, VfsResult};

/// How often an injected corruption strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The next matching read only; the one after it is sound (a flaky network).
    Once,
    /// Every matching read (rotten data at rest).
    Always,
}

#[derive(Debug, Clone)]
struct Fault {
    object: String,
    /// Only reads starting here; `None` for any read of the object.
    at: Option<u64>,
    how: Corruption,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    snapshots: Vec<(SnapshotInfo, Arc<SnapshotTree>)>,
    list_error: Option<BackendError>,
    read_error: Option<BackendError>,
    disconnected: bool,
    short_reads: bool,
    corrupt: Vec<Fault>,
    reads_by_object: HashMap<String, u64>,
}

/// A bucket in memory. Packs and other objects share one key space, as in a real bucket, so the
/// `objects/` view sees both.
#[derive(Default)]
pub struct FakeBackend {
    state: Mutex<State>,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    lists: AtomicU64,
}

/// When every raw object claims to have been written.
pub fn object_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).unwrap_or_default()
}

fn unreachable() -> BackendError {
    BackendError::Unavailable("store unreachable".into())
}

impl FakeBackend {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put_object(&self, key: &str, data: Bytes) {
        self.state().objects.insert(key.to_string(), data);
    }

    /// Every object, by key.
    pub fn objects(&self) -> BTreeMap<String, Bytes> {
        self.state().objects.clone()
    }

    pub fn add_snapshot(&self, info: SnapshotInfo, tree: Arc<SnapshotTree>) {
        self.state().snapshots.push((info, tree));
    }

    /// Makes every listing fail with `error` until called with `None`.
    pub fn fail_listing(&self, error: Option<BackendError>) {
        self.state().list_error = error;
    }

    /// Makes every ranged read fail with `error` until called with `None`.
    pub fn fail_reads(&self, error: Option<BackendError>) {
        self.state().read_error = error;
    }

    /// Makes every call fail as an unreachable store would, until called with `false`.
    pub fn disconnect(&self, down: bool) {
        self.state().disconnected = down;
    }

    /// Makes every ranged read answer only the first half of what it was asked for.
    pub fn short_reads(&self, on: bool) {
        self.state().short_reads = on;
    }

    /// The snapshot is deleted (its packs stay, as they do until gc).
    pub fn remove_snapshot(&self, name: &str) {
        self.state().snapshots.retain(|(i, _)| i.name != name);
    }

    /// Flips a byte in reads of `object` (those starting at `at`, if given).
    pub fn corrupt(&self, object: &str, at: Option<u64>, how: Corruption) {
        self.state().corrupt.push(Fault {
            object: object.to_string(),
            at,
            how,
        });
    }

    /// Successful and failed ranged reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    pub fn read_bytes(&self) -> u64 {
        self.read_bytes.load(Ordering::SeqCst)
    }

    pub fn reads_of(&self, object: &str) -> u64 {
        self.state()
            .reads_by_object
            .get(object)
            .copied()
            .unwrap_or(0)
    }

    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for FakeBackend {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let state = self.state();
        if state.disconnected {
            return Err(unreachable());
        }
        if let Some(e) = &state.list_error {
            return Err(e.clone());
        }
        Ok(state.snapshots.iter().map(|(i, _)| i.clone()).collect())
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        let state = self.state();
        if state.disconnected {
            return Err(unreachable());
        }
        state
            .snapshots
            .iter()
            .find(|(i, _)| i.name == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| BackendError::NotFound(name.to_string()))
    }

    async fn read_range(&self, object: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state();
        *state.reads_by_object.entry(object.to_string()).or_default() += 1;
        if state.disconnected {
            return Err(unreachable());
        }
        if let Some(e) = &state.read_error {
            return Err(e.clone());
        }
        let data = state
            .objects
            .get(object)
            .ok_or_else(|| BackendError::NotFound(object.to_string()))?;
        if range.start > range.end || range.end > data.len() as u64 {
            return Err(BackendError::Other(format!(
                "{object}: range {range:?} outside {} bytes",
                data.len()
            )));
        }
        let mut data = data.slice(range.start as usize..range.end as usize);
        if state.short_reads {
            data.truncate(data.len() / 2);
        }
        self.read_bytes
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        let hit = state
            .corrupt
            .iter()
            .position(|f| f.object == object && f.at.is_none_or(|at| at == range.start));
        let Some(i) = hit else {
            return Ok(data);
        };
        if state.corrupt[i].how == Corruption::Once {
            state.corrupt.remove(i);
        }
        let mut bad = data.to_vec();
        if let Some(b) = bad.get_mut(data.len() / 2) {
            *b ^= 0x5a;
        }
        Ok(Bytes::from(bad))
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        // Stands in for a backend with a strict alphabet (Kubernetes' DNS-1123 names).
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if ok {
            Ok(())
        } else {
            Err(BackendError::InvalidName {
                name: name.to_string(),
                reason: "lower-case letters, digits, '-' and '.' only".into(),
            })
        }
    }
}

#[async_trait]
impl RawObjects for FakeBackend {
    async fn list_dir(&self, prefix: &str) -> Result<RawListing, BackendError> {
        let state = self.state();
        if state.disconnected {
            return Err(unreachable());
        }
        if let Some(e) = &state.list_error {
            return Err(e.clone());
        }
        let mut dirs = BTreeSet::new();
        let mut objects = Vec::new();
        for (key, data) in state.objects.range(prefix.to_string()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    dirs.insert(dir.to_string());
                }
                None => objects.push(RawObject {
                    name: rest.to_string(),
                    size: data.len() as u64,
                    modified: object_time(),
                    version: format!("{:08x}", crc32c::crc32c(data)),
                }),
            }
        }
        Ok(RawListing {
            dirs: dirs.into_iter().collect(),
            objects,
        })
    }
}

/// Upload hooks with answers a test sets, recording what the VFS told them.
#[derive(Default)]
pub struct FakeHooks {
    taken: Mutex<HashSet<String>>,
    full: AtomicBool,
    statuses: Mutex<HashMap<String, UploadStatus>>,
    discarded: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeHooks {
    /// A snapshot of that name exists already.
    pub fn take(&self, name: &str) {
        lock(&self.taken).insert(name.to_string());
    }

    /// The snapshot of that name is gone.
    pub fn untake(&self, name: &str) {
        lock(&self.taken).remove(name);
    }

    /// The target is at its snapshot limit.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    pub fn set_status(&self, name: &str, status: Option<UploadStatus>) {
        let mut statuses = lock(&self.statuses);
        match status {
            Some(s) => statuses.insert(name.to_string(), s),
            None => statuses.remove(name),
        };
    }

    pub fn discarded(&self) -> Vec<String> {
        lock(&self.discarded).clone()
    }
}

#[async_trait]
impl UploadHooks for FakeHooks {
    async fn admit(&self, _target: TargetId, name: &str) -> VfsResult<()> {
        if lock(&self.taken).contains(name) {
            return Err(VfsError::Exists(format!("snapshot {name} already exists")));
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(VfsError::Quota("snapshot limit reached".into()));
        }
        Ok(())
    }

    fn status(&self, _target: TargetId, name: &str) -> Option<UploadStatus> {
        lock(&self.statuses).get(name).cloned()
    }

    fn discarded(&self, _target: TargetId, name: &str) {
        lock(&self.discarded).push(name.to_string());
    }

    // What a refusal does to an upload is the job engine's; the end-to-end tests check it.
    fn refused(&self, _target: TargetId, _name: &str, _path: &std::path::Path, _what: &str) {}
}

/// The targets of a test's mount: the ones it starts with and those it adds later, as the
/// daemon's registry adds a namespace on first use.
#[derive(Default)]
pub struct FakeTargets {
    all: Mutex<Vec<Arc<Target>>>,
}

impl FakeTargets {
    /// Adds target `kind/name` (`cloud/local`, `k8s/prod/shop`) with its README line.
    pub fn add(
        &self,
        (kind, name, description): (&'static str, &str, &str),
        backend: Arc<FakeBackend>,
        raw: bool,
        uploads: bool,
    ) -> TargetId {
        let mut all = lock(&self.all);
        let id = TargetId(all.len() as u32 + 1);
        all.push(Arc::new(Target {
            id,
            kind,
            name: name.to_string(),
            description: description.to_string(),
            raw: raw.then(|| backend.clone() as Arc<dyn RawObjects>),
            backend,
            uploads,
        }));
        id
    }
}

impl TargetSet for FakeTargets {
    fn get(&self, id: TargetId) -> Option<Arc<Target>> {
        lock(&self.all).iter().find(|t| t.id == id).cloned()
    }

    fn all(&self) -> Vec<Arc<Target>> {
        lock(&self.all).clone()
    }

    fn find(&self, path: &str) -> Option<Arc<Target>> {
        lock(&self.all).iter().find(|t| t.path() == path).cloned()
    }
}
