//! Persistent block store: one file per block at `<dir>/blocks/<2 hex>/<16 hex>`, named by a
//! stable hash of the key.
//!
//! A file holds a header (magic, version, key length, data length), the key, the data and a
//! CRC32C of everything before it. Files are written to a temp file in the same directory and
//! renamed into place. There is no fsync: a file torn by a crash fails its CRC on the next read
//! and is dropped, which costs one refetch and never returns wrong bytes.
//!
//! Usage is accounted in an atomic counter. Opening does no I/O beyond creating `blocks/`; a
//! background thread walks the tree once to learn the usage (and delete temp files left by a
//! crash), then wakes on writes and on a timer to evict the least recently used files (by mtime)
//! when over the byte limit or under the free-space floor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::WholeKey;

mod whole;

pub(crate) use whole::Assembly;

const MAGIC: [u8; 4] = *b"SNBK";
/// Kept at 1 when keys became [`CacheKey`](super::CacheKey) encodings: those start with `block `
/// or `object `, the keys before them with a target's kind directory (`cloud/`), so a file from
/// before is met only on a hash collision, where its key differs (a miss), and goes when evicted.
const VERSION: u32 = 1;
/// Magic, version, key length (u32), data length (u64).
const HEADER_LEN: usize = 20;
const TRAILER_LEN: usize = 4;
const TMP_PREFIX: &str = ".tmp-";
/// Keys are a few hundred bytes; anything far longer is not worth a disk copy.
const MAX_KEY_LEN: usize = 64 << 10;

/// A disk hit refreshes the file's mtime (its recency for eviction) at most this often.
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Free space can shrink without any cache write (other programs), so it is also polled.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(10);
/// Writes wake the evictor for a free-space check after this many bytes.
const SPACE_CHECK_BYTES: u64 = 64 << 20;
const WARN_EVERY_SECS: u64 = 60;

/// FNV-1a, 64 bit: file names must stay the same across releases, which std's hasher does not
/// promise.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub(crate) struct DiskCache {
    shared: Arc<Shared>,
    /// Wakes the background thread; dropping it ends the thread.
    wake: mpsc::SyncSender<()>,
}

struct Shared {
    blocks: PathBuf,
    /// Whole files assembled from verified blocks, each with its seal (`whole`).
    files: PathBuf,
    max_bytes: u64,
    min_free: u64,
    /// Prefix of this process's temp files; other temp files are leftovers of a crash.
    tmp_prefix: String,
    next_tmp: AtomicU64,
    usage: AtomicU64,
    written_since_check: AtomicU64,
    scan_complete: AtomicBool,
    /// Set by the evictor while free space stays under the floor; writes are skipped meanwhile.
    low_space: AtomicBool,
    evicted_bytes: AtomicU64,
    corrupt_dropped: AtomicU64,
    last_warn_secs: AtomicU64,
}

/// What a block file turned out to hold.
enum Decoded {
    Data(Range<usize>),
    /// A valid file for another key whose hash collides with ours.
    OtherKey,
    Corrupt,
}

/// A cache file found by a walk of the tree.
struct FileInfo {
    mtime: SystemTime,
    len: u64,
    slot: Slot,
}

/// Where a walked file lives.
enum Slot {
    /// A block file, by the hash of its key.
    Block(u64),
    /// A whole file with its seal (`whole`), by its content key.
    Whole(WholeKey),
}

