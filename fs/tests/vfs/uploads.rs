//! `uploads/`: names admitted before anything is staged, files staged on local disk with their
//! modes and times, activity for the job engine, and the status files.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use snapfs_fs::tree::FileKind;
use snapfs_fs::vfs::{SetAttr, TimeSet, UploadState, UploadStatus};

use crate::fixture::{Fixture, LOCAL, errno, standard_backend, time};

const UPLOADS: &str = "cloud/local/uploads";

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_names_stage_nothing() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    f.hooks.take("db-1");
    assert_eq!(
        errno(f.vfs.mkdir(up, os("db-1"), 0o755, 0).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(f.vfs.create(up, os("db-1"), 0o644, 0).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(f.vfs.mkdir(up, os("x.status"), 0o755, 0).await),
        libc::EINVAL
    );
    assert_eq!(
        errno(f.vfs.mkdir(up, os("Bad_Name"), 0o755, 0).await),
        libc::EINVAL
    );
    f.hooks.set_full(true);
    assert_eq!(
        errno(f.vfs.mkdir(up, os("new"), 0o755, 0).await),
        libc::EDQUOT
    );
    assert!(f.names(UPLOADS).await.is_empty());
    let staged = f.staging_root().join("cloud/local");
    let leftovers = fs::read_dir(&staged).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0, "refused uploads left files in {staged:?}");

    f.hooks.set_full(false);
    f.vfs.mkdir(up, os("new"), 0o755, 0).await.unwrap();
    // Inside an upload, names are the user's business.
    let new = f.ino("cloud/local/uploads/new").await;
    f.vfs.mkdir(new, os("Any_Name"), 0o755, 0).await.unwrap();
    f.vfs.mkdir(new, os("x.status"), 0o755, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn written_files_land_in_staging_with_mode_and_mtime() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let dir = f.vfs.mkdir(up, os("new"), 0o777, 0o022).await.unwrap();
    assert_eq!((dir.attr.kind, dir.attr.perm), (FileKind::Dir, 0o755));
    let after_mkdir = f.vfs.staging().activity(LOCAL, "new").unwrap();
    assert_eq!(after_mkdir.open, 0);

    let (entry, opened) = f
        .vfs
        .create(dir.attr.ino, os("a.txt"), 0o666, 0o022)
        .await
        .unwrap();
    assert_eq!((entry.attr.kind, entry.attr.perm), (FileKind::File, 0o644));
    let open = f.vfs.staging().activity(LOCAL, "new").unwrap();
    assert_eq!(open.open, 1);
    assert!(open.generation > after_mkdir.generation);

    assert_eq!(f.vfs.write(opened.fh, 0, b"hello ").unwrap(), 6);
    assert_eq!(f.vfs.write(opened.fh, 6, b"staging").unwrap(), 7);
    let written = f.vfs.staging().activity(LOCAL, "new").unwrap();
    assert!(written.generation > open.generation);
    assert_eq!(
        f.vfs.read(opened.fh, 0, 100).await.unwrap(),
        &b"hello staging"[..]
    );

    let mtime = time(1_700_000_000, 250_000_000);
    let set = SetAttr {
        mode: Some(0o100600),
        mtime: Some(TimeSet::At(mtime)),
        ..SetAttr::default()
    };
    let attr = f
        .vfs
        .setattr(entry.attr.ino, set, Some(opened.fh))
        .await
        .unwrap()
        .attr;
    assert_eq!((attr.perm, attr.mtime, attr.size), (0o600, mtime, 13));
    f.vfs.release(opened.fh);
    let closed = f.vfs.staging().activity(LOCAL, "new").unwrap();
    assert_eq!(closed.open, 0);
    assert!(closed.generation > written.generation);

    let on_disk = f.staging_root().join("cloud/local/new/a.txt");
    assert_eq!(fs::read(&on_disk).unwrap(), b"hello staging");
    let meta = fs::metadata(&on_disk).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.modified().unwrap(), mtime);

    // Seen through the file system as it is on disk.
    assert_eq!(f.names("cloud/local/uploads/new").await, ["a.txt"]);
    let looked = f.lookup("cloud/local/uploads/new/a.txt").await.unwrap();
    assert_eq!(looked.attr.ino, entry.attr.ino);
    assert_eq!((looked.attr.perm, looked.attr.mtime), (0o600, mtime));
    let text = f.read_all("cloud/local/uploads/new/a.txt").await.unwrap();
    assert_eq!(text, &b"hello staging"[..]);

    // Reopening for write with truncation, then a truncating setattr.
    let again = f.vfs.open(entry.attr.ino, true, true).await.unwrap();
    assert_eq!(f.vfs.staging().activity(LOCAL, "new").unwrap().open, 1);
    f.vfs.write(again.fh, 0, b"0123456789").unwrap();
    let set = SetAttr {
        size: Some(4),
        ..SetAttr::default()
    };
    f.vfs.setattr(entry.attr.ino, set, None).await.unwrap();
    f.vfs.release(again.fh);
    assert_eq!(fs::read(&on_disk).unwrap(), b"0123");
    assert_eq!(f.vfs.staging().activity(LOCAL, "new").unwrap().open, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_file_upload_and_symlinks() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let (entry, opened) = f.vfs.create(up, os("one.db"), 0o644, 0).await.unwrap();
    f.vfs.write(opened.fh, 0, b"sqlite").unwrap();
    f.vfs.release(opened.fh);
    let path = f.staging_root().join("cloud/local/one.db");
    assert_eq!(fs::read(path).unwrap(), b"sqlite");
    assert_eq!(f.vfs.getattr(entry.attr.ino).await.unwrap().attr.size, 6);

    let dir = f.vfs.mkdir(up, os("tree"), 0o755, 0).await.unwrap();
    let link = f
        .vfs
        .symlink(dir.attr.ino, os("l"), Path::new("../elsewhere"))
        .await
        .unwrap();
    assert_eq!(link.attr.kind, FileKind::Symlink);
    assert_eq!(
        f.vfs.readlink(link.attr.ino).await.unwrap(),
        b"../elsewhere"
    );
    let on_disk = fs::read_link(f.staging_root().join("cloud/local/tree/l")).unwrap();
    assert_eq!(on_disk, Path::new("../elsewhere"));
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_within_an_upload() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let new = f.vfs.mkdir(up, os("new"), 0o755, 0).await.unwrap().attr.ino;
    let sub = f
        .vfs
        .mkdir(new, os("sub"), 0o755, 0)
        .await
        .unwrap()
        .attr
        .ino;
    let (file, opened) = f.vfs.create(new, os("a.txt"), 0o644, 0).await.unwrap();
    f.vfs.write(opened.fh, 0, b"moved").unwrap();
    f.vfs.release(opened.fh);
    let before = f.vfs.staging().activity(LOCAL, "new").unwrap().generation;

    f.vfs
        .rename(new, os("a.txt"), sub, os("b.txt"))
        .await
        .unwrap();
    let root = f.staging_root().join("cloud/local/new");
    assert!(!root.join("a.txt").exists());
    assert_eq!(fs::read(root.join("sub/b.txt")).unwrap(), b"moved");
    assert!(f.vfs.staging().activity(LOCAL, "new").unwrap().generation > before);
    assert_eq!(
        errno(f.lookup("cloud/local/uploads/new/a.txt").await),
        libc::ENOENT
    );
    let moved = f.lookup("cloud/local/uploads/new/sub/b.txt").await.unwrap();
    assert_eq!(
        moved.attr.ino, file.attr.ino,
        "the inode moved with the file"
    );
    // The old inode now stands for the new path.
    assert_eq!(f.vfs.getattr(file.attr.ino).await.unwrap().attr.size, 5);

    // Renaming a folder carries what is inside along.
    f.vfs.rename(new, os("sub"), new, os("sub2")).await.unwrap();
    let text = f
        .read_all("cloud/local/uploads/new/sub2/b.txt")
        .await
        .unwrap();
    assert_eq!(text, &b"moved"[..]);
    assert_eq!(f.vfs.getattr(file.attr.ino).await.unwrap().attr.size, 5);

    // Leaving uploads/ is not a rename.
    let snaps = f.ino("cloud/local/snapshots").await;
    let out = f.vfs.rename(sub, os("b.txt"), snaps, os("b.txt")).await;
    assert_eq!(errno(out), libc::EXDEV);
}

#[tokio::test(flavor = "multi_thread")]
async fn renaming_an_upload_admits_the_new_name() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    f.vfs.mkdir(up, os("draft"), 0o755, 0).await.unwrap();
    f.hooks.take("db-1");
    let taken = f.vfs.rename(up, os("draft"), up, os("db-1")).await;
    assert_eq!(errno(taken), libc::EEXIST);
    let bad = f.vfs.rename(up, os("draft"), up, os("Bad_Name")).await;
    assert_eq!(errno(bad), libc::EINVAL);
    f.vfs
        .rename(up, os("draft"), up, os("final"))
        .await
        .unwrap();
    assert_eq!(f.names(UPLOADS).await, ["final"]);
    assert_eq!(f.hooks.discarded(), ["draft"]);
    assert!(f.vfs.staging().activity(LOCAL, "final").is_some());
    assert!(f.vfs.staging().activity(LOCAL, "draft").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_an_upload_discards_it() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let new = f.vfs.mkdir(up, os("new"), 0o755, 0).await.unwrap().attr.ino;
    let (_, opened) = f.vfs.create(new, os("a"), 0o644, 0).await.unwrap();
    f.vfs.release(opened.fh);

    assert_eq!(
        errno(f.vfs.remove(up, os("new"), true).await),
        libc::ENOTEMPTY
    );
    assert!(f.hooks.discarded().is_empty());
    f.vfs.remove(new, os("a"), false).await.unwrap();
    assert!(
        f.hooks.discarded().is_empty(),
        "a file inside is not the upload"
    );
    f.vfs.remove(up, os("new"), true).await.unwrap();
    assert_eq!(f.hooks.discarded(), ["new"]);
    assert!(f.vfs.staging().activity(LOCAL, "new").is_none());
    assert!(!f.staging_root().join("cloud/local/new").exists());
    assert_eq!(
        errno(f.lookup("cloud/local/uploads/new").await),
        libc::ENOENT
    );
    assert!(f.names(UPLOADS).await.is_empty());
}

fn status(state: UploadState) -> UploadStatus {
    UploadStatus {
        kind: Default::default(),
        state,
        bytes_done: 512,
        bytes_total: 2048,
        target: "cloud/local".into(),
        snapshot: "new".into(),
        error: (state == UploadState::Failed).then(|| "bucket refused the pack".into()),
        note: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_files_show_what_the_hooks_say() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let new = f.vfs.mkdir(up, os("new"), 0o755, 0).await.unwrap().attr.ino;
    assert_eq!(f.names(UPLOADS).await, ["new"]);
    assert_eq!(
        errno(f.lookup("cloud/local/uploads/new.status").await),
        libc::ENOENT
    );

    f.hooks
        .set_status("new", Some(status(UploadState::Uploading)));
    assert_eq!(f.names(UPLOADS).await, ["new.status", "new"]);
    let entry = f.lookup("cloud/local/uploads/new.status").await.unwrap();
    let json = f.read_all("cloud/local/uploads/new.status").await.unwrap();
    assert_eq!(entry.attr.size, json.len() as u64);
    let parsed: UploadStatus = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed, status(UploadState::Uploading));
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value["state"], "uploading");
    assert_eq!(value["bytes_done"], 512);

    let xattrs = f.vfs.xattrs(new).await.unwrap();
    assert!(xattrs.contains(&("user.snapfs.state".into(), b"creating".to_vec())));
    assert!(xattrs.contains(&("user.snapfs.size".into(), b"2048".to_vec())));

    // A status file changes under the reader: each open sees the current one.
    f.hooks.set_status("new", Some(status(UploadState::Failed)));
    let json = f.read_all("cloud/local/uploads/new.status").await.unwrap();
    let parsed: UploadStatus = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed.error.as_deref(), Some("bucket refused the pack"));
    let xattrs = f.vfs.xattrs(new).await.unwrap();
    assert!(xattrs.contains(&("user.snapfs.state".into(), b"failed".to_vec())));

    assert_eq!(
        errno(f.vfs.open(entry.attr.ino, true, false).await),
        libc::EROFS
    );
    assert_eq!(
        errno(f.vfs.remove(up, os("new.status"), false).await),
        libc::EROFS
    );
    assert_eq!(
        errno(f.vfs.create(up, os("new.status"), 0o644, 0).await),
        libc::EINVAL
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_handles_follow_their_upload_through_a_rename() {
    let f = Fixture::new(standard_backend());
    let up = f.ino(UPLOADS).await;
    let tmp = f.vfs.mkdir(up, os("tmp"), 0o755, 0).await.unwrap().attr.ino;
    let (_, opened) = f.vfs.create(tmp, os("f"), 0o644, 0).await.unwrap();
    f.vfs.write(opened.fh, 0, b"first").unwrap();

    // `mv uploads/tmp uploads/final` while the copy into it is still running.
    f.vfs.rename(up, os("tmp"), up, os("final")).await.unwrap();
    let moved = f.vfs.staging().activity(LOCAL, "final").unwrap();
    assert_eq!(moved.open, 1, "an upload with an open file must not settle");
    f.vfs.write(opened.fh, 5, b" second").unwrap();
    let written = f.vfs.staging().activity(LOCAL, "final").unwrap();
    assert!(
        written.generation > moved.generation,
        "the write went unseen"
    );
    f.vfs.release(opened.fh);
    assert_eq!(f.vfs.staging().activity(LOCAL, "final").unwrap().open, 0);
    assert!(f.vfs.staging().activity(LOCAL, "tmp").is_none());
    let text = fs::read(f.staging_root().join("cloud/local/final/f")).unwrap();
    assert_eq!(text, b"first second");

    // A file moved to another upload while open keeps that upload from settling instead.
    let a = f.vfs.mkdir(up, os("a"), 0o755, 0).await.unwrap().attr.ino;
    let b = f.vfs.mkdir(up, os("b"), 0o755, 0).await.unwrap().attr.ino;
    let (_, opened) = f.vfs.create(a, os("x"), 0o644, 0).await.unwrap();
    f.vfs.rename(a, os("x"), b, os("x")).await.unwrap();
    assert_eq!(f.vfs.staging().activity(LOCAL, "a").unwrap().open, 0);
    assert_eq!(f.vfs.staging().activity(LOCAL, "b").unwrap().open, 1);
    f.vfs.release(opened.fh);
    assert_eq!(f.vfs.staging().activity(LOCAL, "b").unwrap().open, 0);
}
