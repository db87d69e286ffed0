//! Two daemons, two mounts, one bucket: one makes snapshots while the other deletes the one
//! before and runs `snapfs gc --yes` with no grace at the same time, with random timing. Every
//! snapshot made reads back whole through the other daemon, chunks are shared across the two,
//! and after a final collection nothing unreferenced is left.

use std::time::Duration;

use snapfs_fs::format::PACK_PREFIX;
use snapfs_tests::{
    Dice, Mount, TEST_SETTLE, files_under, fuse_available, only_listed_packs_left, random_file, sh,
};

const ROUNDS: u32 = 60;

fn ok(m: &Mount, args: &[&str], what: &str) {
    let out = m.snapfs(args);
    assert!(
        out.status.success(),
        "{what}: snapfs {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn one_daemon_snapshots_while_another_deletes_and_collects() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let config = format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[list]\nttl = \"0s\"\n\
         [lifecycle]\ninterval = \"0\"\norphan_grace = \"0s\"\n\
         [[remote]]\nname = \"shared\"\nurl = \"file://{}\"\n",
        bucket.display()
    );
    let maker = Mount::start_remote("shared", &config);
    let sweeper = Mount::start_remote("shared", &config);
    let (made_in, swept_in) = (maker.target(), sweeper.target());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("shared.bin"), 3 << 20);

    // The same folder through the other daemon stores no new pack: it finds the chunks.
    ok(
        &maker,
        &[
            "snapshot",
            made_in.to_str().unwrap(),
            src.to_str().unwrap(),
            "-n",
            "warm",
        ],
        "first",
    );
    let packs = files_under(&bucket, PACK_PREFIX);
    ok(
        &sweeper,
        &[
            "snapshot",
            swept_in.to_str().unwrap(),
            src.to_str().unwrap(),
            "-n",
            "again",
        ],
        "again",
    );
    assert_eq!(
        files_under(&bucket, PACK_PREFIX),
        packs,
        "chunks are shared across daemons"
    );
    for name in ["warm", "again"] {
        let gone = swept_in.join("snapshots").join(name);
        ok(&sweeper, &["rm", "--yes", gone.to_str().unwrap()], "rm");
    }

    let mut dice = Dice(0x2545_f491_4f6c_dd1d);
    for round in 0..ROUNDS {
        random_file(&src.join("round.bin"), 4096 + dice.roll(100_000));
        let (pause_make, pause_sweep) = (dice.roll(300), dice.roll(300));
        let name = format!("r{round}");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(pause_make));
                let (t, f) = (made_in.to_str().unwrap(), src.to_str().unwrap());
                ok(
                    &maker,
                    &["snapshot", t, f, "-n", &name],
                    &format!("round {round}"),
                );
            });
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(pause_sweep));
                if round > 0 {
                    let before = swept_in.join(format!("snapshots/r{}", round - 1));
                    ok(&sweeper, &["rm", "--yes", before.to_str().unwrap()], "rm");
                }
                ok(&sweeper, &["gc", "--yes", swept_in.to_str().unwrap()], "gc");
            });
        });
        let made = swept_in.join("snapshots").join(&name);
        ok(
            &sweeper,
            &["verify", made.to_str().unwrap()],
            &format!("round {round}"),
        );
        sh(&format!(
            "cmp '{}' '{}'",
            src.join("round.bin").display(),
            made.join("round.bin").display()
        ));
    }
    ok(
        &sweeper,
        &["gc", "--yes", swept_in.to_str().unwrap()],
        "last gc",
    );

    assert_eq!(
        only_listed_packs_left(&bucket),
        1,
        "only the last snapshot is left"
    );
}
