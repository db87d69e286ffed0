//! Snapshot files kept whole in the disk cache, for the kernel to read by itself (FUSE
//! passthrough): which files, when they are assembled, and the assembly from checked blocks.
//!
//! A file qualifies when every block of it is a chunk of the snapshot format (so each has a
//! content hash to check) and it is at least one block long (a smaller one is one cached block
//! anyway). It is assembled in the background once one open handle has read all of it, or on
//! its [`OPENS_FOR_WHOLE`]th open in this daemon's life (a database queried now and then). Every
//! chunk is checked against its BLAKE3 hash as it is written; a file that fails a check is not
//! kept. Until the mount says the kernel takes passthrough, nothing is assembled.

use std::collections::HashSet;
use std::fs::File;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tracing::Instrument;

use super::Vfs;
use super::read::fetch_block;
use super::targets::TargetId;
use crate::backend::Backend;
use crate::cache::{BlockCache, WholeKey};
use crate::format::{self, ChunkId};
use crate::tree::{BLOCK_SIZE, Block, Encoding, SnapshotTree};

/// Opens of one file, in this daemon's life, after which it is kept whole.
pub const OPENS_FOR_WHOLE: u32 = 3;
/// Files counted for [`OPENS_FOR_WHOLE`]; the least recently opened are forgotten.
const COUNTED_FILES: usize = 4096;

/// A file of a snapshot tree, by the tree's address: valid while the tree is alive, which the
/// weak reference stored with it tells.
type FileSlot = (usize, u32);
/// What is known of a file's key: the tree it is of, and the key (None: it does not qualify).
type KnownKey = (Weak<SnapshotTree>, Option<WholeKey>);

pub(super) struct WholeFiles {
    enabled: AtomicBool,
    /// Each file's key once worked out, so an open costs no hashing.
    keys: Mutex<lru::LruCache<FileSlot, KnownKey>>,
    opens: Mutex<lru::LruCache<WholeKey, u32>>,
    assembling: Mutex<HashSet<WholeKey>>,
}

impl Default for WholeFiles {
    fn default() -> Self {
        let counted = NonZeroUsize::new(COUNTED_FILES).unwrap_or(NonZeroUsize::MIN);
        WholeFiles {
            enabled: AtomicBool::new(false),
            keys: Mutex::new(lru::LruCache::new(counted)),
            opens: Mutex::new(lru::LruCache::new(counted)),
            assembling: Mutex::default(),
        }
    }
}

/// An open handle's progress towards having read its file in full.
pub(super) struct Candidate {
    key: WholeKey,
    /// Which blocks were read, and how many of them.
    seen: Mutex<(Vec<bool>, usize)>,
}

/// What an open of a snapshot file gets: the whole file to hand the kernel, or what to track.
pub(super) enum WholeOpen {
    Ready(File),
    Track(Option<Candidate>),
}

/// The key of a file's whole content, if it qualifies.
fn key_of(size: u64, blocks: &[Block]) -> Option<WholeKey> {
    if size < BLOCK_SIZE as u64 {
        return None;
    }
    let mut ids = Vec::with_capacity(blocks.len());
    for b in blocks {
        match b.encoding {
            Encoding::Chunk { id, .. } => ids.push((id, b.len)),
            Encoding::Raw { .. } => return None,
        }
    }
    Some(WholeKey::of_chunks(size, ids))
}

