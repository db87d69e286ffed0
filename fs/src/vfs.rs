//! The VFS core: the mount tree of DESIGN §2 as plain async functions over inode numbers. It
//! never touches FUSE; `crate::fuse` adapts it to the kernel, and tests drive it directly.

mod attr;
mod dir;
mod error;
mod inodes;
mod listing;
mod live;
mod read;
mod readme;
mod staging;
mod targets;
mod whole;
mod write;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use attr::{Attr, DirEntry, Entry, FsStats, Opened};
pub use error::{VfsError, VfsResult};
pub use inodes::ROOT_INO;
pub use live::LiveMount;
pub use staging::{Activity, JobKind, Mark, Staging, UploadHooks, UploadState, UploadStatus};
pub use targets::{Target, TargetId, TargetSet};
pub use whole::OPENS_FOR_WHOLE;
pub use write::{SetAttr, TimeSet};

use crate::backend::{RawObjects, SnapshotInfo};
use crate::cache::BlockCache;
use crate::tree::{FileKind, SnapshotTree};
use inodes::{Inodes, Node};
use listing::Listings;
use read::Handle;

#[derive(Debug, Clone)]
pub struct VfsConfig {
    /// How long a list of snapshots or objects is trusted.
    pub list_ttl: Duration,
    /// Bytes that read-ahead may hold in flight across all readers.
    pub readahead_budget: usize,
    /// Owner shown for generated and snapshot entries.
    pub uid: u32,
    pub gid: u32,
    /// Permission bits shown for every file (and directory) of snapshots and objects, in place
    /// of the stored ones; None: as stored.
    pub file_mode: Option<u16>,
    pub dir_mode: Option<u16>,
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            list_ttl: Duration::from_secs(5),
            readahead_budget: 128 << 20,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            file_mode: None,
            dir_mode: None,
        }
    }
}

/// Kernel cache lifetimes: long for what can never change, short for what can.
const TTL_FIXED: Duration = Duration::from_secs(60);
const TTL_IMMUTABLE: Duration = Duration::from_secs(3600);
const TTL_CHANGING: Duration = Duration::from_secs(1);

/// What the kernel is told about names that changed outside its requests.
pub enum Notice {
    /// Forget a cached name (parent inode, name).
    Forget(u64, OsString),
    /// Answer once every notice queued before this one was carried out.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Passes notices to the kernel. It must only queue them and return: the kernel takes the parent
/// directory's lock to forget a name, and a request on that directory may hold the lock while it
/// waits for the daemon, perhaps on a lock the caller holds (`fuse::connect_invalidation` sends
/// them from a thread of their own).
pub type Invalidator = Box<dyn Fn(Notice) + Send + Sync>;

pub struct Vfs {
    targets: Arc<dyn TargetSet>,
    live: Vec<LiveMount>,
    live_recent: live::Recent,
    invalidator: std::sync::OnceLock<Invalidator>,
    config: VfsConfig,
    inodes: Inodes,
    cache: Arc<BlockCache>,
    staging: Arc<Staging>,
    hooks: Arc<dyn UploadHooks>,
    listings: Listings,
    trees: Mutex<lru::LruCache<(TargetId, String, String), Arc<SnapshotTree>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: std::sync::atomic::AtomicU64,
    readahead: Arc<tokio::sync::Semaphore>,
    whole: Arc<whole::WholeFiles>,
    started: SystemTime,
}

impl Vfs {
    pub fn new(
        targets: Arc<dyn TargetSet>,
        config: VfsConfig,
        cache: Arc<BlockCache>,
        staging: Arc<Staging>,
        hooks: Arc<dyn UploadHooks>,
    ) -> Self {
        let permits = (config.readahead_budget / read::BUDGET_UNIT).max(1);
        Vfs {
            invalidator: std::sync::OnceLock::new(),
            listings: Listings::new(config.list_ttl),
            targets,
            live: Vec::new(),
            live_recent: live::Recent::default(),
            config,
            inodes: Inodes::default(),
            cache,
            staging,
            hooks,
            trees: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(256).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            handles: Mutex::new(HashMap::new()),
            next_fh: std::sync::atomic::AtomicU64::new(1),
            readahead: Arc::new(tokio::sync::Semaphore::new(permits)),
            whole: Arc::default(),
            started: SystemTime::now(),
        }
    }

    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets.all()
    }

    fn target(&self, id: TargetId) -> VfsResult<Arc<Target>> {
        self.targets.get(id).ok_or(VfsError::NotFound)
    }

