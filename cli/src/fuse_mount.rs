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

/// A file system mounted at a path, as the kernel's mount table lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    id: u64,
    parent: u64,
    /// `fuse.snapfs`; `fuse` (source `snapfs`) for a root mount of an older snapfsd.
    pub fstype: String,
    pub source: String,
}

impl Mounted {
    pub fn is_snapfs(&self) -> bool {
        self.fstype == "fuse.snapfs" || (self.fstype.starts_with("fuse") && self.source == "snapfs")
    }
}

/// What is mounted at `path`, the topmost (the one the path shows) last.
pub fn mounted_at(path: &Path) -> io::Result<Vec<Mounted>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounts_in(&table, path))
}

/// The mounts of a mountinfo table at `path`, the topmost last.
fn mounts_in(table: &str, path: &Path) -> Vec<Mounted> {
    let mut found: Vec<Mounted> = table
        .lines()
        .filter_map(|line| {
            // id parent dev root mountpoint options [optional…] - fstype source super-options
            let (mount, fs) = line.split_once(" - ")?;
            let f: Vec<&str> = mount.split(' ').collect();
            let mut fs = fs.split(' ');
            (unescape(f.get(4)?).as_slice() == path.as_os_str().as_bytes()).then_some(())?;
            Some(Mounted {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                fstype: fs.next()?.to_string(),
                source: fs.next()?.to_string(),
            })
        })
        .collect();
    // A mount stacked on another at the same path has it as its parent.
    let mut ordered = Vec::with_capacity(found.len());
    let mut below = found
        .iter()
        .position(|m| !found.iter().any(|o| o.id == m.parent));
    while let Some(i) = below {
        let m = found.remove(i);
        below = found.iter().position(|o| o.parent == m.id);
        ordered.push(m);
    }
    ordered.extend(found);
    ordered
}

/// Undoes the kernel's octal escapes (`\040` for a space) in a mountinfo path.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
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
    fn the_mount_table_is_read_bottom_to_top_with_escaped_paths() {
        // Listed out of order: the tmpfs is the bottom one, the others stack on it.
        let table = "\
22 1 0:21 / / rw - ext4 /dev/sda1 rw
46 45 0:41 / /tmp/my\\040mnt rw,nosuid - fuse snapfs rw,user_id=0
47 46 0:42 / /tmp/my\\040mnt rw,nosuid - fuse.snapfs snapfs rw,user_id=1000
45 22 0:40 / /tmp/my\\040mnt rw - tmpfs none rw
";
        let at = mounts_in(table, Path::new("/tmp/my mnt"));
        let kinds: Vec<_> = at.iter().map(|m| m.fstype.as_str()).collect();
        assert_eq!(kinds, ["tmpfs", "fuse", "fuse.snapfs"]);
        assert_eq!(
            at.iter().map(Mounted::is_snapfs).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert!(mounts_in(table, Path::new("/tmp/my")).is_empty());
    }

    #[test]
    fn ordinary_and_missing_paths_are_not_dead_mounts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_dead(dir.path()));
        assert!(!is_dead(&dir.path().join("missing")));
    }
}
