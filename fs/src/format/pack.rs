//! Packs: objects made of independent zstd frames, one per chunk, so any chunk can be fetched
//! with one ranged GET and decompressed on its own. A chunk is named by the BLAKE3 hash of its
//! bytes, which is also what every read checks.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zstd::zstd_safe::CParameter;

use super::{BLOCK_SIZE, FormatError, PACK_TARGET};

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// The largest raw block a zstd frame may hold.
const RAW_BLOCK_MAX: usize = 128 << 10;

/// A chunk's name: the BLAKE3 hash of its bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ChunkId {
    type Err = String;

    fn from_str(s: &str) -> Result<ChunkId, String> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(format!(
                "chunk id of {} characters, expected 64",
                bytes.len()
            ));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(format!(
                "chunk id holds {:?}, not a lowercase hex digit",
                c as char
            )),
        };
        let mut id = [0u8; 32];
        for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
            *out = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(ChunkId(id))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChunkId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where one chunk is stored: one zstd frame inside one pack object, which holds this chunk
/// alone or, for small chunks, a run of them stored together (they compress far better as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub id: ChunkId,
    /// Index into [`Manifest::packs`](super::Manifest::packs).
    pub pack: u32,
    /// Byte offset of the frame inside the pack.
    pub offset: u64,
    /// Length of the frame in bytes.
    pub clen: u32,
    /// Length of the chunk.
    pub len: u32,
    /// Where the chunk starts in the frame's decompressed bytes; 0 for a frame of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at: u32,
    /// Decompressed length of the whole frame when it holds more than this chunk, else 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flen: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ChunkRef {
    /// Decompressed length of the frame holding the chunk.
    pub fn frame_len(&self) -> u32 {
        if self.flen == 0 { self.len } else { self.flen }
    }
}

/// Compresses one chunk into one zstd frame.
pub fn compress_chunk(raw: &[u8], level: i32) -> Vec<u8> {
    encode_frame(raw, level)
}

/// One standalone zstd frame holding `raw`, recording its size and a zstd checksum so that
/// `zstd -d` alone can check recovered data.
pub(super) fn encode_frame(raw: &[u8], level: i32) -> Vec<u8> {
    let compressed = zstd::bulk::Compressor::new(level).and_then(|mut compressor| {
        compressor.set_parameter(CParameter::ChecksumFlag(true))?;
        compressor.compress(raw)
    });
    compressed.unwrap_or_else(|err| {
        // zstd clamps levels, so this is an allocation failure; a stored frame is still valid.
        tracing::warn!(%err, "zstd compression failed, storing the chunk uncompressed");
        stored_frame(raw)
    })
}

/// A zstd frame of raw (uncompressed) blocks, written by hand so it needs no zstd context.
fn stored_frame(raw: &[u8]) -> Vec<u8> {
    let chunk_count = raw.len().div_ceil(RAW_BLOCK_MAX).max(1);
    let mut frame = Vec::with_capacity(14 + 3 * chunk_count + raw.len());
    frame.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame header descriptor: 8-byte content size, windowed (not single-segment), no checksum,
    // no dictionary. Then a 128 KiB window (exponent 7), which fits raw blocks of that size.
    frame.push(0b1100_0000);
    frame.push(7 << 3);
    frame.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    let mut pieces: Vec<&[u8]> = raw.chunks(RAW_BLOCK_MAX).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    for (i, piece) in pieces.iter().enumerate() {
        // Block header, 3 bytes little-endian: size << 3 | type (0 = raw) << 1 | last.
        let last = u32::from(i + 1 == pieces.len());
        let header = ((piece.len() as u32) << 3) | last;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(piece);
    }
    frame
}

