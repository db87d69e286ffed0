//! The foundation's end-to-end mount tests over S3 (moto): a tree and a single file round-trip,
//! SQLite reads a few pages, a restart is served from the disk cache, a corrupt object is EIO;
//! plus what only a shared bucket has: other tools' objects, two writers, many snapshots.

use std::time::Instant;

use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use snapfs_fs::format::{Manifest, manifest_key};
use snapfs_tests::conformance::{Remote, commit, moto_remote, moto_store as store, runtime};
use snapfs_tests::emulators::{BUCKET, Emulator, Kind};
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, list_objects, sh, sqlite_db};

/// Daemon configuration with one S3 remote `s3` at `endpoint`.
pub fn s3_config(endpoint: &str, settle: &str) -> String {
    format!(
        "[upload]\nsettle = \"{settle}\"\n{}",
        moto_remote(endpoint, "")
    )
}

fn start() -> Option<(Emulator, Mount)> {
    if !fuse_available() {
        return None;
    }
    let moto = Emulator::start(Kind::Moto);
    let m = Mount::start_remote("s3", &s3_config(&moto.endpoint(), TEST_SETTLE));
    Some((moto, m))
}

/// Like `start`, with listings kept for one second only.
/// A listing that outlives any check, however loaded the machine: what changes it is said.
fn start_long_listings() -> Option<(Emulator, Mount)> {
    if !fuse_available() {
        return None;
    }
    let moto = Emulator::start(Kind::Moto);
    let config = format!(
        "{}[list]\nttl = \"1h\"\n",
        s3_config(&moto.endpoint(), TEST_SETTLE)
    );
    let m = Mount::start_remote("s3", &config);
    Some((moto, m))
}

#[test]
fn tree_and_single_file_round_trip() {
    let Some((_moto, m)) = start() else { return };
    let src = m.root.path().join("src");
    sh(&format!(
        "set -e; mkdir -p '{s}/nested/deeper' '{s}/empty dir'
         head -c 20000000 /dev/urandom > '{s}/nested/big.bin'; : > '{s}/empty.txt'
         echo grüße > '{s}/nested/deeper/ümlauts.txt'; ln -s nested/big.bin '{s}/link'
         chmod 600 '{s}/empty.txt'; touch -d '2001-02-03 04:05:06.789' '{s}/empty.txt'
         head -c 3000000 /dev/urandom > '{r}/one.db'",
        s = src.display(),
        r = m.root.path().display()
    ));
    sh(&format!(
        "cp -a '{}' '{}/uploads/tree' && cp '{}/one.db' '{1}/uploads/'",
        src.display(),
        m.target().display(),
        m.root.path().display()
    ));
    m.wait("tree");
    m.wait("one.db");
    let snap = m.target().join("snapshots/tree");
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        src.display(),
        snap.display()
    ));
    let stat = "stat -c '%n %s %a %Y %F'";
    assert_eq!(
        sh(&format!(
            "cd '{}' && {stat} empty.txt nested/big.bin",
            src.display()
        )),
        sh(&format!(
            "cd '{}' && {stat} empty.txt nested/big.bin",
            snap.display()
        ))
    );
    sh(&format!(
        "cmp '{}/one.db' '{}/snapshots/one.db'",
        m.root.path().display(),
        m.target().display()
    ));
}

#[test]
fn sqlite_reads_pages_and_restart_reads_from_disk_cache() {
    let Some((_moto, mut m)) = start() else {
        return;
    };
    let db = m.root.path().join("big.db");
    sqlite_db(&db, 5000);
    let size = std::fs::metadata(&db).unwrap().len();
    m.upload(&db, "big.db");
    let snap = m.target().join("snapshots/big.db");
    let (out, fetched) = m.get_bytes_during(|| {
        sh(&format!(
            "sqlite3 'file:{}?immutable=1' 'SELECT id, length(v) FROM t WHERE id = 3777;'",
            snap.display()
        ))
    });
    assert_eq!(out.trim(), "3777|10000");
    // A point query touches a few pages, so a few blocks of a few MiB: not the file.
    assert!(fetched < size / 3, "fetched {fetched} of {size} bytes");

    sh(&format!("cmp '{}' '{}'", db.display(), snap.display()));
    m.restart();
    let (_, fetched) =
        m.get_bytes_during(|| sh(&format!("cmp '{}' '{}'", db.display(), snap.display())));
    assert_eq!(
        fetched, 0,
        "after a restart the blocks come from the disk cache"
    );
}

