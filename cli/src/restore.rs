//! `snapfs restore SNAPSHOT DEST`: copy a snapshot out of the mount to a local path so that
//! DEST is either what it was or the complete, verified copy, never something in between.
//!
//! The tree is read through the mount with ordinary file calls (a snapshot is a directory
//! there), copied to a temporary sibling of DEST, checked, and swapped into place with one
//! rename; the old DEST is kept aside unless `--no-backup`.
//!
//! Without DEST, a snapshot is restored where it came from, by its backend (a HiveMQ backup
//! into its cluster), and followed until that ends.

mod copy;
mod dest;

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use snapfs_control::paths::Paths;
use snapfs_control::units::format_size_rounded;
use snapfs_control::wire::{Request, Response, UploadState};

use crate::exit::{self, Exit, usage};
use crate::progress::Progress;
use crate::{daemon, target, wait};

pub struct Config {
    pub snapshot: PathBuf,
    pub dest: Option<PathBuf>,
    /// Keep an existing DEST aside instead of deleting it.
    pub backup: bool,
    /// Restore a snapshot past its expiry too.
    pub force: bool,
    /// Make this Kubernetes claim from the snapshot instead.
    pub pvc: Option<String>,
    pub size: Option<u64>,
    /// Print a JSON object instead of text.
    pub json: bool,
}

#[derive(Debug)]
pub struct Outcome {
    pub copied: copy::Copied,
    /// Where the previous DEST went, when it was kept.
    pub backup: Option<PathBuf>,
    /// Whether a previous DEST existed.
    pub replaced: bool,
}

pub fn run(paths: &Paths, cfg: &Config, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if let Some(claim) = &cfg.pvc {
        return to_claim(paths, &cfg.snapshot, claim, cfg.size, cfg.json, out);
    }
    let Some(dest) = &cfg.dest else {
        return in_place(paths, &cfg.snapshot, cfg.json, out);
    };
    let cwd = std::env::current_dir()?;
    let arg = dest;
    let dest = target::absolute(arg, &cwd);
    dest::check(arg, &dest, &cwd, &dest::mount_points()?)?;
    let src = source(paths, &cfg.snapshot)?;
    let now = Utc::now();
    if !cfg.force {
        refuse_expired(&src, now)?;
    }
    exit::flag_on_interrupt();
    let mut progress = Progress::on_terminal();
    // The walk costs listings the copy needs anyway; a terminal is the only one to see it.
    let total = if progress.is_shown() {
        copy::tree_bytes(&src).unwrap_or(0)
    } else {
        0
    };
    let what = dest.display().to_string();
    let done = restore(&src, &dest, cfg.backup, now, &mut |bytes| {
        progress.show(bytes, total, &what)
    })
    .with_context(|| format!("restoring {} to {}", cfg.snapshot.display(), dest.display()))?;
    progress.clear();
    let c = &done.copied;
    if cfg.json {
        let v = serde_json::json!({
            "snapshot": src,
            "dest": dest,
            "files": c.files,
            "dirs": c.dirs,
            "symlinks": c.symlinks,
            "bytes": c.bytes,
            "checksummed": c.checksummed,
            "replaced": done.replaced,
            "backup": done.backup,
        });
        writeln!(out, "{v}")?;
        return Ok(Exit::Success);
    }
    writeln!(
        out,
        "restored {} to {} ({} files, {}, {} links; {} files checked against their crc32c)",
        src.display(),
        dest.display(),
        c.files,
        format_size_rounded(c.bytes),
        c.symlinks,
        c.checksummed
    )?;
    match (&done.backup, done.replaced) {
        (Some(b), _) => writeln!(out, "previous {} moved to {}", dest.display(), b.display())?,
        (None, true) => writeln!(out, "previous {} replaced", dest.display())?,
        (None, false) => {}
    }
    Ok(Exit::Success)
}

/// Has the snapshot's backend restore it (a HiveMQ backup into its cluster) and follows it.
fn in_place(
    paths: &Paths,
    snapshot: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, snapshot)?;
    let name = r.snapshot()?;
    let req = Request::Restore {
        target: r.target.clone(),
        name: name.clone(),
    };
    match daemon::call(&r.mount.socket, &req)
        .with_context(|| format!("restoring {}/snapshots/{name}", r.target))?
    {
        Response::Job(_) => {}
        other => return Err(daemon::unexpected(&other)),
    }
    // The restore runs in the broker whatever happens here, so Ctrl-C only stops watching.
    exit::exit_on_interrupt();
    let status = wait::follow(&r.mount.socket, &r.target, &name)?;
    if json {
        writeln!(out, "{}", wait::json(&status))?;
    }
    if status.state == UploadState::Done {
        if json {
            return Ok(Exit::Success);
        }
        writeln!(
            out,
            "restored {}/snapshots/{name} into its cluster",
            r.target
        )?;
        return Ok(Exit::Success);
    }
    eprintln!("snapfs: {}", wait::failure(&status, status.state));
    Ok(Exit::Failed)
}

