//! `snapfs unmount`: ask the daemon to unmount and wait until it has gone.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use snapfs_control::client::{active_mounts, record_paths};
use snapfs_control::paths::Paths;
use snapfs_control::units::format_duration;
use snapfs_control::wire::{Request, Response};

use crate::exit::{self, Exit};
use crate::{daemon, fuse_mount, target};

/// How long the daemon may take to flush and exit after agreeing to unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(paths: &Paths, mountpoint: &Path, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let abs = target::absolute(mountpoint, &std::env::current_dir()?);
    // A dead mount cannot be canonicalized; the lexical path is all there is then.
    let canonical = std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
    let record = active_mounts(paths)?
        .into_iter()
        .find(|m| m.mountpoint == canonical || m.mountpoint == abs);

    let Some(record) = record else {
        let dead = fuse_mount::is_dead(&abs);
        if dead {
            fuse_mount::detach(&abs)?;
        }
        // A daemon that was killed left its record and socket; no daemon answers on them.
        let mut stale = false;
        for mp in [&abs, &canonical] {
            let (socket, record) = record_paths(paths, mp);
            stale |= std::fs::remove_file(record).is_ok();
            let _ = std::fs::remove_file(socket);
        }
        if dead || stale {
            writeln!(out, "cleared dead mount {}", abs.display())?;
            return Ok(Exit::Success);
        }
        bail!("{}: not mounted by snapfs", abs.display());
    };

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
    writeln!(out, "unmounted {}", record.mountpoint.display())?;
    Ok(Exit::Success)
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
