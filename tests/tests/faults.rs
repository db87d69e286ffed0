//! Faults of an S3 remote through a real mount: the server goes away and comes back, a storm
//! of 503s, rejected credentials, and a daemon killed in the middle of an upload.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use snapfs_tests::conformance::{moto_remote, moto_store as store, runtime};
use snapfs_tests::emulators::{AZURITE_ACCOUNT, BUCKET, Emulator, Kind};
use snapfs_tests::proxy::Proxy;
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, list_objects, random_file, sh};

/// One S3 remote `s3` at `endpoint` with a short retry budget, so failures show in seconds.
fn config(endpoint: &str) -> String {
    format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[cache]\nmemory = \"8MiB\"\n{}",
        moto_remote(endpoint, ", retry_max = \"4\", retry_timeout = \"2s\"")
    )
}

/// Every object of the bucket, to put back after the emulator restarts empty.
fn save(s: &dyn ObjectStore) -> Vec<(StorePath, bytes::Bytes)> {
    runtime().block_on(async {
        let metas: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(s.list(None))
            .await
            .unwrap();
        let mut out = Vec::new();
        for m in metas {
            let data = s.get(&m.location).await.unwrap().bytes().await.unwrap();
            out.push((m.location, data));
        }
        out
    })
}

fn restore(s: &dyn ObjectStore, objects: &[(StorePath, bytes::Bytes)]) {
    runtime().block_on(async {
        for (p, d) in objects {
            s.put(p, PutPayload::from(d.clone())).await.unwrap();
        }
    });
}

/// Uploads `len` random bytes as `data.bin`; answers the local file and its snapshot.
fn upload_data(m: &Mount, len: u64) -> (PathBuf, PathBuf) {
    let src = m.root.path().join("data.bin");
    random_file(&src, len);
    m.upload(&src, "data.bin");
    (src, m.target().join("snapshots/data.bin"))
}

/// Reads `len` bytes at `offset` of `file`, with `dd` so the kernel sees a plain read.
fn read_at(file: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn server_gone_is_eio_after_retries_and_reads_resume_when_back() {
    if !fuse_available() {
        return;
    }
    let mut moto = Emulator::start(Kind::Moto);
    let m = Mount::start_remote("s3", &config(&moto.endpoint()));
    let (src, snap) = upload_data(&m, 40_000_000);
    let want = std::fs::read(&src).unwrap();
    assert_eq!(read_at(&snap, 0, 100_000).unwrap(), want[..100_000]);

    let objects = save(&*store(&moto.endpoint()));
    moto.stop();
    let t = Instant::now();
    let err = read_at(&snap, 30_000_000, 100_000).expect_err("no server, no data");
    let waited = t.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        waited >= Duration::from_millis(500),
        "EIO came before any retry: {waited:?}"
    );
    // The mount is still up and serves what it has.
    assert_eq!(read_at(&snap, 0, 100_000).unwrap(), want[..100_000]);

    moto.resume();
    restore(&*store(&moto.endpoint()), &objects);
    let back = read_at(&snap, 30_000_000, 100_000).expect("reads work again");
    assert_eq!(back, want[30_000_000..30_100_000]);
    sh(&format!("cmp '{}' '{}'", src.display(), snap.display()));
}

#[test]
fn a_storm_of_503s_is_ridden_out_or_ends_in_eio() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let proxy = Proxy::start(moto.port, false);
    let m = Mount::start_remote("s3", &config(&proxy.endpoint()));
    let (src, snap) = upload_data(&m, 12_000_000);

    // A short storm: retried with backoff, the read succeeds.
    proxy.fail_next(3);
    let want = std::fs::read(&src).unwrap();
    assert_eq!(read_at(&snap, 0, 1_000_000).unwrap(), want[..1_000_000]);
    assert_eq!(proxy.failed(), 3, "every 503 was seen and retried");
    let before = m.store_metrics().retries;
    assert!(before >= 3, "the retries are counted: {before}");

    // A storm longer than the budget: EIO, and the mount stays.
    proxy.fail_next(1000);
    let err = read_at(&snap, 9_000_000, 1000).expect_err("past the budget");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let budget = m.store_metrics().retries - before;
    // Each failed try counts, the last one of the request that gave up included; how many fit
    // in the retry timeout depends on the random backoff.
    assert!(budget >= 1, "the storm's tries are counted: {budget}");
    proxy.fail_next(0);
    assert_eq!(
        read_at(&snap, 9_000_000, 1000).unwrap(),
        want[9_000_000..9_001_000]
    );
    assert!(proxy.forwarded() > 0);
}

/// A daemon killed with SIGKILL in the middle of an upload leaves no snapshot: the manifest
/// is written last, so half-written packs are invisible (and `gc` collects them).
#[test]
fn kill9_mid_upload_leaves_no_snapshot() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let mut m = Mount::start_remote("s3", &config(&moto.endpoint()));
    let src = m.root.path().join("big.bin");
    random_file(&src, 300_000_000);
    sh(&format!(
        "cp '{}' '{}/uploads/big.bin'",
        src.display(),
        m.target().display()
    ));
    // Kill once some packs are in the bucket, well before the last one.
    let s = store(&moto.endpoint());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !list_objects(&*s, "snapfs/packs").is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pack was uploaded:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    m.kill9();
    let manifests = list_objects(&*s, "snapfs/snapshots");
    assert!(manifests.is_empty(), "{manifests:?}");
    m.relaunch();
    let listing = sh(&format!("ls '{}/snapshots'", m.target().display()));
    assert!(!listing.contains("big.bin"), "{listing}");
}

/// Rejected credentials: EACCES at the mount, and one readable line in the log.
#[test]
fn rejected_credentials_are_eacces() {
    if !fuse_available() {
        return;
    }
    let azurite = Emulator::start(Kind::Azurite);
    let config = format!(
        "[[remote]]\nname = \"az\"\nurl = \"az://{BUCKET}\"\noptions = {{ account_name = \
         \"{AZURITE_ACCOUNT}\", account_key = \"d3Jvbmcga2V5\", endpoint = \"{}/{AZURITE_ACCOUNT}\", \
         allow_http = \"true\" }}\n",
        azurite.endpoint()
    );
    let m = Mount::start_remote("az", &config);
    let err = std::fs::read_dir(m.target().join("snapshots")).and_then(|mut d| {
        d.next().transpose()?;
        Ok(())
    });
    let e = err.expect_err("a listing with a wrong key must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("credentials rejected"))
        .unwrap_or_else(|| panic!("no readable line in the log:\n{log}"));
    assert!(line.contains("403 Forbidden"), "{line}");
    assert!(!line.contains("<?xml"), "{line}");
}
