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

#[test]
fn restore_shows_progress_on_a_terminal_only() {
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

    // Under script(1) standard error is a terminal.
    let dest = m.root.path().join("on-a-tty");
    let line = format!(
        "'{}' restore '{}' '{}'",
        binary("snapfs").display(),
        snap.display(),
        dest.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .envs(m.env())
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("\x1b[2K[##########] 100%  7.6 MiB / 7.6 MiB"),
        "{shown:?}"
    );
    assert!(shown.contains("restored "), "{shown:?}");
    sh(&format!("cmp '{}' '{}'", src.display(), dest.display()));

    // Piped, nothing but the result.
    let dest = m.root.path().join("piped");
    let out = m.snapfs(&["restore", s(&snap), s(&dest)]);
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}
