//! Lists of snapshots and raw objects, trusted for `list.ttl` and then fetched again. A failed
//! refresh serves the last good list (and logs) rather than emptying the directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use super::error::{VfsError, VfsResult};
use crate::backend::{Backend, RawListing, RawObjects, SnapshotInfo};

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

pub struct Listings {
    ttl: Duration,
    snapshots: Vec<Mutex<Option<Cached<Vec<SnapshotInfo>>>>>,
    /// One refresh at a time per target; others wait for it rather than list again.
    refreshing: Vec<AsyncMutex<()>>,
    raw: Mutex<HashMap<(usize, String), Cached<RawListing>>>,
}

impl Listings {
    pub fn new(targets: usize, ttl: Duration) -> Self {
        Listings {
            ttl,
            snapshots: (0..targets).map(|_| Mutex::new(None)).collect(),
            refreshing: (0..targets).map(|_| AsyncMutex::new(())).collect(),
            raw: Mutex::new(HashMap::new()),
        }
    }

    fn fresh(&self, target: usize) -> Option<Arc<Vec<SnapshotInfo>>> {
        let slot = self
            .snapshots
            .get(target)?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .filter(|c| c.at.elapsed() < self.ttl)
            .map(|c| c.value.clone())
    }

    pub fn invalidate(&self, target: usize) {
        if let Some(slot) = self.snapshots.get(target) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.raw
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| *t != target);
    }

    pub async fn snapshots(
        &self,
        target: usize,
        backend: &dyn Backend,
    ) -> VfsResult<Arc<Vec<SnapshotInfo>>> {
        if let Some(list) = self.fresh(target) {
            return Ok(list);
        }
        let _turn = self
            .refreshing
            .get(target)
            .ok_or(VfsError::NotFound)?
            .lock()
            .await;
        if let Some(list) = self.fresh(target) {
            return Ok(list);
        }
        match backend.list_snapshots().await {
            Ok(list) => {
                let list = Arc::new(list);
                *self.snapshots[target]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Cached {
                    at: Instant::now(),
                    value: list.clone(),
                });
                Ok(list)
            }
            Err(e) => {
                let stale = self.snapshots[target]
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
        target: usize,
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