#[test]
fn a_corrupt_object_gives_eio() {
    let Some((moto, m)) = start() else { return };
    let snap = m.upload_victim_tree();
    // Rewrite the only pack with one byte flipped in the large file's frame.
    let s = store(&moto.endpoint());
    let packs = list_objects(&*s, "snapfs/packs");
    assert_eq!(packs.len(), 1);
    let p = &packs[0].location;
    runtime().block_on(async {
        let mut data = s.get(p).await.unwrap().bytes().await.unwrap().to_vec();
        data[1_000_000] ^= 0x40;
        s.put(p, PutPayload::from(data)).await.unwrap();
    });
    let err = std::fs::read(snap.join("victim.bin")).expect_err("corrupt data must not read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(snap.join("other.txt")).unwrap(), b"fine\n");
}

/// `objects/` shows another tool's gzip'd SQLite file and reads it with ranged GETs.
#[test]
fn objects_reads_other_tools_files() {
    let Some((moto, m)) = start() else { return };
    let dir = m.root.path();
    sh(&format!(
        "cd '{d}' && sqlite3 l.db \"CREATE TABLE t(x); INSERT INTO t VALUES ('looker');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT hex(randomblob(500)) FROM n;\" \
         && gzip -c l.db > l.db.gz",
        d = dir.display()
    ));
    let gz = std::fs::read(dir.join("l.db.gz")).unwrap();
    let key = "exports/looker-2025-12-13T14-30-00.db.gz";
    runtime()
        .block_on(store(&moto.endpoint()).put(&StorePath::from(key), PutPayload::from(gz)))
        .unwrap();
    let obj = m.target().join("objects").join(key);
    let out = sh(&format!(
        "zcat '{}' > '{d}/back.db' && sqlite3 '{d}/back.db' 'SELECT x FROM t LIMIT 1'",
        obj.display(),
        d = dir.display()
    ));
    assert_eq!(out.trim(), "looker");
    sh(&format!(
        "cmp '{}' '{}/l.db.gz'",
        obj.display(),
        dir.display()
    ));
    assert!(
        !m.target().join("objects/snapfs").exists(),
        "snapfs's own keys are hidden"
    );
}

/// Two daemons on one bucket: the same name made on both at once gives one snapshot and one
/// EEXIST-class failure, and the winner's data is intact.
#[test]
fn two_writers_cannot_both_make_a_name() {
    if !fuse_available() {
        return;
    }
    // A long settle time: both uploads are staged before either starts.
    let moto = Emulator::start(Kind::Moto);
    let a = Mount::start_remote("s3", &s3_config(&moto.endpoint(), "2s"));
    let b = Mount::start_remote("s3", &s3_config(&moto.endpoint(), "2s"));
    let tag = |m: &Mount, who: &str| {
        let up = m.target().join("uploads/same");
        std::fs::create_dir(&up).unwrap();
        sh(&format!(
            "head -c 4000000 /dev/urandom > '{}/data.bin' && echo {who} > '{0}/who'",
            up.display()
        ));
    };
    tag(&a, "a");
    tag(&b, "b");
    let state = |m: &Mount| {
        let req = snapfs_control::wire::Request::Wait {
            target: "cloud/s3".into(),
            name: "same".into(),
        };
        match m.call(&req) {
            snapfs_control::wire::Response::Job(s) => (s.state, s.error),
            other => panic!("{other:?}"),
        }
    };
    let (sa, sb) = (state(&a), state(&b));
    use snapfs_control::wire::UploadState::{Done, Failed};
    let (winner, loser) = match (&sa.0, &sb.0) {
        (Done, Failed) => (&a, sb),
        (Failed, Done) => (&b, sa),
        _ => panic!(
            "exactly one writer must win: {sa:?} {sb:?}\n{}\n{}",
            a.log(),
            b.log()
        ),
    };
    assert!(
        loser.1.as_deref().unwrap_or("").contains("already exists"),
        "{loser:?}"
    );
    let who = std::fs::read_to_string(winner.target().join("snapshots/same/who")).unwrap();
    let other = if std::ptr::eq(winner, &a) { &b } else { &a };
    // The loser's mount sees the winner's snapshot, whole.
    assert_eq!(
        std::fs::read_to_string(other.target().join("snapshots/same/who")).unwrap(),
        who
    );
    sh(&format!(
        "cmp '{}/snapshots/same/data.bin' '{}/snapshots/same/data.bin'",
        a.target().display(),
        b.target().display()
    ));
}

/// 1,000 snapshots list in one LIST plus one GET per manifest, and again in one LIST with no
/// GET after a change; `ls -l` in a 10,000-file snapshot needs its manifest and no LIST.
#[test]
fn many_snapshots_and_many_files_list_cheaply() {
    let Some((moto, m)) = start_long_listings() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tiny");
    std::fs::write(&src, b"x").unwrap();
    let many = dir.path().join("many");
    sh(&format!(
        "mkdir '{d}' && cd '{d}' && seq 1 10000 | xargs touch",
        d = many.display()
    ));
    let remote = Remote::new(
        &format!("s3://{BUCKET}"),
        &[
            ("endpoint", moto.endpoint().as_str()),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "test"),
            ("secret_access_key", "test"),
        ],
    );
    let backend = remote.backend(dir.path());
    runtime().block_on(async {
        commit(backend.clone(), "s0000", &src, false).await.unwrap();
        // 999 more snapshots of the same bytes: copies of the first one's manifest under new
        // names (an upload reads every manifest to share chunks, which a test of listings
        // need not pay 1,000 times).
        let store = remote.store();
        let first = StorePath::from(manifest_key("s0000").as_str());
        let bytes = store.get(&first).await.unwrap().bytes().await.unwrap();
        let manifest = Manifest::from_bytes(&bytes).unwrap();
        let copies = (1..1000).map(|i| {
            let (store, mut m) = (store.clone(), manifest.clone());
            async move {
                m.name = format!("s{i:04}");
                let key = StorePath::from(manifest_key(&m.name).as_str());
                store
                    .put(&key, PutPayload::from(m.to_bytes()))
                    .await
                    .unwrap();
            }
        });
        futures::StreamExt::collect::<Vec<()>>(futures::StreamExt::buffer_unordered(
            futures::stream::iter(copies),
            16,
        ))
        .await;
        commit(backend.clone(), "many", &many, false).await.unwrap();
    });

    // Cold: one LIST and one GET per manifest. How long it takes is a benchmark's business
    // (bench/), not this test's: it is printed, not asserted.
    let before = m.store_metrics();
    let t = Instant::now();
    let n = std::fs::read_dir(m.target().join("snapshots"))
        .unwrap()
        .count();
    let cold = t.elapsed();
    assert_eq!(n, 1002, "1,001 snapshots and latest");
    let after = m.store_metrics();
    assert_eq!(after.list_requests - before.list_requests, 1);
    assert!(after.get_requests - before.get_requests <= 1001);
    // Listed again after a change (a snapshot removed): one LIST, manifests known by version.
    let gone = m.target().join("snapshots/s0000");
    let out = m.snapfs(&["rm", "--yes", gone.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let before = m.store_metrics();
    let t = Instant::now();
    assert_eq!(
        std::fs::read_dir(m.target().join("snapshots"))
            .unwrap()
            .count(),
        1001
    );
    let warm = t.elapsed();
    eprintln!("1,001 snapshots listed in {cold:?} cold, 1,000 in {warm:?} warm");
    let after = m.store_metrics();
    assert_eq!(after.list_requests - before.list_requests, 1);
    assert_eq!(
        after.get_requests, before.get_requests,
        "no manifest fetched again"
    );

    let out = sh(&format!(
        "ls -l '{}/snapshots/many' | wc -l",
        m.target().display()
    ));
    assert_eq!(out.trim(), "10001");
    let end = m.store_metrics();
    assert_eq!(
        end.list_requests, after.list_requests,
        "no LIST inside a snapshot"
    );
    assert!(
        end.get_requests - after.get_requests <= 1,
        "one manifest fetch at most"
    );
}
