//! `snapfs unmount`: ask the daemon to unmount, wait until it has gone, and check that the
//! mount point is free: a snapfs mount still there (another one below, or a dead one) is said,
//! with a failing status, never taken for success.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use snapfs_control::client::{active_mounts, record_paths};
use snapfs_control::paths::Paths;
use snapfs_control::units::format_duration;
use snapfs_control::wire::{Request, Response};

use crate::exit::{self, Exit};
use crate::{daemon, fuse_mount, target};

/// How long the daemon may take to flush and exit after agreeing to unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most dead mounts taken off one mount point: each detach takes one layer.
const MAX_DEAD_LAYERS: usize = 8;

pub fn run(paths: &Paths, mountpoint: &Path, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let abs = target::absolute(mountpoint, &std::env::current_dir()?);
    // A dead mount cannot be canonicalized; the lexical path is all there is then.
    let canonical = std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
    // As the mount table names it: the parent resolved, which a dead mount does not stop.
    let listed = abs
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .zip(abs.file_name())
        .map_or_else(|| canonical.clone(), |(p, name)| p.join(name));
    let record = active_mounts(paths)?
        .into_iter()
        .find(|m| m.mountpoint == canonical || m.mountpoint == abs);

    let Some(record) = record else {
        let dead = clear_dead(&listed)?;
        // A daemon that was killed left its record and socket; no daemon answers on them.
        let mut stale = false;
        for mp in [&abs, &canonical] {
            let (socket, record) = record_paths(paths, mp);
            stale |= std::fs::remove_file(record).is_ok();
            let _ = std::fs::remove_file(socket);
        }
        if dead > 0 || stale {
            check_free(&listed)?;
            writeln!(out, "cleared dead mount {}", abs.display())?;
            return Ok(Exit::Success);
        }
        if top_mount(&listed)?.is_some_and(|m| m.is_snapfs()) {
            bail!(
                "{}: a snapfs mount this snapfs has no record of (mounted by another user, or \
                 with other XDG_RUNTIME_DIR or XDG_STATE_HOME); unmount it there, or with umount",
                abs.display()
            );
        }
        bail!("{}: not mounted by snapfs", abs.display());
    };
    // The daemon unmounts whatever the path shows: never a file system mounted over it.
    if let Some(top) = top_mount(&listed)?
        && !top.is_snapfs()
    {
        bail!(
            "{}: a {} file system is mounted over the snapfs mount; unmount it first",
            abs.display(),
            top.fstype
        );
    }

    match daemon::call(&record.socket, &Request::Unmount)? {
        Response::Done => {}
        other => return Err(daemon::unexpected(&other)),
    }
    exit::exit_on_interrupt();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while alive(record.pid) {
        if Instant::now() >= deadline {
            bail!(
                "{}: snapfsd (pid {}) is still running {} after agreeing to unmount",
                record.mountpoint.display(),
                record.pid,
                format_duration(EXIT_TIMEOUT)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dead = clear_dead(&listed)?;
    check_free(&listed)?;
    write!(out, "unmounted {}", record.mountpoint.display())?;
    if dead > 0 {
        write!(out, " (and cleared {dead} dead mount(s) left there)")?;
    }
    writeln!(out)?;
    Ok(Exit::Success)
}

/// The mount the path shows, if it is a mount point.
fn top_mount(path: &Path) -> anyhow::Result<Option<fuse_mount::Mounted>> {
    let mounts = fuse_mount::mounted_at(path).context("reading the mount table")?;
    Ok(mounts.into_iter().last())
}

/// Takes off the dead mounts ("Transport endpoint is not connected") at `path`, one layer at a
/// time; answers how many.
fn clear_dead(path: &Path) -> anyhow::Result<usize> {
    let mut cleared = 0;
    while cleared < MAX_DEAD_LAYERS && fuse_mount::is_dead(path) {
        fuse_mount::detach(path)?;
        cleared += 1;
    }
    Ok(cleared)
}

/// Fails unless no snapfs mount, live or dead, is left at `path`.
fn check_free(path: &Path) -> anyhow::Result<()> {
    if fuse_mount::is_dead(path) {
        bail!(
            "{}: still mounted: a dead mount (Transport endpoint is not connected) is left; \
             clear it with umount -l {}",
            path.display(),
            path.display()
        );
    }
    let left = fuse_mount::mounted_at(path).context("reading the mount table")?;
    if left.iter().any(fuse_mount::Mounted::is_snapfs) {
        bail!(
            "{}: still a snapfs mount: it was mounted more than once, and another snapfsd \
             serves the one below; run snapfs unmount {} again where it was mounted",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Whether a process still runs. Signal 0 checks without sending anything; a zombie (a daemon
/// whose parent has not reaped it yet, as under a test harness) has finished.
fn alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(raw, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesized command name, which may itself contain ") ".
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state != Some('Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie counts as gone.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!alive(pid));
        child.wait().unwrap();
    }
}
