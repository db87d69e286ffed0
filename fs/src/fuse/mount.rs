//! Mounting: the options the kernel is given and the session that serves the file system.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, INodeNo, MountOption, SessionACL};

use super::FuseFs;
use super::gate::Gate;
use super::op_stats::OpStats;
use crate::vfs::{Notice, Vfs};

/// How the file system is mounted.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub read_only: bool,
    /// Let users other than the one who mounted in (needs `user_allow_other` for non-root).
    pub allow_other: bool,
    /// Let root in besides the one who mounted.
    pub allow_root: bool,
    /// Have fusermount3 unmount when the daemon dies, however it dies. fuser allows it only
    /// with root or others let in, so it lets root in.
    pub auto_unmount: bool,
    pub threads: usize,
    /// Let the kernel read files kept whole in the disk cache itself (FUSE passthrough), where
    /// it and the daemon's privileges allow.
    pub passthrough: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            threads: 16,
            passthrough: true,
        }
    }
}

/// A mounted file system, served until [`Mounted::unmount`] (or until it is dropped).
pub struct Mounted {
    session: fuser::BackgroundSession,
    gate: Arc<Gate>,
    stats: Arc<OpStats>,
    mountpoint: PathBuf,
}

/// Mounts `vfs` at `mountpoint`. `on_exit` runs when the session ends, whoever unmounted it.
pub fn mount(
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    config: &MountConfig,
    on_exit: impl FnOnce() + Send + Sync + 'static,
) -> io::Result<Mounted> {
    let mut options = vec![
        MountOption::FSName("snapfs".into()),
        // The type `fuse.snapfs` (`findmnt -t fuse.snapfs`). fuser hands `Subtype` only to
        // fusermount3 and drops it when it mounts by itself (as root); the kernel takes the
        // same option directly, and fusermount3 reads it the same way.
        MountOption::CUSTOM("subtype=snapfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if config.read_only {
        options.push(MountOption::RO);
    }
    if config.auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let mut fuse_config = Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if config.allow_other {
        SessionACL::All
    } else if config.allow_root || config.auto_unmount {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let gate = Arc::new(Gate::new());
    let stats = Arc::new(OpStats::default());
    let fs = FuseFs {
        vfs,
        rt,
        gate: gate.clone(),
        stats: stats.clone(),
        read_only: config.read_only,
        passthrough_wanted: config.passthrough,
        passthrough: super::passthrough::Passthrough::new(),
        on_exit: Some(Box::new(on_exit)),
    };
    Ok(Mounted {
        session: fuser::spawn_mount(fs, mountpoint, &fuse_config)?,
        gate,
        stats,
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    /// The counts of the operations this mount answered.
    pub fn op_stats(&self) -> Arc<OpStats> {
        self.stats.clone()
    }

    /// Stops serving and unmounts. Requests in flight get a moment to finish and are then
    /// cancelled (failing with EIO), as is every later one, so that none is left inside the
    /// runtime when it shuts down. A mount still in use (a process has a file open or its
    /// working folder inside) is detached: it is gone from the mount point at once, and its
    /// users see errors once the daemon exits. Answers an error when the mount is still there.
    pub fn unmount(self) -> io::Result<()> {
        if !self.gate.stop() {
            tracing::warn!("requests still in flight after they were cancelled");
        }
        let Mounted {
            session,
            mountpoint,
            ..
        } = self;
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            // Already unmounted (umount, fusermount3 -u): nothing is left to do.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(
                    mountpoint = %mountpoint.display(),
                    "the mount is still in use; detaching it"
                );
                detach(&mountpoint)
            }
            Err(e) => Err(e),
        }
    }
}

/// Takes a busy mount off its mount point (only root gets here: for other users fuser already
/// unmounts lazily through fusermount3).
fn detach(mountpoint: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the VFS drop the kernel's cached names when snapshots or uploads change on their own.
///
/// The kernel carries out an entry invalidation under the parent directory's lock, which a
/// request on that directory holds while it waits for the daemon. Sent from a path such a
/// request can block (a FUSE request thread, or anyone holding a lock a request may need, like
/// the job engine's), the two wait on each other for good. So the VFS only queues the notices,
/// and one thread of their own sends them, holding nothing a request could need.
pub fn connect_invalidation(vfs: &Vfs, mounted: &Mounted) -> io::Result<()> {
    let notifier = mounted.session.notifier();
    let (queue, notices) = std::sync::mpsc::channel::<Notice>();
    std::thread::Builder::new()
        .name("snapfs-inval".into())
        .spawn(move || {
            // Ends when the VFS is dropped, which closes the queue.
            for notice in notices {
                match notice {
                    // ENOENT only means the kernel had nothing cached; after unmount every
                    // notice fails, harmlessly.
                    Notice::Forget(parent, name) => {
                        let _ = notifier.inval_entry(INodeNo(parent), &name);
                    }
                    // The one waiting may have given up.
                    Notice::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    vfs.set_invalidator(Box::new(move |notice| {
        // Sending never blocks; it fails only once the thread is gone.
        let _ = queue.send(notice);
    }));
    Ok(())
}
