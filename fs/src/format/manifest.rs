//! The manifest: one compressed JSON document per snapshot listing every entry, the chunks its
//! files are made of and where each chunk is stored. It is written last, so a snapshot exists
//! exactly when its manifest does. Reading one back ([`Manifest::from_bytes`]) is
//! `validation`'s job: a manifest from a bucket is checked before anything is read through it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pack::{ChunkRef, encode_frame};

/// The value of [`Manifest::format`]; a reader refuses any other.
pub const MANIFEST_FORMAT: &str = "snapfs-manifest/2";

/// zstd's default: repetitive JSON shrinks well at any level, and a large tree's upload should not
/// wait on its manifest.
const MANIFEST_LEVEL: i32 = 3;

/// One snapshot: its name, times, where it was made from, the packs and chunks holding its
/// data, and its entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The snapshot's name.
    pub name: String,
    /// When the snapshot was made (RFC 3339 in JSON).
    pub created: DateTime<Utc>,
    /// When the snapshot may be collected, if it has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// The folder or file the snapshot was read from in place (`snapfs snapshot`), so the next
    /// snapshot of it can take unchanged files from this one without reading them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Object keys of the packs, relative to the remote's root; [`ChunkRef::pack`] indexes
    /// this. A pack may belong to an earlier snapshot: chunks are shared.
    pub packs: Vec<String>,
    /// Every chunk a file of the snapshot uses, once; files index this.
    pub chunks: Vec<ChunkRef>,
    /// `entries[0]` is the root (path ""); every parent appears before its children.
    pub entries: Vec<Entry>,
}

/// Where a snapshot was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The machine's host name.
    pub host: String,
    /// The absolute path read.
    pub path: String,
}

/// What identifies a file's content without reading it, as it was when read: a file whose
/// size, mtime, ctime and inode are all unchanged is taken as unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub ino: u64,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

/// One file, directory or symlink of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// "" for the root, else a '/'-separated path relative to it.
    pub path: String,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// What the entry is.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// The type of an entry, with what only that type has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory; its children are the entries whose parent path is its path.
    Dir,
    /// A regular file cut into chunks, in file order.
    File {
        /// Length in bytes; the sum of its chunks' `len`.
        size: u64,
        /// CRC32C (Castagnoli) of the whole file's bytes.
        crc32c: u32,
        /// Indexes into [`Manifest::chunks`], in file order.
        data: Vec<u32>,
        /// The file's identity when it was read in place.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<Seen>,
    },
    /// A symbolic link, stored as written (it may be absolute or point outside the snapshot).
    Symlink {
        /// The link's target.
        target: String,
    },
}

/// Stands in for the root of a manifest that has none (one that never passed validation).
static EMPTY_ROOT: Entry = Entry {
    path: String::new(),
    mode: 0o555,
    mtime: 0,
    mtime_nsec: 0,
    kind: EntryKind::Dir,
};

impl Manifest {
    /// The manifest as JSON compressed into one zstd frame, so `zstd -d | jq` reads it.
    pub fn to_bytes(&self) -> Vec<u8> {
        match serde_json::to_vec(self) {
            Ok(json) => encode_frame(&json, MANIFEST_LEVEL),
            // serde_json fails only on non-string map keys, a failing writer or a failing
            // Serialize impl; these types have none of them.
            Err(err) => unreachable!("a manifest always serializes: {err}"),
        }
    }

    /// The root entry; validation guarantees it exists (an unvalidated empty manifest gets an
    /// empty directory).
    pub fn root(&self) -> &Entry {
        self.entries.first().unwrap_or(&EMPTY_ROOT)
    }

