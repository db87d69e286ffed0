//! The `snapfs` binary without a daemon: help, completions, usage errors, exit statuses, and
//! restore of a local tree.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;

/// `snapfs` in an empty home with its own runtime directory, so no real mount is seen.
fn snapfs(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("snapfs").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .current_dir(home);
    cmd
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand_and_the_exit_statuses() {
    let home = tempfile::tempdir().unwrap();
    let out = snapfs(home.path()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "mount",
        "unmount",
        "status",
        "wait",
        "snapshot",
        "list",
        "restore",
        "rm",
        "verify",
        "completions",
        "130",
    ] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
}

#[test]
fn config_check_reports_targets_or_the_line_of_a_problem() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("c.toml");
    let check = |text: &str| {
        fs::write(&file, text).unwrap();
        snapfs(home.path())
            .args(["config", "check", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = check(
        "[[remote]]\nname = \"prod\"\nurl = \"s3://bucket/team\"\noptions = { region = \"eu-west-1\", secret_access_key = \"S3CR3T\" }\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cloud/prod: s3://bucket/team"), "{text}");
    assert!(
        text.contains("option secret_access_key") && !text.contains("S3CR3T"),
        "{text}"
    );

    let out = check("[cache]\nmax_size = \"1G\"\n\n[upload]\nsettle = \"soon\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{}:5: upload.settle: \"soon\"", file.display())),
        "{err}"
    );
}

#[test]
fn completions_for_every_shell() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = snapfs(home.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("restore"), "{shell}: {script}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["bogus"],
        &["list"],
        &["completions", "tcsh"],
        &["status", "--json", "--prometheus"],
        &["restore", "only-one-arg"],
    ] {
        let out = snapfs(home.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    }
}

#[test]
fn a_size_that_does_not_parse_is_a_usage_error_naming_the_unit() {
    let home = tempfile::tempdir().unwrap();
    let out = snapfs(home.path())
        .args(["snapshot", "cloud/local", ".", "--size", "20gib"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("\"20gib\" is not a size") && err.contains("did you mean \"GiB\""),
        "{err}"
    );
}

#[test]
fn short_form_without_a_mount_is_a_clear_usage_error() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["list", "cloud/local"][..],
        &["wait", "cloud/local/uploads/db"],
        &["rm", "--yes", "cloud/local/snapshots/db"],
        &["verify", "cloud/local/snapshots/db"],
        &["snapshot", "cloud/local", "."],
    ] {
        let out = snapfs(home.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("snapfs: ") && err.contains("no snapfs mount is active"),
            "{err}"
        );
    }
}

#[test]
fn status_without_mounts() {
    let home = tempfile::tempdir().unwrap();
    snapfs(home.path())
        .arg("status")
        .assert()
        .code(0)
        .stdout("no snapfs mount is active\n");
    let out = snapfs(home.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn unmount_of_a_plain_directory_fails() {
    let home = tempfile::tempdir().unwrap();
    let out = snapfs(home.path()).args(["unmount", "."]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("not mounted by snapfs"));
}

#[test]
fn restore_refuses_a_path_that_is_not_a_snapshot() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("snap");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file"), b"data").unwrap();
    for snapshot in ["snap", "/etc"] {
        let out = snapfs(home.path())
            .args(["restore", snapshot, "dest"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("no snapfs mount"),
            "{}",
            stderr_of(&out)
        );
        assert!(!home.path().join("dest").exists(), "nothing copied");
    }
}

#[test]
fn restore_needs_an_existing_parent_and_source() {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join("snap")).unwrap();
    let out = snapfs(home.path())
        .args(["restore", "snap", "no/such/dest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let out = snapfs(home.path())
        .args(["restore", "/no/such/snapshot", "dest"])
        .output()
        .unwrap();
    // Not under a mount's snapshots/, so not a snapshot: a usage error.
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let bin = assert_cmd::cargo::cargo_bin("snapfs");
    let mut child = StdCommand::new(bin)
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closing the reading end before anything is written makes every write fail with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
}

/// `snapfs` with XDG_RUNTIME_DIR unset, so the runtime directory is `$TMPDIR/snapfs-UID`.
fn snapfs_in_tmp(home: &Path, tmp: &Path) -> Command {
    let mut cmd = Command::cargo_bin("snapfs").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("TMPDIR", tmp)
        .current_dir(home);
    cmd
}

#[test]
fn a_runtime_dir_someone_else_could_have_made_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let home = tempfile::tempdir().unwrap();
    let tmp = home.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    // SAFETY: getuid cannot fail.
    let runtime = tmp.join(format!("snapfs-{}", unsafe { libc::getuid() }));

    // A symlink planted where the directory belongs: refused, and its target left as it was.
    let victim = home.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&victim, &runtime).unwrap();
    let out = snapfs_in_tmp(home.path(), &tmp)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("is a symlink") && err.contains("XDG_RUNTIME_DIR"),
        "{err}"
    );
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o755);
    fs::remove_file(&runtime).unwrap();

    // A directory open to others.
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o777)).unwrap();
    let out = snapfs_in_tmp(home.path(), &tmp)
        .args(["list", "cloud/local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("mode 777"), "{}", stderr_of(&out));

    // Someone else's directory, as root can arrange.
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
        let out = snapfs_in_tmp(home.path(), &tmp)
            .arg("status")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("belongs to uid 65534"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn restore_refuses_a_dest_that_holds_the_working_directory() {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join("snap")).unwrap();
    fs::write(home.path().join("snap/f"), b"new").unwrap();
    let sub = home.path().join("p/sub");
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("keep"), b"mine").unwrap();
    let snap = home.path().join("snap");
    let p = home.path().join("p");
    for dest in [".", "..", "../..", p.to_str().unwrap()] {
        let out = snapfs(home.path())
            .current_dir(&sub)
            .args(["restore", "--no-backup", snap.to_str().unwrap(), dest])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{dest}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(
            err.contains("`.` or `..`") || err.contains("current directory"),
            "{err}"
        );
        assert_eq!(fs::read(sub.join("keep")).unwrap(), b"mine", "{dest}");
    }
    let mut left: Vec<String> = fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["p", "snap"], "nothing moved aside");
}
