//! The inode table: numbers handed to the kernel and what each one stands for.
//!
//! An inode is known by (parent, name). Numbers are never reused, so a kernel holding a stale
//! number can only ever miss, never reach the wrong thing.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, RwLock};

use super::targets::TargetId;
use crate::tree::SnapshotTree;

pub const ROOT_INO: u64 = 1;

/// What an inode stands for.
#[derive(Debug, Clone)]
pub enum Node {
    Root,
    Readme,
    /// `cloud/`, `k8s/`, `hivemq/`: holds the targets of one kind.
    Group(&'static str),
    /// A target directory (`cloud/local/`).
    Target(TargetId),
    Snapshots(TargetId),
    Latest(TargetId),
    Uploads(TargetId),
    /// A folder of the raw view; `prefix` is "" or ends with '/'.
    Objects {
        target: TargetId,
        prefix: String,
    },
    Object {
        target: TargetId,
        key: String,
        size: u64,
        modified: std::time::SystemTime,
        version: String,
    },
    /// An entry inside snapshot `name`.
    Snap {
        target: TargetId,
        name: String,
        tree: Arc<SnapshotTree>,
        id: u32,
    },
    /// A staged file or folder under `uploads/`; its path follows from its ancestry.
    Staged(TargetId),
    /// `uploads/NAME.status`.
    Status {
        target: TargetId,
        name: String,
    },
    /// An entry of live tree `mount`; `path` is "" for the tree's own directory.
    Live {
        mount: usize,
        path: String,
    },
}

impl Node {
    /// Whether an existing inode may keep standing for `other` (same thing, same content).
    fn same_as(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Snap { tree: a, id: x, .. }, Node::Snap { tree: b, id: y, .. }) => {
                Arc::ptr_eq(a, b) && x == y
            }
            (Node::Object { version: a, .. }, Node::Object { version: b, .. }) => a == b,
            (Node::Staged(a), Node::Staged(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inode {
    pub parent: u64,
    pub name: OsString,
    pub node: Node,
}

#[derive(Debug)]
pub struct Inodes {
    inner: RwLock<Table>,
}

#[derive(Debug)]
struct Table {
    next: u64,
    by_ino: HashMap<u64, Inode>,
    by_name: HashMap<(u64, OsString), u64>,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT_INO,
            Inode {
                parent: ROOT_INO,
                name: OsString::new(),
                node: Node::Root,
            },
        );
        Inodes {
            inner: RwLock::new(Table {
                next: ROOT_INO + 1,
                by_ino,
                by_name: HashMap::new(),
            }),
        }
    }
}

impl Inodes {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ino: u64) -> Option<Inode> {
        self.read().by_ino.get(&ino).cloned()
    }

    /// The inode for `name` in `parent`, standing for `node`: the existing one if it still
    /// stands for the same thing, else a new number.
    pub fn entry(&self, parent: u64, name: &OsStr, node: Node) -> u64 {
        let key = (parent, name.to_os_string());
        {
            // One guard: taking the read lock twice deadlocks if a writer queues in between.
            let t = self.read();
            if let Some(ino) = t.by_name.get(&key)
                && t.by_ino.get(ino).is_some_and(|e| e.node.same_as(&node))
            {
                return *ino;
            }
        }
        let mut t = self.write();
        let known = t.by_name.get(&key).copied();
        if let Some(ino) = known {
            match t.by_ino.get(&ino) {
                Some(existing) if existing.node.same_as(&node) => return ino,
                Some(_) => {}
                // Reserved by a listing (`entry_lazy`): resolve it under the number it was shown as.
                None => {
                    t.by_ino.insert(
                        ino,
                        Inode {
                            parent,
                            name: name.to_os_string(),
                            node,
                        },
                    );
                    return ino;
                }
            }
        }
        let ino = t.next;
        t.next += 1;
        t.by_ino.insert(
            ino,
            Inode {
                parent,
                name: name.to_os_string(),
                node,
            },
        );
        t.by_name.insert(key, ino);
        ino
    }

    /// The inode known for `name` in `parent`, if any.
    pub fn find(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.read()
            .by_name
            .get(&(parent, name.to_os_string()))
            .copied()
    }

    /// A number for a directory listing without resolving the entry: the known inode, or a fresh
    /// number reserved for the name, so that the lookup resolving it later hands out the same one
    /// (what readdir shows as d_ino must match what stat shows).
    pub fn entry_lazy(&self, parent: u64, name: &OsStr) -> u64 {
        let key = (parent, name.to_os_string());
        if let Some(ino) = self.read().by_name.get(&key) {
            return *ino;
        }
        let mut t = self.write();
        if let Some(ino) = t.by_name.get(&key) {
            return *ino;
        }
        let ino = t.next;
        t.next += 1;
        t.by_name.insert(key, ino);
        ino
    }

    /// Forgets the name `name` in `parent` (the thing is gone); the number stays valid for
    /// handles still open on it.
    pub fn unlink(&self, parent: u64, name: &OsStr) {
        self.write().by_name.remove(&(parent, name.to_os_string()));
    }

    /// Moves an inode to a new parent and name, replacing whatever had that name.
    pub fn rename(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        let mut t = self.write();
        let Some(ino) = t.by_name.remove(&(parent, name.to_os_string())) else {
            return;
        };
        t.by_name.insert((new_parent, new_name.to_os_string()), ino);
        if let Some(inode) = t.by_ino.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_os_string();
        }
    }

    /// The names from the nearest ancestor for which `stop` holds down to `ino`, and that ancestor.
    pub fn path_below(
        &self,
        ino: u64,
        stop: impl Fn(&Node) -> bool,
    ) -> Option<(Inode, Vec<OsString>)> {
        let t = self.read();
        let mut names = Vec::new();
        let mut cur = ino;
        loop {
            let inode = t.by_ino.get(&cur)?;
            if stop(&inode.node) {
                names.reverse();
                return Some((inode.clone(), names));
            }
            if cur == ROOT_INO {
                return None;
            }
            names.push(inode.name.clone());
            cur = inode.parent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_numbers_and_renames() {
        let t = Inodes::default();
        let a = t.entry(ROOT_INO, OsStr::new("cloud"), Node::Group("cloud"));
        assert_eq!(
            a,
            t.entry(ROOT_INO, OsStr::new("cloud"), Node::Group("cloud"))
        );
        let up = t.entry(a, OsStr::new("uploads"), Node::Uploads(TargetId(0)));
        let f = t.entry(up, OsStr::new("x"), Node::Staged(TargetId(0)));
        let g = t.entry(f, OsStr::new("y"), Node::Staged(TargetId(0)));
        let (top, names) = t.path_below(g, |n| matches!(n, Node::Uploads(_))).unwrap();
        assert!(matches!(top.node, Node::Uploads(TargetId(0))));
        assert_eq!(names, [OsString::from("x"), OsString::from("y")]);
        t.rename(up, OsStr::new("x"), up, OsStr::new("z"));
        let (_, names) = t.path_below(g, |n| matches!(n, Node::Uploads(_))).unwrap();
        assert_eq!(names, [OsString::from("z"), OsString::from("y")]);
        t.unlink(f, OsStr::new("y"));
        let g2 = t.entry(f, OsStr::new("y"), Node::Staged(TargetId(0)));
        assert_ne!(g, g2);
        // Kind changes give a new number.
        let s = t.entry(up, OsStr::new("z.status"), Node::Readme);
        let s2 = t.entry(
            up,
            OsStr::new("z.status"),
            Node::Status {
                target: TargetId(0),
                name: "z".into(),
            },
        );
        assert_ne!(s, s2);
    }
}
