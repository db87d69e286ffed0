//! The daemon's log as its options and environment ask: the filter from `--log-level`,
//! `SNAPFS_LOG` or `RUST_LOG`, a log file rotated by size, JSON lines, and the journal's form.

use std::os::unix::fs::MetadataExt;

use snapfs_tests::{Mount, TEST_SETTLE, fuse_available};

fn config() -> String {
    format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n")
}

/// A mount whose daemon runs with `args` and `env` on top of the harness's.
fn mount_with(args: &[&str], env: &[(&str, &str)]) -> Mount {
    let mut m = Mount::unstarted(&config());
    m.daemon_args = args.iter().map(Into::into).collect();
    m.daemon_env = env.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    m.launch();
    m
}

/// Whether the log says the mount is up (an info line).
fn says_mounted(log: &str) -> bool {
    log.lines().any(|l| l.contains("mounted"))
}

#[test]
fn the_filter_comes_from_the_flag_then_snapfs_log_then_rust_log() {
    if !fuse_available() {
        return;
    }
    // The harness sets SNAPFS_LOG=info,…: the flag wins over it.
    let m = mount_with(&["--log-level", "warn"], &[]);
    assert!(!says_mounted(&m.log()), "{}", m.log());
    drop(m);
    // RUST_LOG counts when SNAPFS_LOG says nothing, and SNAPFS_LOG wins when it does.
    let m = mount_with(&[], &[("SNAPFS_LOG", ""), ("RUST_LOG", "warn")]);
    assert!(!says_mounted(&m.log()), "{}", m.log());
    drop(m);
    let m = mount_with(&[], &[("RUST_LOG", "warn")]);
    assert!(says_mounted(&m.log()), "{}", m.log());
}

#[test]
fn a_filter_that_does_not_parse_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(snapfs_tests::binary("snapfsd"))
        .args(["--mountpoint"])
        .arg(dir.path())
        .args(["--log-level", "info,=="])
        .output()
        .expect("run snapfsd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log-level"), "{err}");
}

#[test]
fn the_log_file_is_rotated_by_size() {
    if !fuse_available() {
        return;
    }
    let m = Mount::unstarted(&config());
    let file = m.root.path().join("d.log");
    let mut m = m;
    m.daemon_args = vec![
        "--log-file".into(),
        file.clone().into_os_string(),
        "--log-max-size".into(),
        "2KiB".into(),
    ];
    m.launch();
    // A name that is not there logs a line at debug (the harness's filter for snapfs_fs).
    for i in 0..200 {
        let _ = std::fs::metadata(m.target().join(format!("snapshots/not-there-{i}")));
    }
    let numbered = |n: u32| m.root.path().join(format!("d.log.{n}"));
    for path in [file.clone(), numbered(1), numbered(2), numbered(3)] {
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert!(len <= 2048, "{} is {len} bytes", path.display());
    }
    assert!(!numbered(4).exists(), "three old files are kept");
    assert!(!says_mounted(&m.log()), "standard error is not the log");
}

#[test]
fn json_lines_carry_level_target_message_fields_and_spans() {
    if !fuse_available() {
        return;
    }
    let m = mount_with(&["--log-json"], &[]);
    let _ = std::fs::metadata(m.target().join("snapshots/not-there"));
    let log = m.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mounted = lines
        .iter()
        .find(|l| l["message"] == "mounted")
        .expect("the mounted line");
    assert_eq!(mounted["level"], "INFO");
    assert_eq!(mounted["target"], "snapfsd::service");
    assert_eq!(
        mounted["fields"]["mountpoint"],
        m.mountpoint.to_str().expect("utf-8")
    );
    assert!(
        mounted["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    // The harness logs snapfs_fs at debug: operations log inside their span.
    assert!(
        lines
            .iter()
            .any(|l| l["spans"][0]["name"] == "lookup" && l["level"] == "DEBUG"),
        "{log}"
    );
}

#[test]
fn under_the_journal_lines_carry_a_priority_and_no_timestamp() {
    if !fuse_available() {
        return;
    }
    // The harness sends standard error to this file: name it as systemd names the journal
    // stream it connects.
    let mut m = Mount::unstarted(&config());
    std::fs::write(m.log_path(), "").expect("create the log");
    let meta = std::fs::metadata(m.log_path()).expect("stat the log");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    m.daemon_env = vec![("JOURNAL_STREAM".into(), stream.into())];
    m.launch();
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("mounted"))
        .expect("the mounted line");
    assert!(
        line.starts_with("<6> INFO ") || line.starts_with("<6>INFO "),
        "{line}"
    );
    drop(m);

    // A stream that is not standard error (a child's redirection) is not the journal.
    let m = mount_with(&[], &[("JOURNAL_STREAM", "1:1")]);
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("mounted"))
        .expect("the mounted line");
    assert!(line.starts_with("20"), "a timestamp first: {line}");
}
