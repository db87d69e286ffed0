//! Copying a tree without ever writing outside the destination: entry names are checked
//! before anything is created, links are copied as links (their targets are data, kept as they
//! are, absolute or not) and never followed, and every file is checked against its size and,
//! where the source says, its CRC32C.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::exit;

/// Where a file's CRC32C is kept on a snapfs mount (DESIGN §2), as 8 hex digits.
const CRC_XATTR: &[u8] = b"user.snapfs.crc32c\0";
const BUF: usize = 1 << 20;
/// Blocks of this size that hold only zeros are skipped rather than written, so a sparse file
/// stays sparse (its holes read as zeros, and the length is set at the end).
const HOLE: usize = 4096;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Files whose CRC32C was known and matched.
    pub checksummed: u64,
}

/// Told the bytes of file data copied so far, after every read.
pub type OnBytes<'a> = &'a mut dyn FnMut(u64);

/// Copies `src` (a directory, file or symlink) to `dst`, which must not exist.
pub fn copy_tree(src: &Path, dst: &Path, on_bytes: OnBytes) -> anyhow::Result<Copied> {
    let mut copied = Copied::default();
    let meta = fs::symlink_metadata(src).with_context(|| src.display().to_string())?;
    copy_entry(src, dst, &meta, Path::new(""), &mut copied, on_bytes)?;
    Ok(copied)
}

/// The bytes of file data below `src` (itself, if a file), links not followed: what
/// [`copy_tree`] will copy.
pub fn tree_bytes(src: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in fs::read_dir(src)? {
        total += tree_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// `rel` is the entry's path below the root (empty for the root), for messages.
fn copy_entry(
    src: &Path,
    dst: &Path,
    meta: &Metadata,
    rel: &Path,
    copied: &mut Copied,
    on_bytes: OnBytes,
) -> anyhow::Result<()> {
    exit::check_interrupt()?;
    let shown = || format!("./{}", rel.display());
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in fs::read_dir(src).with_context(|| format!("reading {}", shown()))? {
            let entry = entry.with_context(|| format!("reading {}", shown()))?;
            let name = entry.file_name();
            check_name(&name).with_context(|| format!("refusing {}", shown()))?;
            let child = entry.path();
            let child_meta = fs::symlink_metadata(&child)
                .with_context(|| format!("{}", rel.join(&name).display()))?;
            copy_entry(
                &child,
                &dst.join(&name),
                &child_meta,
                &rel.join(&name),
                copied,
                on_bytes,
            )?;
        }
        // Mode last: a read-only directory would refuse its own children.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        copied.dirs += 1;
    } else if kind.is_file() {
        copy_file(src, dst, meta, copied, on_bytes).with_context(shown)?;
        copied.files += 1;
    } else if kind.is_symlink() {
        // Only ever created inside a directory made here, and never descended into: wherever
        // it points, nothing is written through it.
        let target = fs::read_link(src).with_context(shown)?;
        std::os::unix::fs::symlink(&target, dst).with_context(shown)?;
        copied.symlinks += 1;
    } else {
        bail!("{}: a device, FIFO or socket cannot be restored", shown());
    }
    set_times(dst, meta).with_context(|| format!("setting times of {}", shown()))
}

/// A directory entry name that stays inside its directory.
pub fn check_name(name: &OsStr) -> anyhow::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        bail!("unsafe entry name {:?}", name);
    }
    Ok(())
}

fn copy_file(
    src: &Path,
    dst: &Path,
    meta: &Metadata,
    copied: &mut Copied,
    on_bytes: OnBytes,
) -> anyhow::Result<()> {
    // O_NOFOLLOW: an entry swapped for a link since it was listed is not read through.
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    let mut buf = vec![0u8; BUF];
    let mut crc = 0u32;
    let mut written = 0u64;
    loop {
        exit::check_interrupt()?;
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading"),
        };
        write_keeping_holes(&mut output, &buf[..n]).context("writing")?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        written += n as u64;
        on_bytes(copied.bytes + written);
    }
    if written != meta.len() {
        bail!(
            "size changed while copying: {} bytes listed, {written} read",
            meta.len()
        );
    }
    // A file ending in a hole has not reached its length yet.
    output.set_len(written).context("writing")?;
    if let Some(want) = stored_crc(&input)? {
        if want != crc {
            bail!("checksum mismatch: crc32c {crc:08x}, the snapshot says {want:08x}");
        }
        copied.checksummed += 1;
    }
    output.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    copied.bytes += written;
    Ok(())
}

