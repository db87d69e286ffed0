//! Snapshots made by someone else can be hostile: a manifest naming `../x` or an absolute path
//! is refused, and nothing is ever written outside the restore destination.

use snapfs_fs::format::{Entry, EntryKind, MANIFEST_FORMAT, Manifest, manifest_key};
use snapfs_tests::{Mount, fuse_available, sh};

fn hostile_manifest(name: &str, bad_path: &str) -> Vec<u8> {
    let entry = |path: &str, kind| Entry {
        path: path.into(),
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
        kind,
    };
    Manifest {
        format: MANIFEST_FORMAT.into(),
        name: name.into(),
        created: "2026-01-01T00:00:00Z".parse().unwrap(),
        expires: None,
        source: None,
        packs: vec![],
        chunks: vec![],
        entries: vec![
            entry("", EntryKind::Dir),
            entry(bad_path, EntryKind::Symlink { target: "x".into() }),
        ],
    }
    .to_bytes()
}

#[test]
fn manifests_with_escaping_paths_are_refused() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    // One honest snapshot first, so the store exists and listings work.
    sh(&format!(
        "mkdir '{}/uploads/ok' && echo x > '{0}/uploads/ok/f'",
        m.target().display()
    ));
    m.wait("ok");
    for (name, bad) in [
        ("evil-up", "../x"),
        ("evil-abs", "/etc/x"),
        ("evil-deep", "a/../../x"),
    ] {
        let key = m.store_dir().join(manifest_key(name));
        std::fs::write(&key, hostile_manifest(name, bad)).unwrap();
    }
    let listing = sh(&format!("ls '{}/snapshots'", m.target().display()));
    assert!(
        !listing.contains("evil"),
        "hostile snapshots are not listed: {listing}"
    );
    for name in ["evil-up", "evil-abs", "evil-deep"] {
        let path = m.target().join("snapshots").join(name);
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "{name} cannot be opened"
        );
        let dest = m.root.path().join(format!("restore-{name}"));
        let out = m.snapfs(&["restore", path.to_str().unwrap(), dest.to_str().unwrap()]);
        assert!(!out.status.success(), "restore of {name} must fail");
        assert!(!dest.exists());
    }
    assert!(
        !m.root.path().join("x").exists(),
        "nothing was written outside a destination"
    );
    // The honest snapshot still reads.
    assert_eq!(
        std::fs::read(m.target().join("snapshots/ok/f")).unwrap(),
        b"x\n"
    );
}
