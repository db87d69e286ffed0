//! A reference-model test of the VFS: random sequences of what the kernel sends (lookups,
//! listings read a few entries at a time, opens, reads, and writes, renames and removals under
//! `uploads/`), with uploads becoming snapshots, snapshots deleted and backend faults switched
//! on and off between them, run against the VFS over the fake backend and against a plain
//! in-memory model of what a user should see. Wrong bytes are never allowed; an error only where
//! the model expects one or a fault switched on explains it, and then the same operation
//! succeeds once the fault is gone.
//!
//! `PROPTEST_CASES` sets the number of cases (128 by default).

mod dirs;
mod files;
mod ops;
mod reference;
mod run;
mod snapshot;
mod staged;

use proptest::prelude::*;

use ops::Op;
use run::Harness;

/// Runs one sequence on a fresh VFS. A single-threaded runtime, so that read-ahead running in
/// the background interleaves with the sequence only where the VFS awaits.
fn check(ops: &[Op]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let outcome = rt.block_on(async { Harness::new().run(ops).await });
    if std::env::var_os("MODEL_STATS").is_some() {
        let n: Vec<u64> = run::STATS
            .iter()
            .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        eprintln!(
            "cases {} ops {} reads {} listings {} expected-errors {} fault-errors {} completed {}",
            n[0], n[1], n[2], n[3], n[4], n[5], n[6]
        );
    }
    outcome
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Beside this file, so that failures found once are tried first ever after.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_vfs_shows_what_the_model_shows(ops in prop::collection::vec(ops::op(), 1..50)) {
        let outcome = check(&ops);
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

/// Sequences the property test found, kept as plain tests.
mod found {
    use super::check;
    use super::ops::Op::{self, *};

    fn up(rest: &str) -> String {
        format!("cloud/local/uploads/{rest}")
    }

    fn run(ops: &[Op]) {
        if let Err(e) = check(ops) {
            panic!("{e}");
        }
    }

    /// A single-file upload removed while open, made again: closing the old file counted
    /// against the new upload, which then looked settled with a file still open.
    #[test]
    fn a_file_left_open_in_a_removed_upload_does_not_count_against_its_successor() {
        run(&[
            Create(up("a")),
            Remove {
                path: up("a"),
                dir: false,
            },
            Create(up("a")),
            Create(up("b")),
            Release(3),
        ]);
    }

    /// READDIRPLUS left out a name gone since opendir but numbered the rest by their place
    /// in its answer, so the next call started one too early and gave a name twice.
    #[test]
    fn readdirplus_gives_each_name_once_when_one_goes_while_listing() {
        run(&[
            Mkdir(up("a")),
            Create(up("a/x")),
            Create(up("a/y")),
            OpenDir(up("a")),
            ReadDir {
                handle: 0,
                plus: true,
                chunk: 2,
            },
            Remove {
                path: up("a/x"),
                dir: false,
            },
            ReadDir {
                handle: 0,
                plus: true,
                chunk: 2,
            },
            ReadDir {
                handle: 0,
                plus: true,
                chunk: 2,
            },
            ReadDir {
                handle: 0,
                plus: true,
                chunk: 2,
            },
        ]);
    }
}