/// Writes `data` at the file's position, seeking over runs of all-zero blocks.
fn write_keeping_holes(out: &mut File, data: &[u8]) -> io::Result<()> {
    let zero = |b: &&[u8]| b.iter().all(|x| *x == 0);
    let mut rest = data;
    while !rest.is_empty() {
        let holes: usize = rest.chunks(HOLE).take_while(zero).map(<[u8]>::len).sum();
        if holes > 0 {
            out.seek(SeekFrom::Current(i64::try_from(holes).unwrap_or(i64::MAX)))?;
            rest = &rest[holes..];
        }
        let filled: usize = rest
            .chunks(HOLE)
            .take_while(|b| !zero(b))
            .map(<[u8]>::len)
            .sum();
        out.write_all(&rest[..filled])?;
        rest = &rest[filled..];
    }
    Ok(())
}

/// The CRC32C a snapfs mount states for a file, if any.
fn stored_crc(file: &File) -> anyhow::Result<Option<u32>> {
    let mut buf = [0u8; 64];
    // SAFETY: the name is NUL-terminated and the buffer is valid for its length.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            CRC_XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Some(text) = super::xattr_value(n, &buf).context("reading its crc32c attribute")? else {
        return Ok(None);
    };
    u32::from_str_radix(text.trim(), 16)
        .map(Some)
        .with_context(|| format!("unreadable crc32c attribute {text:?}"))
}

/// Access and modification times to the nanosecond, on the entry itself (not a link's target).
fn set_times(path: &Path, meta: &Metadata) -> anyhow::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: `c` is a valid path and `times` two valid timespecs for the call's duration.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        for good in ["a", "..a", ".hidden", "a b", "…"] {
            assert!(check_name(OsStr::new(good)).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn copies_modes_times_links_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/data"), b"hello").unwrap();
        fs::set_permissions(src.join("sub/data"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("sub/data", src.join("link")).unwrap();
        symlink("../link", src.join("sub/up")).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        let stamp = libc::timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 123_456_789,
        };
        let c = CString::new(src.join("sub/data").as_os_str().as_bytes()).unwrap();
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [stamp, stamp].as_ptr(), 0) };

        let dst = dir.path().join("dst");
        let copied = copy_tree(&src, &dst, &mut |_| {}).unwrap();
        assert_eq!(
            (copied.files, copied.symlinks, copied.dirs, copied.bytes),
            (1, 2, 2, 5)
        );
        assert_eq!(fs::read(dst.join("link")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(dst.join("sub/up")).unwrap(),
            Path::new("../link")
        );
        let m = fs::metadata(dst.join("sub/data")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
        assert_eq!(
            fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777,
            0o555
        );
        for d in [&src, &dst] {
            fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn a_single_file_is_copied_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("db");
        fs::write(&src, b"x".repeat(3 * BUF + 7)).unwrap();
        let dst = dir.path().join("out");
        let mut told = Vec::new();
        let copied = copy_tree(&src, &dst, &mut |b| told.push(b)).unwrap();
        assert_eq!(copied.bytes, 3 * BUF as u64 + 7);
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        // Told after every read, growing to the whole, which the walk beforehand knew.
        assert!(told.len() >= 4 && told.is_sorted(), "{told:?}");
        assert_eq!(told.last(), Some(&copied.bytes));
        assert_eq!(tree_bytes(&src).unwrap(), copied.bytes);
        assert_eq!(tree_bytes(dir.path()).unwrap(), 2 * copied.bytes);
    }

    #[test]
    fn sparse_files_keep_their_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sparse");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mut f = OpenOptions::new().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        drop(f);
        let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
        if allocated(&src) > 1 << 20 {
            eprintln!("skipped: this file system keeps no holes");
            return;
        }
        let dst = dir.path().join("out");
        copy_tree(&src, &dst, &mut |_| {}).unwrap();
        assert_eq!(fs::metadata(&dst).unwrap().len(), 64 << 20);
        assert!(
            allocated(&dst) <= allocated(&src) + (64 << 10),
            "{}",
            allocated(&dst)
        );
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
    }

    #[test]
    fn special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        let fifo = CString::new(src.join("pipe").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = copy_tree(&src, &dir.path().join("dst"), &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("./pipe"), "{err:#}");
    }
}
