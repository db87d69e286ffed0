//! The cloud backend: snapshots kept in a bucket (or any object_store URL) in the format of
//! snapfs-format(5). Reading goes through the VFS and its cache; writing is `upload::commit`.

mod aws_chain;
mod aws_fetch;
mod aws_profile;
mod bucket_region;
mod credentials;
mod gcp_impersonation;
mod metered;
mod orphans;
mod powers;
mod repack;
mod retired;
mod retry;
mod shared;
mod store;
mod transient;
mod upload;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use snapfs_fs::backend::{
    Backend, BackendError, RawListing, RawObject, RawObjects, SnapshotInfo, SnapshotState,
};
use snapfs_fs::cache::{BlockCache, CacheKey};
use snapfs_fs::format::{self, EntryKind, Manifest};
use snapfs_fs::tree::SnapshotTree;

use crate::latency::Latencies;

pub use store::{aws_credential_source, local_dir, open_store};
pub use transient::Counting;

/// Longest snapshot name (documented in README.md): the manifest key adds a suffix and must
/// stay a legal file name even as the temporary `KEY#N` a local folder store writes first.
const MAX_NAME: usize = 255 - ".manifest.zst".len() - "#999".len();

/// Characters object stores ask callers to avoid in keys; names holding them are refused.
const AVOIDED: &[char] = &[
    '/', '\\', '{', '}', '^', '%', '`', '[', ']', '"', '<', '>', '~', '#', '|', '*', '?',
];

/// Counters of what went to the store.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub get_requests: AtomicU64,
    pub get_bytes: AtomicU64,
    pub put_requests: AtomicU64,
    pub put_bytes: AtomicU64,
    pub list_requests: AtomicU64,
    pub errors: AtomicU64,
    /// Transient failures the store's HTTP client retried (see `transient`); shared with it.
    pub retries: Arc<AtomicU64>,
}

pub struct CloudBackend {
    /// Target path in the mount (`cloud/local`), used in cache keys and messages.
    path: String,
    /// The remote, timed request by request.
    store: Arc<dyn ObjectStore>,
    latency: Arc<Latencies>,
    cache: Arc<BlockCache>,
    counters: StoreCounters,
    /// Summaries by (name, version): a manifest never changes once written.
    infos: Mutex<HashMap<(String, String), SnapshotInfo>>,
    /// Manifests by (name, version) found unreadable: skipped by later listings without being
    /// fetched, decompressed or warned about again (a version never changes).
    unreadable: Mutex<std::collections::HashSet<(String, String)>>,
    manifests: Mutex<lru::LruCache<(String, String), Arc<Manifest>>>,
    /// The version of each manifest seen in the last listing.
    versions: Mutex<HashMap<String, String>>,
    /// What uploads need of each manifest, by (name, version) (see `shared`).
    digests: Mutex<HashMap<(String, String), Arc<shared::Digest>>>,
    pub ttl: Option<Duration>,
    pub max_snapshots: Option<u64>,
    /// The folder of a `file://` remote, where a write killed half-way leaves its temporary
    /// file (see `partial_writes`).
    local_root: Option<std::path::PathBuf>,
    /// Staged uploads whose files are stored while their copy runs, by upload id.
    early: Mutex<HashMap<String, Arc<upload::Early>>>,
    /// Set once the store refused to replace a manifest only if unchanged: no repacking then.
    no_conditional_update: AtomicBool,
}

