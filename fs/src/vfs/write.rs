//! `uploads/`: files and folders written here are staged on local disk, one folder per target,
//! until the job engine turns them into a snapshot.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::{VfsError, VfsResult};
use super::inodes::Node;
use super::read::Handle;
use super::targets::TargetId;
use super::{Attr, Entry, Opened, Vfs};
use crate::tree::FileKind;

const TTL_STAGED: Duration = Duration::from_secs(1);

/// A time to set: now, or a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// The changes a `setattr` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

fn kind_of(meta: &fs::Metadata) -> FileKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::File
    }
}

pub(super) fn attr_from_meta(ino: u64, meta: &fs::Metadata) -> Attr {
    Attr {
        ino,
        kind: kind_of(meta),
        size: meta.len(),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

pub(super) fn staged_attr(vfs: &Vfs, ino: u64) -> VfsResult<Entry> {
    let (_, _, path) = vfs.staged_path(ino)?;
    let meta = fs::symlink_metadata(&path)?;
    Ok(Entry {
        attr: attr_from_meta(ino, &meta),
        ttl: TTL_STAGED,
    })
}

pub(super) fn staged_exists(vfs: &Vfs, parent: u64, name: &OsStr) -> VfsResult<()> {
    let (_, _, dir) = vfs.writable_dir(parent)?;
    fs::symlink_metadata(dir.join(name))?;
    Ok(())
}

pub(super) fn staged_list(vfs: &Vfs, ino: u64) -> VfsResult<Vec<(OsString, FileKind)>> {
    let (_, _, dir) = vfs.writable_dir(ino)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let kind = if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::File
        };
        out.push((entry.file_name(), kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub(super) fn staged_readlink(vfs: &Vfs, ino: u64) -> VfsResult<Vec<u8>> {
    let (_, _, path) = vfs.staged_path(ino)?;
    Ok(fs::read_link(path)?.into_os_string().into_encoded_bytes())
}

fn set_times(path: &Path, atime: Option<TimeSet>, mtime: Option<TimeSet>) -> VfsResult<()> {
    let spec = |t: Option<TimeSet>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeSet::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeSet::At(t)) => {
            let (sec, nsec) = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    // Before 1970: seconds go negative, nanoseconds stay positive.
                    let d = e.duration();
                    let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                    if n == 0 {
                        (-s, 0)
                    } else {
                        (-s - 1, 1_000_000_000 - n)
                    }
                }
            };
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    };
    let times = [spec(atime), spec(mtime)];
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VfsError::InvalidName("NUL in path".into()))?;
    // SAFETY: c is NUL-terminated and times points at two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Creates a file that must not exist yet, with exactly `mode` (the daemon's own umask
/// applied too; the writer's mode is what counts).
fn new_file(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    Ok(file)
}

impl Vfs {
    /// How long the kernel may take a name it did not find in directory `ino` for absent: only
    /// inside an upload, whose entries change through the mount alone (the kernel forgets
    /// such an answer itself when it makes the name).
    pub fn absent_ttl(&self, ino: u64) -> Option<Duration> {
        matches!(self.inode(ino).ok()?.node, Node::Staged(_)).then_some(TTL_STAGED)
    }

    /// The staging folder behind a directory of `uploads/`, with its target and, below the
    /// top level, its upload's name. Anything else is read-only.
    pub(super) fn writable_dir(&self, ino: u64) -> VfsResult<(TargetId, Option<String>, PathBuf)> {
        match self.inode(ino)?.node {
            Node::Uploads(t) => {
                let dir = self.staging.target_dir(&self.target(t)?.path());
                fs::create_dir_all(&dir)?;
                Ok((t, None, dir))
            }
            Node::Staged(_) => {
                let (t, upload, path) = self.staged_path(ino)?;
                Ok((t, Some(upload), path))
            }
            _ => Err(VfsError::ReadOnly("only uploads/ can be written")),
        }
    }

    /// Where a new entry `name` in `parent` goes; a new top-level entry is a new upload and must
    /// be admitted first.
    async fn new_entry(&self, parent: u64, name: &OsStr) -> VfsResult<(TargetId, String, PathBuf)> {
        let (t, upload, dir) = self.writable_dir(parent)?;
        let upload = match upload {
            Some(u) => u,
            None => self.admit(t, name).await?,
        };
        Ok((t, upload, dir.join(name)))
    }

    async fn admit(&self, target: TargetId, name: &OsStr) -> VfsResult<String> {
        let name = name
            .to_str()
            .ok_or_else(|| VfsError::InvalidName("snapshot names must be UTF-8".into()))?;
        if name.ends_with(".status") {
            return Err(VfsError::InvalidName(format!(
                "{name:?}: names ending in .status are reserved for upload status files"
            )));
        }
        self.target(target)?.backend.check_name(name)?;
        self.hooks.admit(target, name).await?;
        Ok(name.to_string())
    }

    fn entry_for(
        &self,
        parent: u64,
        name: &OsStr,
        target: TargetId,
        path: &Path,
    ) -> VfsResult<Entry> {
        let ino = self.inodes.entry(parent, name, Node::Staged(target));
        let meta = fs::symlink_metadata(path)?;
        Ok(Entry {
            attr: attr_from_meta(ino, &meta),
            ttl: TTL_STAGED,
        })
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> VfsResult<Entry> {
        let (t, upload, path) = self.new_entry(parent, name).await?;
        let mode = mode & !umask & 0o7777;
        DirBuilder::new().mode(mode).create(&path)?;
        // The daemon's own umask applied too; the writer's mode is what counts.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        self.staging.touch(t, &upload);
        self.entry_for(parent, name, t, &path)
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> VfsResult<(Entry, Opened)> {
        let (t, upload, path) = self.new_entry(parent, name).await?;
        let file = new_file(&path, mode & !umask & 0o7777)?;
        let entry = self.entry_for(parent, name, t, &path)?;
        let whole = self.staged_backing(&file, &path, true);
        let fh = self.new_staged_handle(t, entry.attr.ino, upload, file, true)?;
        Ok((
            entry,
            Opened {
                fh,
                keep_cache: false,
                direct_io: false,
                whole,
            },
        ))
    }

    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &Path) -> VfsResult<Entry> {
        let (t, upload, path) = self.new_entry(parent, name).await?;
        std::os::unix::fs::symlink(target, &path)?;
        self.staging.touch(t, &upload);
        self.entry_for(parent, name, t, &path)
    }

    /// `mknod`: a plain file is made empty. FIFOs, sockets and device nodes cannot be kept
    /// by a snapshot (it holds files, folders and symlinks), so they are refused, and their
    /// upload is told it lost them, so that it fails rather than becoming a snapshot without
    /// them.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> VfsResult<Entry> {
        let what = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                let (t, upload, path) = self.new_entry(parent, name).await?;
                let file = new_file(&path, mode & !umask & 0o7777)?;
                self.rewritten(t, &upload, &file.metadata()?, &path);
                self.staging.touch(t, &upload);
                return self.entry_for(parent, name, t, &path);
            }
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFCHR => "a character device",
            libc::S_IFBLK => "a block device",
            _ => "a special file",
        };
        let (t, upload, dir) = self.writable_dir(parent)?;
        if fs::symlink_metadata(dir.join(name)).is_ok() {
            return Err(VfsError::Exists(format!("{}: exists", name.display())));
        }
        // Made at the top of uploads/, it never becomes an upload: the error says it all.
        if let Some(upload) = upload {
            let in_upload = self
                .staging
                .target_dir(&self.target(t)?.path())
                .join(&upload);
            let path = dir.join(name);
            let rel = path.strip_prefix(&in_upload).unwrap_or(Path::new(name));
            tracing::info!(snapshot = upload, path = %rel.display(), what, "refused a file a snapshot cannot hold");
            self.hooks.refused(t, &upload, rel, what);
            self.staging.touch(t, &upload);
        }
        Err(VfsError::NotSupported)
    }

    /// A hard link inside one upload. Staging is a real folder, so it is a real hard link:
    /// both names are kept with their bytes, and the snapshot holds them as two files.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> VfsResult<Entry> {
        let (t2, up2, dir) = self.writable_dir(new_parent)?;
        if !matches!(self.inode(ino)?.node, Node::Staged(_)) {
            return Err(VfsError::CrossDevice);
        }
        let (t, upload, from) = self.staged_path(ino)?;
        // Across uploads the two names would end in different snapshots, each written through
        // the other until then: refused as a link across devices.
        if t2 != t || up2.as_deref() != Some(upload.as_str()) {
            return Err(VfsError::CrossDevice);
        }
        let path = dir.join(new_name);
        fs::hard_link(&from, &path)?;
        self.staging.touch(t, &upload);
        self.entry_for(new_parent, new_name, t, &path)
    }

    pub(super) fn open_staged(&self, ino: u64, write: bool, truncate: bool) -> VfsResult<Opened> {
        let (t, upload, path) = self.staged_path(ino)?;
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .truncate(truncate && write)
            .open(&path)?;
        let whole = self.staged_backing(&file, &path, write);
        let fh = self.new_staged_handle(t, ino, upload, file, write)?;
        Ok(Opened {
            fh,
            keep_cache: false,
            direct_io: false,
            whole,
        })
    }

    /// The staged file for the kernel to read and write itself (passthrough), when the mount
    /// has it: opened for both, since later handles of the inode share it, whatever their own
    /// mode. None where it cannot be had: the daemon then serves the handle.
    fn staged_backing(&self, file: &fs::File, path: &Path, write: bool) -> Option<fs::File> {
        if !self.whole_files() {
            return None;
        }
        let both = match write {
            true => file.try_clone(),
            false => OpenOptions::new().read(true).write(true).open(path),
        };
        both.ok()
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> VfsResult<u32> {
        match self.handle(fh)?.as_ref() {
            Handle::Staged {
                target,
                upload,
                file,
                ..
            } => {
                file.write_all_at(data, offset)?;
                let upload = upload.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(u) = upload.as_deref() {
                    self.staging.touch(*target, u);
                }
                Ok(data.len() as u32)
            }
            _ => Err(VfsError::ReadOnly("snapshots are read-only")),
        }
    }

    /// The content of staged file `meta` at `path` changed without a handle of its own (made
    /// by mknod, truncated by path): the upload's hooks hear of it as of a write and a close.
    fn rewritten(&self, target: TargetId, upload: &str, meta: &fs::Metadata, path: &Path) {
        self.hooks.writing(target, upload, meta.ino());
        self.hooks.written(target, upload, meta.ino(), Some(path));
    }

    pub fn fsync(&self, fh: u64) -> VfsResult<()> {
        match self.handle(fh)?.as_ref() {
            Handle::Staged { file, .. } => Ok(file.sync_data()?),
            _ => Ok(()),
        }
    }

    pub async fn setattr(&self, ino: u64, set: SetAttr, fh: Option<u64>) -> VfsResult<Entry> {
        let node = self.inode(ino)?.node;
        if !matches!(node, Node::Staged(_)) {
            return Err(VfsError::ReadOnly("snapshots are read-only"));
        }
        let (t, upload, path) = self.staged_path(ino)?;
        let meta = fs::symlink_metadata(&path)?;
        if let Some(size) = set.size {
            match fh.map(|fh| self.handle(fh)) {
                Some(Ok(h)) if matches!(h.as_ref(), Handle::Staged { .. }) => {
                    if let Handle::Staged { file, .. } = h.as_ref() {
                        file.set_len(size)?;
                    }
                }
                _ => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
            }
            self.rewritten(t, &upload, &meta, &path);
        }
        if set.uid.is_some() || set.gid.is_some() {
            std::os::unix::fs::lchown(&path, set.uid, set.gid)?;
        }
        if let Some(mode) = set.mode
            && !meta.file_type().is_symlink()
        {
            fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
            )?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            set_times(&path, set.atime, set.mtime)?;
        }
        self.staging.touch(t, &upload);
        staged_attr(self, ino)
    }

    /// Removes a file or symlink (`dir` false) or an empty folder (`dir` true) under uploads/.
    pub async fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> VfsResult<()> {
        let (t, upload, parent_dir) = self.writable_dir(parent)?;
        let path = parent_dir.join(name);
        if upload.is_none()
            && let Some(status_of) = name.to_str().and_then(|n| n.strip_suffix(".status"))
            && self.hooks.status(t, status_of).is_some()
            && fs::symlink_metadata(&path).is_err()
        {
            return Err(VfsError::ReadOnly("status files are read-only"));
        }
        if dir {
            fs::remove_dir(&path)?;
        } else {
            let ino = fs::symlink_metadata(&path)?.ino();
            fs::remove_file(&path)?;
            if let Some(u) = upload.as_deref().or(name.to_str()) {
                self.hooks.removed(t, u, ino);
            }
        }
        self.inodes.unlink(parent, name);
        match upload {
            Some(u) => self.staging.touch(t, &u),
            None => {
                // The upload itself is gone: whatever its job was doing stops.
                if let Some(u) = name.to_str() {
                    self.detach_staged_handles(t, u);
                    self.staging.forget(t, u);
                    self.hooks.discarded(t, u);
                }
            }
        }
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> VfsResult<()> {
        let (t1, up1, dir1) = self.writable_dir(parent)?;
        let (t2, up2, dir2) = match self.writable_dir(new_parent) {
            Ok(x) => x,
            Err(VfsError::ReadOnly(_)) => return Err(VfsError::CrossDevice),
            Err(e) => return Err(e),
        };
        if t1 != t2 {
            return Err(VfsError::CrossDevice);
        }
        // Renaming a whole upload makes a new upload name, which must be admitted like any other.
        let up2 = match up2 {
            Some(u) => u,
            None => self.admit(t2, new_name).await?,
        };
        fs::rename(dir1.join(name), dir2.join(new_name))?;
        self.inodes.rename(parent, name, new_parent, new_name);
        // Before `forget`, so a renamed upload's open count moves with it rather than vanishing.
        self.recount_staged_handles();
        match up1 {
            Some(u) => self.staging.touch(t1, &u),
            None => {
                if let Some(u) = name.to_str() {
                    self.staging.forget(t1, u);
                    self.hooks.discarded(t1, u);
                }
            }
        }
        self.staging.touch(t2, &up2);
        Ok(())
    }
}
