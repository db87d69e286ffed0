//! The backups a cluster holds, their states, and the one-operation-at-a-time rule.
//!
//! Running operations end lazily: each carries the instant it ends and its outcome, and every
//! access first settles what is due. No background task, so nothing outlives the server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::archive;

/// The states of the OpenAPI document's `Backup.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupState {
    InProgress,
    Completed,
    Failed,
    RestoreInProgress,
    RestoreCompleted,
    RestoreFailed,
}

impl BackupState {
    /// The states the download endpoint serves (HiveMQ's OpenAPI: COMPLETED and RESTORE_*).
    pub fn is_downloadable(self) -> bool {
        matches!(
            self,
            BackupState::Completed
                | BackupState::RestoreInProgress
                | BackupState::RestoreCompleted
                | BackupState::RestoreFailed
        )
    }

    /// A backup or restore is running: no other may start.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            BackupState::InProgress | BackupState::RestoreInProgress
        )
    }

    /// The wire name, e.g. `RESTORE_IN_PROGRESS`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::InProgress => "IN_PROGRESS",
            BackupState::Completed => "COMPLETED",
            BackupState::Failed => "FAILED",
            BackupState::RestoreInProgress => "RESTORE_IN_PROGRESS",
            BackupState::RestoreCompleted => "RESTORE_COMPLETED",
            BackupState::RestoreFailed => "RESTORE_FAILED",
        }
    }
}

/// A backup as the API shows it. The OpenAPI document makes every field optional; the
/// simulator always sends `id`, `createdAt` and `state`, `bytes` once the file exists, and
/// `failReason` only for failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub id: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub state: BackupState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
}

/// A completed backup a test puts in place directly, without the API.
#[derive(Debug, Clone)]
pub struct Seed {
    id: Option<String>,
    created_at: Option<DateTime<Utc>>,
    content: SeedContent,
}

#[derive(Debug, Clone)]
enum SeedContent {
    Size(u64),
    Bytes(Bytes),
}

impl Seed {
    /// A generated ZIP of exactly `size` bytes (at least the smallest archive, about 300 bytes;
    /// at most [`crate::MAX_GENERATED_SIZE`]).
    pub fn with_size(size: u64) -> Seed {
        Seed {
            id: None,
            created_at: None,
            content: SeedContent::Size(size),
        }
    }

    /// This content, served as is (it need not be a ZIP).
    pub fn with_content(content: impl Into<Bytes>) -> Seed {
        Seed {
            id: None,
            created_at: None,
            content: SeedContent::Bytes(content.into()),
        }
    }

    /// The id; by default one is made from the creation time.
    pub fn id(mut self, id: &str) -> Seed {
        self.id = Some(id.to_string());
        self
    }

    /// The creation time; by default now.
    pub fn created_at(mut self, at: DateTime<Utc>) -> Seed {
        self.created_at = Some(at);
        self
    }
}

/// Why a seed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("invalid backup id {0:?}")]
    InvalidId(String),
    #[error("a backup with id {0:?} exists")]
    DuplicateId(String),
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpError {
    #[error("Backup with id '{0}' not found")]
    NotFound(String),
    #[error("Another backup or restore is in progress (backup '{0}')")]
    Busy(String),
    #[error("Backup with id '{id}' is in state {} and cannot be {action}", state.as_str())]
    WrongState {
        id: String,
        state: BackupState,
        action: &'static str,
    },
}

/// What happens to a running operation when it ends.
#[derive(Debug)]
enum Outcome {
    /// The backup completes with a generated file of this size.
    Complete {
        size: u64,
    },
    Restored,
    /// The backup or restore fails with this reason.
    Fail(String),
}

#[derive(Debug)]
struct Pending {
    at: Instant,
    outcome: Outcome,
}

#[derive(Debug)]
struct Entry {
    backup: Backup,
    file: Option<Bytes>,
    pending: Option<Pending>,
}

/// Backup ids look like `20261122-101500` (creation time, UTC). A guess from HiveMQ's backup
/// folder names; the OpenAPI document only says "string".
fn id_for(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d-%H%M%S").to_string()
}

/// Ids the API accepts in paths; others answer 400. A guess: HiveMQ documents 400 for these
/// endpoints without saying which ids are bad.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Every backup, by id.
#[derive(Debug, Default)]
pub(crate) struct Backups {
    entries: BTreeMap<String, Entry>,
}