/// Maps object_store failures onto what the caller can do.
pub(crate) fn store_error(what: &str, e: object_store::Error) -> BackendError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => BackendError::NotFound(what.to_string()),
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            BackendError::AlreadyExists(what.to_string())
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            let why = store::rejection(&e).unwrap_or_else(|| e.to_string());
            BackendError::PermissionDenied(format!("{what}: {why}"))
        }
        other => match store::rejection(&other) {
            Some(why) => BackendError::PermissionDenied(format!("{what}: {why}")),
            None => BackendError::Unavailable(format!("{what}: {other}")),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn info_of(m: &Manifest, key: &str, version: &str) -> SnapshotInfo {
    let root = m.root();
    let (is_file, crc32c) = match &root.kind {
        EntryKind::File { crc32c, .. } => (true, Some(*crc32c)),
        _ => (false, None),
    };
    SnapshotInfo {
        name: m.name.clone(),
        created: m.created,
        state: SnapshotState::Ready,
        is_file,
        size: m.total_size(),
        files: m.file_count() as u64,
        crc32c,
        expires: m.expires,
        id: format!("{key}@{version}"),
    }
}

impl CloudBackend {
    pub fn new(
        path: String,
        store: Arc<dyn ObjectStore>,
        cache: Arc<BlockCache>,
        ttl: Option<Duration>,
        max_snapshots: Option<u64>,
    ) -> Self {
        let latency = Arc::new(Latencies::default());
        CloudBackend {
            path,
            store: Arc::new(metered::Metered::new(store, latency.clone())),
            latency,
            cache,
            counters: StoreCounters::default(),
            infos: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(std::collections::HashSet::new()),
            manifests: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            )),
            versions: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            ttl,
            max_snapshots,
            local_root: None,
            early: Mutex::new(HashMap::new()),
            no_conditional_update: AtomicBool::new(false),
        }
    }

    /// Counts the retries of the store's HTTP client, given to `open_store`, as this remote's.
    pub fn with_retry_count(mut self, counting: &Counting) -> Self {
        self.counters.retries = counting.failures.clone();
        self
    }

    /// Tells the backend that its store is this local folder.
    pub fn with_local_root(mut self, dir: std::path::PathBuf) -> Self {
        self.local_root = Some(dir);
        self
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn failed(&self, e: BackendError) -> BackendError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Every object under `prefix` (one of the format's prefixes); `what` names them in errors.
    async fn list_under(
        &self,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<object_store::ObjectMeta>, BackendError> {
        self.counters.list_requests.fetch_add(1, Ordering::Relaxed);
        let prefix = StorePath::from(prefix.trim_end_matches('/'));
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.failed(store_error(&format!("listing {what}"), e)))
    }

    /// Manifest object names and versions.
    async fn manifest_objects(&self) -> Result<Vec<(String, String)>, BackendError> {
        let metas = self
            .list_under(format::MANIFEST_PREFIX, "snapshots")
            .await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let tail = m.location.filename()?;
                let name = format::snapshot_name_from_manifest_key(tail)?.to_string();
                let version = m.e_tag.clone().unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        m.last_modified.timestamp_nanos_opt().unwrap_or(0),
                        m.size
                    )
                });
                Some((name, version))
            })
            .collect())
    }

    /// A manifest by name and version: memory, then the disk cache, then the store.
    async fn manifest(&self, name: &str, version: &str) -> Result<Arc<Manifest>, BackendError> {
        let key = (name.to_string(), version.to_string());
        if let Some(m) = lock(&self.manifests).get(&key) {
            return Ok(m.clone());
        }
        let object = format::manifest_key(name);
        let cache_key = CacheKey::Object {
            target: &self.path,
            object: &object,
            version,
        };
        let bytes = self
            .cache
            .get_or_fetch(cache_key, || async {
                let r = self.store.get(&StorePath::from(object.as_str())).await;
                let bytes = match r {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                }
                .map_err(|e| self.failed(store_error(&format!("snapshot {name}"), e)))?;
                self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .get_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok::<Bytes, BackendError>(bytes)
            })
            .await?;
        let manifest = tokio::task::spawn_blocking(move || Manifest::from_bytes(&bytes))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?
            .map_err(|e| self.failed(BackendError::Corrupt(format!("snapshot {name}: {e}"))))?;
        let manifest = Arc::new(manifest);
        lock(&self.manifests).put(key, manifest.clone());
        Ok(manifest)
    }

    /// The manifest of snapshot `name` as the mount shows it. The object's name is the
    /// snapshot's: a manifest that calls itself something else was copied or written by hand,
    /// and showing it under either name would show one snapshot twice. (Its packs still count
    /// as listed, so cleanup never takes them from the snapshot they belong to.)
    async fn snapshot_manifest(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<Manifest>, BackendError> {
        let m = self.manifest(name, version).await?;
        if m.name != name {
            return Err(BackendError::Corrupt(format!(
                "snapshot {name}: its manifest is of snapshot {:?}",
                m.name
            )));
        }
        Ok(m)
    }

    /// The version of a snapshot's manifest: from the last listing, else asked of the store.
    async fn version_of(&self, name: &str) -> Result<String, BackendError> {
        if let Some(v) = lock(&self.versions).get(name) {
            return Ok(v.clone());
        }
        let meta = self
            .store
            .head(&StorePath::from(format::manifest_key(name).as_str()))
            .await
            .map_err(|e| store_error(&format!("snapshot {name}"), e))?;
        Ok(meta.e_tag.unwrap_or_else(|| {
            format!(
                "{}-{}",
                meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
                meta.size
            )
        }))
    }

    /// Deletes the packs an upload wrote (after a failed or interrupted upload), but for those
    /// in `keep`.
    pub async fn delete_upload(
        &self,
        upload_id: &str,
        keep: &std::collections::HashSet<String>,
    ) -> Result<(), BackendError> {
        let prefix = StorePath::from(format!("{}{upload_id}", format::PACK_PREFIX).as_str());
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_error("listing packs", e))?;
        for m in metas {
            if keep.contains(m.location.as_ref()) {
                continue;
            }
            self.store
                .delete(&m.location)
                .await
                .map_err(|e| store_error("deleting a pack", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for CloudBackend {
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        let objects = self.manifest_objects().await?;
        *lock(&self.versions) = objects.iter().cloned().collect();
        let infos = futures::stream::iter(objects)
            .map(|(name, version)| async move {
                let key = (name.clone(), version.clone());
                if let Some(info) = lock(&self.infos).get(&key) {
                    return Ok(Some(info.clone()));
                }
                if lock(&self.unreadable).contains(&key) {
                    return Ok(None);
                }
                match self.snapshot_manifest(&name, &version).await {
                    Ok(m) => {
                        let info = info_of(&m, &format::manifest_key(&name), &version);
                        lock(&self.infos).insert(key, info.clone());
                        Ok(Some(info))
                    }
                    // Deleted between the listing and the read: not there any more.
                    Err(BackendError::NotFound(_)) => Ok(None),
                    Err(BackendError::Corrupt(e)) => {
                        tracing::warn!(snapshot = name, error = %e, "skipping an unreadable manifest");
                        lock(&self.unreadable).insert(key);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(infos.into_iter().flatten().collect())
    }

    async fn open_snapshot(&self, name: &str) -> Result<Arc<SnapshotTree>, BackendError> {
        let version = self.version_of(name).await?;
        let manifest = self.snapshot_manifest(name, &version).await?;
        let tree = tokio::task::spawn_blocking(move || format::snapshot_tree(&manifest))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?
            .map_err(|e| BackendError::Corrupt(format!("snapshot {name}: {e}")))?;
        Ok(Arc::new(tree))
    }

    async fn read_range(&self, object: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        // Transient failures were retried by the store's client already (see `retry`).
        self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .store
            .get_range(&StorePath::from(object), range)
            .await
            .map_err(|e| self.failed(store_error(object, e)))?;
        self.counters
            .get_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        let bad = |reason: &str| {
            Err(BackendError::InvalidName {
                name: name.to_string(),
                reason: reason.to_string(),
            })
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return bad(&format!("must be 1 to {MAX_NAME} bytes long"));
        }
        if name == "." || name == ".." || name == "latest" {
            return bad("reserved name");
        }
        if let Some(c) = name.chars().find(|c| c.is_control() || AVOIDED.contains(c)) {
            return bad(&format!("{c:?} is not allowed in a snapshot name"));
        }
        Ok(())
    }
}

#[async_trait]
impl RawObjects for CloudBackend {
    async fn list_dir(&self, prefix: &str) -> Result<RawListing, BackendError> {
        self.counters.list_requests.fetch_add(1, Ordering::Relaxed);
        let p = StorePath::from(prefix.trim_end_matches('/'));
        let listing = self
            .store
            .list_with_delimiter(if prefix.is_empty() { None } else { Some(&p) })
            .await
            .map_err(|e| self.failed(store_error("listing objects", e)))?;
        let name_of = |path: &StorePath| path.filename().map(str::to_string);
        let mut out = RawListing::default();
        for d in &listing.common_prefixes {
            // The snapshots themselves are shown under snapshots/, not as raw objects.
            if prefix.is_empty() && d.as_ref() == "snapfs" {
                continue;
            }
            out.dirs.extend(name_of(d));
        }
        for o in listing.objects {
            let Some(name) = name_of(&o.location) else {
                continue;
            };
            let modified: DateTime<Utc> = o.last_modified;
            let version = o.e_tag.clone().unwrap_or_else(|| {
                format!("{}-{}", modified.timestamp_nanos_opt().unwrap_or(0), o.size)
            });
            out.objects.push(RawObject {
                name,
                size: o.size,
                modified,
                version,
            });
        }
        Ok(out)
    }
}
