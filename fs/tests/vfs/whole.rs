//! Files kept whole in the disk cache for passthrough: made once a handle read all of a file or
//! the file was opened often, only while the mount asks for them, and kept across restarts.

use std::io::Read;
use std::time::{Duration, Instant};

use snapfs_fs::vfs::OPENS_FOR_WHOLE;

use crate::fixture::{Fixture, standard, standard_backend};

const BIG: &str = "cloud/local/snapshots/db-1/data/big.bin";

/// The whole file an open of `path` gets, once the background assembly put it in place.
async fn whole_bytes(f: &Fixture, path: &str) -> Vec<u8> {
    let ino = f.ino(path).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let opened = f.vfs.open(ino, false, false).await.unwrap();
        f.vfs.release(opened.fh);
        if let Some(mut file) = opened.whole {
            let mut out = Vec::new();
            file.read_to_end(&mut out).unwrap();
            return out;
        }
        assert!(Instant::now() < deadline, "{path} was not kept whole");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_read_in_full_is_kept_whole_across_a_restart() {
    let f = Fixture::new(standard_backend());
    f.vfs.set_whole_files(true);
    assert!(f.read_all(BIG).await.unwrap() == standard().big);
    assert!(whole_bytes(&f, BIG).await == standard().big);

    let f = f.restarted();
    f.vfs.set_whole_files(true);
    let ino = f.ino(BIG).await;
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    assert!(opened.whole.is_some(), "the whole file outlives the daemon");
    // The handle reads through the daemon as well, for when the kernel cannot.
    assert!(f.vfs.read(opened.fh, 0, 16).await.unwrap() == standard().big[..16]);
    f.vfs.release(opened.fh);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_opened_often_is_kept_whole_without_being_read() {
    let f = Fixture::new(standard_backend());
    f.vfs.set_whole_files(true);
    let ino = f.ino(BIG).await;
    for _ in 0..OPENS_FOR_WHOLE - 1 {
        let opened = f.vfs.open(ino, false, false).await.unwrap();
        assert!(opened.whole.is_none());
        f.vfs.release(opened.fh);
    }
    assert!(whole_bytes(&f, BIG).await == standard().big);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_kept_whole_unless_the_mount_asks() {
    let f = Fixture::new(standard_backend());
    for _ in 0..OPENS_FOR_WHOLE + 1 {
        assert!(f.read_all(BIG).await.unwrap() == standard().big);
    }
    f.cache.flush().await;
    let ino = f.ino(BIG).await;
    f.vfs.set_whole_files(true);
    let opened = f.vfs.open(ino, false, false).await.unwrap();
    assert!(opened.whole.is_none(), "no file was assembled while off");
    f.vfs.release(opened.fh);
    // Small files never qualify: one cached block serves them.
    let small = "cloud/local/snapshots/db-1/hello.txt";
    for _ in 0..OPENS_FOR_WHOLE + 1 {
        let opened = f.vfs.open(f.ino(small).await, false, false).await.unwrap();
        assert!(opened.whole.is_none());
        f.vfs.release(opened.fh);
    }
}
