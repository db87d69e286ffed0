//! Lists of snapshots and raw objects, trusted for `list.ttl` and then fetched again. A failed
//! refresh serves the last good list (and logs) rather than emptying the directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use super::error::VfsResult;
use super::targets::TargetId;
use crate::backend::{Backend, RawListing, RawObjects, SnapshotInfo};

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

/// The snapshot list of one target.
#[derive(Default)]
struct Slot {
    list: Mutex<Option<Cached<Vec<SnapshotInfo>>>>,
    /// Bumped by every invalidation (under `list`'s lock): a list fetched across one may miss
    /// the change and is not kept.
    changes: AtomicU64,
    /// One refresh at a time; others wait for it rather than list again.
    refreshing: AsyncMutex<()>,
}

pub struct Listings {
    ttl: Duration,
    /// By target index; made on first use, as targets may be added while the mount runs.
    snapshots: Mutex<HashMap<TargetId, Arc<Slot>>>,
    raw: Mutex<HashMap<(TargetId, String), Cached<RawListing>>>,
}

impl Listings {
    pub fn new(ttl: Duration) -> Self {
        Listings {
            ttl,
            snapshots: Mutex::new(HashMap::new()),
            raw: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, target: TargetId) -> Arc<Slot> {
        let mut all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(target).or_default().clone()
    }

    fn fresh(&self, slot: &Slot) -> Option<Arc<Vec<SnapshotInfo>>> {
        let list = slot.list.lock().unwrap_or_else(|e| e.into_inner());
        list.as_ref()
            .filter(|c| c.at.elapsed() < self.ttl)
            .map(|c| c.value.clone())
    }

    pub fn invalidate(&self, target: TargetId) {
        let slot = self.slot(target);
        let mut list = slot.list.lock().unwrap_or_else(|e| e.into_inner());
        *list = None;
        slot.changes.fetch_add(1, Ordering::Relaxed);
        drop(list);
        self.raw
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| *t != target);
    }

    pub async fn snapshots(
        &self,
        target: TargetId,
        backend: &dyn Backend,
    ) -> VfsResult<Arc<Vec<SnapshotInfo>>> {
        let slot = self.slot(target);
        if let Some(list) = self.fresh(&slot) {
            return Ok(list);
        }
        let _turn = slot.refreshing.lock().await;
        if let Some(list) = self.fresh(&slot) {
            return Ok(list);
        }
        let seen = slot.changes.load(Ordering::Relaxed);
        match backend.list_snapshots().await {
            Ok(list) => {
                let list = Arc::new(list);
                let mut cached = slot.list.lock().unwrap_or_else(|e| e.into_inner());
                if slot.changes.load(Ordering::Relaxed) == seen {
                    *cached = Some(Cached {
                        at: Instant::now(),
                        value: list.clone(),
                    });
                }
                Ok(list)
            }
            Err(e) => {
                let stale = slot
                    .list
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|c| c.value.clone());
                match stale {
                    Some(list) => {
                        tracing::warn!(error = %e, "listing snapshots failed; serving the last list");
                        Ok(list)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    pub async fn raw(
        &self,
        target: TargetId,
        prefix: &str,
        raw: &dyn RawObjects,
    ) -> VfsResult<Arc<RawListing>> {
        let key = (target, prefix.to_string());
        if let Some(c) = self.raw.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.value.clone());
        }
        let listing = Arc::new(raw.list_dir(prefix).await?);
        self.raw.lock().unwrap_or_else(|e| e.into_inner()).insert(
            key,
            Cached {
                at: Instant::now(),
                value: listing.clone(),
            },
        );
        Ok(listing)
    }
}
