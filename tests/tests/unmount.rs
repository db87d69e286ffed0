//! `snapfs unmount` says the truth about the mount point afterwards: a snapfs mount still
//! there fails it, and a file system mounted over the snapfs mount is never taken off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use snapfs_tests::{Mount, binary, fuse_available};

/// The file systems mounted at `path`, bottom first, as `type source`.
fn mounted_at(path: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = mount.split(' ').nth(4)?;
            (Path::new(point) == path).then(|| {
                let mut fs = fs.split(' ');
                format!("{} {}", fs.next().unwrap_or(""), fs.next().unwrap_or(""))
            })
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: mounting a tmpfs needs root");
    }
    root
}

/// Runs the CLI with the environment `env`.
fn snapfs(env: &[(&'static str, PathBuf)], args: &[&str]) -> Output {
    Command::new(binary("snapfs"))
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

/// Runs `snapfs unmount` with `env` when dropped, so a failing test leaves nothing mounted.
struct UnmountWith(Vec<(&'static str, PathBuf)>, PathBuf);

impl Drop for UnmountWith {
    fn drop(&mut self) {
        let _ = snapfs(&self.0, &["unmount", self.1.to_str().unwrap_or_default()]);
    }
}

#[test]
fn unmount_fails_while_another_snapfs_mount_is_left_below() {
    if !fuse_available() {
        return;
    }
    // The harness's daemon serves the mount point; a second one, started by the CLI with state
    // of its own, mounts over it.
    let m = Mount::start();
    let mp = m.mountpoint.clone();
    let other: Vec<_> = m
        .env()
        .into_iter()
        .map(|(k, v)| match k {
            "XDG_STATE_HOME" | "XDG_RUNTIME_DIR" | "XDG_CACHE_HOME" => {
                (k, m.root.path().join("other").join(k))
            }
            _ => (k, v),
        })
        .collect();
    let mounted = snapfs(&other, &["mount", mp.to_str().unwrap()]);
    assert!(mounted.status.success(), "{mounted:?}");
    let cleanup = UnmountWith(other.clone(), mp.clone());
    assert_eq!(mounted_at(&mp).len(), 2, "{:?}", mounted_at(&mp));

    let out = snapfs(&other, &["unmount", mp.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("still a snapfs mount"), "{err}");
    // Its own mount is gone; the harness's still serves.
    assert_eq!(mounted_at(&mp).len(), 1);
    assert!(mp.join("README").exists());
    drop(cleanup);
}

/// Unmounts a tmpfs when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn unmount_refuses_when_another_file_system_is_mounted_over_it_then_frees_the_path() {
    if !fuse_available() || !is_root() {
        return;
    }
    let m = Mount::start();
    let mp = m.mountpoint.clone();
    let over = Command::new("mount")
        .args(["-t", "tmpfs", "over", mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(over.status.success(), "{over:?}");
    let tmpfs = Tmpfs(mp.clone());

    let out = m.snapfs(&["unmount", mp.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a tmpfs file system is mounted over"), "{err}");
    // Nothing was taken off: the tmpfs still shows, the snapfs mount below it still serves.
    let at = mounted_at(&mp);
    assert_eq!(at.last().map(String::as_str), Some("tmpfs over"), "{at:?}");

    drop(tmpfs);
    assert!(mp.join("README").exists());
    let out = m.snapfs(&["unmount", mp.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unmounted"),
        "{out:?}"
    );
    assert!(mounted_at(&mp).is_empty(), "{:?}", mounted_at(&mp));
}