impl Backups {
    /// Ends the operations that are due.
    fn settle(&mut self, now: Instant) {
        for entry in self.entries.values_mut() {
            let due = entry.pending.as_ref().is_some_and(|p| p.at <= now);
            let Some(pending) = entry.pending.take_if(|_| due) else {
                continue;
            };
            let b = &mut entry.backup;
            match pending.outcome {
                Outcome::Complete { size } => {
                    let file = Bytes::from(archive::backup_file(&b.id, b.created_at, size));
                    b.bytes = Some(file.len() as u64);
                    b.state = BackupState::Completed;
                    entry.file = Some(file);
                }
                Outcome::Restored => b.state = BackupState::RestoreCompleted,
                Outcome::Fail(reason) => {
                    b.state = if b.state == BackupState::InProgress {
                        BackupState::Failed
                    } else {
                        BackupState::RestoreFailed
                    };
                    b.fail_reason = Some(reason);
                }
            }
        }
    }

    /// A free id at or after `at`'s second.
    fn free_id(&self, at: DateTime<Utc>) -> String {
        let mut t = at;
        loop {
            let id = id_for(t);
            if !self.entries.contains_key(&id) {
                return id;
            }
            t += chrono::Duration::seconds(1);
        }
    }

    fn running(&self) -> Option<&Backup> {
        self.entries
            .values()
            .map(|e| &e.backup)
            .find(|b| b.state.is_running())
    }

