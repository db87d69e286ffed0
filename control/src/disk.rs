//! Flushing to the disk, for what must outlive a crash of the machine: a restored copy before
//! it replaces anything (`snapfs restore`), a staged upload before it is marked complete.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Writes to the disk what the file system holding `path` has not written yet (`syncfs`).
pub fn sync_file_system(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: `syncfs` takes an open descriptor and reads no memory of ours.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
