//! The staging area: where files written under `uploads/` wait on local disk until they settle
//! and a job turns them into a snapshot. The VFS writes here and records activity; the job
//! engine reads the activity to decide when an upload has settled and whether a running job was
//! overtaken by new writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    activity: Mutex<HashMap<(TargetId, String), Activity>>,
}

impl Staging {
    pub fn new(root: PathBuf) -> Self {
        Staging {
            root,
            activity: Mutex::new(HashMap::new()),
        }
    }

    /// The folder holding the uploads of a target (`<root>/cloud/local`).
    pub fn target_dir(&self, target_path: &str) -> PathBuf {
        self.root.join(target_path)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(TargetId, String), Activity>) -> R) -> R {
        let mut map = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    fn touch_with(&self, target: TargetId, name: &str, open_delta: i32) {
        self.with(|map| {
            let a = map.entry((target, name.to_string())).or_insert(Activity {
                open: 0,
                last_change: Instant::now(),
                generation: 0,
            });
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
        self.with(|map| map.get(&(target, name.to_string())).copied())
    }

    /// The generation of an upload that has no open handle and has been quiet for `settle`.
    pub fn settled(&self, target: TargetId, name: &str, settle: Duration) -> Option<u64> {
        let a = self.activity(target, name)?;
        (a.open == 0 && a.last_change.elapsed() >= settle).then_some(a.generation)
    }

    /// Registers an upload found on disk at start-up as quiet since now.
    pub fn adopt(&self, target: TargetId, name: &str) {
        self.with(|map| {
            map.entry((target, name.to_string())).or_insert(Activity {
                open: 0,
                last_change: Instant::now(),
                generation: 0,
            });
        });
    }

    pub fn forget(&self, target: TargetId, name: &str) {
        self.with(|map| map.remove(&(target, name.to_string())));
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
}
