//! Restore against plain local trees: the copy does not care where its source lives.

use std::os::unix::fs::symlink;

use chrono::TimeZone;

use super::*;
use crate::exit::{Exit, classify};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, 5, 3).unwrap()
}

/// A directory holding `snap/` (the source) and `dest/` (an existing restore target).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("snap");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/new.txt"), b"new").unwrap();
    symlink("a/new.txt", src.join("link")).unwrap();
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("old.txt"), b"old").unwrap();
    (dir, src, dest)
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn restores_into_a_new_path() {
    let (dir, src, _) = setup();
    let dest = dir.path().join("fresh");
    let out = restore(&src, &dest, true, now(), &mut |_| {}).unwrap();
    assert!(!out.replaced);
    assert_eq!(out.backup, None);
    assert_eq!(fs::read(dest.join("link")).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["dest", "fresh", "snap"]);
}

#[test]
fn existing_dest_is_moved_aside_with_a_timestamp() {
    let (dir, src, dest) = setup();
    let out = restore(&src, &dest, true, now(), &mut |_| {}).unwrap();
    let backup = dir.path().join("dest.snapfs-backup-20261120T090503Z");
    assert_eq!(out.backup.as_deref(), Some(backup.as_path()));
    assert_eq!(fs::read(backup.join("old.txt")).unwrap(), b"old");
    assert_eq!(names(&dest), ["a", "link"]);

    // A second restore in the same second gets its own backup name.
    let again = restore(&src, &dest, true, now(), &mut |_| {}).unwrap();
    assert_eq!(
        again.backup,
        Some(dir.path().join("dest.snapfs-backup-20261120T090503Z-2"))
    );
    assert_eq!(
        names(dir.path()),
        [
            "dest",
            "dest.snapfs-backup-20261120T090503Z",
            "dest.snapfs-backup-20261120T090503Z-2",
            "snap"
        ]
    );
}

#[test]
fn no_backup_replaces_even_read_only_trees() {
    let (dir, src, dest) = setup();
    fs::create_dir(dest.join("ro")).unwrap();
    fs::write(dest.join("ro/f"), b"x").unwrap();
    fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let out = restore(&src, &dest, false, now(), &mut |_| {}).unwrap();
    assert!(out.replaced);
    assert_eq!(out.backup, None);
    assert_eq!(names(&dest), ["a", "link"]);
    assert_eq!(
        names(dir.path()),
        ["dest", "snap"],
        "nothing left beside DEST"
    );
}

#[test]
fn a_file_snapshot_can_replace_a_directory() {
    let (dir, _, dest) = setup();
    let file = dir.path().join("db.sqlite");
    fs::write(&file, b"SQLite format 3").unwrap();
    restore(&file, &dest, false, now(), &mut |_| {}).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"SQLite format 3");
}

/// A refused restore leaves DEST as it was and no temporary copy behind.
fn assert_refused(src: &Path, dest: &Path, expect: &str) {
    let parent = dest.parent().unwrap();
    let before = names(parent);
    let err = restore(src, dest, true, now(), &mut |_| {}).unwrap_err();
    assert!(format!("{err:#}").contains(expect), "{err:#}");
    assert_eq!(names(parent), before, "temporary copy removed");
    assert_eq!(names(dest), ["old.txt"]);
    assert_eq!(fs::read(dest.join("old.txt")).unwrap(), b"old");
}

#[test]
fn outward_and_absolute_symlinks_are_restored_as_links() {
    let (dir, src, dest) = setup();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // `b` points at the root, so `a/x -> ../b/..` reaches the root's parent.
    let links = [
        ("a/evil", "../../../etc/passwd"),
        ("abs", "/etc/hostname"),
        ("b", "."),
        ("a/x", "../b/.."),
        ("out", "../outside"),
    ];
    for (at, to) in links {
        symlink(to, src.join(at)).unwrap();
    }
    restore(&src, &dest, false, now(), &mut |_| {}).unwrap();
    for (at, to) in links {
        assert_eq!(fs::read_link(dest.join(at)).unwrap(), Path::new(to), "{at}");
    }
    assert!(names(&outside).is_empty(), "nothing written through a link");
    assert_eq!(names(dir.path()), ["dest", "outside", "snap"]);
}