    /// The sum of the sizes of all files.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .filter_map(|entry| match entry.kind {
                EntryKind::File { size, .. } => Some(size),
                _ => None,
            })
            .fold(0, u64::saturating_add)
    }

    /// How many regular files the snapshot holds.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| matches!(entry.kind, EntryKind::File { .. }))
            .count()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::format::{BLOCK_SIZE, ChunkId};

    pub(in crate::format) fn at(secs: i64, nsec: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, nsec).unwrap()
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

    pub(in crate::format) fn dir(path: &str) -> Entry {
        entry(path, EntryKind::Dir)
    }

    /// A chunk whose id is made from `len` (tests never decode these).
    pub(in crate::format) fn chunk(pack: u32, offset: u64, len: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&len.to_le_bytes()),
            pack,
            offset,
            clen: 100,
            len,
            at: 0,
            flen: 0,
        }
    }

    pub(in crate::format) fn file(path: &str, data: Vec<u32>, size: u64) -> Entry {
        entry(
            path,
            EntryKind::File {
                size,
                crc32c: 1,
                data,
                seen: None,
            },
        )
    }

    pub(in crate::format) fn symlink(path: &str, target: &str) -> Entry {
        entry(
            path,
            EntryKind::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub(in crate::format) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            name: "db-2026-11-20".to_owned(),
            created: at(1_763_600_000, 123_456_789),
            expires: Some(at(1_764_800_000, 0)),
            source: Some(Source {
                host: "laptop".to_owned(),
                path: "/srv/db".to_owned(),
            }),
            packs: vec![
                "snapfs/packs/up1/00000000.pack".to_owned(),
                "snapfs/packs/up1/00000001.pack".to_owned(),
            ],
            chunks: vec![chunk(0, 0, BLOCK_SIZE as u32), chunk(1, 0, 10)],
            entries: vec![
                dir(""),
                dir("a"),
                file("a/f", vec![0, 1], BLOCK_SIZE as u64 + 10),
                symlink("a/l", "../etc/hosts"),
                file("empty", vec![], 0),
                file("again", vec![1, 1], 20),
            ],
        }
    }

    #[test]
    fn sample_is_valid_and_counts_files() {
        let manifest = sample();
        manifest.validate().unwrap();
        assert_eq!(manifest.root().path, "");
        assert_eq!(manifest.file_count(), 3);
        assert_eq!(manifest.total_size(), BLOCK_SIZE as u64 + 30);
    }

    #[test]
    fn bytes_round_trip_and_read_as_plain_zstd_json() {
        let mut manifest = sample();
        if let EntryKind::File { seen, .. } = &mut manifest.entries[2].kind {
            *seen = Some(Seen {
                ino: 12,
                ctime: 1_700_000_001,
                ctime_nsec: 9,
            });
        }
        let bytes = manifest.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), manifest);
        let json: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap();
        assert_eq!(json["format"], MANIFEST_FORMAT);
        assert_eq!(json["created"], "2025-11-20T00:53:20.123456789Z");
        assert_eq!(json["source"]["path"], "/srv/db");
        assert_eq!(json["chunks"][1]["pack"], 1);
        assert_eq!(json["chunks"][1]["id"], manifest.chunks[1].id.to_string());
        assert_eq!(json["entries"][0]["type"], "dir");
        assert_eq!(json["entries"][2]["type"], "file");
        assert_eq!(json["entries"][2]["data"], serde_json::json!([0, 1]));
        assert_eq!(json["entries"][2]["seen"]["ino"], 12);
        assert_eq!(json["entries"][3]["target"], "../etc/hosts");
    }

    #[test]
    fn optional_fields_are_left_out_when_absent() {
        let mut manifest = sample();
        manifest.expires = None;
        manifest.source = None;
        let json = String::from_utf8(zstd::decode_all(&manifest.to_bytes()[..]).unwrap()).unwrap();
        for field in ["expires", "source", "seen"] {
            assert!(!json.contains(field), "{field} in {json}");
        }
    }

    /// Arbitrary valid manifests: each node hangs under an earlier directory (picked by index).
    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        let arb_chunk = (
            0u64..1 << 40,
            1u32..,
            1u32..=BLOCK_SIZE as u32,
            any::<u64>(),
        );
        let arb_kind = prop_oneof![
            Just(EntryKind::Dir),
            (any::<u32>(), prop::collection::vec(any::<u32>(), 0..4)).prop_map(|(crc32c, data)| {
                EntryKind::File {
                    size: 0,
                    crc32c,
                    data,
                    seen: None,
                }
            }),
            "[^\\x00]{1,16}".prop_map(|target| EntryKind::Symlink { target }),
        ];
        let arb_node = (
            any::<usize>(),
            "[^/\\x00]{1,8}",
            arb_kind,
            0u32..=0o7777,
            any::<i64>(),
            0u32..1_000_000_000,
        );
        (
            "[^/\\x00]{1,20}",
            1usize..4,
            prop::collection::vec(arb_chunk, 1..6),
            0i64..4_102_444_800,
            0u32..1_000_000_000,
            prop::option::of(0i64..4_102_444_800),
            prop::collection::vec(arb_node, 0..30),
        )
            .prop_filter("names . and .. are refused", |(name, ..)| {
                name != "." && name != ".."
            })
            .prop_map(
                |(name, pack_count, chunks, created, nsec, expires, nodes)| {
                    let chunks: Vec<ChunkRef> = chunks
                        .into_iter()
                        .enumerate()
                        .map(|(i, (offset, clen, len, seed))| ChunkRef {
                            id: ChunkId::of(&seed.to_le_bytes()),
                            pack: (i % pack_count) as u32,
                            offset,
                            clen,
                            len,
                            at: 0,
                            flen: 0,
                        })
                        .collect();
                    let mut entries = vec![dir("")];
                    let mut dirs = vec![String::new()];
                    for (pick, component, mut kind, mode, mtime, mtime_nsec) in nodes {
                        if component == "." || component == ".." {
                            continue;
                        }
                        let parent = &dirs[pick % dirs.len()];
                        let path = if parent.is_empty() {
                            component
                        } else {
                            format!("{parent}/{component}")
                        };
                        if entries.iter().any(|e: &Entry| e.path == path) {
                            continue;
                        }
                        if let EntryKind::File { data, size, .. } = &mut kind {
                            for c in data.iter_mut() {
                                *c %= chunks.len() as u32;
                            }
                            *size = data
                                .iter()
                                .map(|&c| u64::from(chunks[c as usize].len))
                                .sum();
                        }
                        if kind == EntryKind::Dir {
                            dirs.push(path.clone());
                        }
                        entries.push(Entry {
                            path,
                            mode,
                            mtime,
                            mtime_nsec,
                            kind,
                        });
                    }
                    Manifest {
                        format: MANIFEST_FORMAT.to_owned(),
                        name,
                        created: at(created, nsec),
                        expires: expires.map(|secs| at(secs, 0)),
                        source: None,
                        packs: (0..pack_count as u32)
                            .map(|seq| super::super::pack_key("up", seq))
                            .collect(),
                        chunks,
                        entries,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn valid_manifests_round_trip(manifest in arb_manifest()) {
            prop_assert!(manifest.validate().is_ok(), "{:?}", manifest.validate());
            prop_assert_eq!(Manifest::from_bytes(&manifest.to_bytes()).unwrap(), manifest);
        }
    }
}
