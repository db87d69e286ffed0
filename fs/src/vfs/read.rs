//! Open handles and the read path: blocks fetched through the cache, decoded and checked once,
//! with read-ahead that grows with a sequential stream under one global budget.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tracing::Instrument;

use super::error::{VfsError, VfsResult};
use super::inodes::Node;
use super::targets::TargetId;
use super::whole::{Candidate, WholeOpen};
use super::{DirEntry, Opened, Vfs};
use crate::backend::{Backend, BackendError};
use crate::cache::{BlockCache, CacheKey};
use crate::format;
use crate::tree::{
    BLOCK_SIZE, Block, Encoding, FileKind, SnapshotTree, blocks_covering, raw_blocks,
};

/// Read-ahead starts this many bytes ahead of a sequential reader and doubles from there.
const FIRST_WINDOW: u64 = BLOCK_SIZE as u64;
/// Read-ahead grows to this many bytes ahead of a sequential reader.
const MAX_WINDOW: u64 = 16 * BLOCK_SIZE as u64;
/// Most stored bytes fetched with one read when blocks sit back to back in an object. Counted
/// in bytes, not blocks: a database's blocks are single pages, a large file's are megabytes.
const MAX_RUN: u64 = 8 * BLOCK_SIZE as u64;
/// Blocks stored in fewer bytes than this are fetched together with their neighbours.
const SMALL_BLOCK: usize = 256 << 10;
/// The read-ahead budget is counted in units of this many stored bytes.
pub(super) const BUDGET_UNIT: usize = 64 << 10;

/// The bytes of a file as a list of blocks.
pub(super) enum FileData {
    Tree(Arc<SnapshotTree>, u32),
    Owned(Vec<Block>),
}

