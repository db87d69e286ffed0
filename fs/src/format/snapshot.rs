//! A manifest as the VFS reads it: a snapshot tree whose file blocks are chunks in the packs,
//! and the check that turns a block's stored bytes back into file bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::FormatError;
use super::manifest::{EntryKind, Manifest};
use super::pack::{ChunkId, inflate, member};
use crate::tree::{Block, Encoding, FileKind, SnapshotTree, TreeNode};

/// The tree of a manifest (one that passed validation): every file's blocks are its chunks, in
/// the manifest's packs.
pub fn snapshot_tree(manifest: &Manifest) -> Result<SnapshotTree, FormatError> {
    let invalid = |why: String| FormatError::InvalidManifest(why);
    let packs: Vec<Arc<str>> = manifest
        .packs
        .iter()
        .map(|p| Arc::from(p.as_str()))
        .collect();
    let mut nodes = Vec::with_capacity(manifest.entries.len());
    for e in &manifest.entries {
        let perm = (e.mode & 0o7777) as u16;
        let t = mtime(e.mtime, e.mtime_nsec);
        let node = match &e.kind {
            EntryKind::Dir => TreeNode::new(FileKind::Dir, perm, t),
            EntryKind::Symlink { target } => {
                let mut n = TreeNode::new(FileKind::Symlink, perm, t);
                n.size = target.len() as u64;
                n.symlink = Some(target.clone());
                n
            }
            EntryKind::File {
                size, crc32c, data, ..
            } => {
                let mut n = TreeNode::new(FileKind::File, perm, t);
                n.size = *size;
                n.crc32c = Some(*crc32c);
                n.blocks.reserve_exact(data.len());
                let mut start = 0u64;
                for &c in data {
                    let out_of_range = || invalid(format!("{}: chunk index out of range", e.path));
                    let chunk = manifest.chunks.get(c as usize).ok_or_else(out_of_range)?;
                    let object = packs
                        .get(chunk.pack as usize)
                        .cloned()
                        .ok_or_else(out_of_range)?;
                    n.blocks.push(Block {
                        start,
                        len: chunk.len,
                        object,
                        offset: chunk.offset,
                        stored_len: chunk.clen,
                        encoding: Encoding::Chunk {
                            id: chunk.id.0,
                            at: chunk.at,
                            frame: chunk.frame_len(),
                        },
                    });
                    start += u64::from(chunk.len);
                }
                n
            }
        };
        nodes.push((e.path.clone(), node));
    }
    SnapshotTree::build(nodes).map_err(|e| invalid(e.to_string()))
}

/// What the cache keeps of `block` from its `stored` bytes, checked: a zstd frame is
/// decompressed (CPU work: call it off the async workers), a raw block is returned as is once
/// its length and any known checksum match. A chunk alone in its frame is checked here; a frame
/// of several chunks is kept whole (zstd's own checksum covers it) and each chunk is checked
/// when [`block_bytes`] takes it out.
pub fn decode_stored(stored: Bytes, block: &Block) -> Result<Bytes, FormatError> {
    let checked = match block.encoding {
        Encoding::Chunk { id, at, frame } => {
            inflate(&stored, block.stored_len, frame).and_then(|decoded| {
                if frame == block.len {
                    member(&decoded, at, block.len, &ChunkId(id))
                } else {
                    Ok(decoded)
                }
            })
        }
        Encoding::Raw { crc32c } => {
            if stored.len() != block.len as usize {
                Err(format!("{} bytes, expected {}", stored.len(), block.len))
            } else if crc32c.is_some_and(|want| crc32c::crc32c(&stored) != want) {
                Err("checksum mismatch".to_owned())
            } else {
                Ok(stored)
            }
        }
    };
    checked.map_err(|why| corrupt(block, why))
}

/// The file bytes of `block` from what [`decode_stored`] made of it: the same bytes, or the
/// block's chunk out of a frame of several, checked.
pub fn block_bytes(decoded: &Bytes, block: &Block) -> Result<Bytes, FormatError> {
    match block.encoding {
        Encoding::Chunk { id, at, frame } if frame != block.len => {
            member(decoded, at, block.len, &ChunkId(id)).map_err(|why| corrupt(block, why))
        }
        _ => Ok(decoded.clone()),
    }
}

fn corrupt(block: &Block, why: String) -> FormatError {
    FormatError::CorruptBlock(format!("{} at {}: {why}", block.object, block.offset))
}

