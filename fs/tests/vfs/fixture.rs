//! Snapshots built with the real format, a standard bucket, and a `Vfs` over it with helpers that
//! walk paths the way the kernel would.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use snapfs_fs::backend::{SnapshotInfo, SnapshotState};
use snapfs_fs::cache::{BlockCache, CacheConfig};
use snapfs_fs::format::{
    self, BLOCK_SIZE, ChunkId, ChunkRef, EntryKind, MANIFEST_FORMAT, Manifest, PackBuilder,
    compress_chunk, manifest_key, pack_key,
};
use snapfs_fs::tree::SnapshotTree;
use snapfs_fs::vfs::{Entry, ROOT_INO, Staging, Vfs, VfsConfig, VfsError, VfsResult};

use crate::fake::{FakeBackend, FakeHooks, FakeTargets};

/// The id of the standard fixture's one target, `cloud/local` (the first one added).
pub const LOCAL: snapfs_fs::vfs::TargetId = snapfs_fs::vfs::TargetId(1);

/// Bytes that do not compress, so frames are as large as blocks and offsets are far apart.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64: deterministic and dependency-free.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn time(secs: u64, nanos: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

pub fn date(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|d| d.to_utc())
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
}

/// Builds one snapshot: its manifest entries and the single pack holding its file data.
pub struct SnapshotBuilder {
    name: String,
    pack_key: String,
    pack: PackBuilder,
    chunks: Vec<ChunkRef>,
    entries: Vec<format::Entry>,
}

/// A manifest entry of `kind` at `path`.
fn entry(path: &str, perm: u16, mtime: SystemTime, kind: EntryKind) -> format::Entry {
    let since = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("test times are after the epoch");
    format::Entry {
        path: path.to_string(),
        mode: u32::from(perm),
        mtime: since.as_secs() as i64,
        mtime_nsec: since.subsec_nanos(),
        kind,
    }
}

impl SnapshotBuilder {
    /// A folder snapshot whose root has `perm` and `mtime`.
    pub fn folder(name: &str, perm: u16, mtime: SystemTime) -> Self {
        Self::empty(name).dir("", perm, mtime)
    }

    /// A one-file snapshot holding `data`.
    pub fn file(name: &str, data: &[u8], perm: u16, mtime: SystemTime) -> Self {
        Self::empty(name).add_file("", data, perm, mtime)
    }

