//! `snapfs mount` with the options rclone mount and mountpoint-s3 users expect, as flags, as
//! `-o` options and through the fstab helper, checked on the real mount with real tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use snapfs_tests::{Mount, binary, fuse_available, ok, sh};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A snapfs mount the CLI made, unmounted when dropped, also when the test fails.
struct CliMount<'a> {
    m: &'a Mount,
    mp: PathBuf,
}

impl<'a> CliMount<'a> {
    /// `snapfs mount MP ARGS…` beside the harness's mount, on the same remote.
    fn new(m: &'a Mount, name: &str, args: &[&str]) -> CliMount<'a> {
        let mp = m.root.path().join(name);
        let mut all = vec!["mount", s(&mp)];
        all.extend_from_slice(args);
        ok(&m.snapfs(&all));
        CliMount { m, mp }
    }

    fn stat(&self, rel: &str) -> String {
        sh(&format!(
            "stat -c '%u %g %a' '{}'",
            self.mp.join(rel).display()
        ))
        .trim()
        .to_owned()
    }

    /// The pid of the daemon serving this mount, from its record.
    fn daemon_pid(&self) -> u32 {
        let dir = self.m.root.path().join("run/snapfs");
        for e in std::fs::read_dir(&dir)
            .expect("the runtime folder")
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if rec["mountpoint"] == s(&self.mp) {
                return rec["pid"].as_u64().expect("a pid") as u32;
            }
        }
        panic!("no record for {}", self.mp.display());
    }
}

impl Drop for CliMount<'_> {
    fn drop(&mut self) {
        let _ = self.m.snapfs(&["unmount", s(&self.mp)]);
        let _ = Command::new("umount").arg("-l").arg(&self.mp).output();
    }
}

/// The harness's mount holding snapshot `snap` of a folder with `f.txt` and `sub/g.bin`.
fn mount_with_snapshot() -> Mount {
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}/sub' && echo hi > '{s}/f.txt' && head -c 300000 /dev/urandom > '{s}/sub/g.bin' \
         && chmod 0640 '{s}/f.txt'",
        s = src.display()
    ));
    ok(&m.snapfs(&["snapshot", s(&m.target()), s(&src), "--name", "snap"]));
    m
}

#[test]
fn owner_modes_cache_and_threads_as_flags() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot();
    let cache = m.root.path().join("other-cache");
    let mnt = CliMount::new(
        &m,
        "flags",
        &[
            "--uid",
            "1234",
            "--gid",
            "2345",
            "--file-mode",
            "0600",
            "--dir-mode",
            "0700",
            "--cache-dir",
            s(&cache),
            "--threads",
            "3",
        ],
    );
    let snap = "cloud/local/snapshots/snap";
    assert_eq!(mnt.stat(&format!("{snap}/f.txt")), "1234 2345 600");
    assert_eq!(mnt.stat(&format!("{snap}/sub")), "1234 2345 700");
    assert_eq!(mnt.stat(&format!("{snap}/sub/g.bin")), "1234 2345 600");
    assert_eq!(mnt.stat("cloud/local/snapshots"), "1234 2345 700");
    // Generated entries keep their modes; only the owner changes.
    assert_eq!(mnt.stat("README"), "1234 2345 444");
    // The harness's mount, without options, shows the stored mode.
    assert_eq!(
        sh(&format!(
            "stat -c '%a' '{}/snapshots/snap/f.txt'",
            m.target().display()
        ))
        .trim(),
        "640"
    );

    // Blocks read go to the cache folder given.
    sh(&format!(
        "cat '{}/{snap}/sub/g.bin' >/dev/null",
        mnt.mp.display()
    ));
    assert!(cache.join("blocks").is_dir(), "{}", cache.display());

    let pid = mnt.daemon_pid();
    let fuser_threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| {
                c.trim()
                    .strip_prefix("fuser-")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .count();
    assert_eq!(fuser_threads, 3);
}

