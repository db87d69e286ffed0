//! What the cache is asked for, and the one string form of it that the memory map, the flights
//! and the disk files are keyed by.

use std::fmt::Write;

/// Names immutable bytes as one target's backend serves them. Every name the cache stores is made
/// here, so two different things can never share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKey<'a> {
    /// The stored bytes `offset..offset + len` of `object`: one block of a file.
    Block {
        /// The target's path in the mount (`cloud/local`): two targets may hold objects of one name.
        target: &'a str,
        object: &'a str,
        /// The object's version where its content can change under one name (the raw view);
        /// None where it never does (the packs and objects a snapshot points into).
        version: Option<&'a str>,
        offset: u64,
        len: u32,
    },
    /// All of `object` as it is at `version` (a manifest).
    Object {
        target: &'a str,
        object: &'a str,
        version: &'a str,
    },
}

/// Names the whole content of a file by the content hashes of its chunks, in order: two files
/// with the same chunks share one whole file, whichever snapshot or remote they are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WholeKey(pub(super) [u8; 32]);

impl WholeKey {
    /// The key of a file of `size` bytes made of `chunks` (BLAKE3 id, length), in order.
    pub fn of_chunks(size: u64, chunks: impl IntoIterator<Item = ([u8; 32], u32)>) -> WholeKey {
        // One buffer, hashed at once: a database has thousands of page-sized chunks, and
        // thousands of small updates cost ten times more.
        let mut input = Vec::with_capacity(64);
        input.extend_from_slice(b"snapfs whole file 1\0");
        input.extend_from_slice(&size.to_le_bytes());
        for (id, len) in chunks {
            input.extend_from_slice(&id);
            input.extend_from_slice(&len.to_le_bytes());
        }
        WholeKey(*blake3::hash(&input).as_bytes())
    }

    /// The key as a file name: 64 lowercase hex digits.
    pub(super) fn hex(&self) -> String {
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    pub(super) fn from_hex(name: &str) -> Option<WholeKey> {
        if name.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        // One spelling per key: upper-case names are not ours.
        (WholeKey(out).hex() == name).then_some(WholeKey(out))
    }
}

impl CacheKey<'_> {
    /// The key as stored: a kind word, then every field, strings with their length in front, so
    /// the form is unambiguous whatever bytes the names hold.
    pub(super) fn encode(&self) -> String {
        // Room for the longest words and numbers besides the strings, so encoding allocates once.
        const FIXED: usize = 80;
        let mut out = String::new();
        match *self {
            CacheKey::Block {
                target,
                object,
                version,
                offset,
                len,
            } => {
                out.reserve(FIXED + target.len() + object.len() + version.map_or(0, str::len));
                out.push_str("block");
                field(&mut out, target);
                field(&mut out, object);
                match version {
                    Some(v) => field(&mut out, v),
                    None => out.push_str(" -"),
                }
                // Writing to a String cannot fail.
                let _ = write!(out, " {offset}+{len}");
            }
            CacheKey::Object {
                target,
                object,
                version,
            } => {
                out.reserve(FIXED + target.len() + object.len() + version.len());
                out.push_str("object");
                field(&mut out, target);
                field(&mut out, object);
                field(&mut out, version);
            }
        }
        out
    }
}

/// Appends ` <length>:<s>`.
fn field(out: &mut String, s: &str) {
    let _ = write!(out, " {}:", s.len());
    out.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<'a>(target: &'a str, object: &'a str, version: Option<&'a str>) -> CacheKey<'a> {
        CacheKey::Block {
            target,
            object,
            version,
            offset: 12,
            len: 34,
        }
    }

    #[test]
    fn encodings_are_readable() {
        assert_eq!(
            block("cloud/a", "snapfs/packs/u/00000000.pack", None).encode(),
            "block 7:cloud/a 28:snapfs/packs/u/00000000.pack - 12+34"
        );
        assert_eq!(
            block("cloud/a", "x", Some("v1")).encode(),
            "block 7:cloud/a 1:x 2:v1 12+34"
        );
        let manifest = CacheKey::Object {
            target: "cloud/a",
            object: "m",
            version: "e",
        };
        assert_eq!(manifest.encode(), "object 7:cloud/a 1:m 1:e");
    }

    #[test]
    fn whole_keys_name_content_and_read_back_from_their_names() {
        let a = WholeKey::of_chunks(3, [([1; 32], 3)]);
        assert_ne!(a, WholeKey::of_chunks(3, [([2; 32], 3)]));
        assert_ne!(a, WholeKey::of_chunks(4, [([1; 32], 3)]));
        assert_eq!(WholeKey::from_hex(&a.hex()), Some(a));
        assert_eq!(WholeKey::from_hex(&a.hex().to_uppercase()), None);
        assert_eq!(WholeKey::from_hex(&format!("{}.seal", a.hex())), None);
        assert_eq!(WholeKey::from_hex("zz"), None);
    }

    #[test]
    fn names_holding_separators_do_not_collide() {
        let keys = [
            block("cloud/a", "b c", None),
            block("cloud/a b", "c", None),
            block("cloud/a", "b", Some("")),
            block("cloud/a", "b", None),
            block("cloud/a", "b - 12+34", None),
            block("cloud/a", "- 12+34", Some("b")),
            CacheKey::Object {
                target: "cloud/a",
                object: "b",
                version: "- 12+34",
            },
        ];
        let encoded: std::collections::HashSet<String> = keys.iter().map(|k| k.encode()).collect();
        assert_eq!(encoded.len(), keys.len(), "{encoded:?}");
    }
}
