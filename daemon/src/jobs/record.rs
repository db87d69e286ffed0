//! The job store: one small JSON file per job under the state directory, replaced atomically,
//! so that a restart knows what was staged, running or failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// False while files may still be being written.
    pub settled: bool,
    /// Claim size asked for, where the target has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, target: &str, name: &str) -> PathBuf {
        self.dir.join(target).join(format!("{name}.json"))
    }

    pub fn save(&self, target: &str, name: &str, job: &Persisted) -> std::io::Result<()> {
        let path = self.path(target, name);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(job)?)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(&self, target: &str, name: &str) {
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
