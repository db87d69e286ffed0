//! The `snapfs` command line against a real daemon and mount.

use std::path::Path;

use snapfs_tests::{Mount, binary, fuse_available, ok, sh};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A mount holding snapshot `name` of a folder filled by the shell commands `make`, run in it.
fn mount_with_snapshot(name: &str, make: &str) -> Mount {
    let m = Mount::start();
    let src = m.root.path().join(format!("src-{name}"));
    sh(&format!(
        "mkdir '{s}' && cd '{s}' && {make}",
        s = src.display()
    ));
    ok(&m.snapfs(&["snapshot", s(&m.target()), s(&src), "--name", name]));
    m
}

#[test]
fn snapshot_list_wait_verify_restore_rm() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("project");
    sh(&format!(
        "mkdir -p '{s}/sub' && head -c 3000000 /dev/urandom > '{s}/sub/data.bin' && echo v1 > '{s}/a.txt' && ln -s sub/data.bin '{s}/link'",
        s = src.display()
    ));
    let target = m.target();

    // `snapshot` reads the source in place; the name is given here.
    let out = ok(&m.snapfs(&["snapshot", s(&target), s(&src), "--name", "proj-1"]));
    assert!(out.contains("cloud/local/snapshots/proj-1"), "{out}");
    sh(&format!(
        "diff -r '{}' '{}/snapshots/proj-1'",
        src.display(),
        target.display()
    ));

    // An upload through the mount, waited for with the CLI (the short form works: one mount).
    sh(&format!("echo v2 > '{}/a.txt'", src.display()));
    sh(&format!(
        "cp -a '{}' '{}/uploads/proj-2'",
        src.display(),
        target.display()
    ));
    let out = ok(&m.snapfs(&["wait", "cloud/local/uploads/proj-2"]));
    assert!(out.contains("proj-2"), "{out}");

    let list: serde_json::Value =
        serde_json::from_str(&ok(&m.snapfs(&["list", "cloud/local", "--json"]))).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["proj-2", "proj-1"], "newest first");
    assert_eq!(list[0]["index"], 1);
    assert!(list[0]["size"].as_u64().unwrap() >= 3_000_000);

    let out = ok(&m.snapfs(&["verify", &format!("{}/snapshots/proj-1", s(&target))]));
    assert!(out.contains('2') || out.contains("files"), "{out}");

    // Restore over an existing folder: the old one is kept aside, the new one swapped in.
    let dest = m.root.path().join("restored");
    sh(&format!(
        "mkdir '{}' && echo old > '{0}/old.txt'",
        dest.display()
    ));
    ok(&m.snapfs(&[
        "restore",
        &format!("{}/snapshots/proj-1", s(&target)),
        s(&dest),
    ]));
    sh(&format!(
        "diff -r '{}/snapshots/proj-1' '{}'",
        target.display(),
        dest.display()
    ));
    let backups = sh(&format!("ls -d '{}'.snapfs-backup-*", dest.display()));
    let backup = backups.lines().next().unwrap();
    assert_eq!(
        std::fs::read(Path::new(backup).join("old.txt")).unwrap(),
        b"old\n"
    );

    ok(&m.snapfs(&["rm", "--yes", &format!("{}/snapshots/proj-1", s(&target))]));
    assert!(!target.join("snapshots/proj-1").exists());
    let out = m.snapfs(&["list", "cloud/local", "--json"]);
    assert!(!ok(&out).contains("proj-1"));

    let status: serde_json::Value =
        serde_json::from_str(&ok(&m.snapfs(&["status", "--json"]))).unwrap();
    assert!(status.is_array(), "{status}");
}