/// `--pvc`: the daemon makes a claim from a VolumeSnapshot.
fn to_claim(
    paths: &Paths,
    snapshot: &Path,
    claim: &str,
    size: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, snapshot)?;
    let name = r.snapshot()?;
    let req = Request::RestoreClaim {
        target: r.target.clone(),
        name: name.clone(),
        claim: claim.to_owned(),
        size,
    };
    match daemon::call(&r.mount.socket, &req)
        .with_context(|| format!("restoring {}/snapshots/{name}", r.target))?
    {
        Response::Made { description } => {
            if json {
                writeln!(out, "{}", serde_json::json!({ "created": description }))?;
            } else {
                writeln!(out, "created {description}")?;
            }
            Ok(Exit::Success)
        }
        other => Err(daemon::unexpected(&other)),
    }
}

/// The path to read from: a snapshot, or something inside one, under a mount's
/// `snapshots/` (anything else is not a snapshot, and copying it is `cp`'s job). A link at the
/// argument itself (`snapshots/latest`) is followed.
fn source(paths: &Paths, arg: &Path) -> anyhow::Result<PathBuf> {
    let r = target::resolve(paths, arg)?;
    if !matches!(r.place, target::Place::Snapshot { .. }) {
        return Err(usage(format!(
            "{}: not a snapshot; SNAPSHOT is a path under a target's snapshots/ (…/{}/snapshots/NAME)",
            arg.display(),
            r.target
        )));
    }
    let path = r.path();
    let meta = fs::symlink_metadata(&path).with_context(|| arg.display().to_string())?;
    if meta.file_type().is_symlink() {
        return fs::canonicalize(&path).with_context(|| path.display().to_string());
    }
    Ok(path)
}

/// Refuses a snapshot past its expiry (DESIGN §8): cleanup may delete it at any moment, and
/// restoring data someone let expire is rarely meant. `--force` skips this.
fn refuse_expired(src: &Path, now: DateTime<Utc>) -> anyhow::Result<()> {
    if let Some((root, expires)) = expiry(src)?
        && expires <= now
    {
        return Err(usage(format!(
            "{} expired at {}; pass --force to restore it anyway",
            root.display(),
            expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    Ok(())
}

/// The snapshot holding `path` and its expiry, if it has one. The snapshot's root is the
/// nearest ancestor with `user.snapfs.state`, which snapfs puts on snapshot roots only, so
/// this works the same under every kind of target.
fn expiry(path: &Path) -> anyhow::Result<Option<(PathBuf, DateTime<Utc>)>> {
    for dir in path.ancestors() {
        if xattr(dir, c"user.snapfs.state")?.is_none() {
            continue;
        }
        let Some(text) = xattr(dir, c"user.snapfs.expires")? else {
            return Ok(None);
        };
        let at = DateTime::parse_from_rfc3339(text.trim())
            .with_context(|| format!("{}: unreadable expiry {text:?}", dir.display()))?;
        return Ok(Some((dir.to_path_buf(), at.with_timezone(&Utc))));
    }
    Ok(None)
}

/// One extended attribute of `path` itself (not a link's target), None when absent.
fn xattr(path: &Path, name: &std::ffi::CStr) -> anyhow::Result<Option<String>> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    xattr_value(n, &buf)
        .with_context(|| format!("{}: reading {}", path.display(), name.to_string_lossy()))
}

/// What a getxattr call answered (`n` its return value, right after it): the value, None
/// when the attribute is absent or the file system keeps none, or the error.
fn xattr_value(n: isize, buf: &[u8]) -> io::Result<Option<String>> {
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA | libc::ENOTSUP | libc::ERANGE) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(
        String::from_utf8_lossy(&buf[..n.unsigned_abs()]).into_owned(),
    ))
}

/// Copies `src` to `dest` atomically; see the module documentation.
pub fn restore(
    src: &Path,
    dest: &Path,
    backup: bool,
    now: DateTime<Utc>,
    on_bytes: copy::OnBytes,
) -> anyhow::Result<Outcome> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(usage(format!("{}: not a path DEST can be", dest.display())));
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(usage(format!(
                "the parent of {}, {}, is not an existing directory",
                dest.display(),
                parent.display()
            )));
        }
    }
    // A destination inside the source would be copied into itself.
    if let (Ok(s), Ok(p)) = (fs::canonicalize(src), fs::canonicalize(parent))
        && p.join(name).starts_with(&s)
    {
        return Err(usage(format!(
            "{} is inside {}",
            dest.display(),
            src.display()
        )));
    }

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".snapfs-tmp-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    if fs::symlink_metadata(&tmp).is_ok() {
        bail!(
            "{} is left over from an earlier restore; remove it and try again",
            tmp.display()
        );
    }

    let copied = match copy::copy_tree(src, &tmp, on_bytes).and_then(|c| sync(parent).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
    };

    let replaced = fs::symlink_metadata(dest).is_ok();
    if !replaced {
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = remove_tree(&tmp);
            return Err(e).context("moving the copy into place");
        }
        return Ok(Outcome {
            copied,
            backup: None,
            replaced,
        });
    }

    let backup_path = backup.then(|| backup_name(dest, now));
    swap_in(&tmp, dest, backup_path.as_deref())?;
    Ok(Outcome {
        copied,
        backup: backup_path,
        replaced,
    })
}

