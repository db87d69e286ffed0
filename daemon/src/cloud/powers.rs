//! What a bucket can do: take local data, delete and verify its snapshots, and collect the
//! packs that interrupted uploads left.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};

use std::sync::atomic::Ordering;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use snapfs_fs::format::{self, EntryKind};

use super::orphans::remove_partial_write;
use super::shared::Kept;
use super::{CloudBackend, lock, store_error};
use crate::config::Retention;
use crate::powers::{
    CountsRequests, Deletes, HasLeftovers, InUse, Leftovers, Powers, Progress, Run, TakesLocalData,
    Verifies,
};
use crate::registry::NewTarget;
use snapfs_control::wire::{TargetMetrics, VerifyReport};

impl CloudBackend {
    /// The bucket as a target of the mount, remote `name`.
    pub fn into_target(
        self: Arc<Self>,
        name: String,
        description: String,
        retention: Retention,
    ) -> NewTarget {
        NewTarget {
            kind: "cloud",
            name,
            description,
            backend: self.clone(),
            raw: Some(self.clone()),
            powers: Powers {
                local_data: Some(self.clone()),
                stores_early: Some(self.clone()),
                deletes: Some(self.clone()),
                verifies: Some(self.clone()),
                leftovers: Some(self.clone()),
                counts: Some(self),
                ..Powers::default()
            },
            retention,
        }
    }
}

#[async_trait]
impl TakesLocalData for CloudBackend {
    /// Whether a new snapshot `name` may be made: not taken, not over the limit.
    async fn check_new(&self, name: &str) -> Result<(), BackendError> {
        self.check_name(name)?;
        // Without a limit to count against, one HEAD answers; a listing grows with the remote.
        if self.max_snapshots.is_none() {
            let key = StorePath::from(format::manifest_key(name).as_str());
            return match self.store.head(&key).await {
                Ok(_) => Err(BackendError::AlreadyExists(format!("snapshot {name}"))),
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed(store_error(&format!("snapshot {name}"), e))),
            };
        }
        let existing = self.manifest_objects().await?;
        if existing.iter().any(|(n, _)| n == name) {
            return Err(BackendError::AlreadyExists(format!("snapshot {name}")));
        }
        if let Some(max) = self.max_snapshots
            && existing.len() as u64 >= max
        {
            return Err(BackendError::Quota(max));
        }
        Ok(())
    }

    async fn commit(
        self: Arc<Self>,
        name: &str,
        source: &Path,
        run: &Run<'_>,
    ) -> Result<SnapshotInfo, BackendError> {
        CloudBackend::commit(&self, name, source, run).await
    }

    /// An interrupted upload's packs, what its writes killed half-way left, and its lease
    /// are removed, and it starts over.
    async fn abandon(&self, id: &str) -> Result<(), BackendError> {
        self.delete_upload(id, &HashSet::new()).await?;
        for (file, _) in self.partial_writes_of(id).await {
            remove_partial_write(&file).await?;
        }
        self.drop_lease(id).await;
        Ok(())
    }
}

