//! Whole files: all the bytes of one snapshot file as a plain file at `<dir>/files/<key hex>`,
//! which the kernel can read by itself (FUSE passthrough).
//!
//! The caller assembles one only from blocks it checked against their content hashes. It is
//! written to a temp file, synced, made read-only and renamed into place, and then sealed:
//! `<key hex>.seal` records the content key and the file's inode number, size and change time.
//! Any write to the file moves its change time, which nobody can set back, so a file that was
//! touched after it was sealed fails the check on open and is dropped: it is never served. A
//! file without a seal is not served either (a crash came between the rename and the seal).
//!
//! The seal's mtime is the pair's recency for eviction: refreshing the file's own would move its
//! change time. Eviction unlinks both; a reader that has the file open keeps reading the bytes
//! it was checked with until it closes, so eviction is safe by construction, and the space comes
//! back at that close.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{DiskCache, FileInfo, Shared, Slot, TOUCH_EVERY, create_new};
use crate::cache::WholeKey;

const SEAL_MAGIC: [u8; 4] = *b"SNWF";
const SEAL_VERSION: u32 = 1;
/// Magic, version, key, inode, size, ctime seconds and nanoseconds, CRC32C.
const SEAL_LEN: usize = 4 + 4 + 32 + 8 + 8 + 8 + 8 + 4;
const SEAL_SUFFIX: &str = ".seal";

