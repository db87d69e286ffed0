//! Picking up what a previous run of the daemon left: staged uploads and unfinished jobs,
//! including backups and restores a broker was running.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use snapfs_fs::vfs::{Mark, UploadState};

use super::record::Source;
use super::{Job, Jobs, key, lock};

/// How deep target paths go below the staging and job folders (`k8s/<context>/<namespace>`).
const TARGET_DEPTH: usize = 3;

impl Jobs {
    /// Picks up what a previous run left: staged uploads and unfinished jobs. Targets found
    /// while that run went on (a Kubernetes namespace) are found again by what they left.
    pub fn recover(self: &Arc<Self>) {
        let rebooted = machine_restarted(self.store.dir());
        let staging = self.staging.clone();
        tokio::task::spawn_blocking(move || staging.sweep());
        for root in [self.staging.root(), self.store.dir()] {
            self.find_targets_below(root, "", 0);
        }
        for entry in self.registry.entries() {
            self.recover_followed(&entry);
            // Only targets that take local data have anything staged.
            let Some(local) = entry.powers.local_data.clone() else {
                continue;
            };
            let t = entry.id();
            let mut names: Vec<String> = Vec::new();
            if let Ok(dir) = std::fs::read_dir(self.staging.target_dir(entry.path())) {
                names.extend(
                    dir.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok()),
                );
            }
            let persisted = self.store.load_all(entry.path());
            for (name, p) in &persisted {
                if matches!(p.source, Source::Local(_)) && !p.status.state.is_final() {
                    names.push(name.clone());
                }
            }
            for name in names {
                let p = persisted.get(&name);
                let source = p.map_or(Source::Staged, |p| p.source.clone());
                let mut job = Job::new(entry.path(), &name, source.clone(), UploadState::Queued);
                job.run = self.runs.fetch_add(1, Ordering::Relaxed);
                // A staged upload with no record is resumed, as one whose copy was complete:
                // every file closed and quiet for a while when the daemon went away. Once the
                // machine itself went down, only a mark that says the staged files were on the
                // disk does: a file written just before may have come back short.
                let mark = self.staging.mark(entry.path(), &name);
                let in_page_cache = source == Source::Staged && rebooted;
                let mut complete = mark == Mark::OnDisk
                    || (!in_page_cache && (mark == Mark::Seen || p.is_none_or(|p| p.settled)));
                if let Some(p) = p {
                    job.size = p.size;
                    job.refused = p.refused.clone();
                    let interrupted = p
                        .upload_id
                        .as_ref()
                        .filter(|_| p.status.state == UploadState::Uploading);
                    // Interrupted mid-upload: what it made goes and it starts over (a target
                    // whose next run finishes such work itself keeps it). What was stored
                    // while the files were copied goes too: which files it held was known to
                    // the daemon that stopped only.
                    for id in interrupted.into_iter().chain(&p.early_id) {
                        let (local, id) = (local.clone(), id.clone());
                        tokio::spawn(async move {
                            if let Err(e) = local.abandon(&id).await {
                                tracing::warn!(upload_id = id, error = %e, "could not remove what an interrupted upload made");
                            }
                        });
                    }
                    if p.status.state == UploadState::Failed {
                        job.status = p.status.clone();
                        job.failed_gen = Some(0);
                        complete = false;
                    }
                }
                if !complete && job.status.state != UploadState::Failed {
                    let writing =
                        p.is_some_and(|p| p.status.state == UploadState::Staging && !p.settled);
                    let why = if writing {
                        "snapfsd stopped while files were still being written"
                    } else {
                        "the machine restarted before the files copied here were known to be on the disk, so some may have come back short"
                    };
                    job.status.state = UploadState::Failed;
                    job.status.error = Some(format!(
                        "{why}; copy them again (any write starts the upload anew), or remove it with rm -r"
                    ));
                    job.failed_gen = Some(0);
                }
                if source == Source::Staged {
                    self.staging.adopt(t, entry.path(), &name, complete);
                    job.early_id = self.new_early_id(&entry);
                }
                tracing::info!(target = entry.path(), snapshot = name, state = ?job.status.state, "resuming upload");
                // For a staged upload the mark says it is complete, and the next write takes
                // it away; a record saying so would outlive that write.
                let record = self.record(t, &name, &job, source != Source::Staged);
                lock(&self.jobs).insert(key(t, &name), job);
                self.write(record);
            }
        }
    }

    /// Registers the targets whose folders lie below `dir` (`rel` is its path relative to the
    /// staging or job root); a folder that is a target is not looked into further.
    fn find_targets_below(&self, dir: &Path, rel: &str, depth: usize) {
        if depth > TARGET_DEPTH {
            return;
        }
        if depth >= 2 && self.registry.find(rel).is_some() {
            return;
        }
        for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(name) = child.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !child.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            self.find_targets_below(&child.path(), &rel, depth + 1);
        }
    }
}

/// The file in the jobs folder that names the boot of the machine the daemon last started in.
const BOOT_FILE: &str = ".boot_id";

/// Whether the machine started again since the daemon's previous run (also when that is not
/// known); this run's boot is written down for the next.
fn machine_restarted(dir: &Path) -> bool {
    let path = dir.join(BOOT_FILE);
    let before = std::fs::read_to_string(&path).ok();
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    if let Some(now) = &now {
        let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, now));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not write down this boot of the machine");
        }
    }
    match (before, now) {
        (Some(before), Some(now)) => before != now,
        _ => true,
    }
}
