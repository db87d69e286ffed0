//! The staging area: where files written under `uploads/` wait on local disk until they settle
//! and a job turns them into a snapshot. The VFS writes here and records activity; the job
//! engine reads the activity to decide when an upload has settled and whether a running job was
//! overtaken by new writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::error::VfsResult;
use super::targets::TargetId;

/// Activity of one upload, as the VFS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Handles open on files of the upload.
    pub open: u32,
    /// When anything last changed.
    pub last_change: Instant,
    /// Bumped by every change; a job remembers the value it started from.
    pub generation: u64,
}

/// An upload as the staging area tracks it.
#[derive(Debug)]
struct Upload {
    activity: Activity,
    /// The mark saying the upload was seen complete, while it lies on disk.
    complete_mark: Option<PathBuf>,
    /// Whether the mark also says the staged files are on the disk.
    on_disk: bool,
}

/// What the mark of an upload (`Staging::mark_complete`) a previous run left says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// No mark: the copy was not seen complete.
    None,
    /// The copy was seen complete; its files may still have been in the page cache only.
    Seen,
    /// The copy was seen complete, and its files were on the disk.
    OnDisk,
}

/// What a mark holds once the files of its upload were flushed to the disk.
const ON_DISK: &[u8] = b"on disk\n";

impl Upload {
    fn new() -> Upload {
        Upload {
            activity: Activity {
                open: 0,
                last_change: Instant::now(),
                generation: 0,
            },
            complete_mark: None,
            on_disk: false,
        }
    }

    /// Removes the mark, so that a daemon killed from now on does not take the upload for
    /// complete.
    fn unmark(&mut self) {
        if let Some(mark) = self.complete_mark.take() {
            remove_mark(&mark);
        }
        self.on_disk = false;
    }
}

fn make_mark(mark: &Path) -> std::io::Result<()> {
    if let Some(dir) = mark.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(mark).map(drop)
}

/// Deletes a file or folder; one already gone is no error.
fn remove_all(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_mark(mark: &Path) {
    if let Err(e) = std::fs::remove_file(mark)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %mark.display(), error = %e, "could not remove the mark of a complete upload");
    }
}

/// Folder of the marks of complete uploads, beside the targets' folders (which never start
/// with a dot).
const COMPLETE_MARKS: &str = ".complete";

/// Folder where staged copies that are done with wait to be deleted, beside the targets'
/// folders: moving a copy there takes one rename, however many files it holds.
const SET_ASIDE: &str = ".removed";

#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    uploads: Mutex<HashMap<(TargetId, String), Upload>>,
}

