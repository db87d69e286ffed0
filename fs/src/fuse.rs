//! The FUSE adapter: the only module that speaks to the kernel. Each callback enters a span
//! naming its operation, hands its work to the VFS core on the tokio runtime (blocking this fuser
//! thread, never a tokio worker) and turns the result into a reply, errors into errno through
//! `VfsError::errno`.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use convert::{file_attr, kind, open_flags, time_set};

use crate::vfs::{Entry, SetAttr, Vfs, VfsError};

mod caller;
mod convert;
mod gate;
mod mount;
mod op_stats;
mod passthrough;

pub use mount::{MountConfig, Mounted, connect_invalidation, mount};
pub use op_stats::{OpSnapshot, OpStats};

/// Largest read and write request the kernel is offered.
const MAX_IO: u32 = 1 << 20;

/// Enters the span a FUSE operation runs in, named for the operation, with the inodes, names and
/// file handle it touches as fields, so every line logged below it (the errno line too) names
/// them. Debug level: at the default filter a span costs one cached level check, where an
/// enabled one costs about as much CPU again as a lookup does (`SNAPFS_LOG=snapfs_fs=debug`
/// turns them on). The returned guard must live for the whole callback.
/// It also times the operation for the metrics (`op_stats`).
macro_rules! op_span {
    ($self:ident, $op:literal, $($field:tt)+) => {
        (
            $self.stats.start($op),
            tracing::debug_span!($op, $($field)+).entered(),
        )
    };
}

pub struct FuseFs {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
    gate: Arc<gate::Gate>,
    stats: Arc<OpStats>,
    read_only: bool,
    /// Whether to ask the kernel for passthrough.
    passthrough_wanted: bool,
    passthrough: passthrough::Passthrough,
    on_exit: Option<Box<dyn FnOnce() + Send + Sync>>,
}

fn errno(e: &VfsError) -> Errno {
    if e.is_expected() {
        tracing::debug!(error = %e, "request refused");
    } else {
        tracing::warn!(error = %e, "request failed");
    }
    refused(e.errno())
}

/// The answer `code`, counted for the operation's metrics.
fn refused(code: i32) -> Errno {
    op_stats::note_errno(code);
    Errno::from_i32(code)
}

