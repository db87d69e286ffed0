//! The errors of DESIGN §10 at the file-system boundary, through a real mount.

use std::io::ErrorKind;

use snapfs_tests::{Mount, fuse_available, sh};

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn read_only_places_refuse_writes() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    sh(&format!(
        "mkdir '{}/uploads/s' && echo x > '{0}/uploads/s/f'",
        m.target().display()
    ));
    m.wait("s");
    let t = m.target();
    assert_eq!(
        errno(std::fs::write(t.join("snapshots/new"), b"x")),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::write(t.join("snapshots/s/f"), b"x")),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::create_dir(t.join("snapshots/s/d"))),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::remove_file(t.join("snapshots/s/f"))),
        libc::EROFS
    );
    assert_eq!(errno(std::fs::create_dir(t.join("objects/d"))), libc::EROFS);
    assert_eq!(
        errno(std::fs::write(t.join("objects/o"), b"x")),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::write(m.mountpoint.join("cloud/x"), b"x")),
        libc::EROFS
    );
}

#[test]
fn names_are_checked_before_anything_is_staged() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let up = m.target().join("uploads");
    sh(&format!(
        "mkdir '{}/taken' && echo x > '{0}/taken/f'",
        up.display()
    ));
    m.wait("taken");
    assert_eq!(errno(std::fs::create_dir(up.join("taken"))), libc::EEXIST);
    assert_eq!(
        errno(std::fs::create_dir(up.join("bad%name"))),
        libc::EINVAL
    );
    assert_eq!(errno(std::fs::create_dir(up.join("what?"))), libc::EINVAL);
    assert_eq!(
        errno(std::fs::create_dir(up.join("x.status"))),
        libc::EINVAL
    );
    assert_eq!(errno(std::fs::create_dir(up.join("latest"))), libc::EINVAL);
    let long = "n".repeat(256);
    assert_eq!(
        errno(std::fs::create_dir(up.join(&long))),
        libc::ENAMETOOLONG
    );
    let nearly = "n".repeat(250);
    assert_eq!(errno(std::fs::create_dir(up.join(&nearly))), libc::EINVAL);
    // `..` never leaves uploads/ and a slash is never part of a name.
    assert_eq!(
        std::fs::create_dir(up.join("../snapshots/sneaky"))
            .unwrap_err()
            .kind(),
        ErrorKind::ReadOnlyFilesystem
    );
    // Nothing was staged for the refused names.
    let listing = sh(&format!("ls -A '{}'", up.display()));
    assert_eq!(
        listing.trim(),
        "",
        "uploads/ holds only what was accepted: {listing}"
    );
}

#[test]
fn the_longest_name_is_stored_and_one_byte_more_is_refused_at_mkdir() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let up = m.target().join("uploads");
    let longest = "l".repeat(238);
    assert_eq!(
        errno(std::fs::create_dir(up.join("l".repeat(239)))),
        libc::EINVAL
    );
    std::fs::write(up.join(&longest), b"kept").unwrap();
    m.wait(&longest);
    let kept = std::fs::read(m.target().join("snapshots").join(&longest)).unwrap();
    assert_eq!(kept, b"kept");
}

#[test]
fn failed_upload_stays_explains_and_can_be_removed() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let up = m.target().join("uploads/bad-names");
    std::fs::create_dir(&up).unwrap();
    std::fs::write(up.join("ok.txt"), b"fine").unwrap();
    // A hard link inside the upload is kept; one out of it is refused at once; a name that is
    // not UTF-8 fails the upload later.
    std::fs::hard_link(up.join("ok.txt"), up.join("hard")).unwrap();
    assert_eq!(
        errno(std::fs::hard_link(
            up.join("ok.txt"),
            m.target().join("uploads/elsewhere")
        )),
        libc::EXDEV
    );
    sh(&format!(
        "touch '{}'/$(printf 'bad\\377name')",
        up.display()
    ));
    let req = snapfs_control::wire::Request::Wait {
        target: "cloud/local".into(),
        name: "bad-names".into(),
    };
    let snapfs_control::wire::Response::Job(status) = m.call(&req) else {
        panic!("no job status");
    };
    assert_eq!(status.state, snapfs_control::wire::UploadState::Failed);
    assert!(
        status.error.as_deref().unwrap_or("").contains("UTF-8"),
        "{status:?}"
    );
    // The upload stays, its status says why, and nothing reached snapshots/.
    assert!(up.join("ok.txt").exists());
    let json = std::fs::read_to_string(m.target().join("uploads/bad-names.status")).unwrap();
    assert!(json.contains("failed") && json.contains("UTF-8"), "{json}");
    assert!(!m.target().join("snapshots/bad-names").exists());
    assert_eq!(
        sh(&format!(
            "find '{}/snapfs' -type f | wc -l",
            m.store_dir().display()
        ))
        .trim(),
        "0",
        "nothing half-made is left in the bucket"
    );
    sh(&format!("rm -r '{}'", up.display()));
    assert!(!m.target().join("uploads/bad-names.status").exists());
}
