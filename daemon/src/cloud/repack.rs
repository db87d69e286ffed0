//! Repacking. A pack most of whose bytes no snapshot uses any more (its other chunks belonged
//! to snapshots since deleted, or to files rewritten while they were being copied) has the
//! frames still in use copied, checked, into new packs, and every manifest that lists it is
//! written again naming the new place. The old pack is then listed by no manifest; a record
//! under `snapfs/retired/` keeps it for the cleanup's grace period, so that a reader that
//! opened a snapshot before the change still finds its bytes, and cleanup deletes it after.
//!
//! Safe at every step. New packs are written under a lease before any manifest names them.
//! Each manifest is replaced whole, and only if it is still the version read: a snapshot
//! deleted or replaced meanwhile is left as it is and keeps the old pack in use. An upload in
//! flight that reuses a chunk of the old pack lists the old pack in its manifest, which keeps
//! it. A repack killed at any point leaves manifests that point either at the old packs or at
//! new ones already written, and packs no manifest lists, which cleanup collects as orphans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use snapfs_fs::backend::{Backend, BackendError};
use snapfs_fs::format::{self, ChunkRef, Manifest, PackBuilder};

use super::{CloudBackend, lock, store_error};
use crate::powers::{Progress, Run};

/// A pack is repacked once the frames in use make up at most this share of it, in percent.
const LIVE_AT_MOST_PERCENT: u64 = 50;

/// What repacking did, or in a dry run would do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repacked {
    /// Packs whose frames in use now live in new packs.
    pub packs: u64,
    /// Bytes of those packs no snapshot uses: freed once cleanup deletes them.
    pub dead_bytes: u64,
}

/// One frame some manifest uses, in a pack to repack: where it is and the chunks it holds.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    offset: u64,
    clen: u32,
    /// Each chunk of the frame that a manifest names, once.
    members: Vec<ChunkRef>,
}

/// A pack to repack: its size and the frames in use, by offset.
#[derive(Debug, Clone, PartialEq)]
struct Doomed {
    size: u64,
    frames: Vec<Live>,
}

impl Doomed {
    fn live_bytes(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.clen)).sum()
    }
}

/// Which packs to repack, given every manifest of the remote and the size of every pack in
/// the store. A pack is left alone when `skip` says so, when it is missing from the store,
/// or when manifests disagree on its frames (a frame named with two lengths, or frames that
/// overlap): what is there is not understood well enough to move.
fn plan(
    manifests: &[Arc<Manifest>],
    sizes: &HashMap<String, u64>,
    skip: impl Fn(&str) -> bool,
) -> BTreeMap<String, Doomed> {
    let mut frames: HashMap<&str, BTreeMap<u64, Live>> = HashMap::new();
    let mut confused: HashSet<&str> = HashSet::new();
    for m in manifests {
        for c in &m.chunks {
            let Some(pack) = m.packs.get(c.pack as usize) else {
                continue;
            };
            let live = frames
                .entry(pack.as_str())
                .or_default()
                .entry(c.offset)
                .or_insert_with(|| Live {
                    offset: c.offset,
                    clen: c.clen,
                    members: Vec::new(),
                });
            if live.clen != c.clen {
                confused.insert(pack);
            }
            let known = live
                .members
                .iter()
                .any(|k| (k.id, k.at, k.len, k.flen) == (c.id, c.at, c.len, c.flen));
            if !known {
                live.members.push(ChunkRef { pack: 0, ..*c });
            }
        }
    }
    let mut out = BTreeMap::new();
    for (pack, by_offset) in frames {
        let Some(&size) = sizes.get(pack) else {
            continue;
        };
        if skip(pack) || confused.contains(pack) {
            continue;
        }
        let frames: Vec<Live> = by_offset.into_values().collect();
        let overlap = frames
            .windows(2)
            .any(|w| w[0].offset + u64::from(w[0].clen) > w[1].offset);
        let beyond = frames
            .last()
            .is_some_and(|f| f.offset + u64::from(f.clen) > size);
        if overlap || beyond {
            continue;
        }
        let doomed = Doomed { size, frames };
        let live = doomed.live_bytes();
        if live < size && live * 100 <= size * LIVE_AT_MOST_PERCENT {
            out.insert(pack.to_string(), doomed);
        }
    }
    out
}

