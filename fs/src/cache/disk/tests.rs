//! The block store's own tests: names, collisions, torn files and the startup scan.

use super::*;

fn open(dir: &Path) -> DiskCache {
    DiskCache::open(dir, 1 << 30, 0, None).unwrap()
}

#[test]
fn fnv1a64_matches_reference_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn path_is_shard_then_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = open(tmp.path());
    let path = disk.path_for("a");
    assert_eq!(path, tmp.path().join("blocks/af/af63dc4c8601ec8c"));
}

#[test]
fn hash_collision_is_a_miss_and_keeps_the_other_block() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = open(tmp.path());
    // Force both keys onto one path, as a hash collision would.
    let path = disk.path_for("first");
    disk.write_at(&path, "first", b"first data").unwrap();
    assert_eq!(disk.read_at(&path, "second"), None);
    assert_eq!(disk.corrupt_dropped(), 0);
    assert_eq!(
        disk.read_at(&path, "first").as_deref(),
        Some(&b"first data"[..])
    );
    // The later writer wins the slot.
    disk.write_at(&path, "second", b"second").unwrap();
    assert_eq!(disk.read_at(&path, "first"), None);
    assert_eq!(
        disk.read_at(&path, "second").as_deref(),
        Some(&b"second"[..])
    );
}

#[test]
fn decode_rejects_every_truncation() {
    let header = encode_header("k", 3);
    let mut file = header.clone();
    file.extend_from_slice(b"abc");
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(decode(&file, "k"), Decoded::Data(r) if &file[r.clone()] == b"abc"));
    for len in 0..file.len() {
        assert!(
            matches!(decode(&file[..len], "k"), Decoded::Corrupt),
            "len {len}"
        );
    }
}

#[test]
fn scan_removes_leftover_temp_files_and_counts_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("blocks/00");
    fs::create_dir_all(&shard).unwrap();
    fs::write(shard.join(".tmp-dead-beef-0"), b"partial").unwrap();
    {
        let disk = open(tmp.path());
        disk.write_at(&disk.path_for("kept"), "kept", b"data")
            .unwrap();
    }
    let disk = open(tmp.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !disk.scan_complete() {
        assert!(std::time::Instant::now() < deadline, "scan did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!shard.join(".tmp-dead-beef-0").exists());
    let expected = (HEADER_LEN + "kept".len() + 4 + TRAILER_LEN) as u64;
    assert_eq!(disk.usage(), expected);
}
