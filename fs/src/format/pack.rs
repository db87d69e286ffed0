//! Packs: objects made of independent zstd frames, one per block, so any block can be fetched with
//! one ranged GET and decompressed on its own.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zstd::zstd_safe::CParameter;

use super::{BLOCK_SIZE, FormatError, PACK_TARGET};

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// The largest raw block a zstd frame may hold.
const RAW_BLOCK_MAX: usize = 128 << 10;

/// Where one block of a file lives: one zstd frame inside one pack object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// Index into [`Manifest::packs`](super::Manifest::packs).
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

/// Compresses one block into one zstd frame; returns the frame and the CRC32C of `raw`.
pub fn compress_block(raw: &[u8], level: i32) -> (Vec<u8>, u32) {
    (encode_frame(raw, level), crc32c::crc32c(raw))
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
        tracing::warn!(%err, "zstd compression failed, storing the block uncompressed");
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
    let mut chunks: Vec<&[u8]> = raw.chunks(RAW_BLOCK_MAX).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        // Block header, 3 bytes little-endian: size << 3 | type (0 = raw) << 1 | last.
        let last = u32::from(i + 1 == chunks.len());
        let header = ((chunk.len() as u32) << 3) | last;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(chunk);
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

    /// Appends a frame made by [`compress_block`] (so under 4 GiB); returns its [`BlockRef`] with
    /// `pack` set to `pack_index`.
    pub fn push_frame(&mut self, pack_index: u32, frame: &[u8], len: u32, crc32c: u32) -> BlockRef {
        debug_assert!(
            u32::try_from(frame.len()).is_ok(),
            "frame of {} bytes",
            frame.len()
        );
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(frame);
        BlockRef {
            pack: pack_index,
            offset,
            // Saturating keeps an impossible oversized frame detectable: reading it fails its check.
            clen: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            len,
            crc32c,
        }
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

/// Decompresses the frame a [`BlockRef`] names (`frame` = exactly the `clen` bytes at `offset`),
/// checking length and CRC32C. Never allocates more than `expect.len` bytes of output, whatever
/// the frame claims.
pub fn decode_block(frame: &[u8], expect: &BlockRef) -> Result<Bytes, FormatError> {
    decode_frame(frame, expect.clen, expect.len, expect.crc32c).map_err(|why| {
        FormatError::CorruptBlock(format!(
            "frame at offset {} of pack {}: {why}",
            expect.offset, expect.pack
        ))
    })
}

/// Decompresses one frame of `clen` bytes into `len` bytes with CRC32C `crc32c`; the error says
/// what is wrong, the caller says where. The output buffer's capacity bounds what zstd may
/// write, so a lying header fails here instead of allocating.
pub(super) fn decode_frame(
    frame: &[u8],
    clen: u32,
    len: u32,
    crc32c: u32,
) -> Result<Bytes, String> {
    if frame.len() as u64 != u64::from(clen) {
        return Err(format!("{} bytes, expected {clen}", frame.len()));
    }
    let len = len as usize;
    if len > BLOCK_SIZE {
        return Err(format!("claims {len} bytes, more than a block"));
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
    let crc = crc32c::crc32c(&out);
    if crc != crc32c {
        return Err(format!("CRC32C {crc:08x}, expected {crc32c:08x}"));
    }
    Ok(Bytes::from(out))
}

/// Which blocks of a file cover `[offset, offset + len)`: yields (block index, offset of that
/// block's first byte within the file), in file order. Nothing past the file's end is yielded.
pub fn blocks_in_range(
    blocks: &[BlockRef],
    offset: u64,
    len: u64,
) -> impl Iterator<Item = (usize, u64)> + '_ {
    let end = offset.saturating_add(len);
    blocks
        .iter()
        .scan(0u64, |next, block| {
            let start = *next;
            *next = start.saturating_add(u64::from(block.len));
            Some((start, *next))
        })
        .enumerate()
        .skip_while(move |&(_, (_, block_end))| block_end <= offset)
        // `offset < end` keeps an empty range from yielding the block it falls in.
        .take_while(move |&(_, (start, _))| offset < end && start < end)
        .map(|(index, (start, _))| (index, start))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::format::{Entry, EntryKind, MANIFEST_FORMAT, Manifest, pack_key};

    /// Small sizes keep the property tests fast; the code does not depend on the real ones.
    const TEST_BLOCK: usize = 8 << 10;
    const TEST_PACK: usize = 20 << 10;

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

    fn frame_of(pack: &[u8], block: &BlockRef) -> Vec<u8> {
        pack[block.offset as usize..][..block.clen as usize].to_vec()
    }

    fn is_corrupt(result: Result<Bytes, FormatError>) -> bool {
        matches!(result, Err(FormatError::CorruptBlock(_)))
    }

    #[test]
    fn a_block_round_trips_and_reads_as_plain_zstd() {
        let raw = content(3, 100_000);
        let (frame, crc) = compress_block(&raw, 3);
        assert!(frame.len() < raw.len());
        assert_eq!(crc, crc32c::crc32c(&raw));
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), raw);
        let mut pack = PackBuilder::new();
        assert!(pack.is_empty());
        let block = pack.push_frame(4, &frame, raw.len() as u32, crc);
        assert_eq!(
            (block.pack, block.offset, block.clen as usize),
            (4, 0, frame.len())
        );
        assert_eq!(decode_block(&frame, &block).unwrap(), raw);
    }

    #[test]
    fn a_flipped_byte_is_caught() {
        let raw = content(5, 50_000);
        let (frame, crc) = compress_block(&raw, 3);
        let block = PackBuilder::new().push_frame(0, &frame, raw.len() as u32, crc);
        for at in [0, 5, frame.len() / 2, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x10;
            assert!(is_corrupt(decode_block(&bad, &block)), "flip at {at}");
        }
    }

    #[test]
    fn wrong_expectations_are_caught() {
        let raw = content(6, 10_000);
        let (frame, crc) = compress_block(&raw, 3);
        let block = PackBuilder::new().push_frame(0, &frame, raw.len() as u32, crc);
        assert!(is_corrupt(decode_block(&frame[1..], &block)), "short frame");
        assert!(is_corrupt(decode_block(
            &frame,
            &BlockRef {
                crc32c: crc ^ 1,
                ..block
            }
        )));
        assert!(is_corrupt(decode_block(
            &frame,
            &BlockRef {
                len: block.len + 1,
                ..block
            }
        )));
        assert!(is_corrupt(decode_block(
            &frame,
            &BlockRef {
                len: block.len - 1,
                ..block
            }
        )));
        let huge = BlockRef {
            len: BLOCK_SIZE as u32 + 1,
            ..block
        };
        assert!(is_corrupt(decode_block(&frame, &huge)));
    }

    #[test]
    fn a_frame_claiming_a_huge_size_is_refused() {
        // Header says one TiB; the frame holds 10 raw bytes.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0b1100_0000, 7 << 3]);
        frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
        frame.extend_from_slice(&((10u32 << 3) | 1).to_le_bytes()[..3]);
        frame.extend_from_slice(b"0123456789");
        let block = BlockRef {
            pack: 0,
            offset: 0,
            clen: frame.len() as u32,
            len: 10,
            crc32c: crc32c::crc32c(b"0123456789"),
        };
        assert!(is_corrupt(decode_block(&frame, &block)));

        // A real frame holding more than the manifest says.
        let (frame, _) = compress_block(&vec![0; 4 << 20], 3);
        let block = BlockRef {
            pack: 0,
            offset: 0,
            clen: frame.len() as u32,
            len: 4096,
            crc32c: 0,
        };
        assert!(is_corrupt(decode_block(&frame, &block)));
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
            let block = BlockRef {
                pack: 0,
                offset: 0,
                clen: frame.len() as u32,
                len: len as u32,
                crc32c: crc32c::crc32c(&raw),
            };
            assert_eq!(decode_block(&frame, &block).unwrap(), raw, "len {len}");
        }
    }

    #[test]
    fn a_pack_is_full_at_the_target() {
        let mut pack = PackBuilder::new();
        let first = pack.push_frame(0, &vec![1; PACK_TARGET - 1], 1, 0);
        assert!(!pack.is_full());
        let second = pack.push_frame(0, &[2], 1, 0);
        assert!(pack.is_full());
        assert_eq!((first.offset, second.offset), (0, PACK_TARGET as u64 - 1));
        assert_eq!(pack.finish().len(), PACK_TARGET);
    }

    #[test]
    fn blocks_in_range_examples() {
        let blocks: Vec<BlockRef> = [4, 4, 2]
            .map(|len| BlockRef {
                pack: 0,
                offset: 0,
                clen: 1,
                len,
                crc32c: 0,
            })
            .to_vec();
        let got = |offset, len| blocks_in_range(&blocks, offset, len).collect::<Vec<_>>();
        assert_eq!(got(0, 10), [(0, 0), (1, 4), (2, 8)]);
        assert_eq!(got(4, 4), [(1, 4)]);
        assert_eq!(got(3, 2), [(0, 0), (1, 4)]);
        assert_eq!(got(9, 100), [(2, 8)]);
        assert_eq!(got(10, 5), []);
        assert_eq!(got(5, 0), []);
        assert_eq!(got(u64::MAX, u64::MAX), []);
    }

    /// Packs `files` the way an upload does: blocks in file order, frames appended to the current
    /// pack, a new pack once it is full, small files sharing packs.
    fn pack_files(files: &[Vec<u8>]) -> (Vec<Bytes>, Vec<Vec<BlockRef>>) {
        let (mut packs, mut refs, mut builder) = (Vec::new(), Vec::new(), PackBuilder::new());
        for data in files {
            let mut blocks = Vec::new();
            for chunk in data.chunks(TEST_BLOCK) {
                let (frame, crc) = compress_block(chunk, 1);
                blocks.push(builder.push_frame(
                    packs.len() as u32,
                    &frame,
                    chunk.len() as u32,
                    crc,
                ));
                if builder.len() >= TEST_PACK {
                    packs.push(std::mem::take(&mut builder).finish());
                }
            }
            refs.push(blocks);
        }
        if !builder.is_empty() {
            packs.push(builder.finish());
        }
        (packs, refs)
    }

    /// Reads `[offset, offset + len)` of a file the way the file system does.
    fn read_range(packs: &[Bytes], blocks: &[BlockRef], offset: u64, len: u64) -> Vec<u8> {
        let end = offset + len;
        let mut out = Vec::new();
        for (index, start) in blocks_in_range(blocks, offset, len) {
            let block = &blocks[index];
            let data = decode_block(&frame_of(&packs[block.pack as usize], block), block).unwrap();
            let from = offset.saturating_sub(start) as usize;
            let to = (end.min(start + u64::from(block.len)) - start) as usize;
            out.extend_from_slice(&data[from..to]);
        }
        out
    }

    proptest! {
        #[test]
        fn any_range_reads_back_exactly(
            files in prop::collection::vec((any::<u64>(), 0..3 * TEST_BLOCK + 700), 1..6),
            ranges in prop::collection::vec((any::<usize>(), any::<u64>(), 0..3 * TEST_BLOCK as u64), 1..10),
        ) {
            let files: Vec<Vec<u8>> = files.into_iter().map(|(seed, len)| content(seed, len)).collect();
            let (packs, refs) = pack_files(&files);

            let mut entries = vec![Entry { path: String::new(), mode: 0o755, mtime: 0, mtime_nsec: 0, kind: EntryKind::Dir }];
            for (i, (data, blocks)) in files.iter().zip(&refs).enumerate() {
                let kind = EntryKind::File { size: data.len() as u64, crc32c: crc32c::crc32c(data), blocks: blocks.clone() };
                entries.push(Entry { path: format!("f{i}"), mode: 0o644, mtime: 0, mtime_nsec: 0, kind });
            }
            let manifest = Manifest {
                format: MANIFEST_FORMAT.to_owned(),
                name: "prop".to_owned(),
                created: chrono::DateTime::UNIX_EPOCH,
                expires: None,
                packs: (0..packs.len() as u32).map(|seq| pack_key("up", seq)).collect(),
                entries,
            };
            prop_assert!(manifest.validate().is_ok(), "{:?}", manifest.validate());

            for (pick, offset, len) in ranges {
                let file = pick % files.len();
                let data = &files[file];
                let offset = offset % (data.len() as u64 + 10);
                let got = read_range(&packs, &refs[file], offset, len);
                let from = (offset as usize).min(data.len());
                let to = ((offset + len) as usize).min(data.len());
                prop_assert_eq!(&got[..], &data[from..to], "file {} range {}+{}", file, offset, len);
            }
            for (data, blocks) in files.iter().zip(&refs) {
                prop_assert_eq!(&read_range(&packs, blocks, 0, data.len() as u64), data);
            }
        }

        #[test]
        fn blocks_in_range_covers_exactly_the_range(
            lens in prop::collection::vec(1u32..100, 0..20),
            offset in 0u64..2200,
            len in 0u64..2200,
        ) {
            let blocks: Vec<BlockRef> = lens.iter().map(|&len| BlockRef { pack: 0, offset: 0, clen: 1, len, crc32c: 0 }).collect();
            let starts: Vec<u64> = lens.iter().scan(0, |at, &l| { let s = *at; *at += u64::from(l); Some(s) }).collect();
            let size: u64 = lens.iter().map(|&l| u64::from(l)).sum();
            let end = (offset + len).min(size);
            let got: Vec<(usize, u64)> = blocks_in_range(&blocks, offset, len).collect();
            if offset >= end {
                prop_assert!(got.is_empty(), "{:?}", got);
            } else {
                prop_assert!(!got.is_empty());
                for (k, &(index, start)) in got.iter().enumerate() {
                    prop_assert!(index < blocks.len());
                    prop_assert_eq!(start, starts[index]);
                    prop_assert_eq!(index, got[0].0 + k, "consecutive");
                    // Every yielded block overlaps the range.
                    prop_assert!(start < end && start + u64::from(lens[index]) > offset);
                }
                let (first, first_start) = got[0];
                let (last, last_start) = got[got.len() - 1];
                prop_assert!(first_start <= offset && offset < first_start + u64::from(lens[first]));
                prop_assert!(last_start + u64::from(lens[last]) >= end);
            }
        }
    }
}
