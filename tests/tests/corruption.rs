//! Corruption trials over a real mount: one bit flipped at a random place in a pack, a
//! manifest or a disk-cache file, then every file of every snapshot read through the mount.
//! Never a wrong byte; a file whose stored chunks were damaged reads as EIO (or, where the flip
//! changed nothing the decoder uses, as its right bytes); every other file reads right; a
//! damaged cache file is noticed and read again from the remote; the daemon lives on.
//!
//! The trials are drawn from a fixed seed, so every run makes the same ones.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use snapfs_fs::format::{EntryKind, MANIFEST_SUFFIX, Manifest};
use snapfs_tests::{Dice, Mount, TEST_SETTLE, fuse_available, sh};

/// Trials of damage to stored objects and to cache files (two more damage both cached
/// manifests at once).
const STORE_TRIALS: usize = 120;
const CACHE_TRIALS: usize = 60;

/// A folder of every size class the format stores differently: empty, small files grouped in
/// shared frames, files of one chunk, files of many content-defined chunks, a text file that
/// compresses well, and a link.
fn make_tree(dir: &Path, rng: &mut Dice) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let sizes: [(&str, usize); 9] = [
        ("empty", 0),
        ("one", 1),
        ("sub/small-a", 700),
        ("sub/small-b", 9_000),
        ("sub/deeper/small-c", 30_000),
        ("medium", 200_000),
        ("large", 2_600_000),
        ("sub/larger", 3_500_000),
        ("sub/deeper/tiny", 3),
    ];
    for (name, len) in sizes {
        std::fs::write(dir.join(name), rng.bytes(len)).unwrap();
    }
    let text: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.join("text.log"), text).unwrap();
    std::os::unix::fs::symlink("sub/small-a", dir.join("link")).unwrap();
}

