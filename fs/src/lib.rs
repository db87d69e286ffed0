//! The snapfs file system: a VFS core that knows nothing of FUSE, the FUSE adapter, the block
//! cache, and the snapshot format stored in buckets.

pub mod cache;
pub mod format;
