//! Making a snapshot from a local file or folder: cut files into chunks, store each chunk the
//! remote does not hold yet as its own zstd frame in a pack, and write the manifest last with a
//! conditional put, so the snapshot exists exactly when it is whole.
//!
//! A file read in place whose size, times and inode match the newest snapshot of the same
//! source is not read at all: its chunks are the ones that snapshot lists.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};
use snapfs_fs::format::{
    self, ChunkId, ChunkRef, Cutting, Entry, EntryKind, MANIFEST_FORMAT, MAX_CHUNK, Manifest,
    PackBuilder, Seen, Source,
};
use tokio::task::JoinSet;

use super::shared::{LEASE_LIFETIME, LEASE_REFRESH, Stored, host_name};
use super::{CloudBackend, info_of, store_error};
use crate::lifecycle::expiry;

/// Compression level: fast enough to keep up with a disk, still a good ratio.
const LEVEL: i32 = 3;
/// Chunks being hashed and compressed at once.
const COMPRESSING: usize = 3;
/// Packs being uploaded at once.
const UPLOADING: usize = 3;
/// New chunks shorter than this (database pages, small files) are not compressed alone but
/// gathered into frames of about [`GROUP_TARGET`] bytes: measured on a database's changed
/// pages, frames of 16 pages store 17 % less than pages compressed one by one.
const SMALL_CHUNK: usize = 64 << 10;
const GROUP_TARGET: usize = 64 << 10;

/// One entry of the source tree.
struct Item {
    rel: String,
    path: PathBuf,
    meta: std::fs::Metadata,
}

fn invalid(msg: String) -> BackendError {
    BackendError::Other(msg)
}

fn io_error(path: &Path, e: std::io::Error) -> BackendError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return BackendError::NoSpace(path.display().to_string());
    }
    BackendError::Other(format!("{}: {e}", path.display()))
}

fn cancelled() -> BackendError {
    BackendError::Other("cancelled: new writes arrived".into())
}

fn join_error(e: tokio::task::JoinError) -> BackendError {
    BackendError::Other(e.to_string())
}

/// The source tree, root first, each folder's entries sorted and before their children.
fn scan(source: &Path) -> Result<Vec<Item>, BackendError> {
    let meta = std::fs::symlink_metadata(source).map_err(|e| io_error(source, e))?;
    let mut out = vec![Item {
        rel: String::new(),
        path: source.to_path_buf(),
        meta,
    }];
    let mut i = 0;
    while i < out.len() {
        if out[i].meta.is_dir() {
            let dir = out[i].path.clone();
            let mut children: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| io_error(&dir, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| io_error(&dir, e))?;
            children.sort_by_key(|c| c.file_name());
            for c in children {
                let name = c.file_name();
                let name = name.to_str().ok_or_else(|| {
                    invalid(format!("{}: file name is not UTF-8", c.path().display()))
                })?;
                let path = c.path();
                let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
                let ft = meta.file_type();
                if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                    return Err(invalid(format!(
                        "{}: only files, folders and symlinks can be kept",
                        path.display()
                    )));
                }
                let rel = if out[i].rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{}/{name}", out[i].rel)
                };
                out.push(Item { rel, path, meta });
            }
        }
        i += 1;
    }
    Ok(out)
}

/// What the reader hands on: the next chunk of file `n`.
struct Piece(usize, Vec<u8>);

/// A chunk after hashing: known to the remote already, or new with its frame.
struct Hashed {
    file: usize,
    id: ChunkId,
    len: u32,
    crc32c: u32,
    /// How a chunk the remote does not hold yet is stored; None when it does.
    new: Option<New>,
}

enum New {
    /// In a frame of its own.
    Frame(Vec<u8>),
    /// Small: its bytes, to go into a frame with its neighbours.
    Small(Vec<u8>),
}

/// Small new chunks waiting for their frame: their bytes back to back, and for each its index
/// in the chunk table, id and length.
#[derive(Default)]
struct Group {
    raw: Vec<u8>,
    members: Vec<(u32, ChunkId, u32)>,
}

/// Reads the files in order and cuts each into chunks, sending them on; stops at the first
/// error, which it sends too.
fn read_files(
    files: Vec<(usize, PathBuf, u64)>,
    tx: tokio::sync::mpsc::Sender<Result<Piece, BackendError>>,
) {
    let send = |m| tx.blocking_send(m).is_ok();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_CHUNK);
    for (n, path, size) in files {
        match read_file(n, &path, size, &mut buf, &send) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                send(Err(e));
                return;
            }
        }
    }
}