/// A manifest's mtime (seconds, which may be negative, and nanoseconds) as a `SystemTime`.
fn mtime(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nsec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::{dir, file, sample, symlink};
    use crate::format::{BLOCK_SIZE, compress_chunk};

    #[test]
    fn a_manifest_becomes_its_tree() {
        let manifest = sample();
        let tree = snapshot_tree(&manifest).unwrap();
        assert_eq!(tree.len(), manifest.entries.len());
        let a = tree.child(SnapshotTree::ROOT, "a").unwrap();
        let f = tree.node(tree.child(a, "f").unwrap()).unwrap();
        assert_eq!(
            (f.kind, f.perm, f.size),
            (FileKind::File, 0o644, BLOCK_SIZE as u64 + 10)
        );
        assert_eq!(f.crc32c, Some(1));
        assert_eq!(
            f.mtime,
            SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5)
        );
        let starts: Vec<(u64, &str)> = f.blocks.iter().map(|b| (b.start, &*b.object)).collect();
        assert_eq!(
            starts,
            [
                (0, manifest.packs[0].as_str()),
                (BLOCK_SIZE as u64, manifest.packs[1].as_str())
            ]
        );
        assert_eq!(
            (
                f.blocks[1].offset,
                f.blocks[1].stored_len,
                f.blocks[1].encoding
            ),
            (
                0,
                100,
                Encoding::Chunk {
                    id: manifest.chunks[1].id.0,
                    at: 0,
                    frame: 10
                }
            )
        );
        let l = tree.node(tree.child(a, "l").unwrap()).unwrap();
        assert_eq!((l.kind, l.size), (FileKind::Symlink, 12));
        assert_eq!(l.symlink.as_deref(), Some("../etc/hosts"));
    }

    #[test]
    fn a_tree_is_refused_where_the_manifest_is_broken() {
        let mut bad_pack = sample();
        bad_pack.entries.push(file("x", vec![9], 1));
        assert!(matches!(
            snapshot_tree(&bad_pack),
            Err(FormatError::InvalidManifest(why)) if why.contains("x: chunk index out of range")
        ));
        let mut orphan = sample();
        orphan.entries.push(dir("missing/child"));
        assert!(snapshot_tree(&orphan).is_err());
        let mut under_link = sample();
        under_link.entries.push(symlink("a/l/x", "y"));
        assert!(snapshot_tree(&under_link).is_err());
    }

    #[test]
    fn mtimes_before_the_epoch_keep_their_nanoseconds() {
        let t = mtime(-2, 500);
        assert_eq!(
            SystemTime::UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(1, 999_999_500)
        );
    }

    fn stored_block(encoding: Encoding, stored: &[u8], len: u32) -> Block {
        Block {
            start: 0,
            len,
            object: Arc::from("snapfs/packs/u/00000000.pack"),
            offset: 40,
            stored_len: stored.len() as u32,
            encoding,
        }
    }

    #[test]
    fn stored_bytes_decode_only_when_they_check_out() {
        let raw = b"file bytes".repeat(100);
        let frame = compress_chunk(&raw, 3);
        let id = ChunkId::of(&raw).0;
        let len = raw.len() as u32;
        let zstd = stored_block(
            Encoding::Chunk {
                id,
                at: 0,
                frame: len,
            },
            &frame,
            len,
        );
        let got = decode_stored(Bytes::from(frame.clone()), &zstd).unwrap();
        assert_eq!(got, raw);
        let wrong_id = ChunkId::of(b"other").0;
        let wrong_encoding = Encoding::Chunk {
            id: wrong_id,
            at: 0,
            frame: len,
        };
        let wrong = stored_block(wrong_encoding, &frame, len);
        let err = decode_stored(Bytes::from(frame.clone()), &wrong).unwrap_err();
        assert!(
            err.to_string()
                .contains("snapfs/packs/u/00000000.pack at 40: BLAKE3"),
            "{err}"
        );
        let short = decode_stored(Bytes::copy_from_slice(&frame[1..]), &zstd);
        assert!(matches!(short, Err(FormatError::CorruptBlock(_))));

        let plain = stored_block(Encoding::Raw { crc32c: None }, &raw, raw.len() as u32);
        assert_eq!(
            decode_stored(Bytes::from(raw.clone()), &plain).unwrap(),
            raw
        );
        let checked = stored_block(
            Encoding::Raw {
                crc32c: Some(crc32c::crc32c(&raw)),
            },
            &raw,
            raw.len() as u32,
        );
        assert!(decode_stored(Bytes::from(raw.clone()), &checked).is_ok());
        let mut flipped = raw.clone();
        flipped[3] ^= 1;
        assert!(decode_stored(Bytes::from(flipped), &checked).is_err());
        assert!(decode_stored(Bytes::copy_from_slice(&raw[1..]), &plain).is_err());
    }
}
