//! Turns a staged upload of the model into a snapshot in the real format, as the job engine
//! would: a pack of its own and an id no earlier snapshot had.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Duration;
use snapfs_fs::backend::{SnapshotInfo, SnapshotState};
use snapfs_fs::tree::SnapshotTree;

use super::reference::Node;
use crate::fixture::{SnapshotBuilder, date, time};

/// Every file and folder below `node`, parents first, with their paths.
fn flatten<'a>(node: &'a Node, path: String, out: &mut Vec<(String, &'a Node)>) {
    if let Node::Dir(children) = node {
        for (name, child) in children {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            out.push((p.clone(), child));
            flatten(child, p, out);
        }
    }
}

/// The `n`-th snapshot made by an upload, newer than every one before it.
pub fn build(name: &str, root: &Node, n: u32) -> (SnapshotInfo, Arc<SnapshotTree>, String, Bytes) {
    let mtime = time(1_780_000_000 + u64::from(n), 0);
    let builder = match root {
        Node::File(c) => SnapshotBuilder::file(name, &c.borrow(), 0o644, mtime),
        _ => {
            let mut entries = Vec::new();
            flatten(root, String::new(), &mut entries);
            let mut b = SnapshotBuilder::folder(name, 0o755, mtime);
            for (path, node) in entries {
                b = match node {
                    Node::Dir(_) => b.dir(&path, 0o755, mtime),
                    Node::File(c) => b.add_file(&path, &c.borrow(), 0o644, mtime),
                    Node::Symlink(t) => b.symlink(&path, t, mtime),
                };
            }
            b
        }
    };
    let created = date("2026-06-01T00:00:00Z") + Duration::seconds(i64::from(n));
    let (mut info, tree, key, pack) = builder
        .in_upload(&format!("up-{name}-{n}"))
        .finish(created, SnapshotState::Ready);
    // As a real store's id carries the manifest's version, a new snapshot of an old name has
    // a new id.
    info.id = format!("{}@{n}", info.id);
    (info, tree, key, pack)
}