/// Cuts one file into chunks; false once the receiver is gone.
fn read_file(
    n: usize,
    path: &Path,
    size: u64,
    buf: &mut Vec<u8>,
    send: &dyn Fn(Result<Piece, BackendError>) -> bool,
) -> Result<bool, BackendError> {
    let mut f = File::open(path).map_err(|e| io_error(path, e))?;
    buf.clear();
    let (mut start, mut total, mut eof) = (0, 0u64, false);
    let mut cutting = None;
    loop {
        // A whole chunk's worth stays ahead of the cut, unless the file ends first.
        while !eof && buf.len() - start < MAX_CHUNK {
            buf.drain(..start);
            start = 0;
            // Room for the rest of the file and one byte more (to see it grew), at most two
            // chunks' worth: a small file costs no more than its size.
            let have = buf.len();
            let left = size.saturating_sub(total).saturating_add(1);
            let room = left.min((2 * MAX_CHUNK - have) as u64) as usize;
            buf.resize(have + room, 0);
            let got = f.read(&mut buf[have..]);
            buf.truncate(have + got.as_ref().map_or(0, |&k| k));
            match got.map_err(|e| io_error(path, e))? {
                0 => eof = true,
                k => total += k as u64,
            }
        }
        if total > size {
            break;
        }
        let rest = &buf[start..];
        let len = cutting
            .get_or_insert_with(|| Cutting::of(rest, size))
            .first(rest);
        if len == 0 {
            break;
        }
        if !send(Ok(Piece(n, rest[..len].to_vec()))) {
            return Ok(false);
        }
        start += len;
    }
    if total != size {
        return Err(invalid(format!(
            "{}: changed while being read ({size} bytes when listed, {total} read)",
            path.display()
        )));
    }
    Ok(true)
}

/// The chunk table of the manifest being written, and its packs.
#[derive(Default)]
struct Table {
    packs: Vec<String>,
    pack_index: HashMap<Arc<str>, u32>,
    chunks: Vec<ChunkRef>,
    by_id: HashMap<ChunkId, u32>,
    /// Packs of earlier snapshots this one refers to.
    reused: HashSet<Arc<str>>,
}

impl Table {
    fn pack(&mut self, key: &Arc<str>) -> u32 {
        if let Some(&i) = self.pack_index.get(key) {
            return i;
        }
        let i = self.packs.len() as u32;
        self.packs.push(key.to_string());
        self.pack_index.insert(key.clone(), i);
        i
    }

    /// The index of a chunk stored before (by this upload or an earlier one).
    fn stored(&mut self, id: ChunkId, at: &Stored, own: bool) -> u32 {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        if !own {
            self.reused.insert(at.pack.clone());
        }
        let pack = self.pack(&at.pack);
        self.add(ChunkRef {
            id,
            pack,
            offset: at.offset,
            clen: at.clen,
            len: at.len,
            at: at.at,
            flen: at.flen,
        })
    }

    fn add(&mut self, c: ChunkRef) -> u32 {
        let i = self.chunks.len() as u32;
        self.by_id.insert(c.id, i);
        self.chunks.push(c);
        i
    }
}

/// The pack being filled and the packs on their way to the store.
struct Packing<'a> {
    upload_id: &'a str,
    seq: u32,
    current: Option<(Arc<str>, PackBuilder)>,
    uploads: &'a mut JoinSet<Result<(), BackendError>>,
}

impl Packing<'_> {
    /// The pack being filled (a new one if none is), with its index in the chunk table's packs.
    fn pack(&mut self, table: &mut Table) -> (u32, &mut PackBuilder) {
        let (key, pack) = self.current.get_or_insert_with(|| {
            let key: Arc<str> = Arc::from(format::pack_key(self.upload_id, self.seq));
            self.seq += 1;
            (key, PackBuilder::new())
        });
        (table.pack(key), pack)
    }
}

