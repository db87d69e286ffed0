//! Files of a staged upload stored while the copy still runs: each file is chunked, compressed
//! and packed once its last writer closed it, under an id of the upload's own with a lease of
//! its own. When the upload settles, its run takes every file stored this way whose content
//! has not changed since, and reads only the others.
//!
//! The file system tells of every handle that could change a staged file's content, when it
//! opens and when it closes (`writing`, `written`), by the file's inode in the staging folder.
//! Each of these moves the file's epoch on, and a file stored counts only while no writer has
//! it open and its epoch is the one it was read at: content that changed after it was stored
//! is never taken for it. Nothing is durable until a drain: the run's drain stores the waiting
//! small chunks and the pack being filled, and waits for every pack to be in the store.
//!
//! What the upload stored and its snapshot does not use (files rewritten since) goes when the
//! snapshot is made; all of it goes when the upload is discarded, and after a daemon restart,
//! which forgets what was stored, by the upload id kept in the job's record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use snapfs_fs::backend::BackendError;
use snapfs_fs::format::ChunkId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::super::shared::{LEASE_REFRESH, Stored};
use super::super::{CloudBackend, lock};
use super::packing::{Group, Packer, Packing, Table};
use super::{Placed, join_error};
use crate::early::{Files, Held};
use crate::powers::StoresEarly;

/// A file as stored early: what its manifest entry needs.
pub(in crate::cloud) struct EarlyFile {
    pub size: u64,
    pub crc32c: u32,
    pub chunks: Vec<(ChunkId, Stored)>,
}

/// Files stored in one go between two looks for a run waiting.
const BATCH_FILES: usize = 16;

/// Queues `m` for the worker. A drain means a run waits on what is left: from then on it is
/// stored at normal priority, not on threads that a busy machine leaves no time.
fn queue(waiting: &mut VecDeque<Msg>, m: Msg, packing: &mut Packing<'_>) {
    if matches!(m, Msg::Drain(_)) {
        packing.idle = false;
    }
    waiting.push_back(m);
}

enum Msg {
    /// A file whose last writer closed it at `epoch`: store it.
    File { ino: u64, path: PathBuf, epoch: u64 },
    /// Make everything stored so far durable and answer the files that still count.
    Drain(oneshot::Sender<Result<HashMap<u64, EarlyFile>, BackendError>>),
    /// Wakes the worker to see it must stop.
    Stop,
}

/// One staged upload's early storing.
pub(in crate::cloud) struct Early {
    files: Files,
    tx: mpsc::UnboundedSender<Msg>,
    stop: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The file being read, which a removal makes it let go of.
    held: Arc<Held>,
}

/// A file stored early, by its index in the chunk table of the upload's packs.
struct Record {
    epoch: u64,
    size: u64,
    crc32c: u32,
    chunks: Vec<u32>,
}

#[async_trait]
impl StoresEarly for CloudBackend {
    /// What was stored of file `ino` no longer counts.
    fn writing(self: Arc<Self>, rt: &tokio::runtime::Handle, id: &str, _name: &str, ino: u64) {
        self.early(rt, id).files.writing(ino);
    }

    /// The last writer hands the file, now at `path` (when it still has one), to be stored.
    fn written(
        self: Arc<Self>,
        rt: &tokio::runtime::Handle,
        id: &str,
        _name: &str,
        ino: u64,
        path: Option<&Path>,
    ) {
        let early = self.early(rt, id);
        let epoch = early.files.written(ino);
        if let (Some(epoch), Some(path)) = (epoch, path) {
            // The worker ends only once the upload is: nothing is left to store then.
            let _ = early.tx.send(Msg::File {
                ino,
                path: path.to_path_buf(),
                epoch,
            });
        }
    }

    /// What was stored of the file no longer counts, and if it is being read, the reading lets
    /// go of it before this returns, so its space comes back.
    fn removed(&self, id: &str, ino: u64) {
        let Some(early) = lock(&self.early).get(id).cloned() else {
            return;
        };
        early.files.removed(ino);
        early.held.release(ino);
    }

    async fn discard(&self, id: &str) {
        self.end_early(id, &HashSet::new()).await;
        tracing::info!(
            upload_id = id,
            "what an upload stored while it was copied is removed"
        );
    }
}

/// One file of a batch being stored.
struct Reading {
    ino: u64,
    epoch: u64,
    size: u64,
    crc32c: u32,
    chunks: Vec<u32>,
    failed: bool,
}