/// Builds one pack object from frames, in order.
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a frame made by [`compress_chunk`] (so under 4 GiB) of the chunk `id` of `len`
    /// bytes; returns its [`ChunkRef`] with `pack` set to `pack_index`.
    pub fn push_frame(&mut self, pack_index: u32, frame: &[u8], id: ChunkId, len: u32) -> ChunkRef {
        debug_assert!(
            u32::try_from(frame.len()).is_ok(),
            "frame of {} bytes",
            frame.len()
        );
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(frame);
        ChunkRef {
            id,
            pack: pack_index,
            offset,
            // Saturating keeps an impossible oversized frame detectable: reading it fails its check.
            clen: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            len,
            at: 0,
            flen: 0,
        }
    }

    /// Appends a frame holding several chunks back to back (`members`: id and length, in
    /// order; `flen` bytes in all); returns their [`ChunkRef`]s.
    pub fn push_group(
        &mut self,
        pack_index: u32,
        frame: &[u8],
        flen: u32,
        members: &[(ChunkId, u32)],
    ) -> Vec<ChunkRef> {
        let first = self.push_frame(pack_index, frame, ChunkId([0; 32]), 0);
        let mut at = 0u32;
        members
            .iter()
            .map(|&(id, len)| {
                let c = ChunkRef {
                    id,
                    len,
                    at,
                    flen,
                    ..first
                };
                at += len;
                c
            })
            .collect()
    }

    /// Bytes in the pack so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no frame was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the pack has reached [`PACK_TARGET`] and should be closed.
    pub fn is_full(&self) -> bool {
        self.len() >= PACK_TARGET
    }

    /// The pack object's bytes.
    pub fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// The bytes of the chunk a [`ChunkRef`] names, from its frame (`frame` = exactly the `clen`
/// bytes at `offset`), checked: length and BLAKE3. Never allocates more than the frame's
/// recorded length, whatever the frame claims.
pub fn decode_chunk(frame: &[u8], expect: &ChunkRef) -> Result<Bytes, FormatError> {
    inflate(frame, expect.clen, expect.frame_len())
        .and_then(|decoded| member(&decoded, expect.at, expect.len, &expect.id))
        .map_err(|why| {
            FormatError::CorruptBlock(format!(
                "chunk {} at offset {}: {why}",
                expect.id, expect.offset
            ))
        })
}

/// Checks every chunk in `members` against one frame (`frame` = the `clen` bytes they all
/// name), decompressing it once: the frame's length and each chunk's BLAKE3.
pub fn check_frame(frame: &[u8], members: &[ChunkRef]) -> Result<(), FormatError> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let decoded = inflate(frame, first.clen, first.frame_len()).map_err(|why| {
        FormatError::CorruptBlock(format!("frame at offset {}: {why}", first.offset))
    })?;
    for c in members {
        member(&decoded, c.at, c.len, &c.id).map_err(|why| {
            FormatError::CorruptBlock(format!("chunk {} at offset {}: {why}", c.id, c.offset))
        })?;
    }
    Ok(())
}

/// Decompresses one frame of `clen` bytes into exactly `len` bytes; the error says what is
/// wrong, the caller says where. The output buffer's capacity bounds what zstd may write, so a
/// lying header fails here instead of allocating.
pub(super) fn inflate(frame: &[u8], clen: u32, len: u32) -> Result<Bytes, String> {
    if frame.len() as u64 != u64::from(clen) {
        return Err(format!("{} bytes, expected {clen}", frame.len()));
    }
    let len = len as usize;
    if len > BLOCK_SIZE {
        return Err(format!("claims {len} bytes, more than a frame may hold"));
    }
    let mut out = Vec::with_capacity(len);
    zstd::bulk::Decompressor::new()
        .and_then(|mut decompressor| decompressor.decompress_to_buffer(frame, &mut out))
        .map_err(|err| format!("does not decompress to {len} bytes: {err}"))?;
    if out.len() != len {
        return Err(format!(
            "decompressed to {} bytes, expected {len}",
            out.len()
        ));
    }
    Ok(Bytes::from(out))
}