#[async_trait]
impl Deletes for CloudBackend {
    async fn collectable(&self) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.list_snapshots().await
    }

    /// Deletes a snapshot: its manifest first, so it vanishes at once, then the packs it
    /// listed that no other snapshot lists. A manifest may name packs of another snapshot
    /// (one written by hand or by another tool can): those stay. Whatever cannot be decided
    /// now is left to cleanup, which collects only packs no manifest lists.
    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let version = self.version_of(name).await?;
        let packs = match self.manifest(name, &version).await {
            Ok(m) => m.packs.clone(),
            Err(e) => {
                tracing::warn!(snapshot = name, error = %e, "unreadable manifest deleted; its packs are left to cleanup");
                Vec::new()
            }
        };
        let key = StorePath::from(format::manifest_key(name).as_str());
        self.store
            .delete(&key)
            .await
            .map_err(|e| self.failed(store_error(&format!("snapshot {name}"), e)))?;
        lock(&self.versions).remove(name);
        if packs.is_empty() {
            return Ok(());
        }
        let referenced = match self.kept_packs().await {
            Ok(Kept::Listed(referenced)) => referenced,
            Ok(Kept::All { lease }) => {
                tracing::info!(
                    snapshot = name,
                    lease,
                    "packs left to cleanup: an upload is in flight"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(snapshot = name, error = %e, "packs left to cleanup");
                return Ok(());
            }
        };
        // Packs a repack retired stay until cleanup's grace period is over.
        let retired = match self.retired(Duration::ZERO).await {
            Ok(r) => r.all(),
            Err(e) => {
                tracing::warn!(snapshot = name, error = %e, "packs left to cleanup");
                return Ok(());
            }
        };
        let gone = |p: &&String| !referenced.contains(*p) && !retired.contains(*p);
        for pack in packs.iter().filter(gone) {
            if let Err(e) = self.store.delete(&StorePath::from(pack.as_str())).await {
                // The snapshot is gone already; a pack left behind is garbage for cleanup.
                tracing::warn!(pack, error = %e, "could not delete a pack");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Verifies for CloudBackend {
    /// Reads every chunk of a snapshot straight from the store and checks it: each chunk once,
    /// chunks stored back to back in one read. A damaged chunk is reported for every file that
    /// uses it.
    async fn verify(&self, name: &str, progress: &Progress) -> Result<VerifyReport, BackendError> {
        let version = self.version_of(name).await?;
        let manifest = self.manifest(name, &version).await?;
        let runs = runs(&manifest);
        let stored_len = |run: &[u32]| span(&manifest, run).map_or(0, |(_, r)| r.end - r.start);
        let total = runs.iter().map(|run| stored_len(run)).sum();
        progress.total.fetch_add(total, Ordering::Relaxed);
        let damage: HashMap<u32, String> = futures::stream::iter(runs)
            .map(|run| async {
                let len = stored_len(&run);
                let damaged = self.check_run(&manifest, run).await;
                progress.done.fetch_add(len, Ordering::Relaxed);
                damaged
            })
            .buffer_unordered(4)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let (mut files, mut bytes, mut errors) = (0u64, 0u64, Vec::new());
        for e in &manifest.entries {
            let EntryKind::File { size, data, .. } = &e.kind else {
                continue;
            };
            files += 1;
            match data.iter().find_map(|c| damage.get(c)) {
                Some(why) => errors.push((e.path.clone(), why.clone())),
                None => bytes += size,
            }
        }
        Ok(VerifyReport {
            files,
            bytes,
            errors,
        })
    }
}

/// Most stored bytes `verify` reads at once.
const VERIFY_RUN: u64 = 32 << 20;

/// The chunks files use, each once, in runs of chunks stored back to back in one pack.
fn runs(m: &format::Manifest) -> Vec<Vec<u32>> {
    let mut used: Vec<u32> = m
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { data, .. } => Some(data.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    used.sort_unstable_by_key(|&c| {
        (
            m.chunks.get(c as usize).map(|c| (c.pack, c.offset, c.at)),
            c,
        )
    });
    used.dedup();
    let mut runs: Vec<Vec<u32>> = Vec::new();
    // The frame before: where it starts and where it ends.
    let mut prev = None;
    for c in used {
        let Some(chunk) = m.chunks.get(c as usize) else {
            continue;
        };
        let here = (chunk.pack, chunk.offset);
        let follows = runs.last().is_some_and(|run| {
            let first = run.first().and_then(|&f| m.chunks.get(f as usize));
            prev.is_some_and(|(start, end)| start == here || end == here)
                && first
                    .is_some_and(|f| chunk.offset + u64::from(chunk.clen) - f.offset <= VERIFY_RUN)
        });
        match runs.last_mut() {
            Some(run) if follows => run.push(c),
            _ => runs.push(vec![c]),
        }
        prev = Some((here, (chunk.pack, chunk.offset + u64::from(chunk.clen))));
    }
    runs
}

/// Where a run of chunks is stored: its pack's index in the manifest and the byte range.
fn span(m: &format::Manifest, run: &[u32]) -> Option<(u32, Range<u64>)> {
    let chunk = |c: &u32| m.chunks.get(*c as usize);
    let (first, last) = (chunk(run.first()?)?, chunk(run.last()?)?);
    Some((first.pack, first.offset..last.offset + u64::from(last.clen)))
}

impl CloudBackend {
    /// Reads one run of chunks and checks each; returns the damaged ones with why.
    async fn check_run(&self, m: &format::Manifest, run: Vec<u32>) -> Vec<(u32, String)> {
        let chunk = |c: u32| m.chunks.get(c as usize);
        let Some((pack, range)) = span(m, &run) else {
            return Vec::new();
        };
        let Some(pack) = m.packs.get(pack as usize) else {
            return run
                .into_iter()
                .map(|c| (c, "pack index out of range".into()))
                .collect();
        };
        let start = range.start;
        let stored = match self.read_range(pack, range).await {
            Ok(stored) => stored,
            Err(e) => return run.into_iter().map(|c| (c, e.to_string())).collect(),
        };
        run.into_iter()
            .filter_map(|c| {
                let r = chunk(c)?;
                let from = (r.offset - start) as usize;
                let frame = stored.get(from..from + r.clen as usize);
                let checked = match frame {
                    Some(frame) => format::decode_chunk(frame, r)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    None => Err(format!("{pack} ends before chunk {}", r.id)),
                };
                checked.err().map(|why| (c, why))
            })
            .collect()
    }
}

#[async_trait]
impl HasLeftovers for CloudBackend {
    /// Packs mostly unused are repacked; then packs no snapshot lists whose upload is not
    /// running and has been idle for `grace` are deleted, and what writes killed half-way left
    /// in a local folder remote while no upload holds a lease.
    async fn collect_leftovers(
        &self,
        in_use: &(dyn Fn() -> InUse + Send + Sync),
        grace: Duration,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<Leftovers, BackendError> {
        let running = in_use().running;
        let mut done = Leftovers::default();
        let mut first_error = None;
        // Listed before the leases: a write still going on belongs to an upload (or repack)
        // that wrote its lease before it, which the listing of leases below then sees.
        let mut partial = self.partial_writes(grace).await;
        // Repacking first: with no grace, the packs it retires go in the same cleanup.
        match self.repack(&running, dry_run, progress).await {
            Ok(r) => {
                done.repacked = r.packs;
                done.repacked_bytes = r.dead_bytes;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        let orphans = self.orphan_packs(grace, &running).await?;
        for p in orphans.packs {
            if !dry_run && let Err(e) = self.delete_object(&p.key).await {
                first_error.get_or_insert(e);
                continue;
            }
            done.packs += 1;
            done.bytes += p.size;
        }
        for key in &orphans.expired_records {
            if !dry_run && let Err(e) = self.delete_object(key).await {
                first_error.get_or_insert(e);
            }
        }
        let leases = self.leases().await?;
        if leases.iter().any(|(_, live)| *live) {
            partial.clear();
        }
        for (key, _) in leases.iter().filter(|(_, live)| !live) {
            if !dry_run && let Err(e) = self.delete_object(key).await {
                first_error.get_or_insert(e);
            }
        }
        for (file, size) in partial {
            if !dry_run {
                match remove_partial_write(&file).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
            }
            done.packs += 1;
            done.bytes += size;
        }
        if done.packs > 0 && !dry_run {
            tracing::info!(
                target = self.path(),
                packs = done.packs,
                bytes = done.bytes,
                "orphan packs deleted"
            );
        }
        first_error.map_or(Ok(done), Err)
    }
}

impl CountsRequests for CloudBackend {
    fn metrics(&self) -> TargetMetrics {
        let c = &self.counters;
        TargetMetrics {
            target: self.path.clone(),
            get_requests: c.get_requests.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            put_requests: c.put_requests.load(Ordering::Relaxed),
            put_bytes: c.put_bytes.load(Ordering::Relaxed),
            list_requests: c.list_requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}
