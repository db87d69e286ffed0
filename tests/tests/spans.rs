//! Log lines name the file-system operation they come from, through a real mount.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;

use snapfs_tests::{Mount, fuse_available};

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
    let log = m.log();
    let span = format!("lookup{{parent={parent} name=\"no-such-file\"}}");
    assert!(
        log.lines()
            .any(|l| l.contains(&span) && l.contains("no such file or directory")),
        "no line names {span} with its error in:\n{log}"
    );
}