    pub fn staging(&self) -> &Arc<Staging> {
        &self.staging
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// The snapshot list of a target changed (an upload finished, a snapshot was removed).
    pub fn invalidate(&self, target: TargetId) {
        self.listings.invalidate(target);
    }

    /// Sets how the kernel is told to forget names that changed outside its requests.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Snapshot or upload `name` of a target appeared, finished or vanished outside a request:
    /// the listing is refreshed and the names are forgotten here at once, so the next request
    /// sees the change; the kernel is told to forget them later, as it may be waiting on a
    /// request of the same directory (its cache lifetimes bound how long it can lag). Callers
    /// may hold their own locks: nothing here waits on the kernel or on a request.
    pub fn entry_changed(&self, target: TargetId, name: &str) {
        self.invalidate(target);
        let Ok(t) = self.target(target) else {
            return;
        };
        let Some(mut dir) = self.inodes.find(ROOT_INO, OsStr::new(t.kind)) else {
            return;
        };
        for part in t.name.split('/') {
            let Some(child) = self.inodes.find(dir, OsStr::new(part)) else {
                return;
            };
            dir = child;
        }
        let status = format!("{name}.status");
        let names = [
            ("snapshots", name),
            ("snapshots", "latest"),
            ("uploads", name),
            ("uploads", status.as_str()),
        ];
        for (sub, entry) in names {
            let Some(parent) = self.inodes.find(dir, OsStr::new(sub)) else {
                continue;
            };
            if self.inodes.find(parent, OsStr::new(entry)).is_none() {
                continue;
            }
            self.inodes.unlink(parent, OsStr::new(entry));
            if let Some(f) = self.invalidator.get() {
                f(Notice::Forget(parent, entry.into()));
            }
        }
    }

    /// Resolves once the kernel was told of every change noticed before the call, so an answer
    /// given after it (a removal, the end of a wait) is never contradicted by a name the kernel
    /// still holds. At once when no mount is told. Must not be awaited by a FUSE request or under
    /// a lock a request may need: the kernel may wait on such a request to carry out a notice.
    pub async fn kernel_told(&self) {
        let Some(f) = self.invalidator.get() else {
            return;
        };
        let (done, told) = tokio::sync::oneshot::channel();
        f(Notice::Flush(done));
        // An error means the thread is gone (unmounted): nothing is left to tell.
        let _ = told.await;
    }

    /// Snapshots of a target, from the listing cache.
    pub async fn snapshots(&self, target: TargetId) -> VfsResult<Arc<Vec<SnapshotInfo>>> {
        let t = self.target(target)?;
        self.listings.snapshots(target, t.backend.as_ref()).await
    }

    /// The content of a snapshot, opened once and kept while it is used.
    pub async fn snapshot_tree(
        &self,
        target: TargetId,
        name: &str,
    ) -> VfsResult<(SnapshotInfo, Arc<SnapshotTree>)> {
        let list = self.snapshots(target).await?;
        // Only ready snapshots, as readdir shows them: nothing half-made is reachable (DESIGN §3).
        let info = list
            .iter()
            .find(|s| s.name == name && s.state == crate::backend::SnapshotState::Ready)
            .ok_or(VfsError::NotFound)?
            .clone();
        let key = (target, info.name.clone(), info.id.clone());
        if let Some(tree) = self.trees_lock().get(&key) {
            return Ok((info, tree.clone()));
        }
        let tree = self.target(target)?.backend.open_snapshot(name).await?;
        self.trees_lock().put(key, tree.clone());
        Ok((info, tree))
    }

    fn trees_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, lru::LruCache<(TargetId, String, String), Arc<SnapshotTree>>>
    {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inode(&self, ino: u64) -> VfsResult<inodes::Inode> {
        self.inodes.get(ino).ok_or(VfsError::NotFound)
    }

    fn dir_attr(&self, ino: u64, perm: u16) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            size: 0,
            perm,
            nlink: 2,
            mtime: self.started,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    /// The permission bits shown for read-only content (snapshots, objects) of `kind`
    /// stored with `perm`.
    fn shown_perm(&self, kind: FileKind, perm: u16) -> u16 {
        let forced = match kind {
            FileKind::File => self.config.file_mode,
            FileKind::Dir => self.config.dir_mode,
            FileKind::Symlink => None,
        };
        forced.unwrap_or(perm)
    }

    fn file_attr(&self, ino: u64, size: u64, perm: u16, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            kind: FileKind::File,
            size,
            perm,
            nlink: 1,
            mtime,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    /// Targets shown directly in a kind directory; deeper ones are reached through live trees.
    fn children_of_group(&self, kind: &str) -> Vec<(TargetId, String)> {
        self.targets
            .all()
            .iter()
            .filter(|t| t.kind == kind && !t.name.contains('/'))
            .map(|t| (t.id, t.name.clone()))
            .collect()
    }

    /// The kinds of targets, each once, in the order they are configured.
    fn groups(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = Vec::new();
        let targets = self.targets.all();
        let all = targets.iter().map(|t| t.kind);
        for kind in all.chain(self.live.iter().map(|m| m.kind)) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// Attributes of an inode and how long they may be cached.
    pub async fn getattr(&self, ino: u64) -> VfsResult<Entry> {
        let inode = self.inode(ino)?;
        self.attr_of(ino, &inode).await
    }

    async fn attr_of(&self, ino: u64, inode: &inodes::Inode) -> VfsResult<Entry> {
        let fixed = |attr| Entry {
            attr,
            ttl: TTL_FIXED,
        };
        Ok(match &inode.node {
            Node::Root | Node::Group(_) | Node::Target(_) => fixed(self.dir_attr(ino, 0o755)),
            Node::Readme => {
                fixed(self.file_attr(ino, self.readme().len() as u64, 0o444, self.started))
            }
            Node::Snapshots(_) => fixed(self.dir_attr(ino, self.shown_perm(FileKind::Dir, 0o555))),
            Node::Uploads(_) => fixed(self.dir_attr(ino, 0o755)),
            Node::Objects { .. } => Entry {
                attr: self.dir_attr(ino, self.shown_perm(FileKind::Dir, 0o555)),
                ttl: self.config.list_ttl,
            },
            Node::Object { size, modified, .. } => Entry {
                attr: self.file_attr(
                    ino,
                    *size,
                    self.shown_perm(FileKind::File, 0o444),
                    *modified,
                ),
                ttl: self.config.list_ttl,
            },
            Node::Latest(t) => {
                let target = self.latest(*t).await?.ok_or(VfsError::NotFound)?;
                Entry {
                    attr: Attr {
                        kind: FileKind::Symlink,
                        size: target.len() as u64,
                        perm: 0o777,
                        ..self.file_attr(ino, 0, 0o777, self.started)
                    },
                    ttl: TTL_CHANGING,
                }
            }
            Node::Snap { tree, id, .. } => {
                let node = tree.node(*id).ok_or(VfsError::NotFound)?;
                let attr = Attr {
                    ino,
                    kind: node.kind,
                    size: match node.kind {
                        FileKind::Symlink => node.symlink.as_ref().map_or(0, |s| s.len() as u64),
                        _ => node.size,
                    },
                    perm: self.shown_perm(node.kind, node.perm),
                    nlink: if node.kind == FileKind::Dir { 2 } else { 1 },
                    mtime: node.mtime,
                    uid: self.config.uid,
                    gid: self.config.gid,
                };
                // The root of a snapshot can be deleted; what is inside it never changes.
                let ttl = if *id == SnapshotTree::ROOT {
                    TTL_CHANGING
                } else {
                    TTL_IMMUTABLE
                };
                Entry { attr, ttl }
            }
            Node::Status { target, name } => {
                let len = self
                    .status_json(*target, name)
                    .map_or(0, |s| s.len() as u64);
                Entry {
                    attr: self.file_attr(ino, len, 0o444, SystemTime::now()),
                    ttl: Duration::ZERO,
                }
            }
            Node::Staged(_) => write::staged_attr(self, ino)?,
            Node::Live { mount, path } => self.live_getattr(ino, *mount, path).await?,
        })
    }

    /// Looks `name` up in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> VfsResult<Entry> {
        let dir = self.inode(parent)?;
        let node = self.child_node(&dir, parent, name).await?;
        let ino = self.inodes.entry(parent, name, node);
        self.getattr(ino).await
    }

    /// What `name` in directory `dir` stands for, if it exists.
    async fn child_node(&self, dir: &inodes::Inode, parent: u64, name: &OsStr) -> VfsResult<Node> {
        let name_str = name.to_str();
        match &dir.node {
            Node::Root => {
                if name == "README" {
                    return Ok(Node::Readme);
                }
                self.groups()
                    .into_iter()
                    .find(|g| Some(*g) == name_str)
                    .map(Node::Group)
                    .ok_or(VfsError::NotFound)
            }
            Node::Group(kind) => {
                let target = self
                    .children_of_group(kind)
                    .into_iter()
                    .find(|(_, n)| Some(n.as_str()) == name_str)
                    .map(|(i, _)| Node::Target(i));
                let live = || {
                    self.live_in_group(kind)
                        .into_iter()
                        .find(|(_, n)| Some(n.as_str()) == name_str)
                        .map(|(mount, _)| Node::Live {
                            mount,
                            path: String::new(),
                        })
                };
                target.or_else(live).ok_or(VfsError::NotFound)
            }
            Node::Live { mount, path } => self.live_child(*mount, path, name).await,
            Node::Target(t) => match name_str {
                Some("snapshots") => Ok(Node::Snapshots(*t)),
                Some("uploads") if self.target(*t)?.uploads => Ok(Node::Uploads(*t)),
                Some("objects") if self.target(*t)?.raw.is_some() => Ok(Node::Objects {
                    target: *t,
                    prefix: String::new(),
                }),
                _ => Err(VfsError::NotFound),
            },
            Node::Snapshots(t) => {
                let name = name_str.ok_or(VfsError::NotFound)?;
                if name == "latest" {
                    return Ok(Node::Latest(*t));
                }
                let (_, tree) = self.snapshot_tree(*t, name).await?;
                Ok(Node::Snap {
                    target: *t,
                    name: name.to_string(),
                    tree,
                    id: SnapshotTree::ROOT,
                })
            }
            Node::Snap {
                target,
                name: snap,
                tree,
                id,
            } => {
                let child = tree
                    .child(*id, name_str.ok_or(VfsError::NotFound)?)
                    .ok_or(VfsError::NotFound)?;
                Ok(Node::Snap {
                    target: *target,
                    name: snap.clone(),
                    tree: tree.clone(),
                    id: child,
                })
            }
            Node::Objects { target, prefix } => {
                let name = name_str.ok_or(VfsError::NotFound)?;
                let listing = self
                    .listings
                    .raw(*target, prefix, self.raw(*target)?.as_ref())
                    .await?;
                if listing.dirs.iter().any(|d| d == name) {
                    return Ok(Node::Objects {
                        target: *target,
                        prefix: format!("{prefix}{name}/"),
                    });
                }
                let o = listing
                    .objects
                    .iter()
                    .find(|o| o.name == name)
                    .ok_or(VfsError::NotFound)?;
                Ok(Node::Object {
                    target: *target,
                    key: format!("{prefix}{name}"),
                    size: o.size,
                    modified: o.modified.into(),
                    version: o.version.clone(),
                })
            }
            Node::Uploads(t) => {
                let name = name_str.ok_or(VfsError::NotFound)?;
                if let Some(upload) = name.strip_suffix(".status")
                    && self.status_json(*t, upload).is_some()
                {
                    return Ok(Node::Status {
                        target: *t,
                        name: upload.to_string(),
                    });
                }
                write::staged_exists(self, parent, name.as_ref())?;
                Ok(Node::Staged(*t))
            }
            Node::Staged(t) => {
                write::staged_exists(self, parent, name)?;
                Ok(Node::Staged(*t))
            }
            Node::Readme | Node::Latest(_) | Node::Object { .. } | Node::Status { .. } => {
                Err(VfsError::NotDir)
            }
        }
    }

    fn raw(&self, target: TargetId) -> VfsResult<Arc<dyn RawObjects>> {
        self.target(target)?.raw.clone().ok_or(VfsError::NotFound)
    }

    /// The name `latest` points at: the newest ready snapshot.
    pub async fn latest(&self, target: TargetId) -> VfsResult<Option<String>> {
        let list = self.snapshots(target).await?;
        Ok(list
            .iter()
            .filter(|s| s.state == crate::backend::SnapshotState::Ready)
            .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)))
            .map(|s| s.name.clone()))
    }