impl CloudBackend {
    async fn put_pack(&self, key: Arc<str>, data: Bytes) -> Result<(), BackendError> {
        let len = data.len() as u64;
        self.store
            .put(&StorePath::from(&*key), PutPayload::from(data))
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        self.counters.put_requests.fetch_add(1, Ordering::Relaxed);
        self.counters.put_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Makes snapshot `name` from `source` under upload id `upload_id`. On any failure the packs
    /// written so far are deleted; the caller may also delete them by id after a crash.
    pub async fn commit(
        self: &Arc<Self>,
        name: &str,
        source: &Path,
        run: &crate::powers::Run<'_>,
    ) -> Result<SnapshotInfo, BackendError> {
        let mut uploads = JoinSet::new();
        let result = self.write_snapshot(name, source, run, &mut uploads).await;
        if result.is_err() {
            // Pack writes still under way must end before their packs are listed for removal:
            // an aborted task's blocking write could otherwise land after the cleanup.
            while uploads.join_next().await.is_some() {}
            if let Err(e) = self.delete_upload(run.id).await {
                tracing::warn!(upload_id = run.id, error = %e, "could not remove the packs of a failed upload");
            }
        }
        self.drop_lease(run.id).await;
        result
    }

    async fn write_snapshot(
        self: &Arc<Self>,
        name: &str,
        source: &Path,
        run: &crate::powers::Run<'_>,
        uploads: &mut JoinSet<Result<(), BackendError>>,
    ) -> Result<SnapshotInfo, BackendError> {
        let (progress, cancel) = (run.progress, run.cancel);
        self.check_name(name)?;
        let src = source.to_path_buf();
        let items = tokio::task::spawn_blocking(move || scan(&src))
            .await
            .map_err(join_error)??;
        let total: u64 = items
            .iter()
            .filter(|i| i.meta.is_file())
            .map(|i| i.meta.len())
            .sum();
        progress.total.store(total, Ordering::Relaxed);
        progress.done.store(0, Ordering::Relaxed);

        // The lease goes first: from here on, what this upload may reuse is not collected.
        self.write_lease(run.id).await?;
        let mut leased = Instant::now();
        let from = run.in_place.then(|| Source {
            host: host_name(),
            path: source.display().to_string(),
        });
        let known = Arc::new(self.known(from.as_ref()).await?);

        let mut entries = entries_of(&items)?;
        let mut table = Table::default();
        // Files not read: the parent snapshot's chunks stand for them.
        let mut to_read = Vec::new();
        let parent = known.parent.as_deref();
        let parent_files = parent.map(files_by_path).unwrap_or_default();
        for (n, item) in items.iter().enumerate() {
            if !item.meta.is_file() {
                continue;
            }
            let seen = run.in_place.then(|| seen_of(&item.meta));
            let before = parent_files
                .get(item.rel.as_str())
                .filter(|before| unchanged(before, &entries[n], item.meta.len(), seen));
            if let (Some(parent), Some(before)) = (parent, before)
                && let EntryKind::File {
                    size, crc32c, data, ..
                } = &before.kind
            {
                let mut mine = Vec::with_capacity(data.len());
                for &c in data {
                    let at = parent
                        .chunks
                        .get(c as usize)
                        .and_then(|c| Some((c.id, known.chunks.get(&c.id)?)));
                    let Some((id, at)) = at else {
                        return Err(invalid("the snapshot before is inconsistent".into()));
                    };
                    mine.push(table.stored(id, at, false));
                }
                entries[n].kind = EntryKind::File {
                    size: *size,
                    crc32c: *crc32c,
                    data: mine,
                    seen,
                };
                progress.done.fetch_add(*size, Ordering::Relaxed);
                continue;
            }
            entries[n].kind = EntryKind::File {
                size: 0,
                crc32c: 0,
                data: Vec::new(),
                seen,
            };
            to_read.push((n, item.path.clone(), item.meta.len()));
        }

        // Chunks are read in order by one thread, hashed and (when new) compressed a few at a
        // time, and appended to packs in order; full packs upload while later chunks are
        // compressed.
        let (tx, mut rx) = tokio::sync::mpsc::channel(COMPRESSING * 2);
        let reader = tokio::task::spawn_blocking(move || read_files(to_read, tx));
        let mut packing = Packing {
            upload_id: run.id,
            seq: 0,
            current: None,
            uploads,
        };
        let mut hashing = FuturesOrdered::new();
        let mut group = Group::default();
        let mut input_done = false;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            while !input_done && hashing.len() < COMPRESSING {
                match rx.recv().await {
                    Some(Ok(Piece(file, buf))) => {
                        let known = known.clone();
                        hashing.push_back(tokio::task::spawn_blocking(move || {
                            let id = ChunkId::of(&buf);
                            let (len, crc32c) = (buf.len() as u32, crc32c::crc32c(&buf));
                            let new = (!known.chunks.contains_key(&id)).then(|| {
                                if buf.len() < SMALL_CHUNK {
                                    New::Small(buf)
                                } else {
                                    New::Frame(format::compress_chunk(&buf, LEVEL))
                                }
                            });
                            Hashed {
                                file,
                                id,
                                len,
                                crc32c,
                                new,
                            }
                        }))
                    }
                    Some(Err(e)) => return Err(e),
                    None => input_done = true,
                }
            }
            let Some(done) = hashing.next().await else {
                break;
            };
            let h = done.map_err(join_error)?;
            let index = match (h.new, known.chunks.get(&h.id)) {
                (_, Some(at)) => table.stored(h.id, at, false),
                // Twice in this upload: stored once.
                (Some(_), None) if table.by_id.contains_key(&h.id) => table.by_id[&h.id],
                (Some(New::Frame(frame)), None) => {
                    let c = self
                        .append(&mut packing, &mut table, &frame, h.id, h.len)
                        .await?;
                    table.add(c)
                }
                (Some(New::Small(raw)), None) => {
                    // Where it is stored is filled in when its frame is made.
                    let i = table.add(ChunkRef {
                        id: h.id,
                        pack: 0,
                        offset: 0,
                        clen: 0,
                        len: h.len,
                        at: 0,
                        flen: 0,
                    });
                    group.raw.extend_from_slice(&raw);
                    group.members.push((i, h.id, h.len));
                    if group.raw.len() >= GROUP_TARGET {
                        self.append_group(&mut packing, &mut table, &mut group)
                            .await?;
                    }
                    i
                }
                (None, None) => return Err(invalid("a chunk lost its bytes".into())),
            };
            if let EntryKind::File {
                size, crc32c, data, ..
            } = &mut entries[h.file].kind
            {
                data.push(index);
                *crc32c = crc32c::crc32c_combine(*crc32c, h.crc32c, h.len as usize);
                *size += u64::from(h.len);
            }
            progress.done.fetch_add(u64::from(h.len), Ordering::Relaxed);
            if leased.elapsed() >= LEASE_REFRESH {
                self.write_lease(run.id).await?;
                leased = Instant::now();
            }
        }
        reader.await.map_err(join_error)?;
        self.append_group(&mut packing, &mut table, &mut group)
            .await?;
        self.close_pack(&mut packing).await?;
        while let Some(r) = packing.uploads.join_next().await {
            r.map_err(join_error)??;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        // A lease not renewed in time may have been taken for dead, and a pack this snapshot
        // reuses collected meanwhile: check they are all still there.
        if leased.elapsed() >= LEASE_LIFETIME / 2 {
            self.write_lease(run.id).await?;
            self.check_reused(&table.reused).await?;
        }

        // One clock reading, so the expiry is exactly `ttl` after the creation time.
        let created = Utc::now();
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            name: name.to_string(),
            created,
            expires: self.ttl.and_then(|ttl| expiry(created, ttl)),
            source: from,
            packs: table.packs,
            chunks: table.chunks,
            entries,
        };
        self.put_manifest(manifest).await
    }