impl DiskCache {
    /// Creates `<dir>/blocks` and starts the background thread, which keeps usage under
    /// `max_bytes` and free space over `min_free`. When `scan_gate` is given the thread waits for
    /// a message on it before walking, which lets tests observe the state before the scan.
    pub(crate) fn open(
        dir: &Path,
        max_bytes: u64,
        min_free: u64,
        scan_gate: Option<mpsc::Receiver<()>>,
    ) -> io::Result<Self> {
        let blocks = dir.join("blocks");
        fs::create_dir_all(&blocks)?;
        let files = dir.join("files");
        fs::create_dir_all(&files)?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            blocks,
            files,
            max_bytes,
            min_free,
            tmp_prefix: format!(
                "{TMP_PREFIX}{:x}-{:x}-",
                std::process::id(),
                started.as_nanos()
            ),
            next_tmp: AtomicU64::new(0),
            usage: AtomicU64::new(0),
            written_since_check: AtomicU64::new(0),
            scan_complete: AtomicBool::new(false),
            low_space: AtomicBool::new(false),
            evicted_bytes: AtomicU64::new(0),
            corrupt_dropped: AtomicU64::new(0),
            last_warn_secs: AtomicU64::new(0),
        });
        // One pending wake is enough: the evictor rereads all state when it runs.
        let (wake, wakes) = mpsc::sync_channel(1);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("snapfs-cache-evict".into())
            .spawn(move || thread_shared.run(wakes, scan_gate))?;
        Ok(Self { shared, wake })
    }

    pub(crate) fn path_for(&self, key: &str) -> PathBuf {
        let hash = fnv1a64(key.as_bytes());
        self.shared.path_for_hash(hash)
    }

    /// Returns the verified block, or None. A corrupt or truncated file is deleted.
    pub(crate) fn read(&self, key: &str) -> Option<Bytes> {
        self.read_at(&self.path_for(key), key)
    }

    pub(crate) fn read_at(&self, path: &Path, key: &str) -> Option<Bytes> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), %err, "cannot open cache file");
                }
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        if let Err(err) = file.read_to_end(&mut buf) {
            tracing::debug!(path = %path.display(), %err, "cannot read cache file");
            return None;
        }
        match decode(&buf, key) {
            Decoded::Data(range) => {
                let stale = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age >= TOUCH_EVERY);
                if stale {
                    // Recency only; a failure just makes the block look older.
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(Bytes::from(buf).slice(range))
            }
            Decoded::OtherKey => None,
            Decoded::Corrupt => {
                tracing::warn!(path = %path.display(), "dropping corrupt cache file");
                if fs::remove_file(path).is_ok() {
                    self.shared.sub_usage(meta.len());
                }
                self.shared.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores a block; a failure is logged (at most once a minute) and otherwise ignored, since the
    /// disk copy is only an optimisation.
    pub(crate) fn store(&self, key: &str, data: &[u8]) {
        if self.shared.max_bytes == 0
            || key.len() > MAX_KEY_LEN
            || self.shared.low_space.load(Ordering::Acquire)
        {
            return;
        }
        if let Err(err) = self.write_at(&self.path_for(key), key, data) {
            self.shared.warn_write_failed(&err);
        }
    }

    pub(crate) fn write_at(&self, path: &Path, key: &str, data: &[u8]) -> io::Result<()> {
        let shared = &self.shared;
        if holds_key(path, key, data.len()) {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&shared.blocks);
        let tmp = shared.tmp_in(dir);
        let mut file = match create_new(&tmp) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // Shard directories are made on first use so that open stays O(1).
                match fs::create_dir(dir) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => create_new(&tmp)?,
                }
            }
            other => other?,
        };
        let header = encode_header(key, data.len());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), data);
        let written = file
            .write_all(&header)
            .and_then(|()| file.write_all(data))
            .and_then(|()| file.write_all(&crc.to_le_bytes()));
        drop(file);
        let replaced = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if let Err(err) = written.and_then(|()| fs::rename(&tmp, path)) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        self.account_write(replaced, (header.len() + data.len() + TRAILER_LEN) as u64);
        Ok(())
    }

    /// Counts `len` new bytes on disk in place of `replaced`, and wakes the evictor when they
    /// take usage over the limit or call for a free-space check.
    fn account_write(&self, replaced: u64, len: u64) {
        let shared = &self.shared;
        shared.sub_usage(replaced);
        let usage = shared.usage.fetch_add(len, Ordering::Relaxed) + len;
        let written = shared.written_since_check.fetch_add(len, Ordering::Relaxed) + len;
        if usage > shared.max_bytes || written >= SPACE_CHECK_BYTES {
            // A full channel means a wake is already pending.
            let _ = self.wake.try_send(());
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        let path = self.path_for(key);
        if let Ok(meta) = fs::metadata(&path)
            && fs::remove_file(&path).is_ok()
        {
            self.shared.sub_usage(meta.len());
        }
    }

    /// Refreshes the mtime of a block served from memory, so the disk evictor sees it as recent.
    pub(crate) fn touch(&self, key: &str) {
        if let Ok(file) = File::open(self.path_for(key)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    pub(crate) fn usage(&self) -> u64 {
        self.shared.usage.load(Ordering::Relaxed)
    }

    pub(crate) fn scan_complete(&self) -> bool {
        self.shared.scan_complete.load(Ordering::Acquire)
    }

    pub(crate) fn evicted_bytes(&self) -> u64 {
        self.shared.evicted_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn corrupt_dropped(&self) -> u64 {
        self.shared.corrupt_dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn path_for_hash(&self, hash: u64) -> PathBuf {
        self.blocks
            .join(format!("{:02x}", hash >> 56))
            .join(format!("{hash:016x}"))
    }

    /// A new temp file name of this process in `dir`.
    fn tmp_in(&self, dir: &Path) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{}{n}", self.tmp_prefix))
    }

    fn sub_usage(&self, len: u64) {
        let _ = self
            .usage
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(len))
            });
    }

    fn warn_write_failed(&self, err: &io::Error) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_warn_secs.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_SECS;
        if due
            && self
                .last_warn_secs
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(dir = %self.blocks.display(), %err,
                "cannot write to the disk cache; blocks stay in memory only");
        }
    }

    fn run(&self, wakes: mpsc::Receiver<()>, scan_gate: Option<mpsc::Receiver<()>>) {
        if let Some(gate) = scan_gate {
            let _ = gate.recv();
        }
        let mut files = Some(self.census());
        self.scan_complete.store(true, Ordering::Release);
        loop {
            self.evict_if_needed(files.take());
            match wakes.recv_timeout(SPACE_CHECK_EVERY) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Walks the tree, deletes other processes' temp files and corrects the usage counter.
    ///
    /// Writes keep adding to the counter during the walk; a file written then may be counted both
    /// by the walk and by its write. That errs towards evicting early, never towards overfilling,
    /// and the next walk corrects it.
    fn census(&self) -> Vec<FileInfo> {
        let before = self.usage.load(Ordering::Relaxed);
        let files = self.walk();
        let total: u64 = files.iter().map(|f| f.len).sum();
        let _ = self
            .usage
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(before).saturating_add(total))
            });
        files
    }

    fn walk(&self) -> Vec<FileInfo> {
        let mut files = Vec::new();
        let Ok(shards) = fs::read_dir(&self.blocks) else {
            return files;
        };
        for shard in shards.flatten() {
            let Ok(entries) = fs::read_dir(shard.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if self.clear_temp(&shard.path(), name) {
                    continue;
                }
                if name.len() != 16 {
                    continue;
                }
                let Ok(hash) = u64::from_str_radix(name, 16) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                files.push(FileInfo {
                    mtime: meta.modified().unwrap_or(UNIX_EPOCH),
                    len: meta.len(),
                    slot: Slot::Block(hash),
                });
            }
        }
        files.extend(self.walk_whole());
        files
    }

    /// Removes a temp file of another process (a crash's leftover); answers whether `name` is a
    /// temp file at all.
    fn clear_temp(&self, dir: &Path, name: &str) -> bool {
        if !name.starts_with(TMP_PREFIX) {
            return false;
        }
        if !name.starts_with(&self.tmp_prefix) {
            let _ = fs::remove_file(dir.join(name));
        }
        true
    }

    /// Deletes the least recently used files when over the byte limit (down to 90% of it) or
    /// under the free-space floor (until a tenth of the floor is regained beyond it).
    fn evict_if_needed(&self, walked: Option<Vec<FileInfo>>) {
        self.written_since_check.store(0, Ordering::Relaxed);
        let short_by = free_bytes(&self.blocks).map_or(0, |f| self.min_free.saturating_sub(f));
        if self.usage.load(Ordering::Relaxed) <= self.max_bytes && short_by == 0 {
            self.low_space.store(false, Ordering::Relaxed);
            return;
        }
        let mut files = walked.unwrap_or_else(|| self.census());
        let total: u64 = files.iter().map(|f| f.len).sum();
        let mut target = if total > self.max_bytes {
            self.max_bytes - self.max_bytes / 10
        } else {
            total
        };
        if short_by > 0 {
            target = target.min(total.saturating_sub(short_by.saturating_add(self.min_free / 10)));
        }
        files.sort_unstable_by_key(|f| f.mtime);
        let mut held = total;
        let mut freed = 0;
        for file in files {
            if held <= target {
                break;
            }
            let removed = match &file.slot {
                Slot::Block(hash) => fs::remove_file(self.path_for_hash(*hash)),
                // An open whole file stays readable until closed: unlinking only drops the name.
                Slot::Whole(key) => self.remove_whole(key),
            };
            match removed {
                Ok(()) => freed += file.len,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(_) => continue,
            }
            held -= file.len;
        }
        // Set before the counters move, so whoever sees the eviction also sees the write stop.
        let still_short = free_bytes(&self.blocks).is_some_and(|f| f < self.min_free);
        self.low_space.store(still_short, Ordering::Release);
        self.sub_usage(freed);
        self.evicted_bytes.fetch_add(freed, Ordering::Release);
        if freed > 0 {
            tracing::debug!(freed, held, "evicted from the disk cache");
        }
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

fn encode_header(key: &str, data_len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN + key.len());
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    // `store` refuses keys over MAX_KEY_LEN, so the length fits.
    header.extend_from_slice(&(key.len() as u32).to_le_bytes());
    header.extend_from_slice(&(data_len as u64).to_le_bytes());
    header.extend_from_slice(key.as_bytes());
    header
}