/// Where the frames of one repacked pack went: each frame's offset to its new pack and offset.
type Moved = HashMap<u64, (Arc<str>, u64)>;

/// Where the frames of repacked packs went, by old pack.
type Moves = HashMap<String, Moved>;

/// Points every chunk of `m` in a moved frame at its new place, and makes its packs those its
/// chunks use, in order of first use; false (and `m` untouched) when it lists no moved pack.
fn repoint(m: &mut Manifest, moves: &Moves) -> bool {
    let moved: Vec<Option<&Moved>> = m.packs.iter().map(|p| moves.get(p.as_str())).collect();
    if moved.iter().all(Option::is_none) {
        return false;
    }
    let mut packs: Vec<String> = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut chunks = Vec::with_capacity(m.chunks.len());
    for c in &m.chunks {
        let i = c.pack as usize;
        // Validation saw to it that every chunk names a pack of the manifest.
        let Some(old) = m.packs.get(i) else {
            return false;
        };
        let (pack, offset): (&str, u64) = match moved[i].and_then(|f| f.get(&c.offset)) {
            Some((new, offset)) => (new, *offset),
            None => (old, c.offset),
        };
        let n = match index.get(pack) {
            Some(&n) => n,
            None => {
                let n = packs.len() as u32;
                packs.push(pack.to_string());
                index.insert(pack, n);
                n
            }
        };
        chunks.push(ChunkRef {
            pack: n,
            offset,
            ..*c
        });
    }
    m.packs = packs;
    m.chunks = chunks;
    true
}

