//! Live trees (`k8s/<context>/`): directories whose content a `LiveTree` serves per request.
//!
//! Nothing here is cached by the VFS beyond a short kernel TTL: the content changes on its own
//! (pods come and go, files in containers are written), so every lookup, listing and read asks
//! the tree. Reads go straight to the tree, not through the block cache, with one small buffer
//! per open file so the kernel's 128 KiB requests do not each cost a round trip.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::error::{VfsError, VfsResult};
use super::inodes::Node;
use super::read::{Handle, LiveBuffer};
use super::{Attr, Entry, Opened, TTL_CHANGING, Vfs};
use crate::backend::{LiveEntry, LiveTree};
use crate::tree::FileKind;

/// How much one read of a live file fetches at least.
const LIVE_CHUNK: u64 = 256 << 10;

/// A live tree mounted at `<kind>/<name>`.
pub struct LiveMount {
    /// Kind directory, as for targets ("k8s").
    pub kind: &'static str,
    /// Directory name below the kind directory; one path component.
    pub name: String,
    /// One line for the generated README.
    pub description: String,
    pub tree: Arc<dyn LiveTree>,
}

/// Entries a listing just returned, so that `ls -l` (a listing, then a lookup of every name)
/// costs one round trip to the tree rather than one per entry. Kept as long as the kernel
/// may keep an attribute anyway.
#[derive(Default)]
pub(super) struct Recent {
    entries: Mutex<HashMap<(usize, String), (Instant, LiveEntry)>>,
}

impl Recent {
    fn put(&self, mount: usize, dir: &str, list: &[LiveEntry]) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < TTL_CHANGING);
        let now = Instant::now();
        for e in list {
            map.insert((mount, join(dir, &e.name)), (now, e.clone()));
        }
    }

    fn get(&self, mount: usize, path: &str) -> Option<LiveEntry> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, e) = map.get(&(mount, path.to_string()))?;
        // A listing may leave a symlink's target out; then only a stat knows it.
        let complete = e.kind != FileKind::Symlink || e.symlink.is_some();
        (at.elapsed() < TTL_CHANGING && complete).then(|| e.clone())
    }
}

impl Vfs {
    /// Adds live trees next to the targets.
    pub fn with_live(mut self, mounts: Vec<LiveMount>) -> Self {
        self.live = mounts;
        self
    }

    pub fn live_mounts(&self) -> &[LiveMount] {
        &self.live
    }

    /// One entry: from a listing of the last moment, else from the tree.
    async fn live_stat(&self, mount: usize, path: &str) -> VfsResult<LiveEntry> {
        if let Some(e) = self.live_recent.get(mount, path) {
            return Ok(e);
        }
        Ok(self.live_tree(mount)?.stat(path).await?)
    }

    fn live_tree(&self, mount: usize) -> VfsResult<&dyn LiveTree> {
        self.live
            .get(mount)
            .map(|m| m.tree.as_ref())
            .ok_or(VfsError::NotFound)
    }

    pub(super) fn live_attr(&self, ino: u64, e: &LiveEntry) -> Entry {
        let size = match (&e.kind, &e.symlink) {
            (FileKind::Symlink, Some(s)) => s.len() as u64,
            _ => e.size,
        };
        Entry {
            attr: Attr {
                ino,
                kind: e.kind,
                size,
                perm: self.shown_perm(e.kind, e.perm),
                nlink: if e.kind == FileKind::Dir { 2 } else { 1 },
                mtime: e.mtime,
                uid: self.config.uid,
                gid: self.config.gid,
            },
            ttl: TTL_CHANGING,
        }
    }

    pub(super) async fn live_getattr(
        &self,
        ino: u64,
        mount: usize,
        path: &str,
    ) -> VfsResult<Entry> {
        if path.is_empty() {
            self.live_tree(mount)?;
            return Ok(Entry {
                attr: self.dir_attr(ino, 0o555),
                ttl: TTL_CHANGING,
            });
        }
        let e = self.live_stat(mount, path).await?;
        Ok(self.live_attr(ino, &e))
    }

