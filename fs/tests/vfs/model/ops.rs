//! The operations a test case is made of, as the kernel would send them through the FUSE
//! adapter, and the strategies that generate them over a small set of names, so that random
//! sequences keep meeting the same paths.

use proptest::prelude::*;
use snapfs_fs::format::BLOCK_SIZE;

use crate::fixture::BIG_LEN;

/// Upload names: two free ones, one taken until its snapshot is deleted, one the backend
/// refuses.
const UPLOADS: [&str; 4] = ["a", "b", "db-2", "Bad_Name"];
/// Names inside an upload or a snapshot made from one.
const INNER: [&str; 2] = ["x", "y"];

/// Fault switches of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails.
    Disconnect,
    /// Listing snapshots fails.
    Listing,
    /// Ranged reads fail.
    Reads,
    /// Ranged reads answer half of what they were asked.
    ShortReads,
    /// The next read of a snapshot's pack comes back with a flipped byte.
    CorruptOnce(&'static str),
}

/// Where a write lands.
#[derive(Debug, Clone, Copy)]
pub enum At {
    Start,
    End,
    Offset(u64),
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Path walk from the root, one lookup per component.
    Lookup(String),
    /// A walk, then getattr on the inode it found (`stat`).
    Getattr(String),
    Readlink(String),
    /// opendir, then readdir (or readdirplus) `chunk` entries at a time from the offset the
    /// last call ended at, then releasedir.
    Readdir {
        path: String,
        plus: bool,
        chunk: usize,
    },
    /// opendir, kept open for `ReadDir` to continue.
    OpenDir(String),
    /// The next `chunk` entries of the `handle % open`-th open directory, from the offset its
    /// last call ended at; at the end the names it gave are checked.
    ReadDir {
        handle: usize,
        plus: bool,
        chunk: usize,
    },
    Open {
        path: String,
        write: bool,
        truncate: bool,
    },
    /// On the `handle % open`-th open handle.
    Read {
        handle: usize,
        offset: u64,
        len: u32,
    },
    /// On the `handle % writable`-th handle open for writing.
    Write {
        handle: usize,
        at: At,
        len: usize,
        seed: u8,
    },
    Fsync(usize),
    Release(usize),
    Mkdir(String),
    Create(String),
    /// `truncate -s` through setattr, without a handle.
    Truncate {
        path: String,
        size: u64,
    },
    /// unlink (`dir` false) or rmdir.
    Remove {
        path: String,
        dir: bool,
    },
    /// `mv`, within the upload area now and then out of it.
    Rename {
        from: String,
        to: String,
    },
    /// The job engine turns a settled upload into a snapshot: the snapshot appears in the
    /// backend, the staged copy goes, the mount is told.
    Complete(&'static str),
    /// `snapfs rm`: the snapshot goes from the backend and the mount is told.
    DeleteSnapshot(&'static str),
    Fault(Fault),
    /// Clears every fault; the last operation that failed under one is run again and must
    /// now succeed.
    Heal,
}

fn target(rest: &str) -> String {
    format!("cloud/local/{rest}")
}

/// Paths of the upload area: `uploads/U`, `uploads/U/X`, `uploads/U/X/Y`.
fn staged_paths() -> Vec<String> {
    let mut out = Vec::new();
    for u in UPLOADS {
        out.push(target(&format!("uploads/{u}")));
        if u == "Bad_Name" {
            continue;
        }
        for x in INNER {
            out.push(target(&format!("uploads/{u}/{x}")));
            for y in INNER {
                out.push(target(&format!("uploads/{u}/{x}/{y}")));
            }
        }
    }
    out
}

/// Paths of the mount above and in the standard snapshots.
fn fixed_paths() -> Vec<String> {
    let mut out: Vec<String> = ["", "README", "cloud", "cloud/local"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for rest in [
        "snapshots",
        "snapshots/latest",
        "snapshots/db-1",
        "snapshots/db-1/data",
        "snapshots/db-1/link",
        "snapshots/db-1/data/empty",
        "snapshots/db-3",
        "uploads",
        "uploads/a.status",
        "uploads/b.status",
        "objects",
        "objects/other",
        "objects/other/deep",
        "objects/snapfs/packs",
    ] {
        out.push(target(rest));
    }
    out
}

/// Files of the standard snapshots and bucket, for reads across blocks and past the end.
fn standard_files() -> Vec<String> {
    [
        "snapshots/db-1/data/big.bin",
        "snapshots/db-1/hello.txt",
        "snapshots/db-2",
        "objects/top.txt",
        "objects/other/readme.txt",
        "objects/other/deep/x.bin",
    ]
    .iter()
    .map(|f| target(f))
    .collect()
}

/// Where uploads show once they are snapshots.
fn uploaded_paths() -> Vec<String> {
    staged_paths()
        .into_iter()
        .filter(|p| !p.contains("Bad_Name"))
        .map(|p| p.replace("/uploads/", "/snapshots/"))
        .collect()
}

/// Any path operations look at, weighted towards those that exist more often than not.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(fixed_paths()),
        2 => prop::sample::select(standard_files()),
        6 => staged_path(),
        2 => prop::sample::select(uploaded_paths()),
    ]
}

/// A path that is a folder more often than not.
fn dir_path() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(fixed_paths()),
        2 => prop::sample::select(vec![target("uploads"), target("uploads/a"), target("uploads/a/x")]),
        1 => any_path(),
    ]
}

