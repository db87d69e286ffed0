//! Live trees (`k8s/<context>/`): nested directories served per request by a `LiveTree`,
//! next to ordinary targets, read-only, with no caching of content between reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use snapfs_fs::backend::{BackendError, LiveEntry, LiveTree};
use snapfs_fs::tree::FileKind;
use snapfs_fs::vfs::LiveMount;

use crate::fixture::{Fixture, errno, noise, standard_backend};

/// A tree held in memory: path → (entry, content). Contents can change between reads.
#[derive(Default)]
struct MemTree {
    entries: Mutex<BTreeMap<String, (LiveEntry, Bytes)>>,
    reads: AtomicU64,
    stats: AtomicU64,
    down: Mutex<bool>,
}

impl MemTree {
    fn put(&self, path: &str, kind: FileKind, data: &[u8], symlink: Option<&str>) {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        let e = LiveEntry {
            name,
            kind,
            size: data.len() as u64,
            perm: if kind == FileKind::Dir { 0o755 } else { 0o644 },
            mtime: SystemTime::UNIX_EPOCH,
            symlink: symlink.map(str::to_string),
            xattrs: vec![("state".into(), "ready".into())],
            uploads: false,
        };
        let mut all = self.entries.lock().unwrap();
        all.insert(path.to_string(), (e, Bytes::copy_from_slice(data)));
    }

    fn mark_uploads(&self, path: &str) {
        let mut all = self.entries.lock().unwrap();
        if let Some((e, _)) = all.get_mut(path) {
            e.uploads = true;
        }
    }