#[test]
fn checksum_attribute_is_checked() {
    let (_dir, src, dest) = setup();
    let file = CString::new(src.join("a/new.txt").as_os_str().as_bytes()).unwrap();
    let set = |value: &str| {
        // SAFETY: valid strings and buffer for the call.
        unsafe {
            libc::setxattr(
                file.as_ptr(),
                c"user.snapfs.crc32c".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    if set("00000000") != 0 {
        eprintln!("skipped: this file system keeps no user xattrs");
        return;
    }
    assert_refused(&src, &dest, "checksum mismatch");
    set(&format!("{:08x}", crc32c::crc32c(b"new")));
    let out = restore(&src, &dest, false, now(), &mut |_| {}).unwrap();
    assert_eq!(out.copied.checksummed, 1);
}

#[test]
fn expired_snapshots_are_refused_below_their_root_too() {
    let (_dir, src, _) = setup();
    let root = CString::new(src.as_os_str().as_bytes()).unwrap();
    let set = |name: &std::ffi::CStr, value: &str| {
        // SAFETY: valid strings and buffer for the call.
        unsafe {
            libc::setxattr(
                root.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    if set(c"user.snapfs.state", "ready") != 0 {
        eprintln!("skipped: this file system keeps no user xattrs");
        return;
    }
    // A snapshot without an expiry never expires.
    refuse_expired(&src.join("a/new.txt"), now()).unwrap();
    set(c"user.snapfs.expires", "2026-11-20T09:05:03Z");
    for path in [src.clone(), src.join("a/new.txt")] {
        let err = refuse_expired(&path, now()).unwrap_err();
        assert_eq!(classify(&err), Some(Exit::Usage));
        assert!(err.to_string().contains("--force"), "{err}");
    }
    set(c"user.snapfs.expires", "2026-11-20T09:05:04Z");
    refuse_expired(&src, now()).unwrap();
}

#[test]
fn dest_parent_must_exist_and_dest_must_not_be_inside_the_source() {
    let (dir, src, _) = setup();
    let err = restore(
        &src,
        &dir.path().join("missing/dest"),
        true,
        now(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(classify(&err), Some(Exit::Usage));
    let err = restore(&src, &src.join("a/inner"), true, now(), &mut |_| {}).unwrap_err();
    assert_eq!(classify(&err), Some(Exit::Usage));
    assert_eq!(names(&src.join("a")), ["new.txt"]);
}

#[test]
fn leftover_temporary_copy_is_not_overwritten() {
    let (dir, src, dest) = setup();
    let tmp = dir
        .path()
        .join(format!(".dest.snapfs-tmp-{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = restore(&src, &dest, true, now(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
    assert!(tmp.exists());
}

#[test]
fn dest_holding_the_working_directory_or_a_mount_is_refused() {
    let (dir, _, dest) = setup();
    fs::create_dir_all(dest.join("sub/deeper")).unwrap();
    let cwd = dest.join("sub");
    let refused = |arg: &str, mounts: &[PathBuf]| {
        let abs = crate::target::absolute(Path::new(arg), &cwd);
        let err = dest::check(Path::new(arg), &abs, &cwd, mounts).unwrap_err();
        assert_eq!(classify(&err), Some(Exit::Usage), "{arg}: {err}");
        err.to_string()
    };
    for arg in [".", "..", "./", "deeper/..", "../."] {
        refused(arg, &[]);
    }
    let text = refused(dest.to_str().unwrap(), &[]);
    assert!(text.contains("current directory"), "{text}");
    let text = refused(dir.path().to_str().unwrap(), &[]);
    assert!(text.contains("current directory"), "{text}");

    let elsewhere = dir.path().join("other");
    let inner_mount = elsewhere.join("mnt/inner");
    let mounts = [inner_mount.clone()];
    let text = refused(elsewhere.to_str().unwrap(), &mounts);
    assert!(
        text.contains("mount point") && text.contains("inner"),
        "{text}"
    );
    refused(inner_mount.to_str().unwrap(), &mounts);
    // A sibling whose name only starts like DEST, and a mount above DEST, are fine.
    let fine = dir.path().join("other2");
    dest::check(&fine, &fine, &cwd, &[inner_mount, dir.path().to_path_buf()]).unwrap();
    assert_eq!(names(&dest), ["old.txt", "sub"], "nothing touched");
}

#[test]
fn mountinfo_mount_points_are_unescaped() {
    let text = b"22 27 0:21 / /proc rw - proc proc rw\n\
                 36 27 0:40 / /home/u/my\\040snaps rw - fuse.snapfs snapfs rw\n";
    assert_eq!(
        dest::parse_mountinfo(text),
        [PathBuf::from("/proc"), PathBuf::from("/home/u/my snaps")]
    );
}

#[test]
fn a_failure_after_the_old_dest_moved_says_where_it_is() {
    let (dir, src, dest) = setup();
    let tmp = dir.path().join(".dest.tmp");
    copy::copy_tree(&src, &tmp, &mut |_| {}).unwrap();
    // The backup cannot go where it should: its folder does not exist.
    let backup = dir.path().join("missing/dest.bak");
    let err = swap_in(&tmp, &dest, Some(&backup)).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "the previous {} is now at {}",
            dest.display(),
            tmp.display()
        )),
        "{text}"
    );
    assert_eq!(
        fs::read(tmp.join("old.txt")).unwrap(),
        b"old",
        "kept, not removed"
    );
    assert_eq!(names(&dest), ["a", "link"]);
}
