//! The manifest: one compressed JSON document per snapshot listing every entry and where its bytes
//! live. It is written last, so a snapshot exists exactly when its manifest does. Reading one
//! back ([`Manifest::from_bytes`]) is `validation`'s job: a manifest from a bucket is checked
//! before anything is read through it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pack::{BlockRef, encode_frame};

/// The value of [`Manifest::format`]; a reader refuses any other.
pub const MANIFEST_FORMAT: &str = "snapfs-manifest/1";

/// zstd's default: repetitive JSON shrinks well at any level, and a large tree's upload should not
/// wait on its manifest.
const MANIFEST_LEVEL: i32 = 3;

/// One snapshot: its name, times, the packs holding its data, and its entries.
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
    /// Object keys of the packs, relative to the remote's root; [`BlockRef::pack`] indexes this.
    pub packs: Vec<String>,
    /// `entries[0]` is the root (path ""); every parent appears before its children.
    pub entries: Vec<Entry>,
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
    /// A regular file cut into blocks, in file order.
    File {
        /// Length in bytes; the sum of the blocks' `len`.
        size: u64,
        /// CRC32C (Castagnoli) of the whole file's bytes.
        crc32c: u32,
        /// The blocks, consecutive in file order.
        blocks: Vec<BlockRef>,
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
    use crate::format::BLOCK_SIZE;

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

    pub(in crate::format) fn block(pack: u32, offset: u64, len: u32) -> BlockRef {
        BlockRef {
            pack,
            offset,
            clen: 100,
            len,
            crc32c: 7,
        }
    }

    pub(in crate::format) fn file(path: &str, blocks: Vec<BlockRef>) -> Entry {
        let size = blocks.iter().map(|b| u64::from(b.len)).sum();
        entry(
            path,
            EntryKind::File {
                size,
                crc32c: 1,
                blocks,
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
            packs: vec![
                "snapfs/packs/up1/00000000.pack".to_owned(),
                "snapfs/packs/up1/00000001.pack".to_owned(),
            ],
            entries: vec![
                dir(""),
                dir("a"),
                file("a/f", vec![block(0, 0, BLOCK_SIZE as u32), block(1, 0, 10)]),
                symlink("a/l", "../etc/hosts"),
                file("empty", vec![]),
            ],
        }
    }

    #[test]
    fn sample_is_valid_and_counts_files() {
        let manifest = sample();
        manifest.validate().unwrap();
        assert_eq!(manifest.root().path, "");
        assert_eq!(manifest.file_count(), 2);
        assert_eq!(manifest.total_size(), BLOCK_SIZE as u64 + 10);
    }

    #[test]
    fn bytes_round_trip_and_read_as_plain_zstd_json() {
        let manifest = sample();
        let bytes = manifest.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), manifest);
        let json: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap();
        assert_eq!(json["format"], MANIFEST_FORMAT);
        assert_eq!(json["created"], "2025-11-20T00:53:20.123456789Z");
        assert_eq!(json["entries"][0]["type"], "dir");
        assert_eq!(json["entries"][2]["type"], "file");
        assert_eq!(json["entries"][2]["blocks"][1]["pack"], 1);
        assert_eq!(json["entries"][3]["target"], "../etc/hosts");
    }

    #[test]
    fn expires_is_left_out_when_absent() {
        let mut manifest = sample();
        manifest.expires = None;
        let json = zstd::decode_all(&manifest.to_bytes()[..]).unwrap();
        assert!(!String::from_utf8(json).unwrap().contains("expires"));
    }

    /// Arbitrary valid manifests: each node hangs under an earlier directory (picked by index).
    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        let arb_block = (
            any::<u32>(),
            0u64..1 << 40,
            1u32..,
            1u32..=BLOCK_SIZE as u32,
            any::<u32>(),
        );
        let arb_kind = prop_oneof![
            Just(EntryKind::Dir),
            (any::<u32>(), prop::collection::vec(arb_block, 0..4)).prop_map(|(crc32c, blocks)| {
                let blocks: Vec<BlockRef> = blocks
                    .into_iter()
                    .map(|(pack, offset, clen, len, crc32c)| BlockRef {
                        pack,
                        offset,
                        clen,
                        len,
                        crc32c,
                    })
                    .collect();
                EntryKind::File {
                    size: blocks.iter().map(|b| u64::from(b.len)).sum(),
                    crc32c,
                    blocks,
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
            0i64..4_102_444_800,
            0u32..1_000_000_000,
            prop::option::of(0i64..4_102_444_800),
            prop::collection::vec(arb_node, 0..30),
        )
            .prop_filter("names . and .. are refused", |(name, ..)| {
                name != "." && name != ".."
            })
            .prop_map(|(name, pack_count, created, nsec, expires, nodes)| {
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
                    if let EntryKind::File { blocks, .. } = &mut kind {
                        for block in blocks {
                            block.pack %= pack_count as u32;
                        }
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
                    packs: (0..pack_count as u32)
                        .map(|seq| super::super::pack_key("up", seq))
                        .collect(),
                    entries,
                }
            })
    }

    proptest! {
        #[test]
        fn valid_manifests_round_trip(manifest in arb_manifest()) {
            prop_assert!(manifest.validate().is_ok(), "{:?}", manifest.validate());
            prop_assert_eq!(Manifest::from_bytes(&manifest.to_bytes()).unwrap(), manifest);
        }
    }
}
