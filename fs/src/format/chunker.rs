//! Where files are cut into chunks. The same bytes must always be cut the same way, on any
//! machine and in any release, or chunks stop being shared: the gear table and the sizes below
//! are part of the format's behaviour (not of its layout: readers never cut anything).
//!
//! Ordinary files are cut where their content says (content-defined chunking with a gear
//! hash, normalised towards the average as FastCDC does), so an insertion moves only the
//! chunks around it. SQLite databases are cut at page boundaries, one page per chunk: a
//! database changes in place page by page, and any coarser cut turns a few changed rows per
//! page into a changed chunk almost everywhere.

/// No content-defined chunk is shorter, except a file's last.
pub const MIN_CHUNK: usize = 512 << 10;
/// The size content-defined cuts aim for.
pub const AVG_CHUNK: usize = 1 << 20;
/// No chunk is longer (a frame's decoded size is capped at this by readers).
pub const MAX_CHUNK: usize = crate::tree::BLOCK_SIZE;
/// A database is cut into at most this many chunks; a larger one gets several pages per chunk,
/// so its manifest stays a few tens of megabytes at most.
const MAX_PAGE_CHUNKS: u64 = 1 << 20;

/// Bits of the hash that must be zero for a cut before the average size (harder) and after it
/// (easier): this keeps chunk sizes close to the average.
const BITS_BEFORE_AVG: u32 = AVG_CHUNK.trailing_zeros() + 2;
const BITS_AFTER_AVG: u32 = AVG_CHUNK.trailing_zeros() - 2;

/// How a file is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutting {
    /// Where the content says ([`cut`]).
    Content,
    /// Fixed chunks of this many bytes (whole database pages).
    Fixed(usize),
}

impl Cutting {
    /// How a file of `size` bytes that starts with `head` is cut.
    pub fn of(head: &[u8], size: u64) -> Cutting {
        match sqlite_page_size(head) {
            Some(page) if size >= page as u64 => {
                let pages_per_chunk = (size / page as u64).div_ceil(MAX_PAGE_CHUNKS).max(1);
                let chunk = (page as u64 * pages_per_chunk).min(MAX_CHUNK as u64);
                Cutting::Fixed(chunk as usize)
            }
            _ => Cutting::Content,
        }
    }

    /// The length of the first chunk of `data`, which holds at least [`MAX_CHUNK`] bytes unless
    /// it is the rest of the file.
    pub fn first(self, data: &[u8]) -> usize {
        match self {
            Cutting::Content => cut(data),
            Cutting::Fixed(n) => n.min(data.len()),
        }
    }
}

/// The page size a SQLite database declares in its header, if `head` starts one: the magic
/// string, then a big-endian u16 at offset 16 that is a power of two from 512 to 32768, or 1
/// for 65536.
pub fn sqlite_page_size(head: &[u8]) -> Option<usize> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    if head.len() < 18 || &head[..16] != MAGIC {
        return None;
    }
    match u16::from_be_bytes([head[16], head[17]]) {
        1 => Some(65536),
        n if n >= 512 && n.is_power_of_two() => Some(usize::from(n)),
        _ => None,
    }
}

/// The length of the first content-defined chunk of `data`: the first place past
/// [`MIN_CHUNK`] where the rolling hash of the last 64 bytes has its top bits clear, or
/// [`MAX_CHUNK`], or all of `data` if it is shorter.
pub fn cut(data: &[u8]) -> usize {
    if data.len() <= MIN_CHUNK {
        return data.len();
    }
    let end = data.len().min(MAX_CHUNK);
    let avg = AVG_CHUNK.min(end);
    let mut hash: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(avg).skip(MIN_CHUNK) {
        hash = (hash << 1).wrapping_add(GEAR[usize::from(b)]);
        if hash >> (64 - BITS_BEFORE_AVG) == 0 {
            return i + 1;
        }
    }
    for (i, &b) in data.iter().enumerate().take(end).skip(avg) {
        hash = (hash << 1).wrapping_add(GEAR[usize::from(b)]);
        if hash >> (64 - BITS_AFTER_AVG) == 0 {
            return i + 1;
        }
    }
    end
}

/// 256 fixed pseudo-random words (splitmix64 from a fixed seed), one per byte value.
static GEAR: [u64; 256] = gear();

const fn gear() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x736e_6170_6673_2d31; // "snapfs-1"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = cut(rest);
            out.push(n);
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn chunks_stay_within_bounds_and_near_the_average() {
        let data = noise(64 << 20, 7);
        let sizes = chunks(&data);
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        for &s in &sizes[..sizes.len() - 1] {
            assert!((MIN_CHUNK..=MAX_CHUNK).contains(&s), "{s}");
        }
        let avg = data.len() / sizes.len();
        assert!(
            (AVG_CHUNK * 3 / 4..AVG_CHUNK * 2).contains(&avg),
            "average {avg}"
        );
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let data = noise(32 << 20, 3);
        let mut edited = data[..10 << 20].to_vec();
        edited.extend_from_slice(b"a few new bytes");
        edited.extend_from_slice(&data[10 << 20..]);
        let ends = |d: &[u8]| -> Vec<usize> {
            chunks(d)
                .iter()
                .scan(0, |at, n| {
                    *at += n;
                    Some(*at)
                })
                .collect()
        };
        let before = ends(&data);
        // Ends past the insertion move by its length.
        let after: Vec<usize> = ends(&edited)
            .iter()
            .map(|&e| if e > 10 << 20 { e - 15 } else { e })
            .collect();
        let shared = after.iter().filter(|e| before.contains(e)).count();
        assert!(shared + 3 >= before.len(), "{shared} of {}", before.len());
    }

    #[test]
    fn zeros_cut_at_the_maximum_and_short_data_is_one_chunk() {
        assert_eq!(cut(&vec![0u8; 9 << 20]), MAX_CHUNK);
        assert_eq!(cut(&[1, 2, 3]), 3);
        assert_eq!(cut(&[]), 0);
    }

    #[test]
    fn sqlite_databases_are_cut_at_pages() {
        let mut head = b"SQLite format 3\0".to_vec();
        head.extend_from_slice(&4096u16.to_be_bytes());
        assert_eq!(sqlite_page_size(&head), Some(4096));
        assert_eq!(Cutting::of(&head, 40960), Cutting::Fixed(4096));
        assert_eq!(Cutting::Fixed(4096).first(&[0; 10000]), 4096);
        assert_eq!(Cutting::Fixed(4096).first(&[0; 100]), 100);
        // Huge databases get several pages per chunk.
        assert_eq!(
            Cutting::of(&head, 4096 * (MAX_PAGE_CHUNKS * 2 + 1)),
            Cutting::Fixed(3 * 4096)
        );
        let mut big_pages = head.clone();
        big_pages[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(sqlite_page_size(&big_pages), Some(65536));
        for bad in [100u16, 0, 3000] {
            let mut h = head.clone();
            h[16..18].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(sqlite_page_size(&h), None, "{bad}");
        }
        assert_eq!(Cutting::of(b"not a database at all", 100), Cutting::Content);
        assert_eq!(
            Cutting::of(&head, 100),
            Cutting::Content,
            "shorter than a page"
        );
    }
}