/// Every regular file of `dir`, by path below it, with its bytes.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = sh(&format!("cd '{}' && find . -type f", dir.display()));
    out.lines()
        .map(|l| {
            let rel = l.trim_start_matches("./").to_string();
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// A file read through the mount with the kernel's page cache for it dropped first, so the
/// bytes come from the daemon.
fn read_fresh(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    // SAFETY: a valid descriptor; the call only drops clean cached pages.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// One stored object: its path on disk and its good bytes.
struct Object {
    path: PathBuf,
    key: String,
    bytes: Vec<u8>,
}

fn objects_under(store: &Path, prefix: &str) -> Vec<Object> {
    let out = sh(&format!(
        "cd '{}' && find {prefix} -type f",
        store.display()
    ));
    out.lines()
        .map(|key| Object {
            path: store.join(key),
            key: key.to_string(),
            bytes: std::fs::read(store.join(key)).unwrap(),
        })
        .collect()
}

/// Flips bit `bit` of byte `at` of `path`, in place (the same inode, as a bucket rewrite
/// would leave it).
fn flip(path: &Path, bytes: &[u8], at: usize, bit: u32) {
    let mut bad = bytes.to_vec();
    bad[at] ^= 1 << bit;
    write_anew(path, &bad);
}

/// Writes `bytes` over the file at `path` as a new version of it. A remote gives every write a
/// version of its own (its ETag); a `file://` one makes it of inode, mtime and size, and two
/// writes of one size within a tick of the kernel's clock can share an mtime. So each write
/// here gets an mtime no other write has.
fn write_anew(path: &Path, bytes: &[u8]) {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::write(path, bytes).unwrap();
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mtime =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000 + n);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(mtime))
        .unwrap();
}

/// The files of snapshot `manifest` that hold a chunk whose frame covers byte `at` of `pack`.
fn touched_by(manifest: &Manifest, pack: &str, at: u64) -> BTreeSet<String> {
    let Some(pack_index) = manifest.packs.iter().position(|p| p == pack) else {
        return BTreeSet::new();
    };
    manifest
        .entries
        .iter()
        .filter(|e| match &e.kind {
            EntryKind::File { data, .. } => data.iter().any(|&c| {
                let chunk = &manifest.chunks[c as usize];
                chunk.pack as usize == pack_index
                    && (chunk.offset..chunk.offset + u64::from(chunk.clen)).contains(&at)
            }),
            _ => false,
        })
        .map(|e| e.path.clone())
        .collect()
}

/// Reads every file of every snapshot; a wrong byte fails the test at once. Answers the files
/// that failed to read, with their errno.
fn read_all(
    m: &Mount,
    want: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<(String, String), i32> {
    let mut failed = BTreeMap::new();
    for (snapshot, files) in want {
        for (path, bytes) in files {
            let at = m.target().join("snapshots").join(snapshot).join(path);
            match read_fresh(&at) {
                Ok(got) => assert!(
                    got == *bytes,
                    "WRONG BYTES served for {snapshot}/{path} ({} bytes, expected {})",
                    got.len(),
                    bytes.len()
                ),
                Err(e) => {
                    failed.insert(
                        (snapshot.clone(), path.clone()),
                        e.raw_os_error().unwrap_or(0),
                    );
                }
            }
        }
    }
    failed
}

fn config(cache: &str) -> String {
    format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n[list]\nttl = \"0s\"\n[cache]\n{cache}\n")
}

#[test]
fn random_damage_is_never_served() {
    if !fuse_available() {
        return;
    }
    let mut rng = Dice(0x5eed_c0ff_ee00_0001);
    // No cache at first: every read goes to the stored objects the trials damage.
    let mut m = Mount::start_with(&config("max_size = \"0\"\nmemory = \"0\""));
    let src = m.root.path().join("src");
    make_tree(&src, &mut rng);
    m.upload(&src, "first");
    let mut want = BTreeMap::new();
    want.insert("first".to_string(), files_of(&src));
    // The second snapshot shares most chunks with the first.
    std::fs::write(src.join("sub/small-b"), rng.bytes(9_000)).unwrap();
    let mut large = std::fs::read(src.join("large")).unwrap();
    large[1_000_000..1_050_000].copy_from_slice(&rng.bytes(50_000));
    std::fs::write(src.join("large"), large).unwrap();
    m.upload(&src, "second");

    want.insert("second".to_string(), files_of(&src));
    assert!(
        read_all(&m, &want).is_empty(),
        "undamaged, everything reads"
    );

    let store = m.store_dir();
    let packs = objects_under(&store, "snapfs/packs");
    let manifests = objects_under(&store, "snapfs/snapshots");
    let parsed: BTreeMap<String, Manifest> = manifests
        .iter()
        .map(|o| {
            let man = Manifest::from_bytes(&o.bytes).unwrap();
            (man.name.clone(), man)
        })
        .collect();
    assert_eq!(parsed.len(), 2);

    let (mut pack_trials, mut pack_eio, mut manifest_refused) = (0, 0, 0);
    for trial in 0..STORE_TRIALS {
        let on_pack = rng.pick(4) != 0;
        let pool = if on_pack { &packs } else { &manifests };
        let object = &pool[rng.pick(pool.len())];
        let at = rng.pick(object.bytes.len());
        let bit = rng.pick(8) as u32;
        flip(&object.path, &object.bytes, at, bit);
        if !on_pack {
            // A daemon keeps what it has read and checked of a snapshot (snapshots do not
            // change), and the kernel may keep its entries as long: a damaged manifest is met
            // by a daemon that reads it anew.
            m.restart();
        }
        let failed = read_all(&m, &want);
        write_anew(&object.path, &object.bytes);

        let what = format!("trial {trial}: bit {bit} of byte {at} of {}", object.key);
        // Files allowed to fail, by snapshot.
        let allowed: BTreeSet<(String, String)> = if on_pack {
            parsed
                .iter()
                .flat_map(|(name, man)| {
                    touched_by(man, &object.key, at as u64)
                        .into_iter()
                        .map(move |p| (name.clone(), p))
                })
                .collect()
        } else {
            let name = object
                .key
                .trim_start_matches("snapfs/snapshots/")
                .trim_end_matches(".manifest.zst");
            want[name]
                .keys()
                .map(|p| (name.to_string(), p.clone()))
                .collect()
        };
        for ((snapshot, path), errno) in &failed {
            assert!(
                allowed.contains(&(snapshot.clone(), path.clone())),
                "{what}: {snapshot}/{path} failed (errno {errno}) though its data is intact"
            );
            let expected: &[i32] = if on_pack {
                &[libc::EIO]
            } else {
                &[libc::EIO, libc::ENOENT]
            };
            assert!(
                expected.contains(errno),
                "{what}: {snapshot}/{path} failed with errno {errno}"
            );
        }
        if on_pack {
            pack_trials += 1;
            pack_eio += usize::from(!failed.is_empty());
        }
        if !on_pack && !failed.is_empty() {
            manifest_refused += 1;
        }
    }
    assert!(
        read_all(&m, &want).is_empty(),
        "with every object repaired, everything reads again"
    );
    println!(
        "{STORE_TRIALS} store trials: {pack_eio} of {pack_trials} pack flips read as EIO, \
         {manifest_refused} of {} manifest flips refused",
        STORE_TRIALS - pack_trials
    );
    // The trials reached the data: most flips in a frame or a manifest are caught (a flip in
    // bits zstd ignores, such as a larger window, changes nothing and reads right).
    assert!(
        pack_eio * 10 >= pack_trials * 9 && manifest_refused > 0,
        "{pack_eio} of {pack_trials} pack flips and {manifest_refused} manifest flips were caught"
    );

    // Now the disk cache: filled by one read of everything, then damaged one file at a time.
    std::fs::write(
        m.root.path().join("config.toml"),
        config("max_size = \"1GiB\"\nmemory = \"0\""),
    )
    .unwrap();
    m.restart();
    assert!(read_all(&m, &want).is_empty());
    let cached = m.root.path().join("cache/snapfs/blocks");
    // Manifests are cached too, but held parsed once read: their files are damaged last, and
    // read again after a restart.
    let (manifest_files, cache_files): (Vec<Object>, Vec<Object>) =
        objects_under(&cached, ".").into_iter().partition(|o| {
            let head = &o.bytes[..o.bytes.len().min(512)];
            head.windows(MANIFEST_SUFFIX.len())
                .any(|w| w == MANIFEST_SUFFIX.as_bytes())
        });
    assert_eq!(
        manifest_files.len(),
        2,
        "both manifests are in the disk cache"
    );
    assert!(!cache_files.is_empty(), "the disk cache holds blocks");
    for trial in 0..CACHE_TRIALS {
        let object = &cache_files[rng.pick(cache_files.len())];
        let Ok(bytes) = std::fs::read(&object.path) else {
            continue;
        };
        let at = rng.pick(bytes.len());
        let bit = rng.pick(8) as u32;
        flip(&object.path, &bytes, at, bit);
        let (failed, fetched) = m.get_bytes_during(|| read_all(&m, &want));
        assert!(
            failed.is_empty(),
            "cache trial {trial}: a damaged cache file must be read again from the remote, \
             yet {failed:?} failed"
        );
        assert!(
            fetched > 0,
            "cache trial {trial}: bit {bit} of byte {at} of {}: the damage went unnoticed",
            object.key
        );
    }
    for object in &manifest_files {
        let at = rng.pick(object.bytes.len());
        flip(&object.path, &object.bytes, at, rng.pick(8) as u32);
    }
    m.restart();
    let failed = read_all(&m, &want);
    assert!(
        failed.is_empty(),
        "damaged cached manifests: {failed:?} failed"
    );
    // Counters start again with the daemon: what it dropped now is the two manifests.
    let cache = m.status().metrics.cache;
    assert!(
        cache.corrupt_dropped >= 2,
        "both damaged manifests were noticed and read again from the remote: {cache:?}"
    );
    m.stop();
}