    fn empty(name: &str) -> Self {
        SnapshotBuilder {
            name: name.to_string(),
            pack_key: pack_key(&format!("upload-{name}"), 0),
            pack: PackBuilder::new(),
            chunks: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Its pack is named for upload `upload_id`, as every upload writes packs of its own.
    pub fn in_upload(mut self, upload_id: &str) -> Self {
        self.pack_key = pack_key(upload_id, 0);
        self
    }

    pub fn dir(mut self, path: &str, perm: u16, mtime: SystemTime) -> Self {
        self.entries.push(entry(path, perm, mtime, EntryKind::Dir));
        self
    }

    pub fn add_file(mut self, path: &str, data: &[u8], perm: u16, mtime: SystemTime) -> Self {
        let mut indexes = Vec::new();
        for chunk in data.chunks(BLOCK_SIZE) {
            let frame = compress_chunk(chunk, 1);
            let c = self
                .pack
                .push_frame(0, &frame, ChunkId::of(chunk), chunk.len() as u32);
            indexes.push(self.chunks.len() as u32);
            self.chunks.push(c);
        }
        let kind = EntryKind::File {
            size: data.len() as u64,
            crc32c: crc32c::crc32c(data),
            data: indexes,
            seen: None,
        };
        self.entries.push(entry(path, perm, mtime, kind));
        self
    }

    /// An empty file: a file with no blocks at all.
    pub fn empty_file(self, path: &str, perm: u16, mtime: SystemTime) -> Self {
        self.add_file(path, b"", perm, mtime)
    }

    pub fn symlink(mut self, path: &str, target: &str, mtime: SystemTime) -> Self {
        let kind = EntryKind::Symlink {
            target: target.to_string(),
        };
        self.entries.push(entry(path, 0o777, mtime, kind));
        self
    }

    /// The snapshot as a backend would list and open it, and its pack (key and bytes).
    pub fn finish(
        self,
        created: DateTime<Utc>,
        state: SnapshotState,
    ) -> (SnapshotInfo, Arc<SnapshotTree>, String, Bytes) {
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            name: self.name,
            created,
            expires: None,
            source: None,
            packs: vec![self.pack_key],
            chunks: self.chunks,
            entries: self.entries,
        };
        manifest.validate().expect("a valid manifest");
        let tree = format::snapshot_tree(&manifest).expect("a well-formed snapshot tree");
        let info = SnapshotInfo {
            id: manifest_key(&manifest.name),
            is_file: matches!(manifest.root().kind, EntryKind::File { .. }),
            size: manifest.total_size(),
            files: manifest.file_count() as u64,
            name: manifest.name,
            created,
            state,
            crc32c: None,
            expires: None,
        };
        let [pack_key] = <[String; 1]>::try_from(manifest.packs).expect("one pack");
        (info, Arc::new(tree), pack_key, self.pack.finish())
    }

    pub fn install(self, backend: &FakeBackend, created: DateTime<Utc>, state: SnapshotState) {
        let (info, tree, key, pack) = self.finish(created, state);
        backend.put_object(&key, pack);
        backend.add_snapshot(info, tree);
    }
}

/// What the standard bucket holds, for comparing reads with.
pub struct Standard {
    pub big: Vec<u8>,
    pub hello: &'static [u8],
    pub single: Vec<u8>,
    pub raw_big: Vec<u8>,
    snapshots: Vec<(SnapshotInfo, Arc<SnapshotTree>, String, Bytes)>,
}

/// `big.bin`: two full blocks and a tail, so reads cross two block boundaries.
pub const BIG_LEN: usize = 2 * BLOCK_SIZE + 12_345;
pub const HELLO: &[u8] = b"hello, world\n";

pub fn big_mtime() -> SystemTime {
    time(1_767_225_600, 123_456_789)
}

/// Built once: compressing megabytes in a debug build is slow enough to share.
pub fn standard() -> &'static Standard {
    static STANDARD: OnceLock<Standard> = OnceLock::new();
    STANDARD.get_or_init(|| {
        let big = noise(BIG_LEN, 1);
        let single = noise(100_000, 2);
        let db1 = SnapshotBuilder::folder("db-1", 0o755, time(1_767_000_000, 0))
            .dir("data", 0o750, time(1_767_000_001, 0))
            .add_file("data/big.bin", &big, 0o640, big_mtime())
            .empty_file("data/empty", 0o600, time(1_767_000_002, 0))
            .add_file("hello.txt", HELLO, 0o644, time(1_767_000_003, 0))
            .symlink("link", "data/big.bin", time(1_767_000_004, 0))
            .finish(date("2026-01-01T00:00:00Z"), SnapshotState::Ready);
        let db2 = SnapshotBuilder::file("db-2", &single, 0o444, time(1_768_000_000, 0))
            .finish(date("2026-02-01T00:00:00Z"), SnapshotState::Ready);
        // Newest of all, but not ready: never listed, never `latest`.
        let db3 = SnapshotBuilder::file("db-3", b"half made", 0o444, time(1_769_000_000, 0))
            .finish(date("2026-03-01T00:00:00Z"), SnapshotState::Creating);
        Standard {
            big,
            hello: HELLO,
            single,
            raw_big: noise(BLOCK_SIZE + 100, 3),
            snapshots: vec![db1, db2, db3],
        }
    })
}

impl Standard {
    /// The pack object of a standard snapshot.
    pub fn pack_of(&self, name: &str) -> &str {
        self.snapshots
            .iter()
            .find(|(i, ..)| i.name == name)
            .map(|(_, _, k, _)| k.as_str())
            .unwrap_or_else(|| panic!("no snapshot {name}"))
    }

    pub fn tree_of(&self, name: &str) -> &SnapshotTree {
        self.snapshots
            .iter()
            .find(|(i, ..)| i.name == name)
            .map(|(_, t, ..)| t.as_ref())
            .unwrap_or_else(|| panic!("no snapshot {name}"))
    }
}

/// A fresh backend holding the standard snapshots and a few other objects.
pub fn standard_backend() -> Arc<FakeBackend> {
    let s = standard();
    let backend = Arc::new(FakeBackend::default());
    for (info, tree, key, pack) in &s.snapshots {
        backend.put_object(key, pack.clone());
        backend.add_snapshot(info.clone(), tree.clone());
    }
    backend.put_object("top.txt", Bytes::from_static(b"at the top\n"));
    backend.put_object("other/readme.txt", Bytes::from_static(b"other\n"));
    backend.put_object("other/deep/x.bin", Bytes::from(s.raw_big.clone()));
    backend
}

/// A `Vfs` over one target, `cloud/local`, with its cache and staging area in a temporary folder.
pub struct Fixture {
    pub vfs: Vfs,
    pub backend: Arc<FakeBackend>,
    pub hooks: Arc<FakeHooks>,
    pub targets: Arc<FakeTargets>,
    pub cache: Arc<BlockCache>,
    pub dir: tempfile::TempDir,
}

pub fn cache_config(dir: &std::path::Path) -> CacheConfig {
    CacheConfig {
        dir: dir.join("cache"),
        max_disk_bytes: 256 << 20,
        min_free_bytes: 0,
        max_memory_bytes: 64 << 20,
    }
}

impl Fixture {
    pub fn new(backend: Arc<FakeBackend>) -> Self {
        Self::with_ttl(backend, Duration::from_secs(5))
    }

