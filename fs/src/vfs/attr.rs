//! Plain attribute and entry types the VFS core returns; the FUSE adapter turns them into the
//! kernel's structures.

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use crate::tree::FileKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (07777).
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

/// A looked-up entry and how long the kernel may keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: OsString,
}

/// An open file: its handle and the caching the kernel may do.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    /// Keep the page cache across opens: the content can never change.
    pub keep_cache: bool,
    /// Bypass the page cache: the size is not known in advance (generated files).
    pub direct_io: bool,
    /// The file's bytes on local disk for the kernel to read itself (passthrough): a snapshot
    /// file whole in the cache, checked and sealed, or a staged file, which the kernel writes
    /// too. The handle serves reads and writes as well when it cannot.
    pub whole: Option<std::fs::File>,
}

/// What `statfs` reports: the volume that holds the cache and the staged uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
}
