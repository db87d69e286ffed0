//! The snapshot storage format inside a bucket: manifests, packs of zstd frames, object keys;
//! and how a manifest becomes the snapshot tree the VFS serves.
//!
//! Pure encoding and decoding; the daemon does the object-store I/O. The layout is documented for
//! people recovering data without snapfs in `man/snapfs-format.5`; keep the two in step.
//!
//! Inside, `chunker` (where files are cut) stands alone; `pack` (chunk ids, frames) ←
//! `manifest` (the document) ← `validation` (reading one back) and ← `snapshot` (the tree of
//! one); none uses a module after it.

mod chunker;
mod manifest;
mod pack;
mod snapshot;
mod validation;

/// No chunk is longer; a frame claiming more is refused.
pub use crate::tree::BLOCK_SIZE;
pub use chunker::{Cutting, MAX_CHUNK};
pub use manifest::{Entry, EntryKind, MANIFEST_FORMAT, Manifest, Seen, Source};
pub use pack::{ChunkId, ChunkRef, PackBuilder, check_frame, compress_chunk, decode_chunk};
pub use snapshot::{block_bytes, decode_stored, snapshot_tree};
pub use validation::MAX_MANIFEST_BYTES;

/// A pack is closed once it holds about this many compressed bytes.
pub const PACK_TARGET: usize = 8 << 20;

/// Where manifests live, relative to the remote's root.
pub const MANIFEST_PREFIX: &str = "snapfs/snapshots/";
/// Where packs live, relative to the remote's root.
pub const PACK_PREFIX: &str = "snapfs/packs/";

pub const MANIFEST_SUFFIX: &str = ".manifest.zst";

/// Where uploads in flight leave their leases, relative to the remote's root.
pub const LEASE_PREFIX: &str = "snapfs/leases/";

/// Where repacking lists the packs it took out of use, relative to the remote's root.
pub const RETIRED_PREFIX: &str = "snapfs/retired/";

/// Why stored snapshot data cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Decompression failed, or the bytes have the wrong length or CRC32C.
    #[error("corrupt block: {0}")]
    CorruptBlock(String),
    /// The manifest is unparsable, of another format, or fails validation.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
}

/// The object key of snapshot `name`'s manifest. `name` must already be valid (no '/').
pub fn manifest_key(name: &str) -> String {
    format!("{MANIFEST_PREFIX}{name}{MANIFEST_SUFFIX}")
}

/// The object key of pack `seq` of upload `upload_id`; the zero padding keeps listings in order.
pub fn pack_key(upload_id: &str, seq: u32) -> String {
    format!("{PACK_PREFIX}{upload_id}/{seq:08}.pack")
}

/// The object key of the lease of upload `upload_id`: there while the upload may refer to
/// chunks that only other snapshots' manifests hold.
pub fn lease_key(upload_id: &str) -> String {
    format!("{LEASE_PREFIX}{upload_id}.lease")
}

/// The object key of the record of packs that repack `id` took out of use.
pub fn retired_key(id: &str) -> String {
    format!("{RETIRED_PREFIX}{id}.json")
}

/// The snapshot name in a manifest key's last component (`<name>.manifest.zst`), or `None` for
/// any other object, including ones whose name snapfs would refuse.
pub fn snapshot_name_from_manifest_key(key_tail: &str) -> Option<&str> {
    let name = key_tail.strip_suffix(MANIFEST_SUFFIX)?;
    validation::check_name(name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        assert_eq!(manifest_key("db-1"), "snapfs/snapshots/db-1.manifest.zst");
        assert_eq!(pack_key("u1", 7), "snapfs/packs/u1/00000007.pack");
        assert_eq!(pack_key("u1", u32::MAX), "snapfs/packs/u1/4294967295.pack");
        assert_eq!(lease_key("u1"), "snapfs/leases/u1.lease");
    }

    #[test]
    fn manifest_key_tail_gives_the_name_back() {
        let key = manifest_key("db.2026-01-01");
        let tail = key.strip_prefix(MANIFEST_PREFIX);
        assert_eq!(
            tail.and_then(snapshot_name_from_manifest_key),
            Some("db.2026-01-01")
        );
        assert_eq!(snapshot_name_from_manifest_key("x.manifest.zst"), Some("x"));
        for other in [
            ".manifest.zst",
            "..manifest.zst",
            "x.manifest",
            "x.zst",
            "a/b.manifest.zst",
        ] {
            assert_eq!(snapshot_name_from_manifest_key(other), None, "{other}");
        }
    }
}