impl CloudBackend {
    /// Repacks every pack of the remote whose frames in use make up at most
    /// [`LIVE_AT_MOST_PERCENT`] of it, but for packs of the uploads in `running`. In a dry run
    /// nothing is written and the answer says what would be done. `progress` counts the bytes
    /// in use to move (see `HasLeftovers::collect_leftovers`).
    pub(super) async fn repack(
        &self,
        running: &HashSet<String>,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<Repacked, BackendError> {
        if self.no_conditional_update.load(Ordering::Relaxed) {
            return Ok(Repacked::default());
        }
        // Planned before the lease: a snapshot deleted after this only means frames copied in
        // vain, and a pack deleted after it is skipped when it cannot be read.
        let (doomed, listing) = self.doomed(running).await?;
        if dry_run || doomed.is_empty() {
            return Ok(Repacked {
                packs: doomed.len() as u64,
                dead_bytes: doomed.values().map(|d| d.size - d.live_bytes()).sum(),
            });
        }
        let to_move: u64 = doomed.values().map(Doomed::live_bytes).sum();
        progress.total.fetch_add(to_move, Ordering::Relaxed);
        let id = format!("repack-{}", Run::new_id());
        // The lease goes first: until the manifests name them, the new packs are orphans that
        // another daemon's cleanup would otherwise collect.
        self.write_lease(&id).await?;
        let mut listed = HashSet::new();
        let result = self
            .repack_under(&id, &doomed, &listing, &mut listed, progress)
            .await;
        // New packs no manifest came to name (every manifest changed meanwhile, or a failure).
        if let Err(e) = self.delete_upload(&id, &listed).await {
            tracing::warn!(repack = id, error = %e, "new packs of a repack left to cleanup");
        }
        self.drop_lease(&id).await;
        result
    }

    /// The packs to repack, from every manifest of the remote, and the snapshots that list
    /// them; a manifest that cannot be read stops it, since the frames it uses are unknown.
    async fn doomed(
        &self,
        running: &HashSet<String>,
    ) -> Result<(BTreeMap<String, Doomed>, Vec<String>), BackendError> {
        let sizes: HashMap<String, u64> = self
            .list_under(format::PACK_PREFIX, "packs")
            .await?
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        let mut manifests = Vec::new();
        for (name, version) in self.manifest_objects().await? {
            match self.manifest(&name, &version).await {
                Ok(m) => manifests.push(m),
                Err(BackendError::NotFound(_)) => {}
                Err(e) => {
                    return Err(BackendError::Other(format!(
                        "packs not repacked: snapshot {name} cannot be read ({e})"
                    )));
                }
            }
        }
        let upload_of = |pack: &str| {
            pack.strip_prefix(format::PACK_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .map(str::to_string)
        };
        let doomed = plan(&manifests, &sizes, |pack| {
            upload_of(pack).is_some_and(|u| running.contains(&u))
        });
        let listing = manifests
            .iter()
            .filter(|m| m.packs.iter().any(|p| doomed.contains_key(p)))
            .map(|m| m.name.clone())
            .collect();
        Ok((doomed, listing))
    }

    async fn repack_under(
        &self,
        id: &str,
        doomed: &BTreeMap<String, Doomed>,
        listing: &[String],
        listed: &mut HashSet<String>,
        progress: &Progress,
    ) -> Result<Repacked, BackendError> {
        let mut moves = Moves::new();
        let mut done = Repacked::default();
        let mut retired = Vec::new();
        let mut seq = 0u32;
        let mut current: Option<(Arc<str>, PackBuilder)> = None;
        for (pack, d) in doomed {
            let mut frames_moved = Moved::new();
            let frames = match self.live_frames(pack, d).await {
                Ok(frames) => frames,
                Err(e) => {
                    tracing::warn!(pack, error = %e, "pack not repacked; `snapfs verify` names the files a damaged chunk belongs to");
                    progress.done.fetch_add(d.live_bytes(), Ordering::Relaxed);
                    continue;
                }
            };
            for (live, frame) in d.frames.iter().zip(frames) {
                let (key, builder) = current.get_or_insert_with(|| {
                    seq += 1;
                    (Arc::from(format::pack_key(id, seq - 1)), PackBuilder::new())
                });
                let placed = builder.push_frame(0, &frame, format::ChunkId([0; 32]), 0);
                frames_moved.insert(live.offset, (key.clone(), placed.offset));
                progress
                    .done
                    .fetch_add(u64::from(live.clen), Ordering::Relaxed);
                if builder.is_full()
                    && let Some((key, builder)) = current.take()
                {
                    self.put_pack(key, builder.finish()).await?;
                }
            }
            moves.insert(pack.clone(), frames_moved);
            retired.push(pack.clone());
            done.packs += 1;
            done.dead_bytes += d.size - d.live_bytes();
        }
        if let Some((key, builder)) = current.take() {
            self.put_pack(key, builder.finish()).await?;
        }
        if retired.is_empty() {
            return Ok(Repacked::default());
        }
        self.write_retired(id, retired).await?;
        // The snapshots that listed them when planned. One made since that uses a chunk of
        // them lists the old pack and keeps it in use.
        let mut replaced = 0usize;
        for name in listing {
            if self.no_conditional_update.load(Ordering::Relaxed) {
                return Ok(Repacked::default());
            }
            if let Some(packs) = self.rewrite(name, &moves).await? {
                listed.extend(packs);
                replaced += 1;
            }
        }
        if replaced == 0 {
            // Every snapshot that listed them changed or went meanwhile: nothing moved.
            return Ok(Repacked::default());
        }
        tracing::info!(
            target = self.path(),
            packs = done.packs,
            dead_bytes = done.dead_bytes,
            snapshots = replaced,
            "packs repacked; the old ones go with cleanup after its grace period"
        );
        Ok(done)
    }

    /// The frames in use of one pack to repack, in its order, each checked: read in runs of
    /// frames stored back to back.
    async fn live_frames(&self, pack: &str, d: &Doomed) -> Result<Vec<Bytes>, BackendError> {
        let mut out = Vec::with_capacity(d.frames.len());
        let mut i = 0;
        while i < d.frames.len() {
            let start = d.frames[i].offset;
            let mut end = start + u64::from(d.frames[i].clen);
            let mut j = i + 1;
            while j < d.frames.len() && d.frames[j].offset == end {
                end += u64::from(d.frames[j].clen);
                j += 1;
            }
            let run = self.read_range(pack, start..end).await?;
            for live in &d.frames[i..j] {
                let from = (live.offset - start) as usize;
                let to = from + live.clen as usize;
                if to > run.len() {
                    return Err(BackendError::Corrupt(format!(
                        "{pack} ends before offset {}",
                        live.offset
                    )));
                }
                let frame = run.slice(from..to);
                let members = live.members.clone();
                let checked = frame.clone();
                tokio::task::spawn_blocking(move || format::check_frame(&checked, &members))
                    .await
                    .map_err(|e| BackendError::Other(e.to_string()))?
                    .map_err(|e| BackendError::Corrupt(format!("{pack}: {e}")))?;
                out.push(frame);
            }
            i = j;
        }
        Ok(out)
    }

    /// Writes snapshot `name`'s manifest again with the chunks of moved frames at their new
    /// place, if it still is the manifest read; answers the packs it now lists, or None when
    /// it was left as it is (nothing of it moved, or it changed or went meanwhile).
    async fn rewrite(
        &self,
        name: &str,
        moves: &Moves,
    ) -> Result<Option<Vec<String>>, BackendError> {
        let key = format::manifest_key(name);
        let path = StorePath::from(key.as_str());
        let got = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(store_error(&key, e))),
        };
        let meta = got.meta.clone();
        let old = got
            .bytes()
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        let parsed = old.clone();
        let Ok(mut manifest) = tokio::task::spawn_blocking(move || Manifest::from_bytes(&parsed))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?
        else {
            return Ok(None);
        };
        if !repoint(&mut manifest, moves) {
            return Ok(None);
        }
        if let Err(e) = manifest.validate() {
            tracing::warn!(snapshot = name, error = %e, "snapshot left on the packs it lists");
            return Ok(None);
        }
        let packs = manifest.packs.clone();
        let bytes = manifest.to_bytes();
        let replaced = match &self.local_root {
            Some(root) => {
                let file = root.join(&key);
                tokio::task::spawn_blocking(move || exchange_if_same(&file, &old, &bytes))
                    .await
                    .map_err(|e| BackendError::Other(e.to_string()))?
                    .map_err(|e| BackendError::Other(format!("snapshot {name}: {e}")))?
            }
            None => {
                let opts = PutOptions {
                    mode: PutMode::Update(UpdateVersion {
                        e_tag: meta.e_tag,
                        version: meta.version,
                    }),
                    ..Default::default()
                };
                match self
                    .store
                    .put_opts(&path, PutPayload::from(bytes), opts)
                    .await
                {
                    Ok(_) => true,
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => false,
                    Err(object_store::Error::NotImplemented { .. }) => {
                        self.no_conditional_update.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            target = self.path(),
                            "packs are not repacked: the store cannot replace an object only if \
                             it is unchanged (for S3, set conditional_put = \"etag\" where the \
                             server supports If-Match); unused bytes in packs stay until then"
                        );
                        return Ok(None);
                    }
                    Err(e) => return Err(self.failed(store_error(&key, e))),
                }
            }
        };
        if replaced {
            // Asked of the store when next needed, rather than the version before.
            lock(&self.versions).remove(name);
        }
        Ok(replaced.then_some(packs))
    }
}

