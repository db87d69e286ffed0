//! The job store: one small JSON file per job under the state directory, replaced atomically,
//! so that a restart knows what was staged, running or failed. Records are made under the jobs
//! lock and written after it is released; each carries a sequence number so that a record
//! made later is never overwritten by one made earlier, whichever thread writes first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use snapfs_fs::vfs::UploadStatus;

/// Where a job's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Written under `uploads/` and staged on local disk.
    Staged,
    /// A local file or folder given to `snapfs snapshot`, read in place.
    Local(PathBuf),
    /// None: the backend makes the snapshot itself (a HiveMQ backup or restore).
    Backend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub status: UploadStatus,
    pub source: Source,
    /// Packs of a running upload live under this id; a restart deletes them.
    pub upload_id: Option<String>,
    /// Packs a staged upload stored while its files were copied live under this id; a restart
    /// deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_id: Option<String>,
    /// False while files may still be being written.
    pub settled: bool,
    /// Claim size asked for, where the target has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Entries written under `uploads/NAME` that could not be kept.
    #[serde(default, skip_serializing_if = "Refused::is_empty")]
    pub refused: Refused,
}

/// Entries of an upload that could not be kept (a FIFO, a socket, a device node): the upload
/// fails naming them rather than becoming a snapshot without them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub count: u64,
    /// The first few, as `path (what)`; enough to say what went wrong.
    pub first: Vec<String>,
}

/// How many refused entries an error names.
const REFUSED_NAMED: usize = 5;

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn add(&mut self, path: &Path, what: &str) {
        self.count += 1;
        if self.first.len() < REFUSED_NAMED {
            self.first.push(format!("{} ({what})", path.display()));
        }
    }

    /// The error the upload fails with, if anything was refused.
    pub fn error(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut named = self.first.join(", ");
        let more = self.count - self.first.len() as u64;
        if more > 0 {
            named.push_str(&format!(" and {more} more"));
        }
        Some(format!(
            "could not keep {named}: a snapshot holds only files, folders and symlinks; \
             remove the upload (rm -r) and copy again without them"
        ))
    }
}

/// A change to the store, made under the jobs lock and applied after it.
#[derive(Debug)]
pub struct Record {
    seq: u64,
    target: String,
    name: String,
    /// None removes the job's record.
    job: Option<Persisted>,
}

pub struct Store {
    dir: PathBuf,
    next: std::sync::atomic::AtomicU64,
    /// The sequence number last applied to each job's file; held while a file is written.
    applied: Mutex<HashMap<(String, String), u64>>,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store {
            dir,
            next: std::sync::atomic::AtomicU64::new(1),
            applied: Mutex::new(HashMap::new()),
        }
    }

    /// A record saying job `name` of `target` is now `job` (None: gone).
    pub fn record(&self, target: &str, name: &str, job: Option<Persisted>) -> Record {
        Record {
            seq: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            target: target.to_string(),
            name: name.to_string(),
            job,
        }
    }

    /// Writes a record unless a later one for the same job was written already.
    pub fn apply(&self, r: Record) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let key = (r.target, r.name);
        if applied.get(&key).is_some_and(|&seq| seq > r.seq) {
            return;
        }
        let (target, name) = &key;
        match &r.job {
            Some(job) => {
                if let Err(e) = self.save(target, name, job) {
                    tracing::warn!(target, snapshot = name, error = %e, "could not record job state");
                }
            }
            None => self.remove(target, name),
        }
        applied.insert(key, r.seq);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, target: &str, name: &str) -> PathBuf {
        self.dir.join(target).join(format!("{name}.json"))
    }

    fn save(&self, target: &str, name: &str, job: &Persisted) -> std::io::Result<()> {
        let path = self.path(target, name);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(job)?)?;
        std::fs::rename(&tmp, &path)
    }

    fn remove(&self, target: &str, name: &str) {
        let _ = std::fs::remove_file(self.path(target, name));
    }

    pub fn load_all(&self, target: &str) -> HashMap<String, Persisted> {
        let Ok(dir) = std::fs::read_dir(self.dir.join(target)) else {
            return HashMap::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let name = file
                    .strip_suffix(".json")
                    .filter(|n| !n.starts_with('.'))?
                    .to_string();
                let bytes = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&bytes) {
                    Ok(p) => Some((name, p)),
                    Err(err) => {
                        tracing::warn!(file, error = %err, "ignoring an unreadable job record");
                        None
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_entries_are_named_up_to_a_few() {
        let mut r = Refused::default();
        assert_eq!(r.error(), None);
        r.add(Path::new("deep/pipe"), "a FIFO");
        let one = r.error().unwrap();
        assert!(
            one.starts_with("could not keep deep/pipe (a FIFO): "),
            "{one}"
        );
        for i in 0..REFUSED_NAMED {
            r.add(Path::new(&format!("s{i}")), "a socket");
        }
        let many = r.error().unwrap();
        assert!(many.contains("s3 (a socket) and 1 more:"), "{many}");
        assert!(!many.contains("s4"), "{many}");
    }
}