impl Staging {
    pub fn new(root: PathBuf) -> Self {
        Staging {
            root,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    /// The folder holding the uploads of a target (`<root>/cloud/local`).
    pub fn target_dir(&self, target_path: &str) -> PathBuf {
        self.root.join(target_path)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(TargetId, String), Upload>) -> R) -> R {
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    fn touch_with(&self, target: TargetId, name: &str, open_delta: i32) {
        self.with(|map| {
            let u = map
                .entry((target, name.to_string()))
                .or_insert_with(Upload::new);
            u.unmark();
            let a = &mut u.activity;
            a.open = a.open.saturating_add_signed(open_delta);
            a.last_change = Instant::now();
            a.generation += 1;
        });
    }

    /// Something under `uploads/NAME` changed.
    pub fn touch(&self, target: TargetId, name: &str) {
        self.touch_with(target, name, 0);
    }

    pub fn opened(&self, target: TargetId, name: &str) {
        self.touch_with(target, name, 1);
    }

    pub fn closed(&self, target: TargetId, name: &str) {
        self.touch_with(target, name, -1);
    }

    pub fn activity(&self, target: TargetId, name: &str) -> Option<Activity> {
        self.with(|map| map.get(&(target, name.to_string())).map(|u| u.activity))
    }

    /// The generation of an upload that has no open handle and has been quiet for `settle`.
    pub fn settled(&self, target: TargetId, name: &str, settle: Duration) -> Option<u64> {
        let a = self.activity(target, name)?;
        (a.open == 0 && a.last_change.elapsed() >= settle).then_some(a.generation)
    }

    fn mark_path(&self, target_path: &str, name: &str) -> PathBuf {
        self.root.join(COMPLETE_MARKS).join(target_path).join(name)
    }

    /// Marks on disk an upload with no open handle that has been quiet for `quiet` (far longer
    /// than a copy pauses between two files, far shorter than the settle time): its copy is
    /// complete, so a daemon killed before it settles resumes it rather than failing it. The
    /// next change to the upload removes the mark.
    ///
    /// Then the staged files are flushed to the disk (`syncfs`), and the mark says so
    /// ([`Mark::OnDisk`]): after the machine itself went down, only such a mark says the copy
    /// is all there, since a file written but not yet on the disk comes back short or empty.
    /// The flush takes as long as the disk needs and is made outside the lock; a change
    /// meanwhile takes the mark away and leaves the upload for the next call.
    pub fn mark_complete(
        &self,
        target: TargetId,
        target_path: &str,
        name: &str,
        quiet: Duration,
    ) -> std::io::Result<()> {
        let key = (target, name.to_string());
        let mark = self.mark_path(target_path, name);
        let seen = self.with(|map| -> std::io::Result<Option<u64>> {
            let Some(u) = map.get_mut(&key) else {
                return Ok(None);
            };
            let a = u.activity;
            if u.on_disk || a.open > 0 || a.last_change.elapsed() < quiet {
                return Ok(None);
            }
            if u.complete_mark.is_none() {
                // Made under the lock, so that no change slips in between the look and the mark.
                make_mark(&mark)?;
                u.complete_mark = Some(mark.clone());
            }
            Ok(Some(a.generation))
        })?;
        let Some(generation) = seen else {
            return Ok(());
        };
        snapfs_control::disk::sync_file_system(&self.target_dir(target_path))?;
        self.with(|map| {
            let Some(u) = map.get_mut(&key) else {
                return Ok(());
            };
            if u.complete_mark.is_none() || u.activity.generation != generation {
                return Ok(());
            }
            std::fs::write(&mark, ON_DISK)?;
            u.on_disk = true;
            Ok(())
        })
    }

    /// What the mark a previous run of the daemon left for the upload says.
    pub fn mark(&self, target_path: &str, name: &str) -> Mark {
        match std::fs::read(self.mark_path(target_path, name)) {
            Ok(held) if held == ON_DISK => Mark::OnDisk,
            Ok(_) => Mark::Seen,
            Err(_) => Mark::None,
        }
    }

    /// A new upload of this name starts: a mark left by an earlier one of the same name (the
    /// daemon stopped between removing it and forgetting it) is not about this one.
    pub fn clear_mark(&self, target_path: &str, name: &str) {
        remove_mark(&self.mark_path(target_path, name));
    }

    /// Registers an upload found on disk at start-up as quiet since now, marked complete or
    /// not as a previous run of the daemon found it; a mark that says the files are on the
    /// disk is kept as it is.
    pub fn adopt(&self, target: TargetId, target_path: &str, name: &str, complete: bool) {
        let mark = self.mark_path(target_path, name);
        let on_disk = complete && self.mark(target_path, name) == Mark::OnDisk;
        let marked = if on_disk {
            true
        } else if complete {
            make_mark(&mark)
                .inspect_err(|e| tracing::warn!(path = %mark.display(), error = %e, "could not mark an upload complete"))
                .is_ok()
        } else {
            remove_mark(&mark);
            false
        };
        self.with(|map| {
            let u = map
                .entry((target, name.to_string()))
                .or_insert_with(Upload::new);
            if marked {
                u.complete_mark = Some(mark);
                u.on_disk = on_disk;
            }
        });
    }

    /// Moves `path`, a staged copy below the root, out of its upload's place at once, and
    /// deletes it on a thread of its own; where it cannot be moved, deletes it in place before
    /// answering. What a daemon stopped before it finished is deleted by `sweep`.
    pub fn remove(&self, path: &Path) -> std::io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let aside = self.root.join(SET_ASIDE);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let to = aside.join(unique);
        let moved = std::fs::create_dir_all(&aside).and_then(|()| std::fs::rename(path, &to));
        if moved.is_err() {
            return remove_all(path);
        }
        let deleting = std::thread::Builder::new()
            .name("snapfs-remove".into())
            .spawn(move || {
                if let Err(e) = remove_all(&to) {
                    tracing::warn!(path = %to.display(), error = %e, "could not delete a staged copy");
                }
            });
        if let Err(e) = deleting {
            tracing::warn!(error = %e, "could not start deleting a staged copy; it goes at the next start");
        }
        Ok(())
    }

    /// Deletes the staged copies a previous run set aside and did not get to delete.
    pub fn sweep(&self) {
        let aside = self.root.join(SET_ASIDE);
        if let Err(e) = remove_all(&aside) {
            tracing::warn!(path = %aside.display(), error = %e, "could not delete staged copies set aside");
        }
    }

    pub fn forget(&self, target: TargetId, name: &str) {
        self.with(|map| {
            if let Some(mut u) = map.remove(&(target, name.to_string())) {
                u.unmark();
            }
        });
    }
}

pub use snapfs_control::wire::{JobKind, UploadState, UploadStatus};

/// What the VFS asks of the job engine about uploads.
#[async_trait]
pub trait UploadHooks: Send + Sync + 'static {
    /// Before `uploads/NAME` is created: refuse a name the target cannot hold (EINVAL), one that
    /// is taken (EEXIST) or one over the target's limit (EDQUOT).
    async fn admit(&self, target: TargetId, name: &str) -> VfsResult<()>;
    /// What `uploads/NAME.status` says, if anything is known.
    fn status(&self, target: TargetId, name: &str) -> Option<UploadStatus>;
    /// The user removed `uploads/NAME`: stop and forget its job.
    fn discarded(&self, target: TargetId, name: &str);
    /// File `ino` (its inode in the staging folder) of upload `name` was opened for writing
    /// or made: its content may change from now on.
    fn writing(&self, target: TargetId, name: &str, ino: u64) {
        let _ = (target, name, ino);
    }
    /// A handle that could write file `ino` of upload `name` was closed; the file is at
    /// `path` in the staging folder, unless it was removed.
    fn written(&self, target: TargetId, name: &str, ino: u64, path: Option<&Path>) {
        let _ = (target, name, ino, path);
    }
    /// File `ino` of upload `name` was removed: once this returns, nothing of the daemon's
    /// holds it open, so its space comes back.
    fn removed(&self, target: TargetId, name: &str, ino: u64) {
        let _ = (target, name, ino);
    }
    /// An entry at `path` (relative to `uploads/NAME`), `what` it is, could not be kept: the
    /// upload must fail when it settles instead of becoming a snapshot without it.
    fn refused(&self, target: TargetId, name: &str, path: &Path, what: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(root: &Path, name: &str) -> PathBuf {
        let dir = root.join("cloud/local").join(name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/file"), b"data").unwrap();
        dir
    }

    #[test]
    fn a_removed_copy_leaves_its_place_at_once_and_the_disk_soon() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::new(tmp.path().to_path_buf());
        let dir = staged(tmp.path(), "tree");
        staging.remove(&dir).unwrap();
        assert!(!dir.exists());
        // Gone already, or gone once its deleting thread is done: a later one sweeps it.
        staging.sweep();
        assert!(!tmp.path().join(SET_ASIDE).exists());
        // One that is not there is no error.
        staging.remove(&dir).unwrap();
    }

    #[test]
    fn what_a_stopped_daemon_set_aside_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::new(tmp.path().to_path_buf());
        let left = staged(tmp.path(), "left");
        std::fs::create_dir_all(tmp.path().join(SET_ASIDE)).unwrap();
        std::fs::rename(&left, tmp.path().join(SET_ASIDE).join("1-0")).unwrap();
        staging.sweep();
        assert!(!tmp.path().join(SET_ASIDE).exists());
        // Nothing to sweep is no error either.
        staging.sweep();
    }
}