/// A path that is a file more often than not.
fn file_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(standard_files()),
        4 => staged_path(),
        2 => prop::sample::select(uploaded_paths()),
        1 => Just("README".to_string()),
    ]
}

/// A path of the upload area, shallow ones more often, as deeper ones need their parents.
fn staged_path() -> impl Strategy<Value = String> {
    let upload = prop_oneof![
        4 => Just("a"),
        2 => Just("b"),
        1 => Just("db-2"),
    ];
    let inner = || prop::sample::select(INNER.to_vec());
    prop_oneof![
        3 => upload.clone().prop_map(|u| target(&format!("uploads/{u}"))),
        4 => (upload.clone(), inner()).prop_map(|(u, x)| target(&format!("uploads/{u}/{x}"))),
        2 => (upload, inner(), inner())
            .prop_map(|(u, x, y)| target(&format!("uploads/{u}/{x}/{y}"))),
        1 => Just(target("uploads/Bad_Name")),
        1 => Just(target("uploads/a.status")),
    ]
}

/// Mostly the upload area; now and then anywhere, where writing must be refused.
fn write_path() -> impl Strategy<Value = String> {
    prop_oneof![9 => staged_path(), 1 => any_path()]
}

fn offset() -> impl Strategy<Value = u64> {
    let b = BLOCK_SIZE as u64;
    let end = BIG_LEN as u64;
    prop_oneof![
        4 => 0..20_000u64,
        1 => (b - 100)..(b + 100),
        1 => (2 * b - 100)..(2 * b + 100),
        1 => (end - 200)..(end + 200),
        // Far past any end, as far as the kernel lets a read start: it refuses one whose
        // end would pass i64::MAX before asking the file system.
        1 => 0..(i64::MAX as u64 - (4 << 20)),
    ]
}

fn length() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..8_192u32, 1 => 0..(2u32 << 20)]
}

fn write_at() -> impl Strategy<Value = At> {
    prop_oneof![
        1 => Just(At::Start),
        2 => Just(At::End),
        2 => (0..10_000u64).prop_map(At::Offset),
        // Far past the end: a hole of zeros.
        1 => (60_000..70_000u64).prop_map(At::Offset),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Disconnect),
        Just(Fault::Listing),
        Just(Fault::Reads),
        Just(Fault::ShortReads),
        prop::sample::select(vec!["db-1", "db-2", "a", "b"]).prop_map(Fault::CorruptOnce),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    let upload = prop::sample::select(vec!["a", "b", "db-2"]);
    prop_oneof![
        3 => any_path().prop_map(Op::Lookup),
        2 => any_path().prop_map(Op::Getattr),
        1 => any_path().prop_map(Op::Readlink),
        2 => (any_path(), any::<bool>(), 1..6usize)
            .prop_map(|(path, plus, chunk)| Op::Readdir { path, plus, chunk }),
        2 => dir_path().prop_map(Op::OpenDir),
        4 => (0..4usize, any::<bool>(), 1..4usize)
            .prop_map(|(handle, plus, chunk)| Op::ReadDir { handle, plus, chunk }),
        4 => (file_path(), prop::bool::weighted(0.3), any::<bool>())
            .prop_map(|(path, write, truncate)| Op::Open { path, write, truncate }),
        5 => (0..4usize, offset(), length())
            .prop_map(|(handle, offset, len)| Op::Read { handle, offset, len }),
        4 => (0..4usize, write_at(), 0..4_096usize, any::<u8>())
            .prop_map(|(handle, at, len, seed)| Op::Write { handle, at, len, seed }),
        1 => (0..4usize).prop_map(Op::Fsync),
        2 => (0..4usize).prop_map(Op::Release),
        3 => write_path().prop_map(Op::Mkdir),
        3 => write_path().prop_map(Op::Create),
        1 => (write_path(), 0..20_000u64).prop_map(|(path, size)| Op::Truncate { path, size }),
        2 => (write_path(), any::<bool>()).prop_map(|(path, dir)| Op::Remove { path, dir }),
        2 => (write_path(), write_path()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => upload.clone().prop_map(Op::Complete),
        1 => prop::sample::select(vec!["db-1", "db-2", "a", "b"]).prop_map(Op::DeleteSnapshot),
        1 => fault().prop_map(Op::Fault),
        1 => Just(Op::Heal),
    ]
}
