//! Reading a manifest back, and the rules it must follow before anything is read through it:
//! manifests come from buckets others can write, so decompression is capped and every name,
//! path, parent and chunk reference is checked.

use std::collections::HashMap;
use std::io::Read;

use super::manifest::{Entry, EntryKind, MANIFEST_FORMAT, Manifest};
use super::pack::ChunkRef;
use super::{BLOCK_SIZE, FormatError, PACK_PREFIX};
use crate::tree::NAME_MAX;

/// The most decompressed bytes a manifest may have: room for a million chunks and as many
/// entries, far from what a hostile few kilobytes could make the daemon hold.
pub const MAX_MANIFEST_BYTES: usize = 256 << 20;

impl Manifest {
    /// Decodes and validates a manifest read from a bucket.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, FormatError> {
        decode(bytes, MAX_MANIFEST_BYTES)
    }

    /// Checks everything a reader relies on, so that a hostile or damaged manifest can neither
    /// name paths outside the snapshot nor make reads go out of bounds.
    pub fn validate(&self) -> Result<(), FormatError> {
        check(self)
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

/// The checks behind [`Manifest::validate`].
fn check(manifest: &Manifest) -> Result<(), FormatError> {
    if manifest.format != MANIFEST_FORMAT {
        return Err(invalid(format!(
            "format {:?}, which this version does not read (it reads {MANIFEST_FORMAT:?})",
            manifest.format
        )));
    }
    check_name(&manifest.name)
        .map_err(|why| invalid(format!("snapshot name {:?}: {why}", manifest.name)))?;
    for key in &manifest.packs {
        check_pack_key(key).map_err(|why| invalid(format!("pack {key:?}: {why}")))?;
    }
    for (i, chunk) in manifest.chunks.iter().enumerate() {
        check_chunk(chunk, manifest.packs.len())
            .map_err(|why| invalid(format!("chunk {i}: {why}")))?;
    }
    let Some(root) = manifest.entries.first() else {
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
    let mut seen: HashMap<&str, bool> = HashMap::with_capacity(manifest.entries.len());
    for (i, entry) in manifest.entries.iter().enumerate() {
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
        check_entry(entry, &manifest.chunks).map_err(fail)?;
        let is_dir = matches!(entry.kind, EntryKind::Dir);
        if seen.insert(&entry.path, is_dir).is_some() {
            return Err(fail("duplicate path".to_owned()));
        }
    }
    Ok(())
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

fn check_entry(entry: &Entry, chunks: &[ChunkRef]) -> Result<(), String> {
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
        EntryKind::File { size, data, .. } => {
            let mut sum: u64 = 0;
            for &c in data {
                let chunk = chunks
                    .get(c as usize)
                    .ok_or_else(|| format!("chunk {c} out of range ({} chunks)", chunks.len()))?;
                sum = sum
                    .checked_add(u64::from(chunk.len))
                    .ok_or_else(|| "chunk lengths overflow".to_owned())?;
            }
            if sum != *size {
                return Err(format!("chunks hold {sum} bytes but size is {size}"));
            }
            Ok(())
        }
    }
}

fn check_chunk(chunk: &ChunkRef, pack_count: usize) -> Result<(), String> {
    if usize::try_from(chunk.pack).map_or(true, |pack| pack >= pack_count) {
        return Err(format!(
            "pack {} out of range ({pack_count} packs)",
            chunk.pack
        ));
    }
    if chunk.len == 0 || chunk.len as usize > BLOCK_SIZE {
        return Err(format!("len {} not in 1..={BLOCK_SIZE}", chunk.len));
    }
    if chunk.clen == 0 {
        return Err("empty frame".to_owned());
    }
    if chunk.flen == 0 && chunk.at != 0 {
        return Err(format!("at {} in a frame of its own", chunk.at));
    }
    let end = u64::from(chunk.at) + u64::from(chunk.len);
    if chunk.flen != 0 && (end > u64::from(chunk.flen) || chunk.flen as usize > BLOCK_SIZE) {
        return Err(format!(
            "at {} + len {} does not fit a frame of {} (at most {BLOCK_SIZE})",
            chunk.at, chunk.len, chunk.flen
        ));
    }
    if chunk.offset.checked_add(u64::from(chunk.clen)).is_none() {
        return Err("frame range overflows".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::{chunk, dir, file, sample, symlink};

    #[test]
    fn from_bytes_refuses_garbage_and_invalid_content() {
        let is_invalid = |bytes: &[u8]| {
            matches!(
                Manifest::from_bytes(bytes),
                Err(FormatError::InvalidManifest(_))
            )
        };
        assert!(is_invalid(b"not zstd at all"));
        assert!(is_invalid(&zstd::encode_all(&b"{not json"[..], 3).unwrap()));
        let bytes = sample().to_bytes();
        assert!(is_invalid(&bytes[..bytes.len() - 3]));
        let mut bad = sample();
        bad.entries.push(dir("../escape"));
        let err = Manifest::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("\"../escape\""), "{err}");
    }

    #[test]
    fn from_bytes_stops_at_the_cap() {
        let bomb = zstd::encode_all(&vec![b' '; 4 << 20][..], 19).unwrap();
        assert!(bomb.len() < 4096);
        let err = decode(&bomb, 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );

        let bytes = sample().to_bytes();
        let json_len = zstd::decode_all(&bytes[..]).unwrap().len();
        assert_eq!(decode(&bytes, json_len).unwrap(), sample());
        assert!(decode(&bytes, json_len - 1).is_err());
    }

    /// The manifest's validation error, which must exist and mention `needle`.
    fn refused(manifest: &Manifest, needle: &str) {
        match manifest.validate() {
            Err(FormatError::InvalidManifest(why)) => {
                assert!(why.contains(needle), "{why:?} does not mention {needle:?}")
            }
            other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
        }
    }

    fn with_entry(extra: Entry) -> Manifest {
        let mut manifest = sample();
        manifest.entries.push(extra);
        manifest
    }

    #[test]
    fn a_single_file_snapshot_has_a_file_root() {
        let mut manifest = sample();
        manifest.entries = vec![file("", vec![1], 10)];
        manifest.validate().unwrap();
        manifest.entries.push(dir("x"));
        refused(&manifest, "\"\" is not a directory");
    }

    #[test]
    fn refuses_hostile_paths() {
        for path in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "a//b",
            "./a",
            "a/..",
            "a/.",
            "..",
            ".",
            "a/",
            "",
            "a/b\0c",
        ] {
            refused(&with_entry(file(path, vec![], 0)), &format!("{path:?}"));
        }
        refused(&with_entry(dir(&"n".repeat(256))), "longer than 255");
        with_entry(dir(&"n".repeat(255))).validate().unwrap();
        // A backslash is an ordinary character in a Unix file name.
        with_entry(dir("a\\..")).validate().unwrap();
    }

    #[test]
    fn refuses_bad_tree_shapes() {
        refused(&with_entry(dir("a")), "duplicate path");
        refused(
            &with_entry(file("b/c", vec![], 0)),
            "parent \"b\" is missing",
        );
        refused(
            &with_entry(file("a/l/x", vec![], 0)),
            "parent \"a/l\" is not a directory",
        );
        refused(
            &with_entry(file("a/f/x", vec![], 0)),
            "parent \"a/f\" is not a directory",
        );

        let mut child_first = sample();
        child_first.entries.swap(1, 2);
        refused(&child_first, "\"a/f\": parent \"a\" is missing");

        let mut empty = sample();
        empty.entries.clear();
        refused(&empty, "no entries");
        assert_eq!(empty.root().path, "");

        let mut rootless = sample();
        rootless.entries.remove(0);
        refused(&rootless, "not the root");

        let mut symlink_root = sample();
        symlink_root.entries = vec![symlink("", "/")];
        refused(&symlink_root, "root is a symlink");
    }

    fn with_chunk(extra: ChunkRef) -> Manifest {
        let mut manifest = sample();
        manifest.chunks.push(extra);
        manifest
    }

    #[test]
    fn refuses_bad_chunks() {
        refused(&with_chunk(chunk(2, 0, 1)), "chunk 2: pack 2 out of range");
        refused(&with_chunk(chunk(0, 0, 0)), "len 0");
        refused(
            &with_chunk(chunk(0, 0, BLOCK_SIZE as u32 + 1)),
            "not in 1..=",
        );
        refused(&with_chunk(chunk(0, u64::MAX, 1)), "overflows");
        let mut empty_frame = chunk(0, 0, 1);
        empty_frame.clen = 0;
        refused(&with_chunk(empty_frame), "empty frame");
        let mut stray = chunk(0, 0, 10);
        stray.at = 4;
        refused(&with_chunk(stray), "at 4 in a frame of its own");
        stray.flen = 12;
        refused(&with_chunk(stray), "does not fit a frame of 12");
        stray.flen = 14;
        with_chunk(stray).validate().unwrap();

        refused(&with_entry(file("x", vec![2], 10)), "chunk 2 out of range");
        refused(
            &with_entry(file("x", vec![1, 1], 21)),
            "chunks hold 20 bytes but size is 21",
        );
    }

    #[test]
    fn refuses_bad_entry_fields() {
        let mut typed = dir("x");
        typed.mode = 0o40755;
        refused(&with_entry(typed), "mode");
        let mut nsec = dir("x");
        nsec.mtime_nsec = 1_000_000_000;
        refused(&with_entry(nsec), "mtime_nsec");
        refused(&with_entry(symlink("x", "")), "empty symlink target");
        refused(&with_entry(symlink("x", "a\0b")), "NUL");
        // Where a link points is for whoever follows it to judge (restores refuse escapes).
        with_entry(symlink("x", "/etc/passwd")).validate().unwrap();
    }

    #[test]
    fn refuses_bad_names_formats_and_pack_keys() {
        for name in ["", "a/b", ".", "..", "a\0b"] {
            let mut manifest = sample();
            manifest.name = name.to_owned();
            refused(&manifest, &format!("snapshot name {name:?}"));
        }
        let mut old = sample();
        old.format = "snapfs-manifest/1".to_owned();
        refused(
            &old,
            "format \"snapfs-manifest/1\", which this version does not read",
        );
        // Deleting a snapshot deletes its packs: a manifest must not name other objects.
        for key in [
            "snapfs/snapshots/x.manifest.zst",
            "snapfs/packs/../snapshots/x",
            "snapfs/packs/",
            "/x",
        ] {
            let mut manifest = sample();
            manifest.packs[1] = key.to_owned();
            refused(&manifest, &format!("pack {key:?}"));
        }
    }
}
