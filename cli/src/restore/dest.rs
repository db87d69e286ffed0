//! Which destinations a restore refuses before it touches anything: replacing DEST moves or
//! deletes the whole tree at that path, so it must not hold the user's working directory or a
//! mounted file system.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::exit::usage;

/// Fails with a usage error when `dest` (the argument `arg` made absolute against `cwd`) is
/// `.` or `..`, the working directory or one of its ancestors, or holds one of `mounts`.
pub fn check(arg: &Path, dest: &Path, cwd: &Path, mounts: &[PathBuf]) -> anyhow::Result<()> {
    let last = arg
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .rfind(|s| !s.is_empty());
    if matches!(last, Some(b"." | b"..")) {
        return Err(usage(format!(
            "{}: DEST cannot be `.` or `..`; name the directory to restore into",
            arg.display()
        )));
    }
    // The entry itself, not what a link there points at: a link at DEST is what gets replaced.
    let real = match (dest.parent(), dest.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| dest.to_path_buf()),
        _ => dest.to_path_buf(),
    };
    let here = fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    if here.starts_with(&real) || cwd.starts_with(dest) {
        return Err(usage(format!(
            "{}: DEST holds the current directory {}, which the restore would move away; \
             run it from elsewhere or pick another DEST",
            dest.display(),
            here.display()
        )));
    }
    if let Some(m) = mounts.iter().find(|m| m.starts_with(&real)) {
        return Err(usage(format!(
            "{}: DEST holds the mount point {}; unmount it first or pick another DEST",
            dest.display(),
            m.display()
        )));
    }
    Ok(())
}

/// The mount points of this process, from /proc/self/mountinfo.
pub fn mount_points() -> anyhow::Result<Vec<PathBuf>> {
    let text = fs::read("/proc/self/mountinfo")
        .map_err(|e| anyhow::Error::new(e).context("reading /proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

/// The fifth field of each line, with the kernel's octal escapes (`\040` for a space) undone.
pub fn parse_mountinfo(text: &[u8]) -> Vec<PathBuf> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|c| (b'0'..=b'7').contains(c))
                .then(|| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
        });
        match (field[i], octal.and_then(|n| u8::try_from(n).ok())) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