    /// Appends a new chunk's frame to the current pack, starting a new pack if needed and
    /// sending the full one off.
    async fn append(
        self: &Arc<Self>,
        packing: &mut Packing<'_>,
        table: &mut Table,
        frame: &[u8],
        id: ChunkId,
        len: u32,
    ) -> Result<ChunkRef, BackendError> {
        let (index, pack) = packing.pack(table);
        let c = pack.push_frame(index, frame, id, len);
        if pack.is_full() {
            self.close_pack(packing).await?;
        }
        Ok(c)
    }

    /// Stores the waiting small chunks as one frame in the current pack and fills in where
    /// each is.
    async fn append_group(
        self: &Arc<Self>,
        packing: &mut Packing<'_>,
        table: &mut Table,
        group: &mut Group,
    ) -> Result<(), BackendError> {
        let Group { raw, members } = std::mem::take(group);
        if members.is_empty() {
            return Ok(());
        }
        let flen = raw.len() as u32;
        let frame = tokio::task::spawn_blocking(move || format::compress_chunk(&raw, LEVEL))
            .await
            .map_err(join_error)?;
        let (index, pack) = packing.pack(table);
        let ids: Vec<(ChunkId, u32)> = members.iter().map(|&(_, id, len)| (id, len)).collect();
        let refs = pack.push_group(index, &frame, flen, &ids);
        for (&(i, ..), c) in members.iter().zip(refs) {
            if let Some(slot) = table.chunks.get_mut(i as usize) {
                *slot = c;
            }
        }
        if pack.is_full() {
            self.close_pack(packing).await?;
        }
        Ok(())
    }

