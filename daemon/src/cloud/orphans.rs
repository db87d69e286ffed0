//! Orphan packs: pack objects that no manifest lists. An upload that was killed, or a deletion
//! interrupted between the manifest and its packs, leaves them; nothing else can reach them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use snapfs_fs::backend::BackendError;
use snapfs_fs::format;

use super::shared::Kept;
use super::{CloudBackend, store_error};

/// One pack object found by [`CloudBackend::orphan_packs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanPack {
    pub key: String,
    pub size: u64,
}

/// What a cleanup may delete: orphan packs, and the keys of records of retired packs older
/// than the grace period (their packs are ordinary garbage by now).
#[derive(Debug, Default)]
pub struct Orphans {
    pub packs: Vec<OrphanPack>,
    pub expired_records: Vec<String>,
}

/// The packs of one upload id.
#[derive(Default)]
struct Upload {
    packs: Vec<OrphanPack>,
    newest: Option<DateTime<Utc>>,
}

impl CloudBackend {
    /// Temporary files of a `file://` remote that writes killed half-way left beside the pack
    /// or manifest they were writing (`KEY#N`), untouched for `grace`: no object of the store,
    /// so no listing shows them, and nothing else would remove them.
    pub async fn partial_writes(&self, grace: Duration) -> Vec<(PathBuf, u64)> {
        let Some(root) = &self.local_root else {
            return Vec::new();
        };
        let dirs = [format::PACK_PREFIX, format::MANIFEST_PREFIX].map(|p| root.join(p));
        partial_writes_below(dirs.to_vec(), grace).await
    }

    /// Temporary files that writes of upload `id` left in a `file://` remote, whatever their
    /// age: for an upload whose process is gone, a write killed half-way.
    pub async fn partial_writes_of(&self, id: &str) -> Vec<(PathBuf, u64)> {
        let Some(root) = &self.local_root else {
            return Vec::new();
        };
        let dir = root.join(format::PACK_PREFIX).join(id);
        partial_writes_below(vec![dir], Duration::ZERO).await
    }

    /// Packs no manifest lists, of uploads that wrote nothing for `grace` and are not in
    /// `running` (upload ids this daemon is writing now), and not retired by a repack less
    /// than `grace` ago; none while any upload holds a lease. With them, the records of
    /// retired packs older than `grace`, from the same reading of the records.
    ///
    /// Packs are listed before manifests: an upload that commits in between is then seen with
    /// its manifest, never as packs alone. An upload still writing keeps its newest pack
    /// younger than `grace`, which covers uploads of other machines too. A manifest that cannot
    /// be read stops the search, since its packs cannot be told from orphans.
    pub async fn orphan_packs(
        &self,
        grace: Duration,
        running: &HashSet<String>,
    ) -> Result<Orphans, BackendError> {
        let uploads = self.packs_by_upload().await?;
        if uploads.is_empty() {
            let retired = self.retired(grace).await?;
            return Ok(Orphans {
                packs: Vec::new(),
                expired_records: retired.expired().map(String::from).collect(),
            });
        }
        let referenced = match self.kept_packs().await {
            Ok(Kept::Listed(referenced)) => referenced,
            Ok(Kept::All { lease }) => {
                tracing::info!(lease, "orphan packs left for later: an upload is in flight");
                return Ok(Orphans::default());
            }
            Err(e) => {
                return Err(BackendError::Other(format!(
                    "orphan packs not collected: {e}"
                )));
            }
        };
        // Listed after the leases: a repack whose new manifests were seen above wrote its
        // record before them, and so is seen here.
        let retired = self.retired(grace).await?;
        let expired_records = retired.expired().map(String::from).collect();
        let held = retired.held();
        let Some(idle_since) = idle_since(Utc::now(), grace) else {
            return Ok(Orphans {
                packs: Vec::new(),
                expired_records,
            });
        };
        let mut out = Vec::new();
        for (id, upload) in uploads {
            if running.contains(&id) || upload.newest.is_some_and(|t| t > idle_since) {
                continue;
            }
            out.extend(
                upload
                    .packs
                    .into_iter()
                    .filter(|p| !referenced.contains(&p.key) && !held.contains(&p.key)),
            );
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Orphans {
            packs: out,
            expired_records,
        })
    }