/// The chunk of `len` bytes at `at` in a decompressed frame, if its BLAKE3 is `id`.
pub(super) fn member(decoded: &Bytes, at: u32, len: u32, id: &ChunkId) -> Result<Bytes, String> {
    let (at, len) = (at as usize, len as usize);
    let Some(bytes) = decoded.get(at..at + len) else {
        return Err(format!(
            "frame of {} bytes holds no chunk at {at}+{len}",
            decoded.len()
        ));
    };
    let got = ChunkId::of(bytes);
    if got != *id {
        return Err(format!("BLAKE3 {got}, expected {id}"));
    }
    Ok(decoded.slice(at..at + len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Deterministic bytes mixing runs (compressible) with noise (not).
    fn content(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (i / 512) % 2 == 0 {
                    (i / 512) as u8
                } else {
                    state as u8
                }
            })
            .collect()
    }

    fn chunk(raw: &[u8]) -> (Vec<u8>, ChunkRef) {
        let frame = compress_chunk(raw, 3);
        let r = PackBuilder::new().push_frame(0, &frame, ChunkId::of(raw), raw.len() as u32);
        (frame, r)
    }

    fn is_corrupt(result: Result<Bytes, FormatError>) -> bool {
        matches!(result, Err(FormatError::CorruptBlock(_)))
    }

    #[test]
    fn chunk_ids_are_blake3_in_hex() {
        let id = ChunkId::of(b"abc");
        assert_eq!(
            id.to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(id.to_string().parse::<ChunkId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        for bad in [
            "",
            "6437",
            &"G".repeat(64),
            &"A".repeat(64),
            &"0".repeat(65),
        ] {
            assert!(bad.parse::<ChunkId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_chunk_round_trips_and_reads_as_plain_zstd() {
        let raw = content(3, 100_000);
        let frame = compress_chunk(&raw, 3);
        assert!(frame.len() < raw.len());
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), raw);
        let mut pack = PackBuilder::new();
        assert!(pack.is_empty());
        let r = pack.push_frame(4, &frame, ChunkId::of(&raw), raw.len() as u32);
        assert_eq!((r.pack, r.offset, r.clen as usize), (4, 0, frame.len()));
        assert_eq!(decode_chunk(&frame, &r).unwrap(), raw);
    }

    #[test]
    fn a_flipped_byte_is_caught() {
        let (frame, r) = chunk(&content(5, 50_000));
        for at in [0, 5, frame.len() / 2, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x10;
            assert!(is_corrupt(decode_chunk(&bad, &r)), "flip at {at}");
        }
    }

    #[test]
    fn wrong_expectations_are_caught() {
        let (frame, r) = chunk(&content(6, 10_000));
        assert!(is_corrupt(decode_chunk(&frame[1..], &r)), "short frame");
        let other = ChunkId::of(b"other");
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef { id: other, ..r }
        )));
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef {
                len: r.len + 1,
                ..r
            }
        )));
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef {
                len: r.len - 1,
                ..r
            }
        )));
        let huge = ChunkRef {
            len: BLOCK_SIZE as u32 + 1,
            ..r
        };
        assert!(is_corrupt(decode_chunk(&frame, &huge)));
    }

    #[test]
    fn a_frame_claiming_a_huge_size_is_refused() {
        // Header says one TiB; the frame holds 10 raw bytes.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0b1100_0000, 7 << 3]);
        frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
        frame.extend_from_slice(&((10u32 << 3) | 1).to_le_bytes()[..3]);
        frame.extend_from_slice(b"0123456789");
        let r = ChunkRef {
            id: ChunkId::of(b"0123456789"),
            pack: 0,
            offset: 0,
            clen: frame.len() as u32,
            len: 10,
            at: 0,
            flen: 0,
        };
        assert!(is_corrupt(decode_chunk(&frame, &r)));

        // A real frame holding more than the manifest says.
        let frame = compress_chunk(&vec![0; 4 << 20], 3);
        let r = ChunkRef {
            id: ChunkId::of(&[0; 4096]),
            pack: 0,
            offset: 0,
            clen: frame.len() as u32,
            len: 4096,
            at: 0,
            flen: 0,
        };
        assert!(is_corrupt(decode_chunk(&frame, &r)));
    }

    #[test]
    fn stored_frames_are_valid_zstd() {
        for len in [
            0,
            1,
            RAW_BLOCK_MAX,
            RAW_BLOCK_MAX + 1,
            3 * RAW_BLOCK_MAX + 7,
        ] {
            let raw = content(len as u64, len);
            let frame = stored_frame(&raw);
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), raw, "len {len}");
            let r = ChunkRef {
                id: ChunkId::of(&raw),
                pack: 0,
                offset: 0,
                clen: frame.len() as u32,
                len: len as u32,
                at: 0,
                flen: 0,
            };
            assert_eq!(decode_chunk(&frame, &r).unwrap(), raw, "len {len}");
        }
    }

    #[test]
    fn a_pack_is_full_at_the_target() {
        let id = ChunkId::of(b"");
        let mut pack = PackBuilder::new();
        let first = pack.push_frame(0, &vec![1; PACK_TARGET - 1], id, 1);
        assert!(!pack.is_full());
        let second = pack.push_frame(0, &[2], id, 1);
        assert!(pack.is_full());
        assert_eq!((first.offset, second.offset), (0, PACK_TARGET as u64 - 1));
        assert_eq!(pack.finish().len(), PACK_TARGET);
    }

    #[test]
    fn chunks_grouped_in_one_frame_read_back_one_by_one() {
        let parts: Vec<Vec<u8>> = (0..5).map(|i| content(2 * i + 1, 4096)).collect();
        let all = parts.concat();
        let frame = compress_chunk(&all, 3);
        let members: Vec<(ChunkId, u32)> = parts.iter().map(|p| (ChunkId::of(p), 4096)).collect();
        let mut pack = PackBuilder::new();
        pack.push_frame(0, b"padding!", ChunkId::of(b""), 8);
        let refs = pack.push_group(0, &frame, all.len() as u32, &members);
        let bytes = pack.finish();
        for (r, part) in refs.iter().zip(&parts) {
            assert_eq!((r.offset, r.flen, r.frame_len()), (8, 5 * 4096, 5 * 4096));
            let stored = &bytes[r.offset as usize..][..r.clen as usize];
            assert_eq!(decode_chunk(stored, r).unwrap(), &part[..]);
        }
        assert_eq!(refs[3].at, 3 * 4096);
        // A member claimed past the frame's end, or with another id, is refused.
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef {
                at: 5 * 4096,
                ..refs[0]
            }
        )));
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef {
                id: refs[1].id,
                ..refs[0]
            }
        )));
        assert!(is_corrupt(decode_chunk(
            &frame,
            &ChunkRef {
                flen: 4096,
                ..refs[0]
            }
        )));
    }

    proptest! {
        #[test]
        fn chunks_pushed_into_a_pack_read_back_from_it(
            sizes in prop::collection::vec((any::<u64>(), 0usize..20_000), 1..8),
        ) {
            let mut pack = PackBuilder::new();
            let chunks: Vec<(Vec<u8>, ChunkRef)> = sizes
                .into_iter()
                .map(|(seed, len)| {
                    let raw = content(seed, len);
                    let frame = compress_chunk(&raw, 1);
                    let r = pack.push_frame(0, &frame, ChunkId::of(&raw), len as u32);
                    (raw, r)
                })
                .collect();
            let bytes = pack.finish();
            for (raw, r) in &chunks {
                let frame = &bytes[r.offset as usize..][..r.clen as usize];
                prop_assert_eq!(&decode_chunk(frame, r).unwrap()[..], &raw[..]);
            }
        }
    }
}
