//! FUSE passthrough: an open of a file whose bytes sit whole in the disk cache is handed to the
//! kernel with that file as its backing file, and the kernel reads it by itself from then on,
//! at the speed of the disk the cache is on, without asking the daemon. Files under `uploads/`
//! are handed over the same way with their staged file, which the kernel reads and writes: the
//! bytes of a copy into `uploads/` cost what they cost on that disk, and what is left per file
//! are its requests (docs/ARCHITECTURE.md, "Writing into uploads/"). The daemon still sees every
//! open and close, which is all an upload's settling and its early storing go by.
//!
//! The kernel holds one backing file per inode while passthrough handles of it are open, and
//! fails (EIO to the caller) an open of an inode in the other mode than its open handles. So,
//! per inode: while handles read through the daemon are open, new opens are too; while
//! passthrough handles are open, new ones reuse their backing id. An open is counted before it
//! is answered and a close when its release arrives, which the kernel sends after counting it
//! down itself, so this view never lags behind the kernel's.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use fuser::{
    BackingId, FileAttr, FileHandle, FopenFlags, Generation, InitFlags, KernelConfig, ReplyCreate,
    ReplyOpen,
};

/// The capability the kernel asks of whoever registers a backing file.
const CAP_SYS_ADMIN: u32 = 21;
/// The only open flags the kernel takes with passthrough; any other (keep_cache too) fails the
/// open with EIO. The page cache is the backing file's, kept by the kernel as for any file.
const PASSTHROUGH_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

enum Mode {
    /// Open handles read through the daemon.
    Daemon(usize),
    /// Open handles read the backing file.
    Kernel {
        backing: Arc<BackingId>,
        opens: usize,
    },
}

/// The answer to an open or a create: through the daemon or through the kernel.
pub(super) trait OpenReply {
    fn open_backing(&self, file: &File) -> std::io::Result<BackingId>;
    fn through_daemon(self, fh: FileHandle, flags: FopenFlags);
    fn through_kernel(self, fh: FileHandle, flags: FopenFlags, backing: &BackingId);
}

impl OpenReply for ReplyOpen {
    fn open_backing(&self, file: &File) -> std::io::Result<BackingId> {
        ReplyOpen::open_backing(self, file)
    }

    fn through_daemon(self, fh: FileHandle, flags: FopenFlags) {
        self.opened(fh, flags);
    }

    fn through_kernel(self, fh: FileHandle, flags: FopenFlags, backing: &BackingId) {
        self.opened_passthrough(fh, flags, backing);
    }
}

/// A create's answer, with the new entry it carries.
pub(super) struct Created {
    pub reply: ReplyCreate,
    pub ttl: Duration,
    pub attr: FileAttr,
}

impl OpenReply for Created {
    fn open_backing(&self, file: &File) -> std::io::Result<BackingId> {
        self.reply.open_backing(file)
    }

    fn through_daemon(self, fh: FileHandle, flags: FopenFlags) {
        self.reply
            .created(&self.ttl, &self.attr, Generation(0), fh, flags);
    }

    fn through_kernel(self, fh: FileHandle, flags: FopenFlags, backing: &BackingId) {
        let (ttl, attr) = (self.ttl, self.attr);
        self.reply
            .created_passthrough(&ttl, &attr, Generation(0), fh, flags, backing);
    }
}

pub(super) struct Passthrough {
    on: AtomicBool,
    inodes: Mutex<HashMap<u64, Mode>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether this process holds CAP_SYS_ADMIN, from its effective capability set.
fn has_cap_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
    })
}

impl Passthrough {
    pub(super) fn new() -> Passthrough {
        Passthrough {
            on: AtomicBool::new(false),
            inodes: Mutex::default(),
        }
    }

    /// Asks the kernel for passthrough when `wanted` and it can be had; answers why not
    /// otherwise.
    pub(super) fn negotiate(&self, wanted: bool, config: &mut KernelConfig) -> Result<(), String> {
        if !wanted {
            return Err("turned off with --no-passthrough".into());
        }
        if !config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            return Err("the kernel does not offer it (it needs Linux 6.9 or later)".into());
        }
        if !has_cap_sys_admin() {
            return Err("snapfsd runs without CAP_SYS_ADMIN, which the kernel asks for".into());
        }
        // Backing files on a plain file system: depth 1 still lets overlayfs stack on the mount.
        config
            .set_max_stack_depth(1)
            .map_err(|_| "the kernel refuses a stacking depth of 1".to_string())?;
        config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .map_err(|_| "the kernel does not offer it".to_string())?;
        self.on.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Answers an open or create of `ino`: through the kernel when `whole` is given and the
    /// inode's open handles allow it, else through the daemon. Answers why passthrough
    /// stopped, when registering the backing file failed; it is off for the mount from then on.
    pub(super) fn reply(
        &self,
        ino: u64,
        fh: FileHandle,
        flags: FopenFlags,
        whole: Option<File>,
        reply: impl OpenReply,
    ) -> Option<String> {
        let mut inodes = lock(&self.inodes);
        match inodes.get_mut(&ino) {
            Some(Mode::Kernel { backing, opens }) => {
                *opens += 1;
                let backing = backing.clone();
                drop(inodes);
                reply.through_kernel(fh, flags & PASSTHROUGH_FLAGS, &backing);
                return None;
            }
            Some(Mode::Daemon(opens)) => {
                *opens += 1;
                drop(inodes);
                reply.through_daemon(fh, flags);
                return None;
            }
            None => {}
        }
        let mut stopped = None;
        if let Some(file) = whole.filter(|_| self.on.load(Ordering::Relaxed)) {
            match reply.open_backing(&file) {
                Ok(backing) => {
                    let backing = Arc::new(backing);
                    let mode = Mode::Kernel {
                        backing: backing.clone(),
                        opens: 1,
                    };
                    inodes.insert(ino, mode);
                    drop(inodes);
                    reply.through_kernel(fh, flags & PASSTHROUGH_FLAGS, &backing);
                    return None;
                }
                // Out of descriptors: this open only.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {}
                Err(e) => {
                    self.on.store(false, Ordering::Relaxed);
                    stopped = Some(format!("registering a backing file failed: {e}"));
                }
            }
        }
        inodes.insert(ino, Mode::Daemon(1));
        drop(inodes);
        reply.through_daemon(fh, flags);
        stopped
    }

    /// A handle of `ino` was closed; the last passthrough one lets its backing file go.
    pub(super) fn release(&self, ino: u64) {
        let mut inodes = lock(&self.inodes);
        let last = match inodes.get_mut(&ino) {
            Some(Mode::Daemon(opens) | Mode::Kernel { opens, .. }) => {
                *opens = opens.saturating_sub(1);
                *opens == 0
            }
            None => false,
        };
        if last {
            inodes.remove(&ino);
        }
    }
}
