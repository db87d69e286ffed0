//! The source of an upload: its tree in order, the entries of the manifest, its files cut into
//! chunks by one reader thread, and which files are unchanged since the snapshot before.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapfs_fs::backend::BackendError;
use snapfs_fs::format::{Cutting, Entry, EntryKind, MAX_CHUNK, Manifest, Seen};

use super::{invalid, io_error};
use crate::early::Held;

/// One entry of the source tree.
pub(super) struct Item {
    pub rel: String,
    pub path: PathBuf,
    pub meta: std::fs::Metadata,
}

/// The source tree, root first, each folder's entries sorted and before their children.
pub(super) fn scan(source: &Path) -> Result<Vec<Item>, BackendError> {
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

/// What the reader hands on: the next chunk of file `n`, or why file `n` could not be read.
pub(super) enum Read {
    Piece(usize, Vec<u8>),
    Failed(usize, BackendError),
}

/// Reads the files in order and cuts each into chunks, sending them on. A file that cannot be
/// read is reported and ends the reading, unless `keep_going`. With `held`, each file is held
/// under its key in the list while it is open.
pub(super) fn read_files(
    files: Vec<(usize, PathBuf, u64)>,
    keep_going: bool,
    held: Option<(Arc<Held>, Vec<u64>)>,
    tx: tokio::sync::mpsc::Sender<Read>,
) {
    let send = |m| tx.blocking_send(m).is_ok();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_CHUNK);
    for (i, (n, path, size)) in files.into_iter().enumerate() {
        let held = held.as_ref().map(|(h, keys)| (&**h, keys.get(i).copied()));
        if let Some((h, key)) = held {
            // Before the open: a removal from now on waits for the close.
            h.set(key);
        }
        let read = read_file(n, &path, size, &mut buf, held.map(|(h, _)| h), &send);
        if let Some((h, _)) = held {
            h.set(None);
        }
        match read {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                if !send(Read::Failed(n, e)) || !keep_going {
                    return;
                }
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
    held: Option<&Held>,
    send: &dyn Fn(Read) -> bool,
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
            if held.is_some_and(|h| h.must_let_go()) {
                return Err(invalid(format!("{}: removed while read", path.display())));
            }
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
        if !send(Read::Piece(n, rest[..len].to_vec())) {
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

/// The entries of the scanned tree: folders and links complete, files still without data.
pub(super) fn entries_of(items: &[Item]) -> Result<Vec<Entry>, BackendError> {
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
pub(super) fn files_by_path(m: &Manifest) -> HashMap<&str, &Entry> {
    m.entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| (e.path.as_str(), e))
        .collect()
}

pub(super) fn seen_of(meta: &std::fs::Metadata) -> Seen {
    Seen {
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec() as u32,
    }
}

/// Whether a file read in place is the one the parent snapshot holds at its path: same size,
/// mtime, ctime and inode. Without an identity (a staged copy) a file is always read.
pub(super) fn unchanged(before: &Entry, now: &Entry, size: u64, seen: Option<Seen>) -> bool {
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
    use super::*;

    #[test]
    fn a_removal_waits_until_the_reader_let_go_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // Random, so that the cutter sends chunks as it reads; far more than the reader
        // reads ahead of a full channel.
        let mut data = vec![0u8; 16 * MAX_CHUNK];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(&path, &data).unwrap();
        let held = Arc::new(Held::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let files = vec![(0, path, data.len() as u64)];
        let reader = {
            let held = held.clone();
            std::thread::spawn(move || read_files(files, true, Some((held, vec![7])), tx))
        };
        // The first chunk came: the file is open, and the reader waits on the full channel.
        assert!(matches!(rx.blocking_recv(), Some(Read::Piece(0, _))));
        let remover = {
            let held = held.clone();
            std::thread::spawn(move || held.release(7))
        };
        while !held.must_let_go() {
            std::thread::yield_now();
        }
        let mut failed = None;
        while let Some(m) = rx.blocking_recv() {
            if let Read::Failed(n, e) = m {
                failed = Some((n, e.to_string()));
            }
        }
        remover.join().unwrap();
        reader.join().unwrap();
        let (n, why) = failed.expect("the reading gave up");
        assert_eq!(n, 0);
        assert!(why.contains("removed while read"), "{why}");
        assert_eq!(held.key(), None);
        // A key no one holds is let go of at once.
        held.release(7);
    }
}