#[test]
fn mount_and_unmount_with_the_cli_clearing_a_dead_mount() {
    if !fuse_available() {
        return;
    }
    // A harness mount is only used for its private directories; the CLI mounts elsewhere.
    let m = Mount::start();
    let mp = m.root.path().join("cli-mnt");
    let run = |args: &[&str]| {
        std::process::Command::new(binary("snapfs"))
            .args(args)
            .envs(m.env())
            .output()
            .unwrap()
    };
    ok(&run(&["mount", s(&mp)]));
    let cleanup = Unmount(mp.clone());
    assert!(mp.join("README").exists());
    // Kill the daemon hard: the mount point is left dead ("Transport endpoint is not connected").
    let pid = sh(&format!(
        "pgrep -f -- '[s]napfsd --mountpoint {}'",
        mp.display()
    ));
    sh(&format!("kill -9 {}", pid.trim()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A name the kernel never cached must go to the dead daemon.
    let err = std::fs::metadata(mp.join("cloud/local/snapshots/never-looked-up")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // The CLI says the daemon died instead of pretending no mount was ever there.
    let out = run(&["list", &format!("{}/cloud/local", s(&mp))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("the daemon of {} died", s(&mp)))
            && err.contains(&format!("snapfs unmount {}", s(&mp))),
        "{err}"
    );
    // Mounting again clears the dead mount first.
    ok(&run(&["mount", s(&mp)]));
    assert!(mp.join("README").exists());
    ok(&run(&["unmount", s(&mp)]));
    assert!(!mp.join("README").exists());
    drop(cleanup);
}

#[test]
fn restore_refuses_a_dest_holding_a_live_mount() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot("p1", "echo v1 > a.txt");
    let snap = format!("{}/snapshots/p1", s(&m.target()));
    // The mount point is inside DEST: replacing DEST would walk into the mount.
    let before = sh(&format!("ls -a '{}'", m.root.path().display()));
    for dest in [m.root.path(), m.mountpoint.as_path()] {
        let out = m.snapfs(&["restore", "--no-backup", &snap, s(dest)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("holds the mount point"), "{err}");
    }
    assert_eq!(sh(&format!("ls -a '{}'", m.root.path().display())), before);
    assert!(
        m.mountpoint.join("README").exists(),
        "the mount is untouched"
    );
}

#[test]
fn sigterm_during_a_restore_removes_the_temporary_copy() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot("big", "head -c 67108864 /dev/urandom > data");
    let dest = m.root.path().join("restored");
    let child = std::process::Command::new(binary("snapfs"))
        .args([
            "restore",
            &format!("{}/snapshots/big", s(&m.target())),
            s(&dest),
        ])
        .envs(m.env())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = m
        .root
        .path()
        .join(format!(".restored.snapfs-tmp-{}", child.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !tmp.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pid = child.id() as libc::pid_t;
    // Stopped first, so the copy cannot finish before SIGTERM arrives; it is handled on SIGCONT.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tmp.exists(), "temporary copy left behind");
    assert!(!dest.exists());
}

#[test]
fn snapshots_of_ordinary_folders_restore_their_outward_links() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot(
        "links",
        "mkdir sub && echo x > f && ln -s /etc/hostname host && ln -s ../../elsewhere sub/up",
    );
    let dest = m.root.path().join("restored");
    ok(&m.snapfs(&["restore", "cloud/local/snapshots/latest", s(&dest)]));
    assert_eq!(
        std::fs::read_link(dest.join("host")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        std::fs::read_link(dest.join("sub/up")).unwrap(),
        Path::new("../../elsewhere")
    );
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"x\n");
}

#[test]
fn only_snapshots_restore_and_latest_names_its_snapshot() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot("one", "echo x > f");
    let dest = m.root.path().join("dest");
    let target = s(&m.target()).to_owned();
    for snapshot in ["/etc", &target, &format!("{target}/snapshots")] {
        let out = m.snapfs(&["restore", snapshot, s(&dest)]);
        assert_eq!(out.status.code(), Some(2), "{snapshot}");
        assert!(!dest.exists(), "{snapshot}: nothing copied");
    }
    let err =
        String::from_utf8_lossy(&m.snapfs(&["restore", &target, s(&dest)]).stderr).into_owned();
    assert!(err.contains("not a snapshot"), "{err}");

    let latest = format!("{target}/snapshots/latest");
    let out = ok(&m.snapfs(&["verify", &latest]));
    assert!(out.contains("checked 1 files"), "{out}");
    let out = ok(&m.snapfs(&["rm", "--yes", &latest]));
    assert!(out.contains("removed cloud/local/snapshots/one"), "{out}");
    assert!(!m.target().join("snapshots/one").exists());
}

#[test]
fn mount_refuses_a_place_inside_a_mount_and_configuration_errors_exit_2() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let nested = m.target().join("uploads/nested");
    let out = m.snapfs(&["mount", s(&nested)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the snapfs mount"), "{err}");
    assert!(!nested.exists(), "nothing made inside the mount");

    let mp = m.root.path().join("cli-mnt");
    let cleanup = Unmount(mp.clone());
    let bad = m.root.path().join("bad.toml");
    std::fs::write(&bad, "[upload\n").unwrap();
    let out = m.snapfs(&["mount", s(&mp), "--config", s(&bad)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The default file as a link to nothing is an error naming it, not the defaults.
    let config = m.root.path().join("config/snapfs/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(m.root.path().join("gone.toml"), &config).unwrap();
    let out = m.snapfs(&["mount", s(&mp)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(s(&config)), "{err}");
    assert!(!mp.join("README").exists());
    drop(cleanup);
}

#[test]
fn the_daemon_refuses_a_runtime_dir_planted_as_a_symlink() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let tmp = m.root.path().join("tmp");
    let victim = m.root.path().join("victim");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: getuid cannot fail.
    let runtime = tmp.join(format!("snapfs-{}", unsafe { libc::getuid() }));
    std::os::unix::fs::symlink(&victim, &runtime).unwrap();
    let mp = m.root.path().join("cli-mnt");
    let cleanup = Unmount(mp.clone());
    // The CLI checks before it starts a daemon; the daemon checks on its own too.
    for (bin, args) in [
        ("snapfs", ["mount", s(&mp)]),
        ("snapfsd", ["--mountpoint", s(&mp)]),
    ] {
        std::fs::create_dir_all(&mp).unwrap();
        let out = std::process::Command::new(binary(bin))
            .args(args)
            .envs(m.env().into_iter().filter(|(k, _)| *k != "XDG_RUNTIME_DIR"))
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is a symlink"), "{bin}: {err}");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().mode() & 0o777,
            0o755,
            "{bin}: the link's target keeps its mode"
        );
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            0,
            "{bin}: no socket planted there"
        );
    }
    drop(cleanup);
}

/// Detaches a mount point when dropped, so a failing test leaves nothing mounted.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg(format!("--mountpoint {}", self.0.display()))
            .output();
    }
}
