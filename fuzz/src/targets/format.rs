//! Manifests and pack frames: what anyone with write access to a bucket can put in front of
//! the daemon.

use bytes::Bytes;
use snapfs_fs::format::{
    ChunkId, ChunkRef, Manifest, block_bytes, decode_chunk, decode_stored, snapshot_tree,
};
use snapfs_fs::tree::{Block, Encoding, FileKind};

use snapfs_fs::tree::is_file_name;

/// A manifest object as stored: zstd-compressed JSON.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::from_bytes(data) {
        accepted(&m);
    }
}

/// The JSON inside a manifest, compressed here so the mutations work on the document itself.
pub fn manifest_json(data: &[u8]) {
    manifest(&zstd::bulk::compress(data, 1).unwrap_or_default());
}

/// What a manifest that passed validation promises the readers.
fn accepted(m: &Manifest) {
    assert_eq!(
        Manifest::from_bytes(&m.to_bytes()).ok().as_ref(),
        Some(m),
        "an accepted manifest reads back the same after writing"
    );
    let tree = match snapshot_tree(m) {
        Ok(tree) => tree,
        Err(e) => panic!("a manifest that passed validation has no tree: {e}"),
    };
    for (path, id) in tree.walk() {
        let Some(node) = tree.node(id) else {
            panic!("the walk names node {id}, which the tree lacks");
        };
        if !path.is_empty() {
            assert!(is_file_name(&node.name), "entry name {:?}", node.name);
        }
        if node.kind == FileKind::File {
            let mut at = 0u64;
            for b in &node.blocks {
                assert_eq!(b.start, at, "{path}: blocks leave a gap or overlap");
                at += u64::from(b.len);
            }
            assert_eq!(at, node.size, "{path}: blocks do not cover the file");
        }
    }
}

/// A frame with the reference it is read through: 32 bytes of chunk id, then `at`, `len` and
/// `flen` (little-endian u32), then the frame.
pub fn pack_frame(data: &[u8]) {
    let Some((head, frame)) = data.split_at_checked(44) else {
        return;
    };
    let field = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let chunk = ChunkRef {
        id: ChunkId(id),
        pack: 0,
        offset: 0,
        clen: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        at: field(32),
        len: field(36),
        flen: field(40),
    };
    if let Ok(bytes) = decode_chunk(frame, &chunk) {
        checked(&bytes, &chunk);
    }
    // The same frame the way the VFS reads it: kept whole in the cache, the chunk taken out.
    let block = Block {
        start: 0,
        len: chunk.len,
        object: "pack".into(),
        offset: 0,
        stored_len: chunk.clen,
        encoding: Encoding::Chunk {
            id,
            at: chunk.at,
            frame: chunk.frame_len(),
        },
    };
    if let Ok(bytes) = decode_stored(Bytes::copy_from_slice(frame), &block)
        .and_then(|kept| block_bytes(&kept, &block))
    {
        checked(&bytes, &chunk);
    }
}

fn checked(bytes: &Bytes, chunk: &ChunkRef) {
    assert_eq!(
        bytes.len() as u64,
        u64::from(chunk.len),
        "wrong length served"
    );
    assert_eq!(
        ChunkId::of(bytes),
        chunk.id,
        "bytes served that are not the chunk"
    );
}