/// Parses the fixed header: (key length, data length), or None if it is not ours.
fn parse_header(buf: &[u8]) -> Option<(usize, usize)> {
    let header = buf.get(..HEADER_LEN)?;
    if header[..4] != MAGIC || header[4..8] != VERSION.to_le_bytes() {
        return None;
    }
    let key_len = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let data_len = u64::from_le_bytes(header[12..20].try_into().ok()?);
    Some((
        usize::try_from(key_len).ok()?,
        usize::try_from(data_len).ok()?,
    ))
}

fn decode(buf: &[u8], key: &str) -> Decoded {
    let Some((key_len, data_len)) = parse_header(buf) else {
        return Decoded::Corrupt;
    };
    let data_start = HEADER_LEN.saturating_add(key_len);
    let data_end = data_start.saturating_add(data_len);
    if data_end.checked_add(TRAILER_LEN) != Some(buf.len()) {
        return Decoded::Corrupt;
    }
    let mut trailer = [0u8; TRAILER_LEN];
    trailer.copy_from_slice(&buf[data_end..]);
    if crc32c::crc32c(&buf[..data_end]) != u32::from_le_bytes(trailer) {
        return Decoded::Corrupt;
    }
    if &buf[HEADER_LEN..data_start] != key.as_bytes() {
        return Decoded::OtherKey;
    }
    Decoded::Data(data_start..data_end)
}

/// True when `path` already holds this key's block (same key, same length), so a rewrite would
/// only cost I/O. Content is not checked here: blocks are immutable and reads verify the CRC.
fn holds_key(path: &Path, key: &str, data_len: usize) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let expected = HEADER_LEN + key.len() + data_len + TRAILER_LEN;
    if file.metadata().map(|m| m.len()).ok() != Some(expected as u64) {
        return false;
    }
    let mut head = vec![0u8; HEADER_LEN + key.len()];
    if (&file).read_exact(&mut head).is_err() {
        return false;
    }
    parse_header(&head) == Some((key.len(), data_len)) && &head[HEADER_LEN..] == key.as_bytes()
}

/// Bytes available to unprivileged users on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` points to writable memory of the right type.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field widths differ between platforms.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests;