    pub fn with_ttl(backend: Arc<FakeBackend>, list_ttl: Duration) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let cache = BlockCache::open(cache_config(dir.path())).expect("the cache opens");
        Self::assemble(backend, list_ttl, dir, cache)
    }

    /// A `Vfs` whose one target, `hivemq/broker`, makes its snapshots itself: no `uploads/`
    /// and no `objects/`.
    pub fn without_uploads(backend: Arc<FakeBackend>) -> Self {
        let mut f = Self::new(backend);
        f.targets = Arc::new(FakeTargets::default());
        f.targets.add(
            ("hivemq", "broker", "a broker in memory"),
            f.backend.clone(),
            false,
            false,
        );
        let staging = Arc::new(Staging::new(f.dir.path().join("staging")));
        f.vfs = Vfs::new(
            f.targets.clone(),
            VfsConfig::default(),
            f.cache.clone(),
            staging,
            f.hooks.clone(),
        );
        f
    }

    /// The standard fixture with live trees mounted next to `cloud/local`.
    pub fn with_live(backend: Arc<FakeBackend>, mounts: Vec<snapfs_fs::vfs::LiveMount>) -> Self {
        let mut f = Self::new(backend);
        let staging = Arc::new(Staging::new(f.dir.path().join("staging")));
        f.vfs = Vfs::new(
            f.targets.clone(),
            VfsConfig::default(),
            f.cache.clone(),
            staging,
            f.hooks.clone(),
        )
        .with_live(mounts);
        f
    }

    /// A second `Vfs` over the same cache folder, as after a daemon restart.
    pub fn restarted(self) -> Self {
        let Fixture {
            vfs, backend, dir, ..
        } = self;
        drop(vfs);
        let cache = BlockCache::open(cache_config(dir.path())).expect("the cache reopens");
        Self::assemble(backend, Duration::from_secs(5), dir, cache)
    }

    fn assemble(
        backend: Arc<FakeBackend>,
        list_ttl: Duration,
        dir: tempfile::TempDir,
        cache: Arc<BlockCache>,
    ) -> Self {
        let hooks = Arc::new(FakeHooks::default());
        let staging = Arc::new(Staging::new(dir.path().join("staging")));
        let targets = Arc::new(FakeTargets::default());
        targets.add(
            ("cloud", "local", "a bucket in memory"),
            backend.clone(),
            true,
            true,
        );
        let config = VfsConfig {
            list_ttl,
            ..VfsConfig::default()
        };
        let vfs = Vfs::new(
            targets.clone(),
            config,
            cache.clone(),
            staging,
            hooks.clone(),
        );
        Fixture {
            vfs,
            backend,
            hooks,
            targets,
            cache,
            dir,
        }
    }

    pub fn staging_root(&self) -> PathBuf {
        self.dir.path().join("staging")
    }

    /// Looks a '/'-separated path up from the root, one component at a time.
    pub async fn lookup(&self, path: &str) -> VfsResult<Entry> {
        let mut entry = self.vfs.getattr(ROOT_INO).await?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            entry = self.vfs.lookup(entry.attr.ino, OsStr::new(name)).await?;
        }
        Ok(entry)
    }

    pub async fn ino(&self, path: &str) -> u64 {
        match self.lookup(path).await {
            Ok(e) => e.attr.ino,
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// The names in a directory, without "." and "..", in listing order.
    pub async fn names(&self, path: &str) -> Vec<String> {
        let ino = self.ino(path).await;
        let entries = self.vfs.readdir(ino).await.expect("the directory lists");
        entries
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// Reads `[offset, offset + len)` through a fresh read-only handle.
    pub async fn read(&self, path: &str, offset: u64, len: u32) -> VfsResult<Bytes> {
        let ino = self.lookup(path).await?.attr.ino;
        let opened = self.vfs.open(ino, false, false).await?;
        let out = self.vfs.read(opened.fh, offset, len).await;
        self.vfs.release(opened.fh);
        out
    }

    /// The whole file, read sequentially in 1 MiB requests like the kernel with direct_io.
    pub async fn read_all(&self, path: &str) -> VfsResult<Bytes> {
        let ino = self.lookup(path).await?.attr.ino;
        let opened = self.vfs.open(ino, false, false).await?;
        let mut out = BytesMut::new();
        let result = loop {
            match self.vfs.read(opened.fh, out.len() as u64, 1 << 20).await {
                Ok(b) if b.is_empty() => break Ok(out.freeze()),
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => break Err(e),
            }
        };
        self.vfs.release(opened.fh);
        result
    }

    /// Waits until background read-ahead has stopped reaching the backend.
    pub async fn quiesce(&self) {
        let mut last = self.backend.reads();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.backend.reads();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

/// The errno of a result that must have failed.
pub fn errno<T: std::fmt::Debug>(result: Result<T, VfsError>) -> i32 {
    match result {
        Ok(v) => {
            let mut shown = format!("{v:?}");
            shown.truncate(300);
            panic!("expected an error, got {shown}")
        }
        Err(e) => e.errno(),
    }
}
