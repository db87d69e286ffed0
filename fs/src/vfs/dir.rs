//! Listing directories of the mount tree, and the extended attributes entries carry.

use std::ffi::{OsStr, OsString};

use super::error::{VfsError, VfsResult};
use super::inodes::Node;
use super::read::Handle;
use super::targets::TargetId;
use super::{DirEntry, Entry, Opened, Vfs, write};
use crate::tree::{FileKind, SnapshotTree};

impl Vfs {
    /// Every entry of a directory, "." and ".." first.
    pub async fn readdir(&self, ino: u64) -> VfsResult<Vec<DirEntry>> {
        let dir = self.inode(ino)?;
        let mut out = vec![
            DirEntry {
                ino,
                kind: FileKind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: dir.parent,
                kind: FileKind::Dir,
                name: "..".into(),
            },
        ];
        let mut add = |name: OsString, node: Node, kind: FileKind| {
            let child = self.inodes.entry(ino, &name, node);
            out.push(DirEntry {
                ino: child,
                kind,
                name,
            });
        };
        match &dir.node {
            Node::Root => {
                add("README".into(), Node::Readme, FileKind::File);
                for g in self.groups() {
                    add(g.into(), Node::Group(g), FileKind::Dir);
                }
            }
            Node::Group(kind) => {
                for (i, name) in self.children_of_group(kind) {
                    add(name.into(), Node::Target(i), FileKind::Dir);
                }
                for (mount, name) in self.live_in_group(kind) {
                    let node = Node::Live {
                        mount,
                        path: String::new(),
                    };
                    add(name.into(), node, FileKind::Dir);
                }
            }
            Node::Target(t) => {
                add("snapshots".into(), Node::Snapshots(*t), FileKind::Dir);
                let target = self.target(*t)?;
                if target.uploads {
                    add("uploads".into(), Node::Uploads(*t), FileKind::Dir);
                }
                if target.raw.is_some() {
                    add(
                        "objects".into(),
                        Node::Objects {
                            target: *t,
                            prefix: String::new(),
                        },
                        FileKind::Dir,
                    );
                }
            }
            Node::Snapshots(t) => {
                let list = self.snapshots(*t).await?;
                if self.latest(*t).await?.is_some() {
                    add("latest".into(), Node::Latest(*t), FileKind::Symlink);
                }
                for s in list
                    .iter()
                    .filter(|s| s.state == crate::backend::SnapshotState::Ready)
                {
                    // Listing must not open every snapshot: the entry is resolved on lookup.
                    let kind = if s.is_file {
                        FileKind::File
                    } else {
                        FileKind::Dir
                    };
                    let child = self.inodes.entry_lazy(ino, OsStr::new(&s.name));
                    out.push(DirEntry {
                        ino: child,
                        kind,
                        name: s.name.clone().into(),
                    });
                }
            }
            Node::Snap {
                target,
                name,
                tree,
                id,
            } => {
                for (child, node) in tree.children(*id) {
                    add(
                        node.name.clone().into(),
                        Node::Snap {
                            target: *target,
                            name: name.clone(),
                            tree: tree.clone(),
                            id: child,
                        },
                        node.kind,
                    );
                }
            }
            Node::Objects { target, prefix } => {
                let listing = self
                    .listings
                    .raw(*target, prefix, self.raw(*target)?.as_ref())
                    .await?;
                for d in &listing.dirs {
                    add(
                        d.clone().into(),
                        Node::Objects {
                            target: *target,
                            prefix: format!("{prefix}{d}/"),
                        },
                        FileKind::Dir,
                    );
                }
                for o in &listing.objects {
                    add(
                        o.name.clone().into(),
                        Node::Object {
                            target: *target,
                            key: format!("{prefix}{}", o.name),
                            size: o.size,
                            modified: o.modified.into(),
                            version: o.version.clone(),
                        },
                        FileKind::File,
                    );
                }
            }
            Node::Uploads(t) => {
                for (name, kind) in write::staged_list(self, ino)? {
                    if let Some(upload) = name.to_str()
                        && self.status_json(*t, upload).is_some()
                    {
                        let status = format!("{upload}.status");
                        add(
                            status.into(),
                            Node::Status {
                                target: *t,
                                name: upload.to_string(),
                            },
                            FileKind::File,
                        );
                    }
                    add(name, Node::Staged(*t), kind);
                }
            }
            Node::Staged(t) => {
                for (name, kind) in write::staged_list(self, ino)? {
                    add(name, Node::Staged(*t), kind);
                }
            }
            Node::Live { mount, path } => {
                for (name, node, kind) in self.live_list(*mount, path).await? {
                    add(name.into(), node, kind);
                }
            }
            Node::Readme | Node::Latest(_) | Node::Object { .. } | Node::Status { .. } => {
                return Err(VfsError::NotDir);
            }
        }
        Ok(out)
    }

