//! The snapfs file system: a VFS core that knows nothing of FUSE, the FUSE adapter, the block
//! cache, and the snapshot format stored in buckets.

pub mod backend;
pub mod cache;
pub mod format;
pub mod fuse;
pub mod vfs;