    /// Sends the current pack to the store, waiting while too many are on their way.
    async fn close_pack(self: &Arc<Self>, packing: &mut Packing<'_>) -> Result<(), BackendError> {
        let Some((key, pack)) = packing.current.take() else {
            return Ok(());
        };
        while packing.uploads.len() >= UPLOADING {
            if let Some(r) = packing.uploads.join_next().await {
                r.map_err(join_error)??;
            }
        }
        let this = self.clone();
        let data = pack.finish();
        packing
            .uploads
            .spawn(async move { this.put_pack(key, data).await });
        Ok(())
    }

    /// Fails unless every pack in `packs` is still in the store.
    async fn check_reused(&self, packs: &HashSet<Arc<str>>) -> Result<(), BackendError> {
        for key in packs {
            match self.store.head(&StorePath::from(&**key)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(invalid(format!(
                        "{key}, which this snapshot shares with an earlier one, was collected \
                         while the upload was paused; make the snapshot again"
                    )));
                }
                Err(e) => return Err(self.failed(store_error(key, e))),
            }
        }
        Ok(())
    }

    /// Writes the manifest if no snapshot of its name exists: the snapshot now exists.
    async fn put_manifest(&self, manifest: Manifest) -> Result<SnapshotInfo, BackendError> {
        manifest
            .validate()
            .map_err(|e| invalid(format!("the source cannot be kept as a snapshot: {e}")))?;
        let name = manifest.name.clone();
        let bytes = manifest.to_bytes();
        let key = format::manifest_key(&name);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let result = self
            .store
            .put_opts(
                &StorePath::from(key.as_str()),
                PutPayload::from(bytes),
                opts,
            )
            .await;
        match result {
            Ok(r) => {
                self.counters.put_requests.fetch_add(1, Ordering::Relaxed);
                let version = r.e_tag.unwrap_or_else(|| "new".to_string());
                Ok(info_of(&manifest, &key, &version))
            }
            Err(e) => Err(self.failed(store_error(&format!("snapshot {name}"), e))),
        }
    }
}

/// The entries of the scanned tree: folders and links complete, files still without data.
fn entries_of(items: &[Item]) -> Result<Vec<Entry>, BackendError> {
    items
        .iter()
        .map(|i| {
            let kind = if i.meta.file_type().is_symlink() {
                let target = std::fs::read_link(&i.path).map_err(|e| io_error(&i.path, e))?;
                let target = target.to_str().ok_or_else(|| {
                    invalid(format!("{}: link target is not UTF-8", i.path.display()))
                })?;
                EntryKind::Symlink {
                    target: target.to_string(),
                }
            } else {
                EntryKind::Dir
            };
            Ok(Entry {
                path: i.rel.clone(),
                mode: i.meta.mode() & 0o7777,
                mtime: i.meta.mtime(),
                mtime_nsec: i.meta.mtime_nsec() as u32,
                kind,
            })
        })
        .collect()
}

/// The files of a manifest by path.
fn files_by_path(m: &Manifest) -> HashMap<&str, &Entry> {
    m.entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| (e.path.as_str(), e))
        .collect()
}

fn seen_of(meta: &std::fs::Metadata) -> Seen {
    Seen {
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec() as u32,
    }
}

/// Whether a file read in place is the one the parent snapshot holds at its path: same size,
/// mtime, ctime and inode. Without an identity (a staged copy) a file is always read.
fn unchanged(before: &Entry, now: &Entry, size: u64, seen: Option<Seen>) -> bool {
    let EntryKind::File {
        size: old_size,
        seen: old_seen,
        ..
    } = &before.kind
    else {
        return false;
    };
    seen.is_some()
        && *old_seen == seen
        && *old_size == size
        && (before.mtime, before.mtime_nsec) == (now.mtime, now.mtime_nsec)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_expiry_past_the_calendar_is_never() {
        let now = Utc::now();
        assert_eq!(
            expiry(now, Duration::from_secs(60)),
            Some(now + chrono::Duration::seconds(60))
        );
        // 99999999999 days: fits a Duration, not a date.
        assert_eq!(
            expiry(now, Duration::from_secs(99_999_999_999 * 86_400)),
            None
        );
        assert_eq!(expiry(now, Duration::MAX), None);
    }
}