    fn check(&self) -> Result<(), BackendError> {
        if *self.down.lock().unwrap() {
            return Err(BackendError::Unavailable("cluster unreachable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl LiveTree for MemTree {
    async fn list(&self, path: &str) -> Result<Vec<LiveEntry>, BackendError> {
        self.check()?;
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let all = self.entries.lock().unwrap();
        Ok(all
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
            .map(|(_, (e, _))| e.clone())
            .collect())
    }

    async fn stat(&self, path: &str) -> Result<LiveEntry, BackendError> {
        self.check()?;
        self.stats.fetch_add(1, Ordering::SeqCst);
        let all = self.entries.lock().unwrap();
        all.get(path)
            .map(|(e, _)| e.clone())
            .ok_or_else(|| BackendError::NotFound(path.into()))
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        self.check()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        let all = self.entries.lock().unwrap();
        let (_, data) = all
            .get(path)
            .ok_or_else(|| BackendError::NotFound(path.into()))?;
        let from = (offset as usize).min(data.len());
        let to = (offset.saturating_add(len) as usize).min(data.len());
        Ok(data.slice(from..to))
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_tree_can_hold_the_uploads_of_a_target_found_later() {
    let (f, tree) = cluster();
    tree.put("shop/uploads", FileKind::Dir, b"", None);
    tree.mark_uploads("shop/uploads");
    // Until the job engine knows a target there, the directory is not shown.
    assert_eq!(f.names("k8s/prod/shop").await, ["pods", "workloads"]);
    assert_eq!(errno(f.lookup("k8s/prod/shop/uploads").await), libc::ENOENT);

    let t = f.targets.add(
        ("k8s", "prod/shop", "namespace shop"),
        standard_backend(),
        false,
        true,
    );
    assert_eq!(
        f.names("k8s/prod/shop").await,
        ["pods", "uploads", "workloads"]
    );
    // Deeper targets are not listed in their kind directory; the live tree leads to them.
    assert_eq!(f.names("k8s").await, ["prod"]);

    let up = f.ino("k8s/prod/shop/uploads").await;
    let dir = f.vfs.mkdir(up, os("db-2"), 0o755, 0).await.unwrap();
    f.vfs
        .create(dir.attr.ino, os("a.txt"), 0o644, 0)
        .await
        .unwrap();
    assert_eq!(f.names("k8s/prod/shop/uploads").await, ["db-2"]);
    let staged = f.staging_root().join("k8s/prod/shop/db-2/a.txt");
    assert!(staged.exists(), "{staged:?}");
    assert!(f.vfs.staging().activity(t, "db-2").is_some());
    // Names the target refuses are refused here too, before anything is staged.
    assert_eq!(
        errno(f.vfs.mkdir(up, os("Bad_Name"), 0o755, 0).await),
        libc::EINVAL
    );
}

fn cluster() -> (Fixture, Arc<MemTree>) {
    let tree = Arc::new(MemTree::default());
    tree.put("shop", FileKind::Dir, b"", None);
    tree.put("shop/pods", FileKind::Dir, b"", None);
    tree.put("shop/pods/web-1", FileKind::Dir, b"", None);
    tree.put("shop/pods/web-1/app", FileKind::Dir, b"", None);
    tree.put(
        "shop/pods/web-1/app/data.db",
        FileKind::File,
        &noise(600_000, 3),
        None,
    );
    tree.put("shop/workloads", FileKind::Dir, b"", None);
    tree.put(
        "shop/workloads/web",
        FileKind::Symlink,
        b"",
        Some("../pods/web-1"),
    );
    tree.put("kube-system", FileKind::Dir, b"", None);
    let mount = LiveMount {
        kind: "k8s",
        name: "prod".into(),
        description: "cluster prod".into(),
        tree: tree.clone(),
    };
    (Fixture::with_live(standard_backend(), vec![mount]), tree)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_trees_nest_below_their_kind_next_to_targets() {
    let (f, _) = cluster();
    assert_eq!(f.names("").await, ["README", "cloud", "k8s"]);
    assert_eq!(f.names("k8s").await, ["prod"]);
    assert_eq!(f.names("k8s/prod").await, ["kube-system", "shop"]);
    assert_eq!(f.names("k8s/prod/shop/pods/web-1").await, ["app"]);
    assert_eq!(
        f.names("cloud/local").await,
        ["snapshots", "uploads", "objects"]
    );
    let db = f
        .lookup("k8s/prod/shop/pods/web-1/app/data.db")
        .await
        .unwrap();
    assert_eq!((db.attr.kind, db.attr.size), (FileKind::File, 600_000));
    let link = f.ino("k8s/prod/shop/workloads/web").await;
    assert_eq!(f.vfs.readlink(link).await.unwrap(), b"../pods/web-1");
    let x = f.vfs.xattrs(link).await.unwrap();
    assert_eq!(x, [("user.snapfs.state".to_string(), b"ready".to_vec())]);
    assert_eq!(errno(f.lookup("k8s/prod/nope").await), libc::ENOENT);
    assert_eq!(errno(f.lookup("k8s/other").await), libc::ENOENT);
    let readme = String::from_utf8(f.read_all("README").await.unwrap().to_vec()).unwrap();
    assert!(
        readme.contains("k8s/prod") && readme.contains("cluster prod"),
        "{readme}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn live_files_read_in_chunks_and_see_changes() {
    let (f, tree) = cluster();
    let path = "k8s/prod/shop/pods/web-1/app/data.db";
    let data = f.read_all(path).await.unwrap();
    assert_eq!(data, noise(600_000, 3));
    // Small kernel-sized reads are served from the per-open buffer, not one round trip each.
    let before = tree.reads.load(Ordering::SeqCst);
    let ino = f.ino(path).await;
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    assert!(opened.direct_io);
    let mut got = Vec::new();
    while got.len() < 300_000 {
        let b = f.vfs.read(opened.fh, got.len() as u64, 4096).await.unwrap();
        got.extend_from_slice(&b);
    }
    f.vfs.release(opened.fh);
    assert_eq!(got[..], noise(600_000, 3)[..got.len()]);
    assert_eq!(tree.reads.load(Ordering::SeqCst) - before, 2);
    // A new open sees new content.
    tree.put(
        "shop/pods/web-1/app/data.db",
        FileKind::File,
        b"changed",
        None,
    );
    assert_eq!(f.read_all(path).await.unwrap(), &b"changed"[..]);
    assert_eq!(f.read(path, 3, 100).await.unwrap(), &b"nged"[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn live_trees_are_read_only_and_failures_stay_inside() {
    let (f, tree) = cluster();
    let dir = f.ino("k8s/prod/shop/pods/web-1/app").await;
    let file = f.ino("k8s/prod/shop/pods/web-1/app/data.db").await;
    assert_eq!(errno(f.vfs.open(file, true, false).await), libc::EROFS);
    let name = std::ffi::OsStr::new("new");
    assert_eq!(errno(f.vfs.create(dir, name, 0o644, 0).await), libc::EROFS);
    assert_eq!(errno(f.vfs.mkdir(dir, name, 0o755, 0).await), libc::EROFS);
    let db = std::ffi::OsStr::new("data.db");
    assert_eq!(errno(f.vfs.remove(dir, db, false).await), libc::EROFS);
    assert_eq!(errno(f.vfs.open(dir, false, false).await), libc::EISDIR);

    *tree.down.lock().unwrap() = true;
    let ctx = f.ino("k8s/prod").await;
    assert_eq!(errno(f.vfs.readdir(ctx).await), libc::EIO);
    assert_eq!(errno(f.lookup("k8s/prod/kube-system").await), libc::EIO);
    // The rest of the mount does not depend on the cluster.
    assert!(
        f.names("cloud/local/snapshots")
            .await
            .contains(&"latest".to_string())
    );
    *tree.down.lock().unwrap() = false;
    assert_eq!(f.names("k8s/prod").await, ["kube-system", "shop"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_answers_the_lookups_that_follow_it_for_a_moment() {
    let (f, tree) = cluster();
    let dir = "k8s/prod/shop/pods/web-1/app";
    let dir_ino = f.ino(dir).await;
    assert_eq!(f.names(dir).await, ["data.db"]);
    let before = tree.stats.load(Ordering::SeqCst);
    let e = f.vfs.lookup(dir_ino, "data.db".as_ref()).await.unwrap();
    assert_eq!(e.attr.size, 600_000);
    assert_eq!(
        tree.stats.load(Ordering::SeqCst),
        before,
        "`ls -l` costs one listing"
    );
    // A symlink listed without its target is asked for it.
    assert_eq!(f.names("k8s/prod/shop").await, ["pods", "workloads"]);
    tree.put("shop/workloads/web", FileKind::Symlink, b"", None);
    f.names("k8s/prod/shop/workloads").await;
    let stats = tree.stats.load(Ordering::SeqCst);
    tree.put(
        "shop/workloads/web",
        FileKind::Symlink,
        b"",
        Some("../pods/web-2"),
    );
    let link = f.ino("k8s/prod/shop/workloads/web").await;
    assert_eq!(f.vfs.readlink(link).await.unwrap(), b"../pods/web-2");
    assert!(tree.stats.load(Ordering::SeqCst) > stats);
    // Later, the tree is asked again and a change shows.
    tree.put("shop/pods/web-1/app/data.db", FileKind::File, b"new", None);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stats = tree.stats.load(Ordering::SeqCst);
    let e = f.vfs.lookup(dir_ino, "data.db".as_ref()).await.unwrap();
    assert_eq!(e.attr.size, 3);
    // One stat answers both the lookup and the attributes that come with it.
    assert_eq!(tree.stats.load(Ordering::SeqCst), stats + 1);
}