/// Puts `new` at `dest` and the old `dest` at `backup` (or deletes it). With
/// RENAME_EXCHANGE, DEST is never missing, not even for an instant; file systems without it
/// get two renames. The copy at `new` is removed on failure only while DEST is untouched; once
/// the old DEST has moved, it is put back or the error says where it is.
fn swap_in(new: &Path, dest: &Path, backup: Option<&Path>) -> anyhow::Result<()> {
    let left_at = |old: &Path| {
        format!(
            "the previous {} is now at {}",
            dest.display(),
            old.display()
        )
    };
    match exchange(new, dest) {
        // `new` now holds the old DEST.
        Ok(()) => match backup {
            Some(b) => fs::rename(new, b).with_context(|| {
                format!(
                    "moving the previous copy to {}; {}",
                    b.display(),
                    left_at(new)
                )
            }),
            None => remove_tree(new)
                .with_context(|| format!("removing the previous copy; {}", left_at(new))),
        },
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP)
            ) =>
        {
            let aside = match backup {
                Some(b) => b.to_path_buf(),
                None => new.with_extension("snapfs-old"),
            };
            if let Err(e) = fs::rename(dest, &aside) {
                let _ = remove_tree(new);
                return Err(e).context("moving the previous copy aside");
            }
            if let Err(e) = fs::rename(new, dest) {
                if fs::rename(&aside, dest).is_ok() {
                    let _ = remove_tree(new);
                    return Err(e).context("moving the copy into place");
                }
                return Err(e).with_context(|| {
                    format!(
                        "moving the copy at {} into place; {}",
                        new.display(),
                        left_at(&aside)
                    )
                });
            }
            if backup.is_none() {
                remove_tree(&aside)
                    .with_context(|| format!("removing the previous copy; {}", left_at(&aside)))?;
            }
            Ok(())
        }
        Err(e) => {
            let _ = remove_tree(new);
            Err(e).context("swapping the copy into place")
        }
    }
}

/// Atomically exchanges two paths (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    // The kernel's value; not every libc build exports the constant.
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `DEST.snapfs-backup-<UTC yyyymmddTHHMMSSZ>`, with `-2`, `-3`… if restored twice a second.
fn backup_name(dest: &Path, now: DateTime<Utc>) -> PathBuf {
    let mut base = dest.as_os_str().to_owned();
    base.push(format!(".snapfs-backup-{}", now.format("%Y%m%dT%H%M%SZ")));
    let mut candidate = PathBuf::from(&base);
    let mut n = 2;
    while fs::symlink_metadata(&candidate).is_ok() {
        let mut next = base.clone();
        next.push(format!("-{n}"));
        candidate = PathBuf::from(next);
        n += 1;
    }
    candidate
}

/// Flushes the copy to disk before it replaces anything: a rename that outlives a crash must
/// not point at files whose data did not.
fn sync(dir: &Path) -> anyhow::Result<()> {
    snapfs_control::disk::sync_file_system(dir).context("flushing the copy to disk")
}

/// Removes a file, link or tree, including read-only directories inside it (a restored
/// snapshot keeps its modes, so `rm -r` semantics alone would fail on them).
fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests;