    pub async fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        match self.inode(ino)?.node {
            Node::Latest(t) => Ok(self
                .latest(t)
                .await?
                .ok_or(VfsError::NotFound)?
                .into_bytes()),
            Node::Snap { tree, id, .. } => tree
                .node(id)
                .and_then(|n| n.symlink.clone())
                .map(String::into_bytes)
                .ok_or(VfsError::InvalidName("not a symlink".into())),
            Node::Staged(_) => write::staged_readlink(self, ino),
            Node::Live { mount, path } => self.live_readlink(mount, &path).await,
            _ => Err(VfsError::InvalidName("not a symlink".into())),
        }
    }

    pub fn statfs(&self) -> VfsResult<FsStats> {
        // The staging folder is made by the first upload; until then its nearest existing
        // ancestor stands for the same volume, so `df` works on a fresh mount.
        let root = self.staging.root();
        let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
        let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
            .map_err(|_| VfsError::Io("staging path has a NUL".into()))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: path is NUL-terminated and st is a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(FsStats {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
        })
    }

    /// The staging path of a staged inode, with its target and upload name.
    fn staged_path(&self, ino: u64) -> VfsResult<(TargetId, String, PathBuf)> {
        let (top, names) = self
            .inodes
            .path_below(ino, |n| matches!(n, Node::Uploads(_)))
            .ok_or(VfsError::NotFound)?;
        let Node::Uploads(t) = top.node else {
            return Err(VfsError::NotFound);
        };
        let upload = names
            .first()
            .and_then(|n| n.to_str())
            .ok_or(VfsError::NotFound)?
            .to_string();
        let mut path = self.staging.target_dir(&self.target(t)?.path());
        path.extend(names.iter());
        Ok((t, upload, path))
    }
}
