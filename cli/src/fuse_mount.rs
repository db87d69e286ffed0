//! The kernel's side of a mount point: mounts whose daemon died, and access to /dev/fuse.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Whether `path` is a FUSE mount whose daemon is gone: the kernel answers with ENOTCONN
/// ("Transport endpoint is not connected"). A stat alone can be answered from cached
/// attributes, so opening the directory asks too.
pub fn is_dead(path: &Path) -> bool {
    let enotconn = |e: io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    std::fs::metadata(path).err().is_some_and(enotconn)
        || std::fs::read_dir(path).err().is_some_and(enotconn)
}

/// Detaches a dead mount: umount2(MNT_DETACH) as root, `fusermount3 -u -z` otherwise.
pub fn detach(path: &Path) -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("unmounting {}", path.display()));
        }
        return Ok(());
    }
    for tool in ["fusermount3", "fusermount"] {
        let status = Command::new(tool)
            .args(["-u", "-z"])
            .arg(path)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => bail!("{tool} -u -z {} failed ({s})", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("running {tool}")),
        }
    }
    bail!(
        "cannot unmount {}: fusermount3 is not installed (install fuse3)",
        path.display()
    )
}

/// Fails with advice when this user cannot open /dev/fuse, before a daemon is started only
/// to die with a less helpful message in its log.
pub fn check_device() -> anyhow::Result<()> {
    let dev = Path::new("/dev/fuse");
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "/dev/fuse does not exist: install fuse3 and load the module (sudo modprobe fuse); \
             in a container, pass the device (--device /dev/fuse)"
        ),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => bail!(
            "cannot open /dev/fuse ({e}): on this system it is not open to your user; \
             install fuse3, then add yourself to the fuse group (sudo usermod -aG fuse $USER, \
             and log in again) or allow everyone (sudo chmod 0666 /dev/fuse)"
        ),
        Err(e) => Err(e).context("opening /dev/fuse"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_missing_paths_are_not_dead_mounts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_dead(dir.path()));
        assert!(!is_dead(&dir.path().join("missing")));
    }
}