impl Vfs {
    /// Whether whole files are kept and handed out: the mount turns this on once the kernel
    /// agreed to passthrough, and off when it turns out unusable.
    pub fn set_whole_files(&self, on: bool) {
        self.whole.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether the kernel takes files to read and write itself (passthrough).
    pub(super) fn whole_files(&self) -> bool {
        self.whole.enabled.load(Ordering::Relaxed)
    }

    /// For an open of snapshot file `id`: its whole file if the cache holds one, else what to
    /// track towards making one (starting it when the file was opened often).
    pub(super) async fn whole_open(
        &self,
        target: TargetId,
        tree: &Arc<SnapshotTree>,
        id: u32,
    ) -> WholeOpen {
        let Some(node) = tree.node(id) else {
            return WholeOpen::Track(None);
        };
        if !self.whole_files() {
            return WholeOpen::Track(None);
        }
        let Some(key) = self.whole_key(tree, id) else {
            return WholeOpen::Track(None);
        };
        if let Some(file) = self.cache.whole_file(key).await {
            return WholeOpen::Ready(file);
        }
        let opens = {
            let mut opens = self.whole.opens.lock().unwrap_or_else(|e| e.into_inner());
            let n = opens.get_or_insert_mut(key, || 0);
            *n += 1;
            *n
        };
        if opens >= OPENS_FOR_WHOLE {
            self.assemble(target, tree.clone(), id, key);
            return WholeOpen::Track(None);
        }
        WholeOpen::Track(Some(Candidate {
            key,
            seen: Mutex::new((vec![false; node.blocks.len()], 0)),
        }))
    }

    /// The key of file `id` of `tree`, worked out once per file.
    fn whole_key(&self, tree: &Arc<SnapshotTree>, id: u32) -> Option<WholeKey> {
        let slot = (Arc::as_ptr(tree) as usize, id);
        let mut keys = self.whole.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, key)) = keys.get(&slot)
            && known.upgrade().is_some_and(|t| Arc::ptr_eq(&t, tree))
        {
            return *key;
        }
        let key = tree.node(id).and_then(|n| key_of(n.size, &n.blocks));
        keys.put(slot, (Arc::downgrade(tree), key));
        key
    }

    /// Notes that a handle read `range` of snapshot file `id`; the read that completes the
    /// file starts its assembly.
    pub(super) fn whole_read(
        &self,
        candidate: &Candidate,
        target: TargetId,
        tree: &Arc<SnapshotTree>,
        id: u32,
        range: Range<u64>,
    ) {
        let Some(node) = tree.node(id) else { return };
        let blocks = &node.blocks;
        let first = blocks.partition_point(|b| b.start + u64::from(b.len) <= range.start);
        let last = blocks.partition_point(|b| b.start < range.end);
        let complete = {
            let mut seen = candidate.seen.lock().unwrap_or_else(|e| e.into_inner());
            let (marks, count) = &mut *seen;
            if *count == marks.len() {
                // Already complete, and assembled or on the way.
                return;
            }
            for mark in marks.iter_mut().take(last).skip(first) {
                if !*mark {
                    *mark = true;
                    *count += 1;
                }
            }
            *count == marks.len()
        };
        if complete {
            self.assemble(target, tree.clone(), id, candidate.key);
        }
    }

    /// Assembles the whole file of `key` in the background, unless that is under way.
    fn assemble(&self, target: TargetId, tree: Arc<SnapshotTree>, id: u32, key: WholeKey) {
        if !self
            .whole
            .assembling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return;
        }
        let Ok(t) = self.target(target) else {
            self.whole
                .assembling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return;
        };
        let (cache, backend, path) = (self.cache.clone(), t.backend.clone(), t.path());
        let whole = Arc::clone(&self.whole);
        let job = async move {
            let Some(node) = tree.node(id) else { return };
            let blocks = &node.blocks;
            match assemble(&cache, backend, &path, node.size, blocks, key).await {
                Ok(true) => tracing::debug!(bytes = node.size, "kept a file whole"),
                Ok(false) => {}
                Err(why) => tracing::warn!(error = %why, "a file was not kept whole"),
            }
            whole
                .assembling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        };
        tokio::spawn(job.instrument(tracing::debug_span!("whole_file", target = %t.path())));
    }
}

/// Writes the whole file of `key` from `blocks`, each chunk checked against its hash on the
/// way; answers whether a file was made (the cache may take none).
async fn assemble(
    cache: &BlockCache,
    backend: Arc<dyn Backend>,
    path: &str,
    size: u64,
    blocks: &[Block],
    key: WholeKey,
) -> Result<bool, String> {
    if cache.whole_file(key).await.is_some() {
        return Ok(false);
    }
    let Some(mut writer) = cache.begin_whole(key, size).await else {
        return Ok(false);
    };
    let mut at = 0u64;
    for b in blocks {
        let Encoding::Chunk { id, .. } = b.encoding else {
            return Err("a block without a content hash".into());
        };
        if b.start != at {
            return Err(format!("a gap at byte {at}"));
        }
        let decoded = fetch_block(cache, backend.clone(), path, None, b)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = format::block_bytes(&decoded, b).map_err(|e| e.to_string())?;
        let checked = bytes.clone();
        let matches = tokio::task::spawn_blocking(move || ChunkId::of(&checked).0 == id)
            .await
            .map_err(|e| e.to_string())?;
        if !matches || bytes.len() != b.len as usize {
            return Err(format!("the chunk at byte {at} fails its check"));
        }
        writer.write(bytes).await.map_err(|e| e.to_string())?;
        at += u64::from(b.len);
    }
    writer.finish().await.map_err(|e| e.to_string())?;
    Ok(true)
}
