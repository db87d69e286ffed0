//! `restore`, `verify` and `wait` for scripts (`--json`) and for people (a progress line on a
//! terminal, and nothing of it when standard error is not one).

use std::path::Path;
use std::process::Command;

use snapfs_tests::{Mount, binary, fuse_available, ok, sh};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn json_for_scripts() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}/d' && head -c 2000000 /dev/urandom > '{s}/d/a.bin' && echo hi > '{s}/b.txt'",
        s = src.display()
    ));
    sh(&format!(
        "cp -r '{}' '{}/uploads/one'",
        src.display(),
        m.target().display()
    ));
    let waited = json(&ok(&m.snapfs(&[
        "wait",
        "cloud/local/uploads/one",
        "--json",
    ])));
    assert_eq!(waited["state"], "done");
    assert_eq!(waited["snapshot"], "one");
    assert_eq!(waited["target"], "cloud/local");

    let snap = m.target().join("snapshots/one");
    let verified = json(&ok(&m.snapfs(&["verify", s(&snap), "--json"])));
    assert_eq!(verified["files"], 2);
    assert_eq!(verified["errors"], serde_json::json!([]));

    let dest = m.root.path().join("restored");
    let restored = json(&ok(&m.snapfs(&["restore", s(&snap), s(&dest), "--json"])));
    assert_eq!(restored["files"], 2);
    assert_eq!(restored["bytes"], 2_000_003);
    assert_eq!(restored["replaced"], false);
    assert_eq!(restored["dest"], s(&dest));
    sh(&format!("diff -r '{}' '{}'", src.display(), dest.display()));
}

/// What `snapfs ARGS` shows with standard error on a terminal (under script(1)).
fn on_a_terminal(m: &Mount, args: &[&str]) -> String {
    let line = std::iter::once(binary("snapfs").display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .envs(m.env())
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    shown
}

/// What `snapfs ARGS` prints with standard error piped: the result, and nothing on stderr.
fn piped(m: &Mount, args: &[&str]) -> String {
    let out = m.snapfs(args);
    let printed = ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

#[test]
fn restore_and_verify_show_progress_on_a_terminal_only() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("big.bin");
    sh(&format!(
        "head -c 8000000 /dev/urandom > '{}'",
        src.display()
    ));
    m.upload(&src, "big");
    let snap = m.target().join("snapshots/big");
    let full = "\x1b[2K[##########] 100%  7.6 MiB / 7.6 MiB";

    let dest = m.root.path().join("on-a-tty");
    let shown = on_a_terminal(&m, &["restore", s(&snap), s(&dest)]);
    assert!(shown.contains(full), "{shown:?}");
    assert!(shown.contains("restored "), "{shown:?}");
    sh(&format!("cmp '{}' '{}'", src.display(), dest.display()));
    piped(&m, &["restore", s(&snap), s(&m.root.path().join("piped"))]);

    // The daemon reports how much of the stored bytes it has read, the last time when all.
    let shown = on_a_terminal(&m, &["verify", s(&snap)]);
    assert!(shown.contains(full), "{shown:?}");
    assert!(shown.contains("verifying big"), "{shown:?}");
    assert!(shown.contains("checked 1 files"), "{shown:?}");
    assert!(piped(&m, &["verify", s(&snap)]).contains("checked 1 files"));
}
