//! What uploads to one remote share: the chunks its snapshots hold (a chunk is stored once,
//! whichever machine or snapshot wrote it first), the snapshot an in-place source was last read
//! into (unchanged files are not read again), and leases.
//!
//! A lease is an object an upload writes before it reads the remote's chunks and deletes once
//! its manifest is written. While it may refer to a chunk that only another snapshot's manifest
//! holds, that manifest may be deleted; the lease tells deletion and cleanup to leave every
//! unreferenced pack alone until the upload is done. The order makes it safe (see
//! [`CloudBackend::kept_packs`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use snapfs_fs::backend::BackendError;
use snapfs_fs::format::{self, ChunkId, ChunkRef, Manifest, Source};

use super::{CloudBackend, lock, store_error};

/// A lease not written for this long belongs to an upload that died; it is ignored and
/// collected.
pub const LEASE_LIFETIME: Duration = Duration::from_secs(3600);
/// An upload writes its lease again after this long, so a long upload never looks dead.
pub const LEASE_REFRESH: Duration = Duration::from_secs(600);

/// What deletion and cleanup must leave alone.
pub enum Kept {
    /// Every pack: an upload holds this lease.
    All { lease: String },
    /// The packs some snapshot lists.
    Listed(HashSet<String>),
}

/// Where one chunk already in the remote is stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub pack: Arc<str>,
    pub offset: u64,
    pub clen: u32,
    pub len: u32,
    pub at: u32,
    pub flen: u32,
}

impl Stored {
    /// Where chunk `c` of a chunk table is, given the table's packs; None for a pack index
    /// past them.
    pub fn of(c: &ChunkRef, packs: &[Arc<str>]) -> Option<Stored> {
        Some(Stored {
            pack: packs.get(c.pack as usize)?.clone(),
            offset: c.offset,
            clen: c.clen,
            len: c.len,
            at: c.at,
            flen: c.flen,
        })
    }
}

/// What an upload starts from.
#[derive(Default)]
pub struct Known {
    /// Every chunk some readable manifest of the remote holds.
    pub chunks: HashMap<ChunkId, Stored>,
    /// The newest snapshot read from the same source in place, if any.
    pub parent: Option<Arc<Manifest>>,
}

/// What uploads need of one manifest, kept while it is listed: reading every manifest again
/// for each upload would cost as much as the remote holds.
pub struct Digest {
    name: String,
    created: chrono::DateTime<Utc>,
    source: Option<Source>,
    chunks: Vec<(ChunkId, Stored)>,
}

impl Digest {
    fn of(m: &Manifest) -> Digest {
        let packs: Vec<Arc<str>> = m.packs.iter().map(|p| Arc::from(p.as_str())).collect();
        Digest {
            name: m.name.clone(),
            created: m.created,
            source: m.source.clone(),
            chunks: m
                .chunks
                .iter()
                .filter_map(|c| Some((c.id, Stored::of(c, &packs)?)))
                .collect(),
        }
    }
}

impl CloudBackend {
    /// The chunks of every snapshot of the remote, and the newest snapshot of `source`. A
    /// manifest that cannot be read only means its chunks are not reused.
    pub(super) async fn known(&self, source: Option<&Source>) -> Result<Known, BackendError> {
        let objects = self.manifest_objects().await?;
        let digests: Vec<((String, String), Arc<Digest>)> = futures::stream::iter(objects)
            .map(|key| async move {
                if let Some(d) = lock(&self.digests).get(&key) {
                    return Some((key, d.clone()));
                }
                match self.manifest(&key.0, &key.1).await {
                    Ok(m) => Some((key, Arc::new(Digest::of(&m)))),
                    Err(e) => {
                        tracing::debug!(snapshot = key.0, error = %e, "its chunks are not reused");
                        None
                    }
                }
            })
            .buffer_unordered(16)
            .filter_map(|d| async { d })
            .collect()
            .await;
        let mut known = Known::default();
        let mut parent: Option<&(String, String)> = None;
        let mut newest = None;
        for (key, d) in &digests {
            for (id, stored) in &d.chunks {
                known.chunks.entry(*id).or_insert_with(|| stored.clone());
            }
            let when = (d.created, &d.name);
            if source.is_some() && d.source.as_ref() == source && newest.is_none_or(|n| n < when) {
                newest = Some(when);
                parent = Some(key);
            }
        }
        if let Some((name, version)) = parent {
            // Deleted since the listing: every file is read, as with no snapshot before.
            match self.manifest(name, version).await {
                Ok(m) => known.parent = Some(m),
                Err(e) => tracing::debug!(snapshot = name, error = %e, "files are read again"),
            }
        }
        // Only what is listed now is kept: a deleted snapshot's digest goes.
        *lock(&self.digests) = digests.into_iter().collect();
        Ok(known)
    }

    /// Which packs must stay: those some manifest lists, or all while an upload holds a lease.
    ///
    /// Manifests are listed, then leases, then manifests again. A pack listed by no manifest of
    /// the first listing had its last manifest deleted before it; an upload reusing it listed
    /// the manifests earlier still, so wrote its lease earlier still. That upload either holds
    /// its lease when leases are listed, or had written its manifest by then, which the second
    /// listing sees.
    pub(super) async fn kept_packs(&self) -> Result<Kept, BackendError> {
        let mut referenced = self.referenced_packs().await?;
        if let Some((lease, _)) = self.leases().await?.into_iter().find(|(_, live)| *live) {
            return Ok(Kept::All { lease });
        }
        referenced.extend(self.referenced_packs().await?);
        Ok(Kept::Listed(referenced))
    }

    /// Writes (or writes again) the lease of upload `id`.
    pub(super) async fn write_lease(&self, id: &str) -> Result<(), BackendError> {
        let key = format::lease_key(id);
        let body = serde_json::json!({
            "upload": id,
            "host": host_name(),
            "pid": std::process::id(),
            "written": Utc::now(),
        });
        self.store
            .put(
                &StorePath::from(key.as_str()),
                PutPayload::from(body.to_string().into_bytes()),
            )
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        self.counters
            .put_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Removes the lease of upload `id`; one that stays is ignored once stale.
    pub(super) async fn drop_lease(&self, id: &str) {
        let key = format::lease_key(id);
        if let Err(e) = self.delete_object(&key).await {
            tracing::warn!(lease = key, error = %e, "could not remove a lease");
        }
    }

    /// Leases of the remote as (key, still live).
    pub(super) async fn leases(&self) -> Result<Vec<(String, bool)>, BackendError> {
        let metas = self.list_under(format::LEASE_PREFIX, "leases").await?;
        let lifetime = chrono::Duration::from_std(LEASE_LIFETIME).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        Ok(metas
            .into_iter()
            .map(|m| {
                let live = now.signed_duration_since(m.last_modified) < lifetime;
                (m.location.to_string(), live)
            })
            .collect())
    }
}

/// This machine's name, for the record of where a snapshot or lease came from.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
