//! The snapfs file system: a VFS core that knows nothing of FUSE, the FUSE adapter, the block
//! cache, and the snapshot format stored in buckets.
//!
//! Dependencies run one way (tests aside): a module uses only modules listed before it.
//!
//! 1. `tree`: the immutable content of a snapshot and where its blocks are stored; plain data.
//! 2. `cache`: bytes under a typed [`cache::CacheKey`], memory over disk; uses nothing else here.
//! 3. `format` (uses `tree`): manifests and packs in a bucket, the tree of a manifest, and the
//!    check that turns a block's stored bytes into file bytes.
//! 4. `backend` (uses `tree`): what a place holding snapshots provides.
//! 5. `vfs` (uses all of the above): the mount tree as plain async functions.
//! 6. `fuse` (uses `vfs`, `tree`): the kernel adapter, the only user of fuser.
//!
//! The same holds among the children of one module. `format`: `pack` ← `manifest` ←
//! `validation`, `snapshot`. `cache`: `key`, `memory` and `disk` use none of each other. `vfs`:
//! `error`, `attr`, `targets`, `inodes`, `listing`, `staging`, `readme` ← `read` ← `live`,
//! `write` ← `dir`.
//! Children may use what their parent declares, and `vfs`'s children each add methods to `Vfs`.

pub mod backend;
pub mod cache;
pub mod format;
pub mod fuse;
pub mod tree;
pub mod vfs;
