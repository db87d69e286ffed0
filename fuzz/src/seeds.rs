//! The first inputs of each corpus, made by the real encoders (or copied from what the real
//! peers answer), so mutations start from what a decoder accepts. `snapfs-fuzz seed` writes
//! them as `seed-*` files; inputs the fuzzers find are kept beside them.

use chrono::DateTime;
use snapfs_control::wire::{Request, Response, SnapshotInfo, SnapshotState};
use snapfs_fs::format::{
    ChunkId, ChunkRef, Entry, EntryKind, MANIFEST_FORMAT, Manifest, Source, compress_chunk,
};

/// Seeds of `target`, by name.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "manifest" => vec![("sample", manifest().to_bytes())],
        "manifest_json" => vec![(
            "sample",
            serde_json::to_vec_pretty(&manifest()).unwrap_or_default(),
        )],
        "pack_frame" => pack_frames(),
        "config" => vec![
            (
                "example",
                include_bytes!("../../packaging/config.toml.example").to_vec(),
            ),
            ("example-on", config_example()),
        ],
        "control_wire" => control_lines(),
        "hivemq_listing" => vec![("listing", HIVEMQ_LISTING.as_bytes().to_vec())],
        "k8s_stat" => vec![("listing", STAT_LINES.as_bytes().to_vec())],
        "tar_stream" => vec![("folder", TAR_FOLDER.to_vec())],
        _ => Vec::new(),
    }
}

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.to_owned(),
        mode: 0o644,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        kind,
    }
}

fn chunk_ref(pack: u32, data: &[u8], offset: u64) -> ChunkRef {
    ChunkRef {
        id: ChunkId::of(data),
        pack,
        offset,
        clen: 20,
        len: data.len() as u32,
        at: 0,
        flen: 0,
    }
}

/// A manifest of every entry kind, two packs, and a chunk two files share.
fn manifest() -> Manifest {
    let file = |path: &str, data: Vec<u32>, size: u64| {
        entry(
            path,
            EntryKind::File {
                size,
                crc32c: 7,
                data,
                seen: None,
            },
        )
    };
    Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        name: "db-2026-12-01".to_owned(),
        created: DateTime::from_timestamp(1_764_600_000, 5).unwrap_or_default(),
        expires: DateTime::from_timestamp(1_765_600_000, 0),
        source: Some(Source {
            host: "laptop".to_owned(),
            path: "/srv/db".to_owned(),
        }),
        packs: vec![
            "snapfs/packs/up1/00000000.pack".to_owned(),
            "snapfs/packs/up2/00000000.pack".to_owned(),
        ],
        chunks: vec![chunk_ref(0, b"hello ", 0), chunk_ref(1, b"world", 64)],
        entries: vec![
            entry("", EntryKind::Dir),
            entry("sub", EntryKind::Dir),
            file("sub/greeting", vec![0, 1], 11),
            entry(
                "sub/link",
                EntryKind::Symlink {
                    target: "../etc/hosts".to_owned(),
                },
            ),
            file("empty", vec![], 0),
            file("twice", vec![1, 1], 10),
        ],
    }
}

/// A frame of one chunk, and a frame of three small chunks with the middle one referenced.
fn pack_frames() -> Vec<(&'static str, Vec<u8>)> {
    let input = |chunk: &[u8], at: u32, flen: u32, frame: &[u8]| {
        let mut out = ChunkId::of(chunk).0.to_vec();
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&flen.to_le_bytes());
        out.extend_from_slice(frame);
        out
    };
    let alone: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let group = b"first chunk|second chunk|third chunk";
    vec![
        ("alone", input(&alone, 0, 0, &compress_chunk(&alone, 3))),
        (
            "grouped",
            input(
                &group[12..25],
                12,
                group.len() as u32,
                &compress_chunk(group, 3),
            ),
        ),
    ]
}

/// The example configuration with every commented-out setting switched on.
fn config_example() -> Vec<u8> {
    let text = include_str!("../../packaging/config.toml.example");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let on = line
            .strip_prefix('#')
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '['));
        out.push_str(on.unwrap_or(line));
        out.push('\n');
    }
    out.into_bytes()
}

fn control_lines() -> Vec<(&'static str, Vec<u8>)> {
    let json = |value: Result<Vec<u8>, serde_json::Error>| value.unwrap_or_default();
    let snapshot = SnapshotInfo {
        name: "db-1".to_owned(),
        created: DateTime::from_timestamp(1_764_600_000, 0).unwrap_or_default(),
        state: SnapshotState::Ready,
        is_file: false,
        size: 4096,
        files: 3,
        crc32c: Some(9),
        expires: None,
        id: "db-1".to_owned(),
    };
    vec![
        ("status", json(serde_json::to_vec(&Request::Status))),
        (
            "snapshot",
            json(serde_json::to_vec(&Request::Snapshot {
                target: "cloud/local".to_owned(),
                source: "/srv/db".into(),
                name: "db-1".to_owned(),
                size: Some(1 << 30),
            })),
        ),
        (
            "wait",
            json(serde_json::to_vec(&Request::Wait {
                target: "cloud/local".to_owned(),
                name: "db-1".to_owned(),
            })),
        ),
        (
            "snapshots",
            json(serde_json::to_vec(&Response::Snapshots {
                snapshots: vec![snapshot],
            })),
        ),
    ]
}

const HIVEMQ_LISTING: &str = r#"{"items":[
{"id":"20261201-120000","createdAt":"2026-12-01T12:00:00Z","bytes":123456,"state":"COMPLETED"},
{"id":"20261202-120000","createdAt":"2026-12-02T12:00:00.5Z","state":"IN_PROGRESS"},
{"id":"20261203-120000","createdAt":"2026-12-03T12:00:00Z","state":"FAILED","failReason":"disk full"},
{"id":"20261130-120000","bytes":1,"state":"RESTORE_COMPLETED"}]}"#;

const STAT_LINES: &str = "regular file|12|644|1700000000|./data.db
directory|4096|755|1700000001|./sub dir
symbolic link|7|777|1700000002|./link|with|bars
regular empty file|0|600|1700000003|./empty
character special file|0|666|1|./null
";

const TAR_FOLDER: &[u8] = b"dsub
fsub/file\x01some bytes
fempty
lsub/link\x01../empty
fa/deep/er/path/with/a/name/long/enough/for/a/pax/header/because/ustar/keeps/only/a/hundred/bytes\x01x
l\xc3\xa9t\xc3\xa9\x01/an/absolute/target
";
