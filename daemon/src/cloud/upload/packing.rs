//! Where an upload's new chunks go: the manifest's chunk table, the pack being filled and sent
//! off, and the frames that small chunks share.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use snapfs_fs::backend::BackendError;
use snapfs_fs::format::{self, ChunkId, ChunkRef, PackBuilder};
use tokio::task::JoinSet;

use super::super::shared::{Known, Stored};
use super::super::{CloudBackend, store_error};
use super::{LEVEL, UPLOADING, idle, join_error};

/// Small new chunks waiting for their frame: their bytes back to back, and for each its index
/// in the chunk table, id and length.
#[derive(Default)]
pub(super) struct Group {
    pub raw: Vec<u8>,
    pub members: Vec<(u32, ChunkId, u32)>,
}

/// The chunk table of the manifest being written, and its packs.
#[derive(Default)]
pub(super) struct Table {
    pub packs: Vec<String>,
    pub pack_index: HashMap<Arc<str>, u32>,
    pub chunks: Vec<ChunkRef>,
    pub by_id: HashMap<ChunkId, u32>,
    /// Packs of earlier snapshots this one refers to.
    pub reused: HashSet<Arc<str>>,
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

    /// The index of a chunk an earlier snapshot stored; its pack counts as reused.
    pub(super) fn stored(&mut self, id: ChunkId, at: &Stored) -> u32 {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        self.reused.insert(at.pack.clone());
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

    pub(super) fn add(&mut self, c: ChunkRef) -> u32 {
        let i = self.chunks.len() as u32;
        self.by_id.insert(c.id, i);
        self.chunks.push(c);
        i
    }
}

/// An upload while it places chunks: what the remote holds, the chunk table, the pack being
/// filled and the small chunks waiting for their frame.
pub(super) struct Packer<'a> {
    pub known: Arc<Known>,
    pub packing: Packing<'a>,
    pub table: Table,
    pub group: Group,
    /// When the upload's lease was last written.
    pub leased: Instant,
}

/// The pack being filled and the packs on their way to the store.
pub(super) struct Packing<'a> {
    pub upload_id: &'a str,
    pub seq: u32,
    pub current: Option<(Arc<str>, PackBuilder)>,
    pub uploads: &'a mut JoinSet<Result<(), BackendError>>,
    /// Compress at the lowest CPU priority (see `idle`).
    pub idle: bool,
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
    pub(in crate::cloud) async fn put_pack(
        &self,
        key: Arc<str>,
        data: Bytes,
    ) -> Result<(), BackendError> {
        let len = data.len() as u64;
        self.store
            .put(&StorePath::from(&*key), PutPayload::from(data))
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        self.counters.put_requests.fetch_add(1, Ordering::Relaxed);
        self.counters.put_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Appends a new chunk's frame to the current pack, starting a new pack if needed and
    /// sending the full one off.
    pub(super) async fn append(
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
    pub(super) async fn append_group(
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
        let frame = idle::run(packing.idle, move || format::compress_chunk(&raw, LEVEL)).await?;
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
    pub(super) async fn close_pack(
        self: &Arc<Self>,
        packing: &mut Packing<'_>,
    ) -> Result<(), BackendError> {
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
}
