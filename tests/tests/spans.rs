//! Log lines name the operation they come from: a file-system call or a control request.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use snapfs_tests::{Mount, TEST_SETTLE, fuse_available};

/// Whether a line of the daemon's log holds both `span` and `text`.
fn logged(m: &Mount, span: &str, text: &str) -> bool {
    m.log()
        .lines()
        .any(|l| l.contains(span) && l.contains(text))
}

#[test]
fn a_refused_lookup_logs_its_operation_parent_and_name() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start();
    let dir = m.target();
    let parent = std::fs::metadata(&dir).expect("the remote's folder").ino();
    let err = std::fs::read(dir.join("no-such-file")).expect_err("the file is missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // The errno line is written before the reply, so it is in the log by now.
    let span = format!("lookup{{parent={parent} name=\"no-such-file\"}}");
    assert!(
        logged(&m, &span, "no such file or directory"),
        "no line names {span} with its error in:\n{}",
        m.log()
    );
}

#[test]
fn a_control_request_logs_its_op() {
    if !fuse_available() {
        return;
    }
    let store = tempfile::tempdir().expect("tempdir");
    // No scheduled cleanup: the expired snapshot is left for the request to delete.
    let m = Mount::start_with(&format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[lifecycle]\ninterval = \"0\"\n\
         [[remote]]\nname = \"local\"\nurl = \"file://{}\"\nttl = \"1s\"\n",
        store.path().display()
    ));
    std::fs::write(m.target().join("uploads/brief"), b"x").expect("upload");
    m.wait("brief");
    std::thread::sleep(Duration::from_millis(1100));
    let out = m.snapfs(&["gc", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        logged(&m, "request{op=\"gc\"}", "snapshot deleted"),
        "no line names the gc request in:\n{}",
        m.log()
    );
}
