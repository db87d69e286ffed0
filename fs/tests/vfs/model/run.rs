//! Runs operations against the VFS over the fake backend and against the reference model side
//! by side, and says where they part.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;

use snapfs_fs::tree::FileKind;
use snapfs_fs::vfs::{Entry, ROOT_INO, UploadState, UploadStatus, VfsError, VfsResult};

use super::ops::{Fault, Op};
use super::reference::{Content, Model, View};
use crate::fixture::{Fixture, LOCAL, standard, standard_backend};

/// An open file or directory, and what reading it must give.
pub(super) enum Handle {
    /// A snapshot file: its bytes at open, which never change.
    Snapshot {
        fh: u64,
        data: Vec<u8>,
    },
    /// The README: only its length is known.
    Generated {
        fh: u64,
        size: u64,
    },
    Staged {
        fh: u64,
        content: Content,
        writable: bool,
        /// The instance of the upload whose open count includes it.
        upload: Option<u64>,
    },
    Dir(super::dirs::DirHandle),
}

impl Handle {
    pub(super) fn fh(&self) -> u64 {
        match self {
            Handle::Snapshot { fh, .. } | Handle::Generated { fh, .. } => *fh,
            Handle::Staged { fh, .. } => *fh,
            Handle::Dir(d) => d.fh,
        }
    }
}

/// Which faults are switched on.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Faults {
    disconnected: bool,
    listing: bool,
    reads: bool,
    short: bool,
}

impl Faults {
    /// Listing snapshots or opening one may fail.
    fn listing(&self) -> bool {
        self.disconnected || self.listing
    }

    /// Reading a snapshot's data may fail.
    pub(super) fn reading(&self) -> bool {
        self.disconnected || self.reads || self.short
    }
}

/// Inode numbers seen for paths: stable while the entry exists, never reused once it went.
#[derive(Default)]
pub(super) struct Inos {
    by_path: HashMap<String, u64>,
    owner: HashMap<u64, String>,
    retired: HashSet<u64>,
    /// Entries gone so far, whether their inodes were seen or not.
    gone: usize,
}

impl Inos {
    fn see(&mut self, path: &str, ino: u64) -> Result<(), String> {
        if self.retired.contains(&ino) {
            return Err(format!("{path:?}: inode {ino} of an entry that is gone"));
        }
        if let Some(old) = self.by_path.get(path)
            && *old != ino
        {
            return Err(format!("{path:?}: inode changed from {old} to {ino}"));
        }
        if let Some(other) = self.owner.get(&ino)
            && other != path
        {
            return Err(format!("inode {ino} stands for {other:?} and {path:?}"));
        }
        self.by_path.insert(path.to_string(), ino);
        self.owner.insert(ino, path.to_string());
        Ok(())
    }

    /// Takes the numbers of the entry at `path` and everything below it out, with their paths.
    fn take_below(&mut self, path: &str) -> Vec<(String, u64)> {
        let below = format!("{path}/");
        let found: Vec<String> = self
            .by_path
            .keys()
            .filter(|p| *p == path || p.starts_with(&below))
            .cloned()
            .collect();
        found
            .into_iter()
            .filter_map(|p| self.by_path.remove(&p).map(|ino| (p, ino)))
            .collect()
    }

    /// The entry at `from` and everything below it moved to `to`, keeping their numbers.
    pub(super) fn rename(&mut self, from: &str, to: &str) {
        for (p, ino) in self.take_below(from) {
            let new = format!("{to}{}", &p[from.len()..]);
            self.owner.insert(ino, new.clone());
            self.by_path.insert(new, ino);
        }
    }

    /// The entry at `path` and everything below it are gone.
    pub(super) fn retire(&mut self, path: &str) {
        self.gone += 1;
        for (_, ino) in self.take_below(path) {
            self.owner.remove(&ino);
            self.retired.insert(ino);
        }
    }

    /// How many entries have gone so far.
    pub(super) fn gone(&self) -> usize {
        self.gone
    }