impl FileData {
    fn blocks(&self) -> &[Block] {
        match self {
            FileData::Tree(tree, id) => tree.node(*id).map_or(&[], |n| n.blocks.as_slice()),
            FileData::Owned(blocks) => blocks,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct ReadAhead {
    /// Where a sequential reader reads next.
    next: u64,
    /// Bytes to keep fetched ahead; 0 while reads look random.
    window: u64,
    /// Blocks below this index have been asked for already.
    issued: usize,
}

/// The per-open buffer of a live file: the last chunk fetched and where it starts.
#[derive(Default)]
pub(super) struct LiveBuffer {
    pub(super) start: u64,
    pub(super) data: Bytes,
    /// The chunk came back short: the file ended inside it.
    pub(super) eof: bool,
}

pub(super) enum Handle {
    File {
        target: TargetId,
        data: FileData,
        size: u64,
        /// The object's version for a raw object, which can be overwritten; None for a
        /// snapshot's blocks, which never change.
        version: Option<String>,
        ra: Mutex<ReadAhead>,
        /// Tracks whether this handle reads the whole file, which then is kept whole.
        whole: Option<Candidate>,
    },
    Generated(Bytes),
    Staged {
        target: TargetId,
        /// The staged inode, to tell which upload it is in after a rename.
        ino: u64,
        /// The upload whose open count includes this handle; none once that upload was
        /// removed, so that a new upload of the same name is not counted for it.
        upload: Mutex<Option<String>>,
        file: File,
        /// The file's inode in the staging folder, when this handle can write it.
        writer: Option<u64>,
    },
    Dir(Vec<DirEntry>),
    Live {
        mount: usize,
        path: String,
        buf: Mutex<LiveBuffer>,
    },
}

/// Fetches one block, checks it, and keeps it in the cache. A block that fails its check is
/// fetched once more; if it fails again the read fails and nothing wrong is returned.
pub(super) async fn fetch_block(
    cache: &BlockCache,
    backend: Arc<dyn Backend>,
    target_path: &str,
    version: Option<&str>,
    block: &Block,
) -> Result<Bytes, BackendError> {
    let key = cache_key(target_path, version, block);
    cache
        .get_or_fetch(key, move || async move {
            let range = block.offset..block.offset + u64::from(block.stored_len);
            let mut last = None;
            for _ in 0..2 {
                let stored = match backend.read_range(&block.object, range.clone()).await {
                    Ok(stored) => stored,
                    // A snapshot's data that is gone is damage (EIO), not a file that is not
                    // there: the snapshot lists it. A raw object may really have gone.
                    Err(BackendError::NotFound(what)) if version.is_none() => {
                        return Err(BackendError::Corrupt(format!(
                            "{what} is missing, though the snapshot lists it"
                        )));
                    }
                    Err(e) => return Err(e),
                };
                match decode(stored, block).await {
                    Ok(data) => return Ok(data),
                    Err(e) => {
                        tracing::warn!(object = %block.object, offset = block.offset, error = %e, "block failed its check; fetching again");
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| BackendError::Corrupt("block check failed".into())))
        })
        .await
}

fn cache_key<'a>(target: &'a str, version: Option<&'a str>, block: &'a Block) -> CacheKey<'a> {
    CacheKey::Block {
        target,
        object: &block.object,
        version,
        offset: block.offset,
        len: block.stored_len,
    }
}

/// Whether `next` is stored right after `prev` in the same object (or in the same frame), so
/// both come in one read.
fn adjacent(prev: &Block, next: &Block) -> bool {
    prev.object == next.object
        && (prev.offset + u64::from(prev.stored_len) == next.offset || prev.offset == next.offset)
}

/// Fetches blocks stored back to back in one object with a single ranged read and keeps each
/// in the cache: fewer, larger requests for a sequential reader. A block that fails its check
/// is left out; the demand read fetches it alone and applies the refetch-then-EIO rule.
async fn prefetch_run(
    cache: &BlockCache,
    backend: Arc<dyn Backend>,
    target_path: &str,
    version: Option<&str>,
    run: &[Block],
) {
    let mut missing = Vec::with_capacity(run.len());
    for b in run {
        if cache
            .get_cached(cache_key(target_path, version, b))
            .await
            .is_none()
        {
            missing.push(b);
        }
    }
    // Only the stretch between the first and last missing block is read.
    let (Some(first), Some(last)) = (missing.first(), missing.last()) else {
        return;
    };
    let start = first.offset;
    let end = last.offset + u64::from(last.stored_len);
    let Ok(stored) = backend.read_range(&first.object, start..end).await else {
        return;
    };
    // Chunks of one frame share what the cache keeps: each frame is decoded once.
    let mut frames: Vec<Block> = run
        .iter()
        .filter(|b| b.offset >= start && b.offset < end)
        .cloned()
        .collect();
    frames.dedup_by_key(|b| b.offset);
    if frames
        .iter()
        .any(|b| (b.offset - start) as usize + b.stored_len as usize > stored.len())
    {
        return;
    }
    // Decoded a few at a time (one per core), kept in order as each is done, so the block a
    // reader waits for is ready before the ones after it.
    let mut decoded = futures::stream::iter(frames)
        .map(|b: Block| {
            let from = (b.offset - start) as usize;
            let bytes = stored.slice(from..from + b.stored_len as usize);
            async move {
                let decoded = decode(bytes, &b).await;
                (b, decoded)
            }
        })
        .buffered(decoders());
    while let Some((b, result)) = decoded.next().await {
        match result {
            Ok(data) => {
                cache
                    .insert(cache_key(target_path, version, &b), data)
                    .await
            }
            Err(e) => {
                tracing::debug!(object = %b.object, offset = b.offset, error = %e, "prefetched block failed its check")
            }
        }
    }
}

/// How many blocks of one run are decoded at once: one per core.
fn decoders() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

async fn decode(stored: Bytes, block: &Block) -> Result<Bytes, BackendError> {
    let decoded = match block.encoding {
        // Decompression is CPU work: off the async workers.
        Encoding::Chunk { .. } => {
            let block = block.clone();
            tokio::task::spawn_blocking(move || format::decode_stored(stored, &block))
                .await
                .map_err(|e| BackendError::Other(format!("decoder stopped: {e}")))?
        }
        Encoding::Raw { .. } => format::decode_stored(stored, block),
    };
    decoded.map_err(|e| BackendError::Corrupt(e.to_string()))
}

impl Vfs {
    pub(super) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(handle));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> VfsResult<Arc<Handle>> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(VfsError::Io("stale file handle".into()))
    }

    /// A handle on a staged file; one that can write it tells the upload's hooks, by the
    /// file's inode in the staging folder.
    pub(super) fn new_staged_handle(
        &self,
        target: TargetId,
        ino: u64,
        upload: String,
        file: File,
        write: bool,
    ) -> VfsResult<u64> {
        let writer = match write {
            true => Some(std::os::unix::fs::MetadataExt::ino(&file.metadata()?)),
            false => None,
        };
        if let Some(staged) = writer {
            self.hooks.writing(target, &upload, staged);
        }
        self.staging.opened(target, &upload);
        Ok(self.add_handle(Handle::Staged {
            target,
            ino,
            upload: Mutex::new(Some(upload)),
            file,
            writer,
        }))
    }

    /// Upload `name` was removed: handles still open on its files no longer count for it.
    pub(super) fn detach_staged_handles(&self, target: TargetId, name: &str) {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        for handle in handles.values() {
            if let Handle::Staged {
                target: t, upload, ..
            } = handle.as_ref()
                && *t == target
            {
                let mut counted = upload.lock().unwrap_or_else(|e| e.into_inner());
                if counted.as_deref() == Some(name) {
                    *counted = None;
                }
            }
        }
    }

