//! Making a snapshot from a local file or folder: cut files into blocks, compress each block
//! into its own zstd frame, gather frames into packs, upload the packs, and write the manifest
//! last with a conditional put, so the snapshot exists exactly when it is whole.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use snapfs_fs::backend::{Backend, BackendError, SnapshotInfo};
use snapfs_fs::format::{
    self, BLOCK_SIZE, BlockRef, Entry, EntryKind, MANIFEST_FORMAT, Manifest, PackBuilder,
};
use tokio::task::JoinSet;

use super::{CloudBackend, info_of, store_error};
use crate::lifecycle::expiry;
use crate::powers::Progress;

/// Compression level: fast enough to keep up with a disk, still a good ratio.
const LEVEL: i32 = 3;
/// Blocks being compressed at once.
const COMPRESSING: usize = 3;
/// Packs being uploaded at once.
const UPLOADING: usize = 3;

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

impl CloudBackend {
    async fn put_pack(&self, key: String, data: Bytes) -> Result<(), BackendError> {
        let len = data.len() as u64;
        self.store
            .put(&StorePath::from(key.as_str()), PutPayload::from(data))
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        self.counters
            .put_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .put_bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes snapshot `name` from `source` under upload id `upload_id`. On any failure the packs
    /// written so far are deleted; the caller may also delete them by id after a crash.
    pub async fn commit(
        self: &Arc<Self>,
        name: &str,
        source: &Path,
        upload_id: &str,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let mut uploads = JoinSet::new();
        let result = self
            .write_snapshot(name, source, upload_id, progress, cancel, &mut uploads)
            .await;
        if result.is_err() {
            // Pack writes still under way must end before their packs are listed for removal:
            // an aborted task's blocking write could otherwise land after the cleanup.
            while uploads.join_next().await.is_some() {}
            if let Err(e) = self.delete_upload(upload_id).await {
                tracing::warn!(upload_id, error = %e, "could not remove the packs of a failed upload");
            }
        }
        result
    }

    async fn write_snapshot(
        self: &Arc<Self>,
        name: &str,
        source: &Path,
        upload_id: &str,
        progress: &Progress,
        cancel: &AtomicBool,
        uploads: &mut JoinSet<Result<(), BackendError>>,
    ) -> Result<SnapshotInfo, BackendError> {
        self.check_name(name)?;
        let src = source.to_path_buf();
        let items = tokio::task::spawn_blocking(move || scan(&src))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))??;
        let total: u64 = items
            .iter()
            .filter(|i| i.meta.is_file())
            .map(|i| i.meta.len())
            .sum();
        progress.total.store(total, Ordering::Relaxed);
        progress.done.store(0, Ordering::Relaxed);

        let mut entries: Vec<Entry> = items
            .iter()
            .map(|i| Entry {
                path: i.rel.clone(),
                mode: i.meta.mode() & 0o7777,
                mtime: i.meta.mtime(),
                mtime_nsec: i.meta.mtime_nsec() as u32,
                kind: EntryKind::Dir,
            })
            .collect();
        for (item, entry) in items.iter().zip(entries.iter_mut()) {
            if item.meta.file_type().is_symlink() {
                let target = std::fs::read_link(&item.path).map_err(|e| io_error(&item.path, e))?;
                let target = target.to_str().ok_or_else(|| {
                    invalid(format!("{}: link target is not UTF-8", item.path.display()))
                })?;
                entry.kind = EntryKind::Symlink {
                    target: target.to_string(),
                };
            }
        }

