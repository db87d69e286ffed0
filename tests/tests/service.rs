//! snapfsd as a service manager sees it: the mount's type in the mount table, and readiness
//! told over `NOTIFY_SOCKET` (systemd's `Type=notify`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, sh};

/// `findmnt -t fuse.snapfs` lists `mountpoint`, with source `snapfs`.
fn listed_as_fuse_snapfs(mountpoint: &Path) -> bool {
    let out = sh("findmnt -n -l -t fuse.snapfs -o TARGET,SOURCE,FSTYPE");
    out.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols == [
            mountpoint.to_str().unwrap_or_default(),
            "snapfs",
            "fuse.snapfs",
        ]
    })
}

#[test]
fn the_mount_is_listed_as_fuse_snapfs() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    assert!(
        listed_as_fuse_snapfs(&m.mountpoint),
        "{}",
        sh("findmnt -n -l -o TARGET,SOURCE,FSTYPE")
    );
}

/// Waits for one datagram on `socket`, for at most a minute.
fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a message from snapfsd");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_is_told_once_the_mount_answers_and_stopping_at_the_end() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::unstarted(&format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n"));
    let path = m.root.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    m.daemon_env
        .push(("NOTIFY_SOCKET".into(), path.clone().into_os_string()));

    // Whatever the daemon says first is read while it starts, and the mount is looked at the
    // moment READY=1 arrives.
    let mountpoint = m.mountpoint.clone();
    let watcher = std::thread::spawn(move || {
        let first = next_message(&socket);
        let answers = mountpoint.join("README").is_file();
        let listed = listed_as_fuse_snapfs(&mountpoint);
        (first, answers, listed, socket)
    });
    m.launch();
    let (first, answers, listed, socket) = watcher.join().expect("the watcher");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.first(), Some(&"READY=1"), "{first}");
    assert!(
        lines.contains(&format!("STATUS=mounted at {}", m.mountpoint.display()).as_str()),
        "{first}"
    );
    assert!(answers && listed, "READY=1 came before the mount answered");

    m.stop();
    assert_eq!(next_message(&socket), "STOPPING=1");
    assert!(!m.mountpoint.join("README").exists(), "unmounted");
}