/// Puts `new` in place of the file at `path` if that file still holds `old`, atomically: the
/// two trade places (so a file deleted meanwhile stays deleted), and if what came out is not
/// `old` they trade back. Answers whether `new` is in place.
fn exchange_if_same(path: &Path, old: &[u8], new: &[u8]) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;

    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    // The store's own name for a write in progress (`KEY#N`): if this process dies here,
    // cleanup collects the file as a partial write.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!("#{}{n:06}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(new)?;
    f.sync_all()?;
    drop(f);
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))
    };
    let (a, b) = (c(&tmp)?, c(path)?);
    let exchange = || {
        // SAFETY: both are valid NUL-terminated paths; the call reads nothing else.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let swapped = match exchange() {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let same = swapped && std::fs::read(&tmp)? == old;
    if swapped && !same {
        exchange()?;
    }
    std::fs::remove_file(&tmp)?;
    Ok(same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use format::{ChunkId, MANIFEST_FORMAT};

    fn chunk(n: u8, pack: u32, offset: u64, clen: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId([n; 32]),
            pack,
            offset,
            clen,
            len: 100,
            at: 0,
            flen: 0,
        }
    }

    fn manifest(packs: &[&str], chunks: Vec<ChunkRef>) -> Arc<Manifest> {
        Arc::new(Manifest {
            format: MANIFEST_FORMAT.into(),
            name: "s".into(),
            created: Utc::now(),
            expires: None,
            source: None,
            packs: packs.iter().map(|p| p.to_string()).collect(),
            chunks,
            entries: Vec::new(),
        })
    }

    fn sizes(of: &[(&str, u64)]) -> HashMap<String, u64> {
        of.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn packs_at_most_half_in_use_are_repacked() {
        let a = manifest(
            &["p/half", "p/full"],
            vec![chunk(1, 0, 0, 50), chunk(2, 1, 0, 100)],
        );
        let b = manifest(&["p/half"], vec![chunk(1, 0, 0, 50), chunk(3, 0, 50, 10)]);
        let doomed = plan(&[a, b], &sizes(&[("p/half", 120), ("p/full", 100)]), |_| {
            false
        });
        assert_eq!(doomed.keys().collect::<Vec<_>>(), ["p/half"]);
        let d = &doomed["p/half"];
        assert_eq!(d.live_bytes(), 60);
        assert_eq!(
            d.frames.iter().map(|f| f.offset).collect::<Vec<_>>(),
            [0, 50]
        );
        assert_eq!(
            d.frames[0].members.len(),
            1,
            "a chunk two manifests name is one"
        );
    }

    #[test]
    fn packs_not_understood_or_not_there_are_left_alone() {
        let lying = manifest(
            &["p/x", "p/y", "p/z"],
            vec![
                chunk(1, 0, 0, 10),
                chunk(2, 1, 0, 10),
                chunk(3, 1, 5, 10),
                chunk(4, 2, 0, 10),
            ],
        );
        let other = manifest(&["p/x"], vec![chunk(1, 0, 0, 11)]);
        let s = sizes(&[("p/x", 1000), ("p/y", 1000)]);
        // p/x: one frame with two lengths; p/y: overlapping frames; p/z: not in the store.
        assert!(plan(&[lying.clone(), other], &s, |_| false).is_empty());
        let skipped = plan(&[lying], &sizes(&[("p/x", 1000)]), |p| p == "p/x");
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_manifest_is_rewritten_only_where_frames_moved() {
        let m = manifest(
            &["p/old", "p/kept"],
            vec![chunk(1, 0, 40, 10), chunk(2, 1, 0, 10), chunk(3, 0, 0, 5)],
        );
        let new: Arc<str> = Arc::from("p/new");
        let frames = HashMap::from([(40, (new.clone(), 0)), (0, (new, 10))]);
        let moves = Moves::from([("p/old".to_string(), frames)]);
        let mut r = (*m).clone();
        assert!(repoint(&mut r, &moves));
        assert_eq!(r.packs, ["p/new", "p/kept"]);
        assert_eq!(
            r.chunks
                .iter()
                .map(|c| (c.pack, c.offset))
                .collect::<Vec<_>>(),
            [(0, 0), (1, 0), (0, 10)]
        );
        let mut untouched = (*m).clone();
        assert!(!repoint(&mut untouched, &Moves::new()));
        assert_eq!(untouched.packs, m.packs);
    }

    #[test]
    fn a_file_is_exchanged_only_while_it_holds_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.manifest.zst");
        std::fs::write(&f, b"v1").unwrap();
        assert!(exchange_if_same(&f, b"v1", b"v2").unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"v2");
        // Changed since it was read: left as it is.
        assert!(!exchange_if_same(&f, b"v1", b"v3").unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"v2");
        // Deleted since: stays deleted.
        std::fs::remove_file(&f).unwrap();
        assert!(!exchange_if_same(&f, b"v2", b"v4").unwrap());
        assert!(!f.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file left"
        );
    }
}