    pub(super) async fn live_child(
        &self,
        mount: usize,
        path: &str,
        name: &OsStr,
    ) -> VfsResult<Node> {
        let name = name.to_str().ok_or(VfsError::NotFound)?;
        let child = join(path, name);
        let e = self.live_stat(mount, &child).await?;
        // The attributes the kernel asks for right after a lookup are these.
        self.live_recent.put(mount, path, std::slice::from_ref(&e));
        self.live_node(mount, path, &e)
    }

    /// The node of entry `e` of directory `dir`: a path of the tree, or the `uploads/` of the
    /// target the tree says it is.
    fn live_node(&self, mount: usize, dir: &str, e: &LiveEntry) -> VfsResult<Node> {
        if !e.uploads {
            return Ok(Node::Live {
                mount,
                path: join(dir, &e.name),
            });
        }
        let m = self.live.get(mount).ok_or(VfsError::NotFound)?;
        let target = format!("{}/{}", m.kind, join(&m.name, dir));
        self.targets
            .find(&target)
            .map(|t| Node::Uploads(t.id))
            .ok_or(VfsError::NotFound)
    }

    pub(super) async fn live_list(
        &self,
        mount: usize,
        path: &str,
    ) -> VfsResult<Vec<(String, Node, FileKind)>> {
        let list = self.live_tree(mount)?.list(path).await?;
        self.live_recent.put(mount, path, &list);
        Ok(list
            .into_iter()
            .filter_map(|e| {
                let node = self.live_node(mount, path, &e).ok()?;
                Some((e.name, node, e.kind))
            })
            .collect())
    }

    pub(super) async fn live_readlink(&self, mount: usize, path: &str) -> VfsResult<Vec<u8>> {
        let e = self.live_stat(mount, path).await?;
        e.symlink
            .map(String::into_bytes)
            .ok_or(VfsError::InvalidName("not a symlink".into()))
    }

    pub(super) async fn live_xattrs(
        &self,
        mount: usize,
        path: &str,
    ) -> VfsResult<Vec<(String, Vec<u8>)>> {
        if path.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.live_stat(mount, path).await?;
        Ok(e.xattrs
            .into_iter()
            .map(|(k, v)| (format!("user.snapfs.{k}"), v.into_bytes()))
            .collect())
    }

    pub(super) async fn live_open(
        &self,
        mount: usize,
        path: String,
        write: bool,
    ) -> VfsResult<Opened> {
        if write {
            return Err(VfsError::ReadOnly("live views are read-only"));
        }
        let e = self.live_stat(mount, &path).await?;
        match e.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(VfsError::IsDir),
            _ => return Err(VfsError::InvalidName("not a regular file".into())),
        }
        let h = Handle::Live {
            mount,
            path,
            buf: Mutex::new(LiveBuffer::default()),
        };
        // Direct I/O: the size the kernel saw at open may be stale; reads go on to the real end.
        Ok(Opened {
            fh: self.add_handle(h),
            keep_cache: false,
            direct_io: true,
            whole: None,
        })
    }

    pub(super) async fn live_read(
        &self,
        mount: usize,
        path: &str,
        buf: &Mutex<LiveBuffer>,
        offset: u64,
        size: u32,
    ) -> VfsResult<Bytes> {
        let want = u64::from(size);
        {
            let b = buf.lock().unwrap_or_else(|e| e.into_inner());
            let have = b.data.len() as u64;
            if offset >= b.start {
                let rel = offset - b.start;
                if rel + want <= have || (b.eof && rel <= have) {
                    let to = (rel + want).min(have);
                    return Ok(b.data.slice(rel as usize..to as usize));
                }
            }
        }
        let len = want.max(LIVE_CHUNK);
        let data = self.live_tree(mount)?.read(path, offset, len).await?;
        let out = data.slice(..(size as usize).min(data.len()));
        let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
        *b = LiveBuffer {
            start: offset,
            eof: (data.len() as u64) < len,
            data,
        };
        Ok(out)
    }

    /// The live mounts in kind directory `kind`, with their names.
    pub(super) fn live_in_group(&self, kind: &str) -> Vec<(usize, String)> {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == kind)
            .map(|(i, m)| (i, m.name.clone()))
            .collect()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
