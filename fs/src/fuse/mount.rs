//! Mounting: the options the kernel is given and the session that serves the file system.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;

use fuser::{Config, INodeNo, MountOption, SessionACL};

use super::FuseFs;
use crate::vfs::Vfs;

/// How the file system is mounted.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub read_only: bool,
    /// Let users other than the one who mounted in (needs `user_allow_other` for non-root).
    pub allow_other: bool,
    pub threads: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            threads: 16,
        }
    }
}

/// Mounts `vfs` at `mountpoint`; the file system is served until the session is dropped or
/// unmounted. `on_exit` runs when the session ends, whoever unmounted it.
pub fn mount(
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    config: &MountConfig,
    on_exit: impl FnOnce() + Send + Sync + 'static,
) -> io::Result<fuser::BackgroundSession> {
    let mut options = vec![
        MountOption::FSName("snapfs".into()),
        MountOption::Subtype("snapfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if config.read_only {
        options.push(MountOption::RO);
    }
    let mut fuse_config = Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let fs = FuseFs {
        vfs,
        rt,
        read_only: config.read_only,
        on_exit: Some(Box::new(on_exit)),
    };
    fuser::spawn_mount(fs, mountpoint, &fuse_config)
}

/// Lets the VFS drop the kernel's cached names when snapshots or uploads change on their own.
///
/// The kernel carries out an entry invalidation under the parent directory's lock, which a
/// request on that directory holds while it waits for the daemon. Sent from a path such a
/// request can block (a FUSE request thread, or anyone holding a lock a request may need, like
/// the job engine's), the two wait on each other for good. So the VFS only queues the notices,
/// and one thread of their own sends them, holding nothing a request could need.
pub fn connect_invalidation(vfs: &Vfs, session: &fuser::BackgroundSession) -> io::Result<()> {
    let notifier = session.notifier();
    let (queue, notices) = std::sync::mpsc::channel::<(u64, OsString)>();
    std::thread::Builder::new()
        .name("snapfs-inval".into())
        .spawn(move || {
            // Ends when the VFS is dropped, which closes the queue.
            for (parent, name) in notices {
                // ENOENT only means the kernel had nothing cached; after unmount every notice
                // fails, harmlessly.
                let _ = notifier.inval_entry(INodeNo(parent), &name);
            }
        })?;
    vfs.set_invalidator(Box::new(move |parent, name| {
        // Sending never blocks; it fails only once the thread is gone.
        let _ = queue.send((parent, name.to_owned()));
    }));
    Ok(())
}