        // Blocks are read in order by one thread, compressed a few at a time, and appended to
        // packs in order; full packs upload while later blocks are compressed.
        let files: Vec<(usize, PathBuf, u64)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.meta.is_file())
            .map(|(n, i)| (n, i.path.clone(), i.meta.len()))
            .collect();
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<(usize, Vec<u8>), BackendError>>(COMPRESSING * 2);
        let reader = tokio::task::spawn_blocking(move || {
            for (n, path, size) in files {
                let send = |m| tx.blocking_send(m).is_ok();
                let mut f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        send(Err(io_error(&path, e)));
                        return;
                    }
                };
                let mut left = size;
                while left > 0 {
                    let want = left.min(BLOCK_SIZE as u64) as usize;
                    let mut buf = vec![0u8; want];
                    if let Err(e) = f.read_exact(&mut buf) {
                        send(Err(invalid(format!(
                            "{}: changed while being read ({e})",
                            path.display()
                        ))));
                        return;
                    }
                    left -= want as u64;
                    if !send(Ok((n, buf))) {
                        return;
                    }
                }
                // A file that grew after it was measured would be cut short: refuse it.
                let mut probe = [0u8; 1];
                if matches!(f.read(&mut probe), Ok(1)) {
                    send(Err(invalid(format!(
                        "{}: changed while being read",
                        path.display()
                    ))));
                    return;
                }
                if !send(Ok((n, Vec::new()))) {
                    return;
                }
            }
        });

        let mut packs: Vec<String> = Vec::new();
        let mut pack = PackBuilder::new();
        let mut compressing = FuturesOrdered::new();
        let mut file_state: Vec<(u64, u32, Vec<BlockRef>)> = vec![(0, 0, Vec::new()); items.len()];
        let mut input_done = false;

        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(BackendError::Other("cancelled: new writes arrived".into()));
            }
            while !input_done && compressing.len() < COMPRESSING {
                match rx.recv().await {
                    Some(Ok((n, buf))) => {
                        compressing.push_back(tokio::task::spawn_blocking(move || {
                            if buf.is_empty() {
                                return (n, None);
                            }
                            let (frame, crc) = format::compress_block(&buf, LEVEL);
                            (n, Some((frame, crc, buf.len() as u32)))
                        }))
                    }
                    Some(Err(e)) => return Err(e),
                    None => input_done = true,
                }
            }
            let Some(done) = compressing.next().await else {
                break;
            };
            let (n, block) = done.map_err(|e| BackendError::Other(e.to_string()))?;
            let state = &mut file_state[n];
            match block {
                // End of file: its entry is complete.
                None => {
                    entries[n].kind = EntryKind::File {
                        size: state.0,
                        crc32c: state.1,
                        blocks: std::mem::take(&mut state.2),
                    };
                }
                Some((frame, crc, len)) => {
                    let pack_index = packs.len() as u32;
                    state.2.push(pack.push_frame(pack_index, &frame, len, crc));
                    state.1 = crc32c::crc32c_combine(state.1, crc, len as usize);
                    state.0 += u64::from(len);
                    progress.done.fetch_add(u64::from(len), Ordering::Relaxed);
                    if pack.is_full() {
                        self.start_pack(uploads, &mut packs, &mut pack, upload_id)
                            .await?;
                    }
                }
            }
        }
        reader
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        if !pack.is_empty() {
            self.start_pack(uploads, &mut packs, &mut pack, upload_id)
                .await?;
        }
        while let Some(r) = uploads.join_next().await {
            r.map_err(|e| BackendError::Other(e.to_string()))??;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Other("cancelled: new writes arrived".into()));
        }

        // One clock reading, so the expiry is exactly `ttl` after the creation time.
        let created = Utc::now();
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            name: name.to_string(),
            created,
            expires: self.ttl.and_then(|ttl| expiry(created, ttl)),
            packs,
            entries,
        };
        manifest
            .validate()
            .map_err(|e| invalid(format!("the source cannot be kept as a snapshot: {e}")))?;
        let bytes = manifest.to_bytes();
        let key = format::manifest_key(name);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let result = self
            .store
            .put_opts(
                &StorePath::from(key.as_str()),
                PutPayload::from(bytes.clone()),
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

    async fn start_pack(
        self: &Arc<Self>,
        uploads: &mut JoinSet<Result<(), BackendError>>,
        packs: &mut Vec<String>,
        pack: &mut PackBuilder,
        upload_id: &str,
    ) -> Result<(), BackendError> {
        while uploads.len() >= UPLOADING {
            if let Some(r) = uploads.join_next().await {
                r.map_err(|e| BackendError::Other(e.to_string()))??;
            }
        }
        let key = format::pack_key(upload_id, packs.len() as u32);
        packs.push(key.clone());
        let data = std::mem::take(pack).finish();
        let this = self.clone();
        uploads.spawn(async move { this.put_pack(key, data).await });
        Ok(())
    }
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