    /// After a rename, counts each open staged handle against the upload its file is now in, so
    /// an upload with an open file never settles and its writes are seen.
    pub(super) fn recount_staged_handles(&self) {
        let handles: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for handle in handles {
            let Handle::Staged {
                target,
                ino,
                upload,
                ..
            } = handle.as_ref()
            else {
                continue;
            };
            let Ok((_, now, _)) = self.staged_path(*ino) else {
                continue;
            };
            let mut guard = upload.lock().unwrap_or_else(|e| e.into_inner());
            // A file of a removed upload is in none, whatever its old path says now.
            let Some(counted) = guard.as_mut() else {
                continue;
            };
            if *counted != now {
                self.staging.closed(*target, counted);
                self.staging.opened(*target, &now);
                *counted = now;
            }
        }
    }

    /// Opens a file; `write` asks for write access.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> VfsResult<Opened> {
        let inode = self.inode(ino)?;
        let read_only = |h: Handle, keep_cache: bool, direct_io: bool| -> VfsResult<Opened> {
            if write {
                return Err(VfsError::ReadOnly("snapshots are read-only"));
            }
            Ok(Opened {
                fh: self.add_handle(h),
                keep_cache,
                direct_io,
                whole: None,
            })
        };
        match inode.node {
            Node::Snap {
                target, tree, id, ..
            } => {
                let node = tree.node(id).ok_or(VfsError::NotFound)?;
                if node.kind != FileKind::File {
                    return Err(VfsError::IsDir);
                }
                let size = node.size;
                if write {
                    return Err(VfsError::ReadOnly("snapshots are read-only"));
                }
                let (ready, candidate) = match self.whole_open(target, &tree, id).await {
                    WholeOpen::Ready(file) => (Some(file), None),
                    WholeOpen::Track(candidate) => (None, candidate),
                };
                let h = Handle::File {
                    target,
                    data: FileData::Tree(tree.clone(), id),
                    size,
                    version: None,
                    ra: Mutex::new(ReadAhead::default()),
                    whole: candidate,
                };
                let mut opened = read_only(h, true, false)?;
                opened.whole = ready;
                Ok(opened)
            }
            Node::Object {
                target,
                key,
                size,
                version,
                ..
            } => {
                let h = Handle::File {
                    target,
                    data: FileData::Owned(raw_blocks(&key, size)),
                    size,
                    version: Some(version),
                    ra: Mutex::new(ReadAhead::default()),
                    whole: None,
                };
                read_only(h, true, false)
            }
            Node::Readme => read_only(Handle::Generated(Bytes::from(self.readme())), false, true),
            Node::Status { target, name } => {
                let json = self.status_json(target, &name).ok_or(VfsError::NotFound)?;
                read_only(Handle::Generated(Bytes::from(json)), false, true)
            }
            Node::Staged(_) => self.open_staged(ino, write, truncate),
            Node::Live { mount, path } => self.live_open(mount, path, write).await,
            _ => Err(VfsError::IsDir),
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> VfsResult<Bytes> {
        let handle = self.handle(fh)?;
        match handle.as_ref() {
            Handle::Generated(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                Ok(bytes.slice(start..end))
            }
            Handle::Staged { file, .. } => {
                let mut buf = vec![0u8; size as usize];
                let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, offset)?;
                buf.truncate(n);
                Ok(Bytes::from(buf))
            }
            Handle::File {
                target,
                data,
                size: file_size,
                version,
                ra,
                whole,
            } => {
                let end = offset.saturating_add(u64::from(size)).min(*file_size);
                if offset >= end {
                    return Ok(Bytes::new());
                }
                let version = version.as_deref();
                let out = self
                    .read_blocks(*target, data.blocks(), version, offset..end)
                    .await?;
                self.read_ahead(*target, data.blocks(), version, ra, offset..end);
                if let (Some(candidate), FileData::Tree(tree, id)) = (whole, data) {
                    self.whole_read(candidate, *target, tree, *id, offset..end);
                }
                Ok(out)
            }
            Handle::Dir(_) => Err(VfsError::IsDir),
            Handle::Live { mount, path, buf } => {
                self.live_read(*mount, path, buf, offset, size).await
            }
        }
    }

