//! The mount tree: what lists, what looks up, with which attributes, and what refuses writes.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use snapfs_fs::backend::{BackendError, SnapshotState};
use snapfs_fs::tree::FileKind;
use snapfs_fs::vfs::{ROOT_INO, SetAttr, TimeSet};

use crate::fake::FakeBackend;
use crate::fixture::{
    BIG_LEN, Fixture, LOCAL, SnapshotBuilder, big_mtime, date, errno, standard, standard_backend,
    time,
};

#[tokio::test(flavor = "multi_thread")]
async fn root_lists_readme_and_targets() {
    let f = Fixture::new(standard_backend());
    assert_eq!(f.names("").await, ["README", "cloud"]);
    assert_eq!(f.names("cloud").await, ["local"]);
    assert_eq!(
        f.names("cloud/local").await,
        ["snapshots", "uploads", "objects"]
    );

    let readme = f.read_all("README").await.unwrap();
    let text = String::from_utf8(readme.to_vec()).unwrap();
    assert!(text.contains("cloud/local"), "{text}");
    assert!(text.contains("a bucket in memory"), "{text}");
    let attr = f.lookup("README").await.unwrap().attr;
    assert_eq!(attr.kind, FileKind::File);
    assert_eq!(attr.size, readme.len() as u64);

    let entries = f.vfs.readdir(ROOT_INO).await.unwrap();
    assert_eq!(entries[0].name, ".");
    assert_eq!(entries[1].name, "..");
    for missing in ["k8s", "nope", "cloud/other", "cloud/local/pods"] {
        assert_eq!(errno(f.lookup(missing).await), libc::ENOENT, "{missing}");
    }
    assert_eq!(errno(f.lookup("README/x").await), libc::ENOTDIR);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_list_only_ready_ones_with_latest() {
    let f = Fixture::new(standard_backend());
    assert_eq!(
        f.names("cloud/local/snapshots").await,
        ["latest", "db-1", "db-2"]
    );
    let ino = f.ino("cloud/local/snapshots").await;
    let kinds: Vec<_> = f
        .vfs
        .readdir(ino)
        .await
        .unwrap()
        .into_iter()
        .skip(2)
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [FileKind::Symlink, FileKind::Dir, FileKind::File]);
    // The numbers a listing shows are the ones lookup gives, and stay put between listings.
    let listed = |entries: Vec<snapfs_fs::vfs::DirEntry>| -> Vec<(String, u64)> {
        let named = entries.into_iter().skip(2);
        named
            .map(|e| (e.name.to_string_lossy().into_owned(), e.ino))
            .collect()
    };
    let first = listed(f.vfs.readdir(ino).await.unwrap());
    assert_eq!(first, listed(f.vfs.readdir(ino).await.unwrap()));
    for (name, listed_ino) in &first {
        let path = format!("cloud/local/snapshots/{name}");
        assert_eq!(f.ino(&path).await, *listed_ino, "{name}");
    }
    assert_eq!(first, listed(f.vfs.readdir(ino).await.unwrap()));
    // A snapshot still being made is as invisible to lookup as it is to readdir.
    assert_eq!(
        errno(f.lookup("cloud/local/snapshots/db-3").await),
        libc::ENOENT
    );
    assert_eq!(
        errno(f.lookup("cloud/local/snapshots/nope").await),
        libc::ENOENT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_entries_have_their_recorded_attributes() {
    let f = Fixture::new(standard_backend());
    let root = f.lookup("cloud/local/snapshots/db-1").await.unwrap().attr;
    assert_eq!(
        (root.kind, root.perm, root.mtime),
        (FileKind::Dir, 0o755, time(1_767_000_000, 0))
    );
    assert_eq!(
        f.names("cloud/local/snapshots/db-1").await,
        ["data", "hello.txt", "link"]
    );
    assert_eq!(
        f.names("cloud/local/snapshots/db-1/data").await,
        ["big.bin", "empty"]
    );

    let data = f.lookup("cloud/local/snapshots/db-1/data").await.unwrap();
    assert_eq!((data.attr.kind, data.attr.perm), (FileKind::Dir, 0o750));
    assert_eq!(data.attr.mtime, time(1_767_000_001, 0));

    let big = f
        .lookup("cloud/local/snapshots/db-1/data/big.bin")
        .await
        .unwrap();
    assert_eq!(big.attr.kind, FileKind::File);
    assert_eq!(big.attr.size, BIG_LEN as u64);
    assert_eq!(big.attr.perm, 0o640);
    assert_eq!(big.attr.mtime, big_mtime());
    // Inside a snapshot nothing can change, so the kernel may keep it long.
    assert!(big.ttl >= Duration::from_secs(60), "{:?}", big.ttl);
    assert_eq!(f.vfs.getattr(big.attr.ino).await.unwrap(), big);
    let again = f.lookup("cloud/local/snapshots/db-1/data/big.bin").await;
    assert_eq!(again.unwrap().attr.ino, big.attr.ino);

    let empty = f.lookup("cloud/local/snapshots/db-1/data/empty").await;
    let empty = empty.unwrap().attr;
    assert_eq!((empty.size, empty.perm), (0, 0o600));
    assert!(
        f.read_all("cloud/local/snapshots/db-1/data/empty")
            .await
            .unwrap()
            .is_empty()
    );

    let link = f.lookup("cloud/local/snapshots/db-1/link").await.unwrap();
    assert_eq!(link.attr.kind, FileKind::Symlink);
    assert_eq!(link.attr.size, "data/big.bin".len() as u64);
    assert_eq!(
        f.vfs.readlink(link.attr.ino).await.unwrap(),
        b"data/big.bin"
    );
    assert_eq!(errno(f.vfs.readlink(big.attr.ino).await), libc::EINVAL);
    assert_eq!(
        errno(f.vfs.open(data.attr.ino, false, false).await),
        libc::EISDIR
    );

    let single = f.lookup("cloud/local/snapshots/db-2").await.unwrap().attr;
    assert_eq!((single.kind, single.perm), (FileKind::File, 0o444));
    assert_eq!(single.size, standard().single.len() as u64);
    assert_eq!(
        errno(f.lookup("cloud/local/snapshots/db-2/x").await),
        libc::ENOENT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_points_at_the_newest_ready_snapshot() {
    let backend = standard_backend();
    let f = Fixture::new(backend.clone());
    let latest = f.lookup("cloud/local/snapshots/latest").await.unwrap();
    assert_eq!(latest.attr.kind, FileKind::Symlink);
    assert_eq!(latest.attr.size, 4);
    assert_eq!(f.vfs.readlink(latest.attr.ino).await.unwrap(), b"db-2");

    SnapshotBuilder::folder("db-4", 0o755, time(1_770_000_000, 0)).install(
        &backend,
        date("2026-04-01T00:00:00Z"),
        SnapshotState::Ready,
    );
    f.vfs.invalidate(LOCAL);
    assert_eq!(f.vfs.readlink(latest.attr.ino).await.unwrap(), b"db-4");
    assert!(
        f.names("cloud/local/snapshots")
            .await
            .contains(&"db-4".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_latest_without_a_ready_snapshot() {
    let f = Fixture::new(Arc::new(FakeBackend::default()));
    assert!(f.names("cloud/local/snapshots").await.is_empty());
    assert_eq!(
        errno(f.lookup("cloud/local/snapshots/latest").await),
        libc::ENOENT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_root_carries_xattrs() {
    let f = Fixture::new(standard_backend());
    let ino = f.ino("cloud/local/snapshots/db-1").await;
    let xattrs = f.vfs.xattrs(ino).await.unwrap();
    let get = |k: &str| {
        xattrs
            .iter()
            .find(|(n, _)| n == &format!("user.snapfs.{k}"))
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(get("state").as_deref(), Some("ready"));
    assert_eq!(get("created").as_deref(), Some("2026-01-01T00:00:00Z"));
    let size = (BIG_LEN + standard().hello.len()) as u64;
    assert_eq!(get("size"), Some(size.to_string()));
    assert_eq!(
        get("id").as_deref(),
        Some("snapfs/snapshots/db-1.manifest.zst")
    );

    let file = f.ino("cloud/local/snapshots/db-1/hello.txt").await;
    let xattrs = f.vfs.xattrs(file).await.unwrap();
    let crc = format!("{:08x}", crc32c::crc32c(standard().hello));
    assert!(xattrs.contains(&("user.snapfs.crc32c".into(), crc.into_bytes())));
    assert!(xattrs.contains(&("user.snapfs.size".into(), b"13".to_vec())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_backend_serves_the_last_good_list() {
    let backend = standard_backend();
    let f = Fixture::with_ttl(backend.clone(), Duration::from_millis(50));
    let before = f.names("cloud/local/snapshots").await;
    backend.fail_listing(Some(BackendError::Unavailable("connection refused".into())));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let lists = backend.lists();
    assert_eq!(f.names("cloud/local/snapshots").await, before);
    assert!(backend.lists() > lists, "the stale list was not refreshed");
    let hello = f.read_all("cloud/local/snapshots/db-1/hello.txt").await;
    assert_eq!(hello.unwrap(), standard().hello);

    // With no list ever fetched, there is nothing to fall back on.
    let cold = Fixture::new(backend.clone());
    assert_eq!(
        errno(cold.lookup("cloud/local/snapshots/db-1").await),
        libc::EIO
    );
    let ino = cold.ino("cloud/local/snapshots").await;
    assert_eq!(errno(cold.vfs.readdir(ino).await), libc::EIO);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_outside_uploads_can_be_written() {
    let f = Fixture::new(standard_backend());
    let snaps = f.ino("cloud/local/snapshots").await;
    let db1 = f.ino("cloud/local/snapshots/db-1").await;
    let hello = f.ino("cloud/local/snapshots/db-1/hello.txt").await;
    let objects = f.ino("cloud/local/objects").await;
    let target = f.ino("cloud/local").await;
    let name = OsStr::new("new");

    assert_eq!(errno(f.vfs.open(hello, true, false).await), libc::EROFS);
    assert_eq!(errno(f.vfs.open(hello, true, true).await), libc::EROFS);
    for dir in [snaps, db1, objects, target, ROOT_INO] {
        assert_eq!(errno(f.vfs.create(dir, name, 0o644, 0).await), libc::EROFS);
        assert_eq!(errno(f.vfs.mkdir(dir, name, 0o755, 0).await), libc::EROFS);
        let link = f.vfs.symlink(dir, name, Path::new("x")).await;
        assert_eq!(errno(link), libc::EROFS);
    }
    assert_eq!(
        errno(f.vfs.remove(db1, OsStr::new("hello.txt"), false).await),
        libc::EROFS
    );
    assert_eq!(
        errno(f.vfs.remove(snaps, OsStr::new("db-1"), true).await),
        libc::EROFS
    );
    let set = SetAttr {
        mode: Some(0o777),
        ..SetAttr::default()
    };
    assert_eq!(errno(f.vfs.setattr(hello, set, None).await), libc::EROFS);
    let set = SetAttr {
        size: Some(0),
        mtime: Some(TimeSet::Now),
        ..SetAttr::default()
    };
    assert_eq!(errno(f.vfs.setattr(db1, set, None).await), libc::EROFS);
    let rename = f
        .vfs
        .rename(db1, OsStr::new("hello.txt"), db1, OsStr::new("bye.txt"))
        .await;
    assert_eq!(errno(rename), libc::EROFS);

    let opened = f.vfs.open(hello, false, false).await.unwrap();
    assert_eq!(errno(f.vfs.write(opened.fh, 0, b"x")), libc::EROFS);
    f.vfs.release(opened.fh);
    // Refused writes leave the snapshot as it was.
    let bytes = f.read_all("cloud/local/snapshots/db-1/hello.txt").await;
    assert_eq!(bytes.unwrap(), standard().hello);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_without_uploads_shows_only_snapshots() {
    let f = Fixture::without_uploads(standard_backend());
    assert_eq!(f.names("").await, ["README", "hivemq"]);
    assert_eq!(f.names("hivemq/broker").await, ["snapshots"]);
    assert_eq!(
        f.names("hivemq/broker/snapshots").await,
        ["latest", "db-1", "db-2"]
    );
    for missing in ["hivemq/broker/uploads", "hivemq/broker/objects"] {
        assert_eq!(errno(f.lookup(missing).await), libc::ENOENT, "{missing}");
    }
    // Nothing can be made there: not an uploads/ folder, not a file beside snapshots/.
    let target = f.ino("hivemq/broker").await;
    let name = OsStr::new("uploads");
    assert_eq!(
        errno(f.vfs.mkdir(target, name, 0o755, 0).await),
        libc::EROFS
    );
    assert_eq!(
        errno(f.vfs.create(target, name, 0o644, 0).await),
        libc::EROFS
    );
    let bytes = f.read_all("hivemq/broker/snapshots/db-1/hello.txt").await;
    assert_eq!(bytes.unwrap(), standard().hello);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_directory_pages_every_entry_once() {
    const N: usize = 10_000;
    let backend = Arc::new(FakeBackend::default());
    let mut b = SnapshotBuilder::folder("many", 0o755, time(1_767_000_000, 0));
    for i in 0..N {
        b = b.empty_file(&format!("f{i:05}"), 0o644, time(1_767_000_000, 0));
    }
    b.install(&backend, date("2026-01-01T00:00:00Z"), SnapshotState::Ready);
    let f = Fixture::new(backend);
    let ino = f.ino("cloud/local/snapshots/many").await;
    let fh = f.vfs.opendir(ino).await.unwrap().fh;
    let mut seen = std::collections::HashSet::new();
    let mut inos = std::collections::HashSet::new();
    let mut offset = 0u64;
    loop {
        // Odd page size, so pages do not line up with anything.
        let page = f.vfs.readdir_at(fh, offset, 333).unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        for e in page {
            let name = e.name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                assert!(inos.insert(e.ino), "inode {} twice", e.ino);
            }
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
    }
    f.vfs.release(fh);
    assert_eq!(seen.len(), N + 2);
    assert!((0..N).all(|i| seen.contains(&format!("f{i:05}"))));
    // Every listed number resolves to the entry it was listed as.
    let e = f.lookup("cloud/local/snapshots/many/f04321").await.unwrap();
    assert!(inos.contains(&e.attr.ino));
    assert!(
        f.vfs.readdir_at(fh, 0, 10).is_err(),
        "a released handle still lists"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn statfs_describes_the_staging_volume() {
    let f = Fixture::new(standard_backend());
    let st = f.vfs.statfs().unwrap();
    assert!(st.bsize > 0 && st.blocks > 0, "{st:?}");
    assert!(st.bavail <= st.bfree && st.bfree <= st.blocks, "{st:?}");
}