impl CloudBackend {
    /// The early storing of upload `id`, started on `rt` if it has not begun.
    fn early(self: &Arc<Self>, rt: &tokio::runtime::Handle, id: &str) -> Arc<Early> {
        let mut all = lock(&self.early);
        if let Some(e) = all.get(id) {
            return e.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let early = Arc::new(Early {
            files: Files::default(),
            tx,
            stop: AtomicBool::new(false),
            worker: Mutex::new(None),
            held: Arc::default(),
        });
        let worker = rt.spawn(self.clone().store_early(id.to_string(), early.clone(), rx));
        *lock(&early.worker) = Some(worker);
        all.insert(id.to_string(), early.clone());
        early
    }

    /// The files of upload `id` stored early and unchanged since, by inode, once durable.
    /// Empty when nothing was, or when storing failed: the run then reads them itself.
    pub(super) async fn drain_early(&self, id: &str) -> HashMap<u64, EarlyFile> {
        let Some(early) = lock(&self.early).get(id).cloned() else {
            return HashMap::new();
        };
        let (tx, rx) = oneshot::channel();
        if early.tx.send(Msg::Drain(tx)).is_err() {
            return HashMap::new();
        }
        match rx.await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                tracing::info!(upload_id = id, error = %e, "files stored during the copy are read again");
                HashMap::new()
            }
            Err(_) => HashMap::new(),
        }
    }

    /// Ends the early storing of upload `id`: its worker stops, and its packs go but for those
    /// in `keep` (the ones its snapshot lists), then its lease.
    pub(in crate::cloud) async fn end_early(&self, id: &str, keep: &HashSet<String>) {
        let early = lock(&self.early).remove(id);
        if let Some(early) = early {
            early.stop.store(true, Ordering::Relaxed);
            // Ended already if it cannot take it.
            let _ = early.tx.send(Msg::Stop);
            let worker = lock(&early.worker).take();
            // The worker must be gone before its packs are listed for removal.
            drop(early);
            if let Some(worker) = worker
                && let Err(e) = worker.await
            {
                tracing::warn!(upload_id = id, error = %e, "storing files during the copy did not end cleanly");
            }
        }
        if let Err(e) = self.delete_upload(id, keep).await {
            tracing::warn!(upload_id = id, error = %e, "packs stored during the copy and not used are left to cleanup");
        }
        self.drop_lease(id).await;
    }

    /// The worker of upload `id`: stores the files it is handed, in batches of what waits,
    /// and answers drains. A store failure stops it for good; drains then answer it.
    async fn store_early(
        self: Arc<Self>,
        id: String,
        early: Arc<Early>,
        mut rx: mpsc::UnboundedReceiver<Msg>,
    ) {
        let mut uploads = JoinSet::new();
        // Its lease is written and what the remote holds is read at the first file.
        let mut started = false;
        let mut packer = Packer {
            known: Arc::default(),
            packing: Packing {
                upload_id: &id,
                seq: 0,
                current: None,
                uploads: &mut uploads,
                // Beside a copy into the mount: only what the copy leaves idle.
                idle: true,
            },
            table: Table::default(),
            group: Group::default(),
            leased: Instant::now(),
        };
        let mut records: HashMap<u64, Record> = HashMap::new();
        let mut broken: Option<BackendError> = None;
        let mut waiting = VecDeque::new();
        loop {
            if waiting.is_empty() {
                match tokio::time::timeout(LEASE_REFRESH, rx.recv()).await {
                    Ok(Some(m)) => queue(&mut waiting, m, &mut packer.packing),
                    Ok(None) => break,
                    Err(_) => {
                        // Idle: the lease is kept up while the upload may still use what
                        // was stored.
                        if started && broken.is_none() {
                            match self.write_lease(&id).await {
                                Ok(()) => packer.leased = Instant::now(),
                                Err(e) => broken = Some(e),
                            }
                        }
                        continue;
                    }
                }
            }
            while let Ok(m) = rx.try_recv() {
                queue(&mut waiting, m, &mut packer.packing);
            }
            if early.stop.load(Ordering::Relaxed) {
                break;
            }
            // Small batches, so that a run that starts waits for one at idle priority at most.
            let mut batch = Vec::new();
            while batch.len() < BATCH_FILES
                && let Some(Msg::File { .. }) = waiting.front()
            {
                if let Some(Msg::File { ino, path, epoch }) = waiting.pop_front() {
                    batch.push((ino, path, epoch));
                }
            }
            if !batch.is_empty() && broken.is_none() {
                let stored = match started {
                    true => Ok(()),
                    false => self.start_early(&mut packer).await,
                };
                started = true;
                let stored = match stored {
                    Ok(()) => {
                        self.store_batch(&mut packer, &early, batch, &mut records)
                            .await
                    }
                    Err(e) => Err(e),
                };
                broken = stored.err();
            }
            if matches!(waiting.front(), Some(Msg::File { .. })) {
                // More files than one batch: the next goes on.
                continue;
            }
            if let Some(Msg::Drain(reply)) = waiting.pop_front() {
                let answer = match &broken {
                    Some(e) => Err(e.clone()),
                    None if !started => Ok(HashMap::new()),
                    None => match self.flush(&mut packer).await {
                        Ok(()) => Ok(stored_files(&early, &packer.table, &records)),
                        Err(e) => {
                            broken = Some(e.clone());
                            Err(e)
                        }
                    },
                };
                // A run that stopped waiting needs no answer.
                let _ = reply.send(answer);
            }
        }
        // Pack writes under way end before the packs are listed for removal.
        drop(packer);
        while let Some(r) = uploads.join_next().await {
            if let Err(e) = r.map_err(join_error) {
                tracing::debug!(upload_id = id, error = %e, "a pack write stored during the copy ended");
            }
        }
    }

    /// Begins storing: the lease first, then what the remote holds.
    async fn start_early(&self, packer: &mut Packer<'_>) -> Result<(), BackendError> {
        self.write_lease(packer.packing.upload_id).await?;
        packer.leased = Instant::now();
        packer.known = Arc::new(self.known(None).await?);
        Ok(())
    }

    /// Stores the files of one batch that are still as they were when handed on; each that
    /// was read whole becomes a record.
    async fn store_batch(
        self: &Arc<Self>,
        packer: &mut Packer<'_>,
        early: &Early,
        batch: Vec<(u64, PathBuf, u64)>,
        records: &mut HashMap<u64, Record>,
    ) -> Result<(), BackendError> {
        let mut reading = Vec::new();
        let mut files = Vec::new();
        let mut inos = Vec::new();
        for (ino, path, epoch) in batch {
            if !early.files.current(ino, epoch) {
                continue;
            }
            // Another file may have taken the name since: only the inode handed on counts.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if std::os::unix::fs::MetadataExt::ino(&meta) != ino || !meta.is_file() {
                continue;
            }
            files.push((reading.len(), path, meta.len()));
            inos.push(ino);
            reading.push(Reading {
                ino,
                epoch,
                size: 0,
                crc32c: 0,
                chunks: Vec::new(),
                failed: false,
            });
        }
        let held = Some((early.held.clone(), inos));
        self.pack_files(packer, files, held, &early.stop, |placed| match placed {
            Placed::Chunk {
                file,
                index,
                len,
                crc32c,
            } => {
                if let Some(r) = reading.get_mut(file) {
                    r.chunks.push(index);
                    r.crc32c = crc32c::crc32c_combine(r.crc32c, crc32c, len as usize);
                    r.size += u64::from(len);
                }
            }
            Placed::Failed(file) => {
                if let Some(r) = reading.get_mut(file) {
                    r.failed = true;
                }
            }
        })
        .await?;
        for r in reading {
            // Written to while it was read: the next close hands it on again.
            if r.failed || !early.files.current(r.ino, r.epoch) {
                continue;
            }
            let record = Record {
                epoch: r.epoch,
                size: r.size,
                crc32c: r.crc32c,
                chunks: r.chunks,
            };
            records.insert(r.ino, record);
        }
        Ok(())
    }
}

/// The records that still count, with where each chunk is stored; the table is whole (the
/// packer was just flushed).
fn stored_files(
    early: &Early,
    table: &Table,
    records: &HashMap<u64, Record>,
) -> HashMap<u64, EarlyFile> {
    let packs: Vec<Arc<str>> = table.packs.iter().map(|p| Arc::from(p.as_str())).collect();
    let mut out = HashMap::new();
    for (&ino, r) in records {
        if !early.files.current(ino, r.epoch) {
            continue;
        }
        let chunks: Option<Vec<(ChunkId, Stored)>> = r
            .chunks
            .iter()
            .map(|&i| {
                let c = table.chunks.get(i as usize)?;
                Some((c.id, Stored::of(c, &packs)?))
            })
            .collect();
        if let Some(chunks) = chunks {
            let file = EarlyFile {
                size: r.size,
                crc32c: r.crc32c,
                chunks,
            };
            out.insert(ino, file);
        }
    }
    out
}