impl FuseFs {
    /// Polls `f` on this fuser thread, so the callback's entered span is current throughout;
    /// work the VFS spawns onto the runtime carries the span itself.
    fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, VfsError>>,
    ) -> Result<T, VfsError> {
        self.gate.run(&self.rt, None, f)
    }

    /// Like `run`, for a request that only reads and so may be dropped halfway: it ends with
    /// EINTR once the process that sent it is killed, instead of holding that process in the
    /// kernel until a remote answers.
    fn run_for<T>(
        &self,
        req: &Request,
        f: impl std::future::Future<Output = Result<T, VfsError>>,
    ) -> Result<T, VfsError> {
        self.gate.run(&self.rt, Some(req.pid()), f)
    }

    fn refuse_if_read_only(&self) -> Result<(), VfsError> {
        if self.read_only {
            return Err(VfsError::ReadOnly("mounted read-only"));
        }
        Ok(())
    }

    /// Passthrough stopped for the mount, for the reason given, if any.
    fn passthrough_stopped(&self, why: Option<String>) {
        if let Some(why) = why {
            self.vfs.set_whole_files(false);
            tracing::warn!("FUSE passthrough off, the daemon serves every read and write: {why}");
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, r: Result<Entry, VfsError>) {
        match r {
            Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_write(MAX_IO);
        // Room for the kernel's read-ahead to keep many reads in flight at once.
        let _ = config.set_max_background(64);
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(wanted & config.capabilities());
        match self.passthrough.negotiate(self.passthrough_wanted, config) {
            Ok(()) => {
                self.vfs.set_whole_files(true);
                tracing::info!(
                    "FUSE passthrough on: the kernel reads files kept whole in the disk cache itself"
                );
            }
            Err(why) => tracing::info!("FUSE passthrough off, the daemon serves every read: {why}"),
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(f) = self.on_exit.take() {
            f();
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _op = op_span!(self, "lookup", parent = parent.0, name = ?name);
        match self.run_for(req, self.vfs.lookup(parent.0, name)) {
            // Remembered by the kernel as absent (inode 0), so that `cp` asking before each
            // create does not cost a round trip each time.
            Err(VfsError::NotFound) if let Some(ttl) = self.vfs.absent_ttl(parent.0) => {
                let absent = crate::vfs::Attr {
                    ino: 0,
                    kind: crate::tree::FileKind::File,
                    size: 0,
                    perm: 0,
                    nlink: 0,
                    mtime: SystemTime::UNIX_EPOCH,
                    uid: 0,
                    gid: 0,
                };
                reply.entry(&ttl, &file_attr(&absent), Generation(0));
            }
            r => self.reply_entry(reply, r),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _op = op_span!(self, "getattr", ino = ino.0, fh = fh.map(|f| f.0));
        match self.run_for(req, self.vfs.getattr(ino.0)) {
            Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _op = op_span!(self, "setattr", ino = ino.0, fh = fh.map(|f| f.0));
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
        };
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.setattr(ino.0, set, fh.map(|f| f.0))));
        match r {
            Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _op = op_span!(self, "readlink", ino = ino.0);
        match self.run_for(req, self.vfs.readlink(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _op = op_span!(self, "mkdir", parent = parent.0, name = ?name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.mkdir(parent.0, name, mode, umask)));
        self.reply_entry(reply, r);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let _op = op_span!(self, "mknod", parent = parent.0, name = ?name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.mknod(parent.0, name, mode, umask)));
        self.reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = op_span!(self, "unlink", parent = parent.0, name = ?name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.remove(parent.0, name, false)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = op_span!(self, "rmdir", parent = parent.0, name = ?name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.remove(parent.0, name, true)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _op = op_span!(self, "symlink", parent = parent.0, name = ?link_name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.symlink(parent.0, link_name, target)));
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _op = op_span!(
            self,
            "rename",
            parent = parent.0,
            name = ?name,
            newparent = newparent.0,
            newname = ?newname
        );
        if !flags.is_empty() {
            // RENAME_EXCHANGE / RENAME_NOREPLACE: callers fall back to a plain rename.
            reply.error(refused(libc::EINVAL));
            return;
        }
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.rename(parent.0, name, newparent.0, newname)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _op = op_span!(self, "link", ino = ino.0, parent = newparent.0, name = ?newname);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.link(ino.0, newparent.0, newname)));
        self.reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _op = op_span!(self, "open", ino = ino.0);
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let r = if write {
            self.refuse_if_read_only()
        } else {
            Ok(())
        }
        .and_then(|()| self.run(self.vfs.open(ino.0, write, truncate)));
        match r {
            Ok(o) => {
                let (fh, flags) = (FileHandle(o.fh), open_flags(&o));
                let stopped = self.passthrough.reply(ino.0, fh, flags, o.whole, reply);
                self.passthrough_stopped(stopped);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _op = op_span!(self, "read", ino = ino.0, fh = fh.0);
        match self.run_for(req, self.vfs.read(fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _op = op_span!(self, "write", ino = ino.0, fh = fh.0);
        match self.vfs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do on a close that release does not do: ENOSYS tells the kernel to stop
        // sending flushes, which saves a round trip on every close (a `cp -r` of 20,000 files
        // into uploads/ waits on 20,000 of them).
        reply.error(refused(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _op = op_span!(self, "release", ino = ino.0, fh = fh.0);
        self.passthrough.release(ino.0);
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _op = op_span!(self, "fsync", ino = ino.0, fh = fh.0);
        match self.vfs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _op = op_span!(self, "opendir", ino = ino.0);
        match self.run_for(req, self.vfs.opendir(ino.0)) {
            Ok(o) => {
                let flags = if o.keep_cache {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(o.fh), flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _op = op_span!(self, "readdirplus", ino = ino.0, fh = fh.0);
        match self.run_for(req, self.vfs.readdir_plus_at(ino.0, fh.0, offset, 256)) {
            Ok(entries) => {
                for (next, d, e) in &entries {
                    let attr = file_attr(&e.attr);
                    if reply.add(
                        INodeNo(e.attr.ino),
                        *next,
                        &d.name,
                        &e.ttl,
                        &attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _op = op_span!(self, "readdir", ino = ino.0, fh = fh.0);
        match self.vfs.readdir_at(fh.0, offset, 512) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    if reply.add(INodeNo(e.ino), offset + i as u64 + 1, kind(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _op = op_span!(self, "releasedir", ino = ino.0, fh = fh.0);
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _op = op_span!(self, "statfs", ino = ino.0);
        match self.vfs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Snapshots record no extended attributes; tools treat ENOTSUP as "not kept".
        reply.error(refused(libc::ENOTSUP));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // `ls -l` asks every file for security.selinux and its ACL. ENOTSUP says the whole
        // file system keeps neither, which GNU ls remembers for the device and stops asking;
        // ENODATA would only say this file has none, and cost a request per file.
        let name_bytes = name.as_encoded_bytes();
        if !name_bytes.starts_with(b"user.") {
            reply.error(refused(libc::ENOTSUP));
            return;
        }
        if !name_bytes.starts_with(b"user.snapfs.") {
            reply.error(refused(libc::ENODATA));
            return;
        }
        let _op = op_span!(self, "getxattr", ino = ino.0, name = ?name);
        let r = self.run_for(req, self.vfs.xattrs(ino.0)).and_then(|all| {
            all.into_iter()
                .find(|(k, _)| OsStr::new(k) == name)
                .map(|(_, v)| v)
                .ok_or(VfsError::NoAttr)
        });
        reply_xattr(reply, r, size);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _op = op_span!(self, "listxattr", ino = ino.0);
        let r = self.run_for(req, self.vfs.xattrs(ino.0)).map(|all| {
            let mut names = Vec::new();
            for (k, _) in all {
                names.extend_from_slice(k.as_bytes());
                names.push(0);
            }
            names
        });
        reply_xattr(reply, r, size);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(refused(libc::ENOTSUP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions makes the kernel check modes itself.
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _op = op_span!(self, "create", parent = parent.0, name = ?name);
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.run(self.vfs.create(parent.0, name, mode, umask)));
        match r {
            Ok((e, o)) => {
                let (fh, flags) = (FileHandle(o.fh), open_flags(&o));
                let created = passthrough::Created {
                    reply,
                    ttl: e.ttl,
                    attr: file_attr(&e.attr),
                };
                let stopped = self
                    .passthrough
                    .reply(e.attr.ino, fh, flags, o.whole, created);
                self.passthrough_stopped(stopped);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Vec<u8>, VfsError>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(refused(libc::ERANGE)),
        Err(e) => reply.error(errno(&e)),
    }
}