    pub(super) fn status_json(&self, target: TargetId, name: &str) -> Option<Vec<u8>> {
        let status = self.hooks.status(target, name)?;
        let mut json = serde_json::to_vec_pretty(&status).ok()?;
        json.push(b'\n');
        Some(json)
    }

    /// Extended attributes of an entry (DESIGN §2), as (name, value) pairs.
    pub async fn xattrs(&self, ino: u64) -> VfsResult<Vec<(String, Vec<u8>)>> {
        let inode = self.inode(ino)?;
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut put = |k: &str, v: String| out.push((format!("user.snapfs.{k}"), v.into_bytes()));
        match &inode.node {
            Node::Snap {
                target,
                name,
                tree,
                id,
            } => {
                let node = tree.node(*id).ok_or(VfsError::NotFound)?;
                if *id == SnapshotTree::ROOT {
                    let list = self.snapshots(*target).await?;
                    if let Some(info) = list.iter().find(|s| &s.name == name) {
                        put("state", info.state.as_str().into());
                        put(
                            "created",
                            info.created
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        );
                        put("size", info.size.to_string());
                        if let Some(crc) = info.crc32c {
                            put("crc32c", format!("{crc:08x}"));
                        }
                        if let Some(exp) = info.expires {
                            put(
                                "expires",
                                exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            );
                        }
                        put("id", info.id.clone());
                    }
                } else if node.kind == FileKind::File {
                    put("size", node.size.to_string());
                    if let Some(crc) = node.crc32c {
                        put("crc32c", format!("{crc:08x}"));
                    }
                }
            }
            Node::Staged(t) => {
                if let Some((_, names)) = self
                    .inodes
                    .path_below(ino, |n| matches!(n, Node::Uploads(_)))
                    && names.len() == 1
                    && let Some(status) = names[0].to_str().and_then(|n| self.hooks.status(*t, n))
                {
                    put("state", status.state.snapshot_state().into());
                    put("size", status.bytes_total.to_string());
                    if let Some(err) = status.error {
                        put("error", err);
                    }
                }
            }
            Node::Live { mount, path } => return self.live_xattrs(*mount, path).await,
            _ => {}
        }
        Ok(out)
    }

    /// Opens a directory, taking its listing once; a folder inside a snapshot never changes,
    /// so the kernel may keep its listing.
    pub async fn opendir(&self, ino: u64) -> VfsResult<Opened> {
        let immutable = matches!(self.inode(ino)?.node, Node::Snap { .. });
        let entries = self.readdir(ino).await?;
        Ok(Opened {
            fh: self.add_handle(Handle::Dir(entries)),
            keep_cache: immutable,
            direct_io: false,
            whole: None,
        })
    }

    /// Like `readdir_at`, with each entry looked up, for READDIRPLUS. Entries gone since the
    /// listing was taken are left out, so each comes with the offset that continues after it
    /// (positions in the answer are not positions in the listing), and an answer is empty only
    /// at the end.
    pub async fn readdir_plus_at(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> VfsResult<Vec<(u64, DirEntry, Entry)>> {
        let mut out = Vec::new();
        let mut next = offset;
        while out.len() < max {
            let window = self.readdir_at(fh, next, max - out.len())?;
            if window.is_empty() {
                break;
            }
            for e in window {
                next += 1;
                let entry = if e.name == "." || e.name == ".." {
                    self.getattr(e.ino).await
                } else {
                    self.lookup(dir, &e.name).await
                };
                match entry {
                    Ok(entry) => out.push((next, e, entry)),
                    Err(VfsError::NotFound) => continue,
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(out)
    }

    /// Up to `max` entries of an open directory from position `offset` on.
    pub fn readdir_at(&self, fh: u64, offset: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        match self.handle(fh)?.as_ref() {
            Handle::Dir(entries) => Ok(entries
                .iter()
                .skip(offset as usize)
                .take(max)
                .cloned()
                .collect()),
            _ => Err(VfsError::NotDir),
        }
    }
}