    /// Every pack some snapshot's manifest lists. A manifest that cannot be read fails the
    /// whole answer, since the packs it lists cannot be told apart.
    pub(super) async fn referenced_packs(&self) -> Result<HashSet<String>, BackendError> {
        let mut referenced = HashSet::new();
        for (name, version) in self.manifest_objects().await? {
            match self.manifest(&name, &version).await {
                Ok(m) => referenced.extend(m.packs.iter().cloned()),
                // Deleted since the listing: its packs are no longer referenced by it.
                Err(BackendError::NotFound(_)) => {}
                Err(e) => {
                    return Err(BackendError::Other(format!(
                        "snapshot {name} cannot be read ({e})"
                    )));
                }
            }
        }
        Ok(referenced)
    }

    /// Every object under `snapfs/packs/`, grouped by upload id (the key's next component).
    async fn packs_by_upload(&self) -> Result<HashMap<String, Upload>, BackendError> {
        let metas = self.list_under(format::PACK_PREFIX, "packs").await?;
        let mut uploads: HashMap<String, Upload> = HashMap::new();
        for m in metas {
            let key = m.location.to_string();
            let Some(id) = key
                .strip_prefix(format::PACK_PREFIX)
                .and_then(|rest| rest.split('/').next())
            else {
                continue;
            };
            let upload = uploads.entry(id.to_string()).or_default();
            upload.newest = upload.newest.max(Some(m.last_modified));
            upload.packs.push(OrphanPack { key, size: m.size });
        }
        Ok(uploads)
    }

    /// Deletes one object of snapfs's own (an orphan pack, a lease); one already gone is fine.
    pub async fn delete_object(&self, key: &str) -> Result<(), BackendError> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(store_error(key, e))),
        }
    }
}

/// The time before which an upload that wrote nothing counts as abandoned; none when `grace`
/// reaches back past the first date there is, so that nothing is abandoned yet.
fn idle_since(now: DateTime<Utc>, grace: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| now.checked_sub_signed(g))
}

/// Whether a file name is a local store's temporary name for a pack or manifest: the key's
/// name, '#', a number.
fn is_partial_write(name: &str) -> bool {
    let Some((key, n)) = name.rsplit_once('#') else {
        return false;
    };
    !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (key.ends_with(".pack") || key.ends_with(format::MANIFEST_SUFFIX))
}

/// Removes `file`, a write killed half-way, and its upload's folder once that is empty, as
/// the store removes emptied folders. Answers false when it was gone already.
pub(super) async fn remove_partial_write(file: &Path) -> Result<bool, BackendError> {
    match tokio::fs::remove_file(file).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(BackendError::Other(format!("{}: {e}", file.display()))),
    }
    if let Some(parent) = file.parent() {
        let _ = tokio::fs::remove_dir(parent).await;
    }
    Ok(true)
}

/// `partial_writes_in` of each of `dirs`, walked on a blocking thread: a remote's folder of
/// packs can hold many thousands.
async fn partial_writes_below(dirs: Vec<PathBuf>, grace: Duration) -> Vec<(PathBuf, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for dir in &dirs {
            partial_writes_in(dir, grace, &mut out);
        }
        out
    })
    .await
    // A walk that could not run finds nothing to remove.
    .unwrap_or_default()
}

fn partial_writes_in(dir: &Path, grace: Duration, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            partial_writes_in(&e.path(), grace, out);
            continue;
        }
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if idle >= grace && e.file_name().to_str().is_some_and(is_partial_write) {
            out.push((e.path(), meta.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_past_the_calendar_leaves_everything() {
        let now = Utc::now();
        assert_eq!(
            idle_since(now, Duration::from_secs(60)),
            Some(now - chrono::Duration::seconds(60))
        );
        // 99999999999 days: fits a Duration, not a date.
        assert_eq!(
            idle_since(now, Duration::from_secs(99_999_999_999 * 86_400)),
            None
        );
        assert_eq!(idle_since(now, Duration::MAX), None);
    }

    #[test]
    fn only_temporary_files_of_packs_and_manifests_count() {
        assert!(is_partial_write("00000003.pack#1"));
        assert!(is_partial_write("db.manifest.zst#12"));
        assert!(!is_partial_write("00000003.pack"));
        assert!(!is_partial_write("notes#1"));
        assert!(!is_partial_write("00000003.pack#x"));
        assert!(!is_partial_write("00000003.pack#"));

        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("u1");
        std::fs::create_dir(&up).unwrap();
        std::fs::write(up.join("00000001.pack"), b"whole").unwrap();
        std::fs::write(up.join("00000002.pack#7"), b"half").unwrap();
        let mut found = Vec::new();
        partial_writes_in(dir.path(), Duration::ZERO, &mut found);
        assert_eq!(found, vec![(up.join("00000002.pack#7"), 4)]);
        let mut young = Vec::new();
        partial_writes_in(dir.path(), Duration::from_secs(3600), &mut young);
        assert!(young.is_empty());
    }
}
