//! The manifest: one compressed JSON document per snapshot listing every entry and where its bytes
//! live. It is written last, so a snapshot exists exactly when its manifest does.

use std::collections::HashMap;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pack::encode_frame;
use super::{BLOCK_SIZE, FormatError, PACK_PREFIX};

/// The value of [`Manifest::format`]; a reader refuses any other.
pub const MANIFEST_FORMAT: &str = "snapfs-manifest/1";
/// The most decompressed bytes a manifest may have; manifests come from buckets others can write.
pub const MAX_MANIFEST_BYTES: usize = 1 << 30;

/// Longest file name a Unix kernel accepts (NAME_MAX); longer ones could never be shown.
const NAME_MAX: usize = 255;
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

/// Where one block of a file lives: one zstd frame inside one pack object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Byte offset of the frame inside the pack.
    pub offset: u64,
    /// Length of the frame in bytes.
    pub clen: u32,
    /// Decompressed length.
    pub len: u32,
    /// CRC32C (Castagnoli) of the decompressed bytes.
    pub crc32c: u32,
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

    /// Decodes and validates a manifest read from a bucket.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, FormatError> {
        decode(bytes, MAX_MANIFEST_BYTES)
    }

    /// Checks everything a reader relies on, so that a hostile or damaged manifest can neither
    /// name paths outside the snapshot nor make reads go out of bounds.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.format != MANIFEST_FORMAT {
            return Err(invalid(format!(
                "format {:?}, expected {MANIFEST_FORMAT:?}",
                self.format
            )));
        }
        check_name(&self.name)
            .map_err(|why| invalid(format!("snapshot name {:?}: {why}", self.name)))?;
        for key in &self.packs {
            check_pack_key(key).map_err(|why| invalid(format!("pack {key:?}: {why}")))?;
        }
        let Some(root) = self.entries.first() else {
            return Err(invalid("no entries (not even the root)".to_owned()));
        };
        if !root.path.is_empty() {
            return Err(invalid(format!(
                "first entry {:?} is not the root (path \"\")",
                root.path
            )));
        }
        if matches!(root.kind, EntryKind::Symlink { .. }) {
            return Err(invalid("the root is a symlink".to_owned()));
        }
        // Path -> is a directory, for every entry seen so far.
        let mut seen: HashMap<&str, bool> = HashMap::with_capacity(self.entries.len());
        for (i, entry) in self.entries.iter().enumerate() {
            let fail = |why: String| invalid(format!("entry {:?}: {why}", entry.path));
            if i > 0 {
                check_path(&entry.path).map_err(fail)?;
                let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
                match seen.get(parent) {
                    Some(true) => {}
                    Some(false) => {
                        return Err(fail(format!("parent {parent:?} is not a directory")));
                    }
                    None => {
                        return Err(fail(format!("parent {parent:?} is missing or comes later")));
                    }
                }
            }
            check_entry(entry, self.packs.len()).map_err(fail)?;
            let is_dir = matches!(entry.kind, EntryKind::Dir);
            if seen.insert(&entry.path, is_dir).is_some() {
                return Err(fail("duplicate path".to_owned()));
            }
        }
        Ok(())
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

/// [`Manifest::from_bytes`] with the size cap as a parameter, so tests can use a small one.
fn decode(bytes: &[u8], cap: usize) -> Result<Manifest, FormatError> {
    // Stream-decode through a bounded reader: a frame header may claim any size, so only the
    // count of bytes actually produced is trusted.
    let decoder = zstd::stream::read::Decoder::with_buffer(bytes)
        .map_err(|err| invalid(format!("cannot start decompressing: {err}")))?;
    let mut json = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut json)
        .map_err(|err| invalid(format!("not a zstd stream: {err}")))?;
    if json.len() > cap {
        return Err(invalid(format!("larger than {cap} bytes decompressed")));
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|err| invalid(format!("bad JSON: {err}")))?;
    manifest.validate()?;
    Ok(manifest)
}

fn invalid(why: String) -> FormatError {
    FormatError::InvalidManifest(why)
}

/// A snapshot name must be usable as one file name and one object-key component.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_owned());
    }
    if name.contains('/') {
        return Err("contains '/'".to_owned());
    }
    check_component(name)
}

/// A path relative to the snapshot root, judged the way a Unix kernel would walk it.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path outside the root".to_owned());
    }
    if path.starts_with('/') {
        return Err("absolute path".to_owned());
    }
    path.split('/').try_for_each(|component| {
        if component.is_empty() {
            Err("empty component (leading, trailing or doubled '/')".to_owned())
        } else {
            check_component(component)
        }
    })
}

fn check_component(component: &str) -> Result<(), String> {
    if component == "." || component == ".." {
        return Err(format!("{component:?} component"));
    }
    if component.contains('\0') {
        return Err("contains NUL".to_owned());
    }
    if component.len() > NAME_MAX {
        return Err(format!("component longer than {NAME_MAX} bytes"));
    }
    Ok(())
}

/// Deleting a snapshot deletes its packs, so a manifest must not be able to name any other object.
fn check_pack_key(key: &str) -> Result<(), String> {
    match key.strip_prefix(PACK_PREFIX) {
        Some(rest) => check_path(rest),
        None => Err(format!("not under {PACK_PREFIX:?}")),
    }
}

fn check_entry(entry: &Entry, pack_count: usize) -> Result<(), String> {
    if entry.mode & !0o7777 != 0 {
        return Err(format!("mode {:o} has bits beyond 0o7777", entry.mode));
    }
    if entry.mtime_nsec >= 1_000_000_000 {
        return Err(format!("mtime_nsec {} is not below 10^9", entry.mtime_nsec));
    }
    match &entry.kind {
        EntryKind::Dir => Ok(()),
        EntryKind::Symlink { target } if target.is_empty() => {
            Err("empty symlink target".to_owned())
        }
        EntryKind::Symlink { target } if target.contains('\0') => {
            Err("symlink target contains NUL".to_owned())
        }
        EntryKind::Symlink { .. } => Ok(()),
        EntryKind::File { size, blocks, .. } => {
            let mut sum: u64 = 0;
            for (i, block) in blocks.iter().enumerate() {
                check_block(block, pack_count).map_err(|why| format!("block {i}: {why}"))?;
                sum = sum
                    .checked_add(u64::from(block.len))
                    .ok_or_else(|| "block lengths overflow".to_owned())?;
            }
            if sum != *size {
                return Err(format!("blocks hold {sum} bytes but size is {size}"));
            }
            Ok(())
        }
    }
}

fn check_block(block: &BlockRef, pack_count: usize) -> Result<(), String> {
    if usize::try_from(block.pack).map_or(true, |pack| pack >= pack_count) {
        return Err(format!(
            "pack {} out of range ({pack_count} packs)",
            block.pack
        ));
    }
    if block.len == 0 || block.len as usize > BLOCK_SIZE {
        return Err(format!("len {} not in 1..={BLOCK_SIZE}", block.len));
    }
    if block.clen == 0 {
        return Err("empty frame".to_owned());
    }
    if block.offset.checked_add(u64::from(block.clen)).is_none() {
        return Err("frame range overflows".to_owned());
    }
    Ok(())
}