    pub(super) fn get(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

const LATEST: &str = "cloud/local/snapshots/latest";

pub struct Harness {
    pub(super) f: Fixture,
    pub(super) model: Model,
    pub(super) handles: Vec<Handle>,
    pub(super) inos: Inos,
    pub(super) faults: Faults,
    /// The last operation that failed because of a fault, run again once faults are cleared.
    pub(super) faulted: Option<Op>,
    /// The pack of each snapshot, by name.
    packs: HashMap<String, String>,
    completed: u32,
}

/// Totals over every case run by this process, shown with `MODEL_STATS=1`: cases, operations,
/// reads whose bytes were compared, listings compared in full, errors the model expected,
/// errors a fault explained, uploads made snapshots.
pub static STATS: [std::sync::atomic::AtomicU64; 7] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 7];

pub(super) fn count(i: usize) {
    STATS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// What an operation came to: fine, or where the VFS and the model part.
pub type Outcome = Result<(), String>;

impl Harness {
    pub fn new() -> Harness {
        let f = Fixture::new(standard_backend());
        for name in ["db-1", "db-2", "db-3"] {
            f.hooks.take(name);
        }
        let packs = ["db-1", "db-2"]
            .into_iter()
            .map(|n| (n.to_string(), standard().pack_of(n).to_string()))
            .collect();
        Harness {
            model: Model::standard(f.backend.objects()),
            handles: Vec::new(),
            inos: Inos::default(),
            faults: Faults::default(),
            faulted: None,
            packs,
            completed: 0,
            f,
        }
    }

    /// Runs `ops` in order; the error names the first operation where the VFS and the model
    /// disagree.
    pub async fn run(&mut self, ops: &[Op]) -> Outcome {
        count(0);
        for (i, op) in ops.iter().enumerate() {
            count(1);
            self.apply(op)
                .await
                .map_err(|e| format!("op {i} {op:?}: {e}"))?;
            if matches!(op, Op::Heal)
                && let Some(again) = self.faulted.take()
            {
                self.apply(&again)
                    .await
                    .map_err(|e| format!("op {i} {again:?} once faults cleared: {e}"))?;
            }
            self.sync_statuses();
            self.check_activity()
                .map_err(|e| format!("after op {i} {op:?}: {e}"))?;
            self.track_dirs();
        }
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Lookup(path) => self.walk_checked(op, path).await.map(drop),
            Op::Getattr(path) => self.getattr(op, path).await,
            Op::Readlink(path) => self.readlink(op, path).await,
            Op::Readdir { path, plus, chunk } => self.readdir(op, path, *plus, *chunk).await,
            Op::OpenDir(path) => self.opendir(op, path).await,
            Op::ReadDir {
                handle,
                plus,
                chunk,
            } => self.read_dir(op, *handle, *plus, *chunk).await,
            Op::Open {
                path,
                write,
                truncate,
            } => self.open(op, path, *write, *truncate).await,
            Op::Read {
                handle,
                offset,
                len,
            } => self.read(op, *handle, *offset, *len).await,
            Op::Write {
                handle,
                at,
                len,
                seed,
            } => self.write(*handle, *at, *len, *seed),
            Op::Fsync(handle) => self.fsync(*handle),
            Op::Release(handle) => {
                if !self.handles.is_empty() {
                    let h = self.handles.remove(handle % self.handles.len());
                    self.f.vfs.release(h.fh());
                }
                Ok(())
            }
            Op::Mkdir(path) => self.make(op, path, false).await,
            Op::Create(path) => self.make(op, path, true).await,
            Op::Truncate { path, size } => self.truncate(op, path, *size).await,
            Op::Remove { path, dir } => self.remove(op, path, *dir).await,
            Op::Rename { from, to } => self.rename(op, from, to).await,
            Op::Complete(name) => self.complete(name),
            Op::DeleteSnapshot(name) => {
                self.delete_snapshot(name);
                Ok(())
            }
            Op::Fault(fault) => {
                self.fault(*fault);
                Ok(())
            }
            Op::Heal => {
                let b = &self.f.backend;
                b.disconnect(false);
                b.fail_listing(None);
                b.fail_reads(None);
                b.short_reads(false);
                self.faults = Faults::default();
                Ok(())
            }
        }
    }

    /// Whether a failure of an operation on `path` may come from a fault switched on now.
    pub(super) fn may_fail(&self, path: &str) -> bool {
        let listed = ["cloud/local/snapshots", "cloud/local/objects"];
        listed.iter().any(|p| path.starts_with(p)) && self.faults.listing()
    }

    /// Judges an error: one a fault allows is remembered for `Heal`, any other is a defect
    /// unless it is the one the model expects.
    pub(super) fn judge_error(
        &mut self,
        op: &Op,
        may_fail: bool,
        e: &VfsError,
        expected: &[i32],
    ) -> Outcome {
        if expected.contains(&e.errno()) {
            count(4);
            return Ok(());
        }
        if may_fail && e.errno() == libc::EIO {
            count(5);
            self.faulted = Some(op.clone());
            return Ok(());
        }
        Err(format!("unexpected error {e} (errno {})", e.errno()))
    }

    /// Looks a path up one component at a time, as the kernel does, noting each inode seen.
    async fn walk(&mut self, path: &str) -> Result<VfsResult<Entry>, String> {
        let mut entry = match self.f.vfs.getattr(ROOT_INO).await {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        self.inos.see("", entry.attr.ino)?;
        let mut at = String::new();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            entry = match self.f.vfs.lookup(entry.attr.ino, OsStr::new(name)).await {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            at = join(&at, name);
            self.inos.see(&at, entry.attr.ino)?;
        }
        Ok(Ok(entry))
    }

    /// Walks to `path` and compares what was found with the model: the entry and its view
    /// when both have it, `None` when both agree it is not there or a fault explains why not.
    pub(super) async fn walk_checked(
        &mut self,
        op: &Op,
        path: &str,
    ) -> Result<Option<(Entry, View)>, String> {
        let got = self.walk(path).await?;
        let want = self.model.resolve(path);
        match (got, want) {
            (Ok(entry), Ok(view)) => {
                check_attr(&entry, &view)?;
                Ok(Some((entry, view)))
            }
            (Err(e), Ok(_)) => {
                let may_fail = self.may_fail(path);
                self.judge_error(op, may_fail, &e, &[]).map(|()| None)
            }
            (Ok(entry), Err(miss)) => Err(format!("found {:?}, model: {miss:?}", entry.attr)),
            (Err(e), Err(super::reference::Miss::NotFound)) => {
                let may_fail = self.may_fail(path);
                self.judge_error(op, may_fail, &e, &[libc::ENOENT])
                    .map(|()| None)
            }
            (Err(e), Err(super::reference::Miss::NotDir)) => {
                let may_fail = self.may_fail(path);
                // The kernel never looks up a name in a file; either answer is fine.
                self.judge_error(op, may_fail, &e, &[libc::ENOENT, libc::ENOTDIR])
                    .map(|()| None)
            }
        }
    }

    async fn getattr(&mut self, op: &Op, path: &str) -> Outcome {
        let Some((entry, view)) = self.walk_checked(op, path).await? else {
            return Ok(());
        };
        match self.f.vfs.getattr(entry.attr.ino).await {
            Ok(got) => {
                check_attr(&got, &view)?;
                if got.attr.ino != entry.attr.ino {
                    return Err(format!("getattr gave inode {}", got.attr.ino));
                }
                Ok(())
            }
            Err(e) => {
                let may_fail = self.may_fail(path);
                self.judge_error(op, may_fail, &e, &[])
            }
        }
    }

    async fn readlink(&mut self, op: &Op, path: &str) -> Outcome {
        let Some((entry, view)) = self.walk_checked(op, path).await? else {
            return Ok(());
        };
        let View::Symlink(target) = view else {
            return Ok(());
        };
        match self.f.vfs.readlink(entry.attr.ino).await {
            Ok(got) if got == target.as_bytes() => Ok(()),
            Ok(got) => Err(format!(
                "points at {:?}, model: {target:?}",
                String::from_utf8_lossy(&got)
            )),
            Err(e) => {
                let may_fail = self.may_fail(path);
                self.judge_error(op, may_fail, &e, &[])
            }
        }
    }

    pub(super) fn see(&mut self, path: &str, ino: u64) -> Outcome {
        self.inos.see(path, ino)
    }

    /// What the job engine does when an upload with no open file has settled.
    fn complete(&mut self, name: &str) -> Outcome {
        let Some(upload) = self.model.uploads.get(name) else {
            return Ok(());
        };
        let instance = upload.instance;
        let busy = self
            .handles
            .iter()
            .any(|h| matches!(h, Handle::Staged { upload: Some(i), .. } if *i == instance));
        if busy {
            return Ok(());
        }
        self.completed += 1;
        count(6);
        let n = self.completed;
        let (info, tree, pack_key, pack) = super::snapshot::build(name, &upload.root, n);
        self.f.backend.put_object(&pack_key, pack.clone());
        let pack = std::rc::Rc::new(std::cell::RefCell::new(pack.to_vec()));
        self.model.objects.insert(pack_key.clone(), pack);
        self.f.backend.add_snapshot(info, tree);
        let staged = self.f.staging_root().join("cloud/local").join(name);
        let removed = if staged.is_dir() {
            std::fs::remove_dir_all(&staged)
        } else {
            std::fs::remove_file(&staged)
        };
        removed.map_err(|e| format!("staged copy {staged:?}: {e}"))?;
        self.f.vfs.staging().forget(LOCAL, name);
        self.f.hooks.take(name);
        self.f.vfs.entry_changed(LOCAL, name);

        let Some(upload) = self.model.uploads.remove(name) else {
            return Ok(());
        };
        let root = upload.root.deep_copy();
        let created = 100 + i64::from(n);
        let snapshot = super::reference::Snapshot { created, root };
        self.model.snapshots.insert(name.to_string(), snapshot);
        self.packs.insert(name.to_string(), pack_key);
        self.inos.retire(&format!("cloud/local/uploads/{name}"));
        self.inos
            .retire(&format!("cloud/local/uploads/{name}.status"));
        self.inos.retire(&format!("cloud/local/snapshots/{name}"));
        self.inos.retire(LATEST);
        Ok(())
    }

    fn delete_snapshot(&mut self, name: &str) {
        if self.model.snapshots.remove(name).is_none() {
            return;
        }
        self.f.backend.remove_snapshot(name);
        self.f.hooks.untake(name);
        self.f.vfs.entry_changed(LOCAL, name);
        self.inos
            .retire(&format!("cloud/local/uploads/{name}.status"));
        self.inos.retire(&format!("cloud/local/snapshots/{name}"));
        self.inos.retire(LATEST);
    }

    fn fault(&mut self, fault: Fault) {
        let b = &self.f.backend;
        let down = || snapfs_fs::backend::BackendError::Unavailable("injected".into());
        match fault {
            Fault::Disconnect => {
                b.disconnect(true);
                self.faults.disconnected = true;
            }
            Fault::Listing => {
                b.fail_listing(Some(down()));
                self.faults.listing = true;
            }
            Fault::Reads => {
                b.fail_reads(Some(down()));
                self.faults.reads = true;
            }
            Fault::ShortReads => {
                b.short_reads(true);
                self.faults.short = true;
            }
            Fault::CorruptOnce(name) => {
                // Caught by the block's checksum and fetched again: never an error.
                if let Some(pack) = self.packs.get(name) {
                    b.corrupt(pack, None, crate::fake::Corruption::Once);
                }
            }
        }
    }

    /// The job engine has a status for every upload there is, as it keeps a job for each.
    fn sync_statuses(&self) {
        for name in ["a", "b", "db-2"] {
            let status = self.model.uploads.contains_key(name).then(|| UploadStatus {
                kind: Default::default(),
                state: UploadState::Staging,
                bytes_done: 0,
                bytes_total: 0,
                target: "cloud/local".into(),
                snapshot: name.into(),
                error: None,
                note: None,
            });
            self.f.hooks.set_status(name, status);
        }
    }

    /// Every upload's open count is the number of handles open on its files.
    fn check_activity(&self) -> Outcome {
        for name in ["a", "b", "db-2"] {
            let activity = self.f.vfs.staging().activity(LOCAL, name);
            let Some(upload) = self.model.uploads.get(name) else {
                if let Some(a) = activity
                    && a.open != 0
                {
                    return Err(format!("upload {name} is gone but counts {} open", a.open));
                }
                continue;
            };
            let open = self
                .handles
                .iter()
                .filter(|h| {
                    matches!(h, Handle::Staged { upload: Some(i), .. } if *i == upload.instance)
                })
                .count() as u32;
            match activity {
                Some(a) if a.open == open => {}
                Some(a) => {
                    return Err(format!(
                        "upload {name} counts {} open handles, {open} are open",
                        a.open
                    ));
                }
                None => return Err(format!("upload {name} has no activity")),
            }
        }
        Ok(())
    }
}

/// Kind and size of an entry agree with what the model shows.
pub(super) fn check_attr(entry: &Entry, view: &View) -> Outcome {
    let attr = &entry.attr;
    if attr.kind != view.kind() {
        return Err(format!("kind {:?}, model: {:?}", attr.kind, view.kind()));
    }
    let size = match view {
        View::File(Some(c)) => c.borrow().len() as u64,
        View::Symlink(t) => t.len() as u64,
        View::File(None) | View::Dir(_) => return Ok(()),
    };
    if attr.size != size {
        return Err(format!("size {}, model: {size}", attr.size));
    }
    if attr.kind == FileKind::Dir && attr.nlink < 2 {
        return Err(format!("directory with nlink {}", attr.nlink));
    }
    Ok(())
}

/// Names known to exist at `path` in the model now.
pub(super) fn names_of(model: &Model, path: &str) -> BTreeSet<String> {
    match model.resolve(path) {
        Ok(View::Dir(entries)) => entries.into_keys().collect(),
        _ => BTreeSet::new(),
    }
}