#[test]
fn options_with_o_and_through_the_fstab_helper() {
    if !fuse_available() {
        return;
    }
    let m = mount_with_snapshot();
    let mnt = CliMount::new(
        &m,
        "dash-o",
        &[
            "-o",
            "ro,uid=4321,file_mode=444",
            "-o",
            "allow_other,cache_size=0,noauto,_netdev",
        ],
    );
    assert_eq!(
        mnt.stat("cloud/local/snapshots/snap/f.txt"),
        format!("4321 {} 444", sh("id -g").trim())
    );
    let opts = sh(&format!("findmnt -n -o OPTIONS '{}'", mnt.mp.display()));
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    assert!(opts.contains("allow_other"), "{opts}");
    // No disk cache: what is read stays in memory only.
    sh(&format!(
        "cat '{}/cloud/local/snapshots/snap/sub/g.bin' >/dev/null",
        mnt.mp.display()
    ));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&m.snapfs(&["status", "--json"]))).expect("status json");
    let mine = status
        .as_array()
        .and_then(|a| a.iter().find(|e| e["mountpoint"] == s(&mnt.mp)))
        .expect("this mount's status");
    assert_eq!(mine["status"]["metrics"]["cache"]["disk_bytes"], 0);
    drop(mnt);

    // mount(8) runs the helper as `mount.fuse.snapfs SOURCE DIR -o OPTIONS`.
    let mp = m.root.path().join("helper");
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/mount.snapfs");
    let bin_dir = binary("snapfs").parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |opts: &str| {
        Command::new("sh")
            .arg(&helper)
            .args(["snapfs", s(&mp), "-o", opts])
            .envs(m.env())
            .env("PATH", &path)
            .output()
            .expect("run the helper")
    };
    ok(&run("dir_mode=0750,gid=77,nodev,x-systemd.automount"));
    let mnt = CliMount {
        m: &m,
        mp: mp.clone(),
    };
    assert_eq!(
        mnt.stat("cloud/local/snapshots/snap/sub"),
        format!("{} 77 750", sh("id -u").trim())
    );
    drop(mnt);
    // Unknown options are refused (status 1 for mount(8)), or only warned about with -s.
    let out = run("bogus");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mount option bogus"));
    assert!(!mp.join("README").exists());
}

/// The pid of the fusermount3 that stays to unmount `mp` (its arguments name the option and
/// the mount point), if there is one.
fn unmount_watcher(mp: &Path) -> Option<u32> {
    let procs = std::fs::read_dir("/proc").ok()?;
    procs.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_fusermount = args.first()?.ends_with(b"fusermount3");
        let auto = args
            .iter()
            .any(|a| a.windows(12).any(|w| w == b"auto_unmount"));
        let here = args.contains(&mp.as_os_str().as_encoded_bytes());
        (is_fusermount && auto && here).then_some(pid)
    })
}

#[test]
fn auto_unmount_mounts_through_fusermount3_which_stays_to_unmount() {
    if !fuse_available() {
        return;
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        eprintln!("skipping: fusermount3 (fuse3) is not installed");
        return;
    }
    let m = Mount::start();
    let mnt = CliMount::new(&m, "auto", &["--auto-unmount"]);
    assert!(mnt.mp.join("README").exists());
    // Mounted by fusermount3, as a user's mount is: the type is fuse.snapfs here too.
    let listed = sh(&format!(
        "findmnt -n -t fuse.snapfs -o TARGET '{}'",
        mnt.mp.display()
    ));
    assert_eq!(listed.trim(), s(&mnt.mp));
    let watcher = unmount_watcher(&mnt.mp).expect("fusermount3 waiting to unmount");

    // Killed, the daemon leaves the watcher to unmount, and it ends. Whether the mount is gone
    // then depends on a race inside fusermount3 (it unmounts only if opening the mount point
    // fails with ENOTCONN, and a request caught by the abort fails with ECONNABORTED), so
    // what is checked is that nothing serves the path any more.
    let pid = mnt.daemon_pid();
    // SAFETY: signalling the daemon of this mount, by the pid its record names.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{watcher}")).exists() {
        assert!(Instant::now() < deadline, "fusermount3 still waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
    let still = sh(&format!(
        "findmnt -n -o TARGET '{}' || true",
        mnt.mp.display()
    ));
    if still.trim().ends_with(s(&mnt.mp)) {
        let err = std::fs::read_dir(&mnt.mp).expect_err("a dead mount");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    }
}

#[test]
fn bad_values_are_usage_errors() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let mp = m.root.path().join("bad");
    for args in [
        vec!["--file-mode", "rw"],
        vec!["--threads", "0"],
        vec!["-o", "threads=0"],
        vec!["-o", "uid=alice"],
    ] {
        let mut all = vec!["mount", s(&mp)];
        all.extend(args.iter().copied());
        let out = m.snapfs(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!mp.join("README").exists());
    }
}
