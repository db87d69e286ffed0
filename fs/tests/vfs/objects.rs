//! `objects/`: the bucket's raw objects as a read-only folder tree.

use std::time::SystemTime;

use snapfs_fs::format::BLOCK_SIZE;
use snapfs_fs::tree::FileKind;

use crate::fake::object_time;
use crate::fixture::{Fixture, errno, standard, standard_backend};

const X: &str = "cloud/local/objects/other/deep/x.bin";

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_list_as_folders() {
    let f = Fixture::new(standard_backend());
    assert_eq!(
        f.names("cloud/local/objects").await,
        ["other", "snapfs", "top.txt"]
    );
    assert_eq!(
        f.names("cloud/local/objects/other").await,
        ["deep", "readme.txt"]
    );
    assert_eq!(f.names("cloud/local/objects/other/deep").await, ["x.bin"]);
    assert_eq!(
        f.names("cloud/local/objects/snapfs/packs").await,
        ["upload-db-1", "upload-db-2", "upload-db-3"]
    );

    let dir = f.lookup("cloud/local/objects/other").await.unwrap().attr;
    assert_eq!(dir.kind, FileKind::Dir);
    let x = f.lookup(X).await.unwrap().attr;
    assert_eq!(x.kind, FileKind::File);
    assert_eq!(x.size, standard().raw_big.len() as u64);
    assert_eq!(x.perm, 0o444);
    assert_eq!(x.mtime, SystemTime::from(object_time()));
    for missing in ["other/nope", "nope/x.bin", "other/deep/x.bin/y", "othe"] {
        let r = f.lookup(&format!("cloud/local/objects/{missing}")).await;
        assert!(r.is_err(), "{missing}");
    }
    assert_eq!(
        errno(f.lookup("cloud/local/objects/other/deep/x.bin/y").await),
        libc::ENOTDIR
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_read_in_ranges() {
    let f = Fixture::new(standard_backend());
    let raw = &standard().raw_big;
    let b = BLOCK_SIZE as u64;
    let len = raw.len() as u64;
    for (offset, n) in [
        (0u64, 10u32),
        (b - 5, 10),
        (b, 100),
        (len - 10, 100),
        (len, 1),
        (0, 1 << 20),
    ] {
        let got = f.read(X, offset, n).await.unwrap();
        let from = offset.min(len) as usize;
        let to = (offset + u64::from(n)).min(len) as usize;
        assert!(got == raw[from..to], "{offset}+{n}");
    }
    assert!(f.read_all(X).await.unwrap() == *raw);
    let top = f.read_all("cloud/local/objects/top.txt").await.unwrap();
    assert_eq!(top, &b"at the top\n"[..]);

    f.quiesce().await;
    let reads = f.backend.reads();
    assert!(f.read_all(X).await.unwrap() == *raw);
    assert_eq!(f.backend.reads(), reads, "raw blocks are cached too");

    let ino = f.ino(X).await;
    assert_eq!(errno(f.vfs.open(ino, true, false).await), libc::EROFS);
    let parent = f.ino("cloud/local/objects/other/deep").await;
    let rm = f.vfs.remove(parent, "x.bin".as_ref(), false).await;
    assert_eq!(errno(rm), libc::EROFS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_is_readable_as_a_raw_object() {
    let f = Fixture::new(standard_backend());
    let pack = standard().pack_of("db-2");
    let path = format!("cloud/local/objects/{pack}");
    let bytes = f.read_all(&path).await.unwrap();
    assert_eq!(bytes.len() as u64, f.lookup(&path).await.unwrap().attr.size);
    // The pack holds one zstd frame: the snapshot's only file.
    let decoded = zstd::decode_all(&bytes[..]).unwrap();
    assert!(decoded == standard().single);
}
