//! Uploads of every kind of file `cp -a` meets: hard links are kept (as two files), FIFOs,
//! sockets and device nodes are refused and the upload fails naming them, instead of becoming a
//! snapshot without them; and a copy that had finished before the daemon was killed resumes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, sh};

#[test]
fn cp_a_keeps_a_hard_link_pair_as_two_files() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}/sub' && echo same > '{s}/a' && ln '{s}/a' '{s}/sub/b' && echo other > '{s}/c'",
        s = src.display()
    ));
    sh(&format!(
        "cp -a '{}' '{}/uploads/linked'",
        src.display(),
        m.target().display()
    ));
    m.wait("linked");
    let snap = m.target().join("snapshots/linked");
    assert_eq!(std::fs::read(snap.join("a")).unwrap(), b"same\n");
    assert_eq!(std::fs::read(snap.join("sub/b")).unwrap(), b"same\n");
    assert_eq!(std::fs::read(snap.join("c")).unwrap(), b"other\n");
}

#[test]
fn a_link_out_of_its_upload_is_refused() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    let uploads = m.target().join("uploads");
    sh(&format!(
        "mkdir '{u}/one' '{u}/two' && echo x > '{u}/one/f'",
        u = uploads.display()
    ));
    let err = std::fs::hard_link(uploads.join("one/f"), uploads.join("two/f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    // Inside one upload both names see the same bytes.
    std::fs::hard_link(uploads.join("one/f"), uploads.join("one/g")).unwrap();
    std::fs::write(uploads.join("one/g"), b"changed").unwrap();
    assert_eq!(std::fs::read(uploads.join("one/f")).unwrap(), b"changed");
}

/// Reads `uploads/NAME.status` as JSON.
fn status(m: &Mount, name: &str) -> serde_json::Value {
    let path = m.target().join(format!("uploads/{name}.status"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_fifo_a_socket_and_a_device_are_refused_and_the_upload_fails_naming_them() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}/deep' && echo kept > '{s}/kept.txt' && mkfifo '{s}/deep/pipe'",
        s = src.display()
    ));
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(m.target().join("uploads/special"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cp says it lost the FIFO");
    assert!(
        err.contains("deep/pipe") && err.contains("Operation not supported"),
        "{err}"
    );
    // Made by hand in the mount: a socket and a device node are refused the same way.
    let up = m.target().join("uploads/special");
    let sock = std::os::unix::net::UnixListener::bind(up.join("sock")).unwrap_err();
    assert_eq!(sock.raw_os_error(), Some(libc::EOPNOTSUPP), "{sock}");
    let dev = Command::new("mknod")
        .arg(up.join("deep/null"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    assert!(!dev.status.success());
    // A name taken stays taken, whatever kind is asked for.
    let taken = Command::new("mkfifo")
        .arg(up.join("kept.txt"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("File exists"),
        "{taken:?}"
    );

    let wait = m.snapfs(&["wait", up.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&wait.stderr);
    assert_eq!(wait.status.code(), Some(1), "{said}");
    for path in ["deep/pipe", "sock", "deep/null"] {
        assert!(said.contains(path), "{path} named: {said}");
    }
    assert!(said.contains("FIFO"), "{said}");
    let s = status(&m, "special");
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deep/pipe"),
        "{s}"
    );
    assert!(!m.target().join("snapshots/special").exists());
    // What was staged stays for the user to look at, until `rm -r` discards it.
    assert_eq!(std::fs::read(up.join("kept.txt")).unwrap(), b"kept\n");
    std::fs::remove_dir_all(&up).unwrap();
    assert!(!m.target().join("uploads/special.status").exists());
}

/// Where the daemon marks an upload it saw complete (every file closed, nothing written since).
fn complete_mark(m: &Mount, name: &str) -> std::path::PathBuf {
    m.root
        .path()
        .join("cache/snapfs/staging/.complete/cloud/local")
        .join(name)
}

fn wait_for(what: &str, m: &Mount, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} never came\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn set_settle(m: &Mount, settle: &str) {
    std::fs::write(
        m.root.path().join("config.toml"),
        format!("[upload]\nsettle = \"{settle}\"\n"),
    )
    .unwrap();
}

fn diff(src: &Path, snap: &Path) {
    sh(&format!("diff -r '{}' '{}'", src.display(), snap.display()));
}

#[test]
fn kill_9_while_a_finished_copy_settles_then_restart_resumes_it() {
    if !fuse_available() {
        return;
    }
    // A settle time long enough that the kill surely falls within it.
    let mut m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    let src = m.root.path().join("src");
    sh(&format!(
        "mkdir -p '{s}/d' && echo one > '{s}/a' && head -c 300000 /dev/urandom > '{s}/d/b'",
        s = src.display()
    ));
    sh(&format!(
        "cp -a '{}' '{}/uploads/settling'",
        src.display(),
        m.target().display()
    ));
    wait_for("the mark of a complete copy", &m, || {
        complete_mark(&m, "settling").exists()
    });
    assert_eq!(status(&m, "settling")["state"], "staging");
    m.kill9();
    set_settle(&m, TEST_SETTLE);
    m.relaunch();
    m.wait("settling");
    diff(&src, &m.target().join("snapshots/settling"));
    assert!(!complete_mark(&m, "settling").exists());
}

#[test]
fn kill_9_with_a_file_still_open_fails_the_upload_after_restart() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::start_with("[upload]\nsettle = \"1h\"\n");
    let up = m.target().join("uploads/torn");
    std::fs::create_dir(&up).unwrap();
    let mut open = std::fs::File::create(up.join("half")).unwrap();
    std::io::Write::write_all(&mut open, b"half of it").unwrap();
    // While the file is open, the copy is not complete, however long it stays quiet.
    assert!(!complete_mark(&m, "torn").exists());
    m.kill9();
    drop(open);
    set_settle(&m, TEST_SETTLE);
    m.relaunch();
    let s = status(&m, "torn");
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still being written"),
        "{s}"
    );
}