    /// Oldest first, as they were created.
    pub fn list(&mut self, now: Instant) -> Vec<Backup> {
        self.settle(now);
        let mut all: Vec<Backup> = self.entries.values().map(|e| e.backup.clone()).collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    pub fn get(&mut self, now: Instant, id: &str) -> Option<Backup> {
        self.settle(now);
        self.entries.get(id).map(|e| e.backup.clone())
    }

    /// Starts a backup that ends after `duration`: completed with a file of `Ok(size)` bytes, or
    /// failed with the reason in `Err`.
    pub fn create(
        &mut self,
        now: Instant,
        duration: Duration,
        outcome: Result<u64, String>,
    ) -> Result<Backup, OpError> {
        self.settle(now);
        if let Some(running) = self.running() {
            return Err(OpError::Busy(running.id.clone()));
        }
        let created_at = Utc::now().trunc_subsecs(3);
        let backup = Backup {
            id: self.free_id(created_at),
            created_at,
            bytes: None,
            state: BackupState::InProgress,
            fail_reason: None,
        };
        self.entries.insert(
            backup.id.clone(),
            Entry {
                backup: backup.clone(),
                file: None,
                pending: Some(Pending {
                    at: now + duration,
                    outcome: match outcome {
                        Ok(size) => Outcome::Complete { size },
                        Err(reason) => Outcome::Fail(reason),
                    },
                }),
            },
        );
        Ok(backup)
    }

    /// Starts restoring a backup that has a file; it ends after `duration`, failed with
    /// `failure` when that is set.
    pub fn restore(
        &mut self,
        now: Instant,
        id: &str,
        duration: Duration,
        failure: Option<String>,
    ) -> Result<Backup, OpError> {
        self.settle(now);
        let state = match self.entries.get(id) {
            Some(e) => e.backup.state,
            None => return Err(OpError::NotFound(id.to_string())),
        };
        if let Some(running) = self.running() {
            return Err(OpError::Busy(running.id.clone()));
        }
        let entry = match self.entries.get_mut(id) {
            Some(e) if state.is_downloadable() => e,
            _ => {
                return Err(OpError::WrongState {
                    id: id.to_string(),
                    state,
                    action: "restored",
                });
            }
        };
        entry.backup.state = BackupState::RestoreInProgress;
        entry.backup.fail_reason = None;
        entry.pending = Some(Pending {
            at: now + duration,
            outcome: failure.map_or(Outcome::Restored, Outcome::Fail),
        });
        Ok(entry.backup.clone())
    }

    /// The backup and its file, when its state allows downloading.
    pub fn file(&mut self, now: Instant, id: &str) -> Result<(Backup, Bytes), OpError> {
        self.settle(now);
        let entry = self
            .entries
            .get(id)
            .ok_or_else(|| OpError::NotFound(id.to_string()))?;
        match &entry.file {
            Some(file) if entry.backup.state.is_downloadable() => {
                Ok((entry.backup.clone(), file.clone()))
            }
            _ => Err(OpError::WrongState {
                id: id.to_string(),
                state: entry.backup.state,
                action: "downloaded",
            }),
        }
    }

    pub fn seed(&mut self, now: Instant, seed: Seed) -> Result<Backup, SeedError> {
        self.settle(now);
        let created_at = seed.created_at.unwrap_or_else(Utc::now).trunc_subsecs(3);
        let id = match seed.id {
            Some(id) if !is_valid_id(&id) => return Err(SeedError::InvalidId(id)),
            Some(id) if self.entries.contains_key(&id) => return Err(SeedError::DuplicateId(id)),
            Some(id) => id,
            None => self.free_id(created_at),
        };
        let file = match seed.content {
            SeedContent::Size(size) => Bytes::from(archive::backup_file(&id, created_at, size)),
            SeedContent::Bytes(bytes) => bytes,
        };
        let backup = Backup {
            id: id.clone(),
            created_at,
            bytes: Some(file.len() as u64),
            state: BackupState::Completed,
            fail_reason: None,
        };
        self.entries.insert(
            id,
            Entry {
                backup: backup.clone(),
                file: Some(file),
                pending: None,
            },
        );
        Ok(backup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backups_complete_when_due_and_block_others_until_then() {
        let mut b = Backups::default();
        let t0 = Instant::now();
        let made = b.create(t0, 10 * MS, Ok(1000)).unwrap();
        assert_eq!((made.state, made.bytes), (BackupState::InProgress, None));
        assert!(matches!(
            b.create(t0 + 5 * MS, MS, Ok(1)),
            Err(OpError::Busy(_))
        ));
        assert!(matches!(
            b.file(t0, &made.id),
            Err(OpError::WrongState { .. })
        ));
        let done = b.get(t0 + 10 * MS, &made.id).unwrap();
        assert_eq!(
            (done.state, done.bytes),
            (BackupState::Completed, Some(1000))
        );
        assert_eq!(b.file(t0 + 10 * MS, &made.id).unwrap().1.len(), 1000);
    }

    #[test]
    fn failures_keep_their_reason_and_have_no_file() {
        let mut b = Backups::default();
        let t0 = Instant::now();
        let made = b.create(t0, MS, Err("disk full".into())).unwrap();
        let failed = b.get(t0 + MS, &made.id).unwrap();
        assert_eq!(failed.state, BackupState::Failed);
        assert_eq!(failed.fail_reason.as_deref(), Some("disk full"));
        assert!(b.file(t0 + MS, &made.id).is_err());
        assert!(b.restore(t0 + MS, &made.id, MS, None).is_err());
    }

    #[test]
    fn restores_move_through_their_states() {
        let mut b = Backups::default();
        let t0 = Instant::now();
        let seeded = b
            .seed(t0, Seed::with_content(&b"abc"[..]).id("s1"))
            .unwrap();
        let r = b.restore(t0, "s1", MS, None).unwrap();
        assert_eq!(r.state, BackupState::RestoreInProgress);
        assert_eq!(b.file(t0, "s1").unwrap().1, Bytes::from_static(b"abc"));
        let done = b.get(t0 + MS, "s1").unwrap();
        assert_eq!(done.state, BackupState::RestoreCompleted);
        assert_eq!(done.bytes, seeded.bytes);
        assert_eq!(
            b.restore(t0, "nope", MS, None),
            Err(OpError::NotFound("nope".into()))
        );
    }

    #[test]
    fn ids_follow_the_creation_time_and_stay_unique() {
        let mut b = Backups::default();
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:15:00Z")
            .unwrap()
            .to_utc();
        let t0 = Instant::now();
        let one = b.seed(t0, Seed::with_size(0).created_at(at)).unwrap();
        let two = b.seed(t0, Seed::with_size(0).created_at(at)).unwrap();
        assert_eq!(
            (one.id.as_str(), two.id.as_str()),
            ("20261122-101500", "20261122-101501")
        );
        assert_eq!(
            b.seed(t0, Seed::with_size(0).id("20261122-101500")),
            Err(SeedError::DuplicateId("20261122-101500".into()))
        );
        assert!(matches!(
            b.seed(t0, Seed::with_size(0).id("a/b")),
            Err(SeedError::InvalidId(_))
        ));
    }

    #[test]
    fn valid_ids() {
        for ok in ["20261122-101500", "a.b_c-D", "x"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }
}