    async fn read_blocks(
        &self,
        target: TargetId,
        blocks: &[Block],
        version: Option<&str>,
        range: Range<u64>,
    ) -> VfsResult<Bytes> {
        let covering = blocks_covering(blocks, range.start, range.end);
        let t = self.target(target)?;
        let path = t.path();
        let slice = |b: &Block, decoded: &Bytes| -> VfsResult<Bytes> {
            let data = format::block_bytes(decoded, b)
                .map_err(|e| VfsError::from(BackendError::Corrupt(e.to_string())))?;
            let from = range.start.max(b.start) - b.start;
            let to = range.end.min(b.start + u64::from(b.len)) - b.start;
            if to as usize > data.len() {
                return Err(VfsError::Io("block shorter than recorded".into()));
            }
            Ok(data.slice(from as usize..to as usize))
        };
        if let [b] = covering {
            let data = fetch_block(&self.cache, t.backend.clone(), &path, version, b).await?;
            return slice(b, &data);
        }
        // Small blocks stored back to back (a database's pages) come in one read, not one
        // each; each is then served from the cache, or fetched alone if its check failed.
        // Large blocks are worth a request of their own, which concurrent readers share.
        let mut rest = covering;
        while !rest.is_empty() {
            let small = |b: &Block| (b.stored_len as usize) < SMALL_BLOCK;
            let mut n = 1;
            while n < rest.len()
                && small(&rest[n - 1])
                && small(&rest[n])
                && adjacent(&rest[n - 1], &rest[n])
            {
                n += 1;
            }
            if n > 1 {
                prefetch_run(&self.cache, t.backend.clone(), &path, version, &rest[..n]).await;
            }
            rest = &rest[n..];
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for b in covering {
            let data = fetch_block(&self.cache, t.backend.clone(), &path, version, b).await?;
            out.extend_from_slice(&slice(b, &data)?);
        }
        Ok(out.freeze())
    }

    /// Starts fetching the blocks after a sequential read, more of them the longer the stream.
    fn read_ahead(
        &self,
        target: TargetId,
        blocks: &[Block],
        version: Option<&str>,
        ra: &Mutex<ReadAhead>,
        range: Range<u64>,
    ) {
        let Some(current) = blocks_covering(blocks, range.end - 1, range.end).first() else {
            return;
        };
        let current = blocks.partition_point(|b| b.start < current.start);
        let todo: Range<usize> = {
            let mut ra = ra.lock().unwrap_or_else(|e| e.into_inner());
            // The kernel issues its own read-ahead out of order; nearby counts as sequential.
            let near = range.start.abs_diff(ra.next) <= 2 * BLOCK_SIZE as u64;
            ra.next = range.end;
            if !near {
                ra.window = 0;
                return;
            }
            // Where the window ends now: the first block starting past it is not fetched yet.
            let reach = |window: u64| {
                let limit = range.end.saturating_add(window);
                blocks.partition_point(|b| b.start < limit)
            };
            if ra.window == 0 {
                ra.window = FIRST_WINDOW;
                ra.issued = current + 1;
            } else if ra.issued <= reach(ra.window / 2) {
                ra.window = (ra.window * 2).min(MAX_WINDOW);
            }
            // Top up in batches once half the window is used, so blocks stored back to back
            // go out as one larger read rather than one request each.
            if ra.issued > reach(ra.window / 2) {
                return;
            }
            let from = ra.issued.max(current + 1);
            let to = reach(ra.window).min(blocks.len());
            if from >= to {
                return;
            }
            ra.issued = to;
            from..to
        };
        let Ok(t) = self.target(target) else {
            return;
        };
        let todo = &blocks[todo];
        let mut i = 0;
        while i < todo.len() {
            let mut n = 1;
            let mut stored = u64::from(todo[i].stored_len);
            while i + n < todo.len()
                && stored + u64::from(todo[i + n].stored_len) <= MAX_RUN
                && adjacent(&todo[i + n - 1], &todo[i + n])
            {
                stored += u64::from(todo[i + n].stored_len);
                n += 1;
            }
            let units = stored.div_ceil(BUDGET_UNIT as u64).max(1);
            let units = u32::try_from(units).unwrap_or(u32::MAX);
            let Ok(permit) = self.readahead.clone().try_acquire_many_owned(units) else {
                break;
            };
            let (cache, backend, path, version) = (
                self.cache.clone(),
                t.backend.clone(),
                t.path(),
                version.map(str::to_string),
            );
            let run = todo[i..i + n].to_vec();
            let prefetch = async move {
                let version = version.as_deref();
                if let [block] = run.as_slice() {
                    let _ = fetch_block(&cache, backend, &path, version, block).await;
                } else {
                    prefetch_run(&cache, backend, &path, version, &run).await;
                }
                drop(permit);
            };
            // Its log lines name the read that started it.
            tokio::spawn(prefetch.in_current_span());
            i += n;
        }
    }

    pub fn release(&self, fh: u64) {
        let handle = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        if let Some(handle) = handle
            && let Handle::Staged {
                target,
                ino,
                upload,
                writer,
                ..
            } = handle.as_ref()
        {
            let upload = upload.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(u) = upload.as_deref() {
                if let Some(staged) = *writer {
                    let path = self.staged_path(*ino).ok().map(|(_, _, p)| p);
                    self.hooks.written(*target, u, staged, path.as_deref());
                }
                self.staging.closed(*target, u);
            }
        }
    }
}