/// What a whole file was when it was sealed.
#[derive(Debug, PartialEq, Eq)]
struct Seal {
    key: WholeKey,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Seal {
    fn of(key: WholeKey, meta: &fs::Metadata) -> Seal {
        Seal {
            key,
            ino: meta.ino(),
            size: meta.len(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEAL_LEN);
        out.extend_from_slice(&SEAL_MAGIC);
        out.extend_from_slice(&SEAL_VERSION.to_le_bytes());
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.ctime.to_le_bytes());
        out.extend_from_slice(&self.ctime_nsec.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Option<Seal> {
        if buf.len() != SEAL_LEN || buf[..4] != SEAL_MAGIC {
            return None;
        }
        let (body, crc) = buf.split_at(SEAL_LEN - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let u64_at = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        if u32::from_le_bytes(body[4..8].try_into().ok()?) != SEAL_VERSION {
            return None;
        }
        Some(Seal {
            key: WholeKey(body[8..40].try_into().ok()?),
            ino: u64_at(40)?,
            size: u64_at(48)?,
            ctime: u64_at(56)? as i64,
            ctime_nsec: u64_at(64)? as i64,
        })
    }
}

fn seal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(SEAL_SUFFIX);
    PathBuf::from(p)
}

/// A whole file being written. Dropped unfinished, its temp file goes.
pub(crate) struct Assembly {
    key: WholeKey,
    size: u64,
    written: u64,
    tmp: PathBuf,
    file: File,
    renamed: bool,
}

impl Assembly {
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl DiskCache {
    /// Starts the whole file of `key`, `size` bytes long; None when the disk cache takes no
    /// such file now: it keeps nothing on disk, is short of space, or the file would fill more
    /// than a quarter of it (it would push out too much else).
    pub(crate) fn begin_whole(&self, key: WholeKey, size: u64) -> io::Result<Option<Assembly>> {
        let shared = &self.shared;
        if size > shared.max_bytes / 4 || shared.low_space.load(Ordering::Acquire) {
            return Ok(None);
        }
        let tmp = shared.tmp_in(&shared.files);
        let file = create_new(&tmp)?;
        Ok(Some(Assembly {
            key,
            size,
            written: 0,
            tmp,
            file,
            renamed: false,
        }))
    }

    /// Puts a finished whole file in place and seals it. The bytes are synced first, so a seal
    /// never vouches for bytes a crash could still lose.
    pub(crate) fn finish_whole(&self, mut a: Assembly) -> io::Result<()> {
        if a.written != a.size {
            return Err(io::Error::other(format!(
                "whole file of {} bytes got {}",
                a.size, a.written
            )));
        }
        a.file.sync_all()?;
        a.file.set_permissions(Permissions::from_mode(0o444))?;
        let path = self.shared.whole_path(&a.key);
        let replaced = self.shared.whole_len(&path);
        fs::rename(&a.tmp, &path)?;
        a.renamed = true;
        // Read after the rename, which moves the change time.
        let meta = a.file.metadata()?;
        let sealed = self.shared.write_seal(&path, &Seal::of(a.key, &meta));
        if let Err(err) = sealed {
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        self.account_write(replaced, meta.len() + SEAL_LEN as u64);
        Ok(())
    }

    /// The sealed whole file of `key`, open for reading, when the disk cache holds one whose
    /// seal it still matches. One that does not match is deleted and counted as corrupt.
    pub(crate) fn open_whole(&self, key: &WholeKey) -> Option<File> {
        let shared = &self.shared;
        let path = shared.whole_path(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), %err, "cannot open whole file");
                }
                return None;
            }
        };
        let seal_path = seal_path(&path);
        let seal = match fs::read(&seal_path) {
            Ok(bytes) => Seal::decode(&bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => None,
        };
        let meta = file.metadata().ok()?;
        if seal.as_ref() != Some(&Seal::of(*key, &meta)) {
            tracing::warn!(path = %path.display(), "dropping a whole file that no longer matches its seal");
            let len = shared.whole_len(&path);
            if shared.remove_whole(key).is_ok() {
                shared.sub_usage(len);
            }
            shared.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let stale = fs::metadata(&seal_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age >= TOUCH_EVERY);
        if stale && let Ok(seal_file) = File::open(&seal_path) {
            // Recency only; a failure just makes the file look older.
            let _ = seal_file.set_modified(SystemTime::now());
        }
        Some(file)
    }
}

impl Shared {
    fn whole_path(&self, key: &WholeKey) -> PathBuf {
        self.files.join(key.hex())
    }

    /// Bytes a whole file and its seal hold on disk, 0 where there are none.
    fn whole_len(&self, path: &Path) -> u64 {
        let len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        len(path) + len(&seal_path(path))
    }

    fn write_seal(&self, path: &Path, seal: &Seal) -> io::Result<()> {
        let tmp = self.tmp_in(&self.files);
        let written = create_new(&tmp)
            .and_then(|mut f| f.write_all(&seal.encode()))
            .and_then(|()| fs::rename(&tmp, seal_path(path)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Removes a whole file and its seal.
    pub(super) fn remove_whole(&self, key: &WholeKey) -> io::Result<()> {
        let path = self.whole_path(key);
        let _ = fs::remove_file(seal_path(&path));
        fs::remove_file(path)
    }

    /// The whole files on disk, each counted with its seal and as recent as its seal.
    pub(super) fn walk_whole(&self) -> Vec<FileInfo> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.files) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if self.clear_temp(&self.files, name) {
                continue;
            }
            // Seals are counted with their file.
            let Some(key) = WholeKey::from_hex(name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let seal = fs::metadata(seal_path(&entry.path())).ok();
            let mtime = seal
                .as_ref()
                .and_then(|m| m.modified().ok())
                .or_else(|| meta.modified().ok())
                .unwrap_or(UNIX_EPOCH);
            out.push(FileInfo {
                mtime,
                len: meta.len() + seal.map_or(0, |m| m.len()),
                slot: Slot::Whole(key),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A cache whose background thread waits before its first walk for as long as the returned
    /// sender lives, so usage moves only with the test's own writes and evictions: a walk running
    /// beside them may count a file twice until the next walk.
    fn parked(dir: &Path, max_bytes: u64) -> (DiskCache, mpsc::Sender<()>) {
        let (hold, gate) = mpsc::channel();
        let disk = DiskCache::open(dir, max_bytes, 0, Some(gate)).unwrap();
        (disk, hold)
    }

    fn sealed(disk: &DiskCache, key: WholeKey, bytes: &[u8]) {
        let mut a = disk
            .begin_whole(key, bytes.len() as u64)
            .unwrap()
            .expect("room for it");
        a.write(bytes).unwrap();
        disk.finish_whole(a).unwrap();
    }

    #[test]
    fn a_sealed_file_opens_and_a_written_one_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, _hold) = parked(tmp.path(), 1 << 30);
        let key = WholeKey([7; 32]);
        sealed(&disk, key, b"whole bytes");
        let mut got = String::new();
        io::Read::read_to_string(&mut disk.open_whole(&key).unwrap(), &mut got).unwrap();
        assert_eq!(got, "whole bytes");
        assert_eq!(disk.usage(), 11 + SEAL_LEN as u64);

        // Any write moves the change time (so does the chmod that allows it): the seal fails.
        let path = disk.shared.whole_path(&key);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"W")
            .unwrap();
        assert!(disk.open_whole(&key).is_none());
        assert!(!path.exists(), "the damaged file is gone");
        assert_eq!(disk.corrupt_dropped(), 1);
        assert_eq!(disk.usage(), 0);
    }

    #[test]
    fn an_unsealed_or_short_file_is_never_served() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, _hold) = parked(tmp.path(), 1 << 30);
        let key = WholeKey([1; 32]);
        let mut a = disk.begin_whole(key, 10).unwrap().unwrap();
        a.write(b"short").unwrap();
        assert!(disk.finish_whole(a).is_err());
        assert!(disk.open_whole(&key).is_none());
        // Only the temp file was ever written, and it is gone.
        assert_eq!(fs::read_dir(&disk.shared.files).unwrap().count(), 0);

        sealed(&disk, key, b"0123456789");
        fs::remove_file(seal_path(&disk.shared.whole_path(&key))).unwrap();
        assert!(disk.open_whole(&key).is_none());
    }

    #[test]
    fn seals_round_trip_and_refuse_damage() {
        let seal = Seal {
            key: WholeKey([3; 32]),
            ino: 42,
            size: 1 << 33,
            ctime: -5,
            ctime_nsec: 999,
        };
        let bytes = seal.encode();
        assert_eq!(Seal::decode(&bytes), Some(seal));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert_eq!(Seal::decode(&bad), None, "byte {at}");
        }
        assert_eq!(Seal::decode(&bytes[1..]), None);
    }

    #[test]
    fn eviction_takes_whole_files_by_their_seals_recency() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, _hold) = parked(tmp.path(), 1000);
        let (old, new) = (WholeKey([1; 32]), WholeKey([2; 32]));
        sealed(&disk, old, &[1; 200]);
        sealed(&disk, new, &[2; 200]);
        let old_path = disk.shared.whole_path(&old);
        File::open(seal_path(&old_path))
            .unwrap()
            .set_modified(UNIX_EPOCH)
            .unwrap();
        disk.write_at(&disk.path_for("block"), "block", &[3; 500])
            .unwrap();
        disk.shared.evict_if_needed(None);
        assert!(!old_path.exists() && !seal_path(&old_path).exists());
        assert!(disk.open_whole(&new).is_some(), "the recent one stays");
        assert!(disk.usage() <= 900, "usage {}", disk.usage());
    }

    #[test]
    fn whole_files_too_large_for_the_cache_are_not_begun() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, _hold) = parked(tmp.path(), 1000);
        assert!(disk.begin_whole(WholeKey([0; 32]), 251).unwrap().is_none());
        assert!(disk.begin_whole(WholeKey([0; 32]), 250).unwrap().is_some());
    }
}
