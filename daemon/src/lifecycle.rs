//! Cleanup (DESIGN §8): snapshots past their expiry or their target's retention are deleted,
//! and what interrupted work left (packs, pods, claims) is collected, on a schedule and when
//! `snapfs gc` asks, for every target with the power to. What goes is decided by the pure
//! `plan`; this module carries it out.

mod plan;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use snapfs_control::wire::{GcDeletion, GcError, GcReason, GcReport};
use snapfs_fs::backend::BackendError;

use crate::jobs::Jobs;
use crate::powers::Progress;
use crate::registry::{Entry, Registry};
use plan::plan;

pub struct Lifecycle {
    jobs: Arc<Jobs>,
    registry: Arc<Registry>,
    /// Leftovers are left alone until their work has been idle this long.
    orphan_grace: Duration,
    /// Two cleanups at once would race to delete the same objects and report each other's
    /// work; the second waits for the first. Held across store calls on purpose, and only
    /// cleanups take it.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Lifecycle {
    pub fn new(jobs: Arc<Jobs>, registry: Arc<Registry>, orphan_grace: Duration) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            jobs,
            registry,
            orphan_grace,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// Cleans up target `only`, or every target. A target that fails does not stop the others;
    /// its error is in the report. `progress` counts the bytes repacking moves.
    pub async fn collect(
        &self,
        only: Option<&Entry>,
        dry_run: bool,
        progress: &Progress,
    ) -> GcReport {
        let _turn = self.one_at_a_time.lock().await;
        let mut report = GcReport {
            dry_run,
            deleted: Vec::new(),
            orphan_packs: 0,
            orphan_bytes: 0,
            leftovers: 0,
            repacked_packs: 0,
            repacked_bytes: 0,
            errors: Vec::new(),
        };
        if only.is_none() {
            self.registry.find_in_use().await;
        }
        for entry in self.registry.entries() {
            if only.is_some_and(|o| o.id() != entry.id()) {
                continue;
            }
            let collected = self.collect_target(&entry, dry_run, progress, &mut report);
            if let Err(e) = collected.await {
                tracing::warn!(target = entry.path(), error = %e, "cleanup incomplete");
                report.errors.push(GcError {
                    target: entry.path().to_string(),
                    message: e.to_string(),
                });
            }
        }
        report
    }

    /// Deletes a target's expired and retired snapshots, then what interrupted work left; the
    /// first failure is returned after the rest is tried.
    async fn collect_target(
        &self,
        entry: &Entry,
        dry_run: bool,
        progress: &Progress,
        report: &mut GcReport,
    ) -> Result<(), BackendError> {
        let mut first_error = None;
        if entry.powers.deletes.is_some() {
            first_error = self.delete_planned(entry, dry_run, report).await.err();
        }
        if let Some(leftovers) = &entry.powers.leftovers {
            let t = entry.id();
            let in_use = || self.jobs.in_use(t);
            match leftovers
                .collect_leftovers(&in_use, self.orphan_grace, dry_run, progress)
                .await
            {
                Ok(l) => {
                    report.orphan_packs += l.packs;
                    report.orphan_bytes += l.bytes;
                    report.leftovers += l.other;
                    report.repacked_packs += l.repacked;
                    report.repacked_bytes += l.repacked_bytes;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes what the plan says goes; the first failure is returned after the rest is tried.
    async fn delete_planned(
        &self,
        entry: &Entry,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), BackendError> {
        let Some(deletes) = &entry.powers.deletes else {
            return Ok(());
        };
        let snapshots = deletes.collectable().await?;
        let mut first_error = None;
        for d in plan(&snapshots, Utc::now(), &entry.retention) {
            if !dry_run {
                match deletes.delete(&d.name).await {
                    Ok(()) => {}
                    // Deleted by someone else since the listing: not ours to report.
                    Err(BackendError::NotFound(_)) => continue,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
                self.registry.changed(entry.id(), &d.name);
                tracing::info!(target = entry.path(), snapshot = d.name, reason = %describe(&d.reason), "snapshot deleted");
            }
            report.deleted.push(GcDeletion {
                target: entry.path().to_string(),
                name: d.name,
                created: d.created,
                reason: d.reason,
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Cleans up every target now and then every `interval`, forever. Running at start too
    /// matters for mounts that rarely stay up a whole interval (a laptop).
    pub async fn run_every(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let report = self.collect(None, false, &Progress::default()).await;
            tracing::debug!(
                deleted = report.deleted.len(),
                orphan_packs = report.orphan_packs,
                errors = report.errors.len(),
                "scheduled cleanup done"
            );
        }
    }
}

/// When a snapshot made at `created` expires after `ttl`; none when that lies beyond what a
/// date can hold, which is as good as never.
pub fn expiry(created: DateTime<Utc>, ttl: std::time::Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| created.checked_add_signed(d))
}

/// The reason in words, for logs.
fn describe(reason: &GcReason) -> String {
    match reason {
        GcReason::Expired { expires } => format!("expired {}", expires.to_rfc3339()),
        GcReason::MaxDays { max_days } => format!("older than {max_days} days"),
    }
}
