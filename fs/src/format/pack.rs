//! Packs: objects made of independent zstd frames, one per block, so any block can be fetched with
//! one ranged GET and decompressed on its own.

use bytes::Bytes;
use zstd::zstd_safe::CParameter;

use super::manifest::BlockRef;
use super::{BLOCK_SIZE, FormatError, PACK_TARGET};

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// The largest raw block a zstd frame may hold.
const RAW_BLOCK_MAX: usize = 128 << 10;

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
    let corrupt = |why: String| {
        FormatError::CorruptBlock(format!(
            "frame at offset {} of pack {}: {why}",
            expect.offset, expect.pack
        ))
    };
    if frame.len() as u64 != u64::from(expect.clen) {
        return Err(corrupt(format!(
            "{} bytes, expected {}",
            frame.len(),
            expect.clen
        )));
    }
    let len = expect.len as usize;
    if len > BLOCK_SIZE {
        return Err(corrupt(format!("claims {len} bytes, more than a block")));
    }
    // The output buffer's capacity bounds what zstd may write, so a lying header fails here
    // instead of allocating.
    let mut out = Vec::with_capacity(len);
    zstd::bulk::Decompressor::new()
        .and_then(|mut decompressor| decompressor.decompress_to_buffer(frame, &mut out))
        .map_err(|err| corrupt(format!("does not decompress to {len} bytes: {err}")))?;
    if out.len() != len {
        return Err(corrupt(format!(
            "decompressed to {} bytes, expected {len}",
            out.len()
        )));
    }
    let crc = crc32c::crc32c(&out);
    if crc != expect.crc32c {
        return Err(corrupt(format!(
            "CRC32C {crc:08x}, expected {:08x}",
            expect.crc32c
        )));
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
