//! LZO1X compression in the lzop file format, for upload streams into pods that have `lzop`
//! (busybox does). Busybox opens it about five times faster than gzip (measured on a source
//! tree: 590 MB/s of output against 130 MB/s), and in a pod that unpacks on one core the
//! decompression, not the link, was what held an upload back.
//!
//! At effort 0 the compressor is a greedy one in the manner of LZO1X-1: a hash of the next
//! four bytes finds the last place they were seen, and a match is taken as long as it runs.
//! Above that it keeps chains of every place with the same hash, takes the match that saves
//! the most bytes among the last few places of the chain, and puts a match off by one byte
//! where the next place has a better one. On a source tree and a database, efforts 0 to 3 gave
//! 0.49, 0.45, 0.44 and 0.44 of the size, at about 320, 120, 110 and 90 MB/s on one core
//! (`lzop -7`, which searches all it can, gives 0.41 at 23 MB/s). Either way it skips ahead
//! faster the longer no match is found, so that data that does not compress costs little.
//! Blocks of `BLOCK` bytes are compressed on their own, each with the Adler-32 of its bytes,
//! which the pod's `lzop -d` checks; a block that would grow is stored as it is.

/// The lzop file magic.
const MAGIC: [u8; 9] = [0x89, b'L', b'Z', b'O', 0, 0x0d, 0x0a, 0x1a, 0x0a];
/// Uncompressed bytes in one block (lzop's own block size).
const BLOCK: usize = 256 << 10;
/// Header flags: the Adler-32 of each block's uncompressed bytes follows its lengths; Unix.
const FLAGS: u32 = 0x0000_0001 | 0x0300_0000;

/// Shortest match looked for.
const MIN_MATCH: usize = 4;
/// Bits of the hash of four bytes at effort 0.
const HASH_BITS: u32 = 14;
/// Bits of the hash of four bytes above effort 0, where chains hold every place.
const CHAIN_HASH_BITS: u32 = 16;
/// How many places of a chain are looked at, at each effort above 0.
const CHAIN_DEPTHS: [usize; 3] = [2, 4, 8];
/// The efforts [`compress`] takes: 0 to `EFFORTS - 1`.
pub const EFFORTS: usize = 1 + CHAIN_DEPTHS.len();
/// A match at least this long is taken without looking further down the chain.
const NICE_LEN: usize = 128;
/// Farthest back each kind of match reaches.
const M2_MAX_OFFSET: usize = 0x0800;
const M3_MAX_OFFSET: usize = 0x4000;
const M4_MAX_OFFSET: usize = 0xbfff;
/// Longest match of each kind that fits its opcode without extra length bytes.
const M2_MAX_LEN: usize = 8;
const M3_MAX_LEN: usize = 33;
const M4_MAX_LEN: usize = 9;

/// `data` as one lzop file, compressed with `effort` (0 to `EFFORTS - 1`; more is the most).
pub fn compress(data: &[u8], effort: usize) -> Vec<u8> {
    if effort == 0 {
        let mut table = vec![0u32; 1 << HASH_BITS];
        return file(data, data.len() / 2, |block, packed| {
            table.fill(0);
            lzo1x(block, &mut table, packed);
            packed.len() < block.len()
        });
    }
    let depth = CHAIN_DEPTHS[(effort - 1).min(CHAIN_DEPTHS.len() - 1)];
    let mut chains = Chains {
        head: vec![0; 1 << CHAIN_HASH_BITS],
        prev: vec![0; BLOCK],
    };
    file(data, data.len() / 2, |block, packed| {
        chains.head.fill(0);
        lzo1x_chained(block, &mut chains, depth, packed);
        packed.len() < block.len()
    })
}

/// `data` as one lzop file of blocks stored as they are: no compression, but each block's
/// Adler-32 still checked where it is opened.
pub fn store(data: &[u8]) -> Vec<u8> {
    file(data, data.len(), |_, _| false)
}

/// The file of `data`, about `capacity` bytes of blocks: each block as `pack` put it in the
/// buffer it is given where it answers true, else stored.
fn file(
    data: &[u8],
    capacity: usize,
    mut pack: impl FnMut(&[u8], &mut Vec<u8>) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 12 * data.len().div_ceil(BLOCK) + 64);
    header(&mut out);
    let mut packed = Vec::new();
    for block in data.chunks(BLOCK) {
        packed.clear();
        let body = if pack(block, &mut packed) {
            &packed[..]
        } else {
            block
        };
        out.extend_from_slice(&be32(block.len()));
        out.extend_from_slice(&be32(body.len()));
        out.extend_from_slice(&adler32(block).to_be_bytes());
        out.extend_from_slice(body);
    }
    // A block of no bytes ends the file.
    out.extend_from_slice(&[0; 4]);
    out
}

fn be32(n: usize) -> [u8; 4] {
    (n as u32).to_be_bytes()
}

/// The file header: no name, no time, no mode; its Adler-32 covers all after the magic.
fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    let start = out.len();
    out.extend_from_slice(&0x1010u16.to_be_bytes()); // format version
    out.extend_from_slice(&0x2030u16.to_be_bytes()); // LZO library version
    out.extend_from_slice(&0x0940u16.to_be_bytes()); // version needed to extract
    out.push(1); // method: LZO1X-1
    out.push(3); // level
    out.extend_from_slice(&FLAGS.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // mode
    out.extend_from_slice(&[0; 8]); // mtime, low and high
    out.push(0); // name length
    let sum = adler32(&out[start..]);
    out.extend_from_slice(&sum.to_be_bytes());
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // The most bytes summed before `b` could overflow 32 bits.
    const RUN: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for run in data.chunks(RUN) {
        for &x in run {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

fn read4(s: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]])
}

fn read8(s: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(b)
}

/// The top `bits` bits of a multiplicative hash of four bytes.
fn hash(v: u32, bits: u32) -> usize {
    (v.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
}

/// How many bytes from `back` on equal those from `at` on (`back` < `at`), up to the end.
fn common(s: &[u8], back: usize, at: usize) -> usize {
    let mut k = 0;
    while at + k + 8 <= s.len() {
        let x = read8(s, back + k) ^ read8(s, at + k);
        if x != 0 {
            return k + (x.trailing_zeros() / 8) as usize;
        }
        k += 8;
    }
    while at + k < s.len() && s[back + k] == s[at + k] {
        k += 1;
    }
    k
}

/// One block as an LZO1X stream, ended by its end-of-stream instruction.
fn lzo1x(src: &[u8], table: &mut [u32], out: &mut Vec<u8>) {
    let mut pending = 0; // where the literals not yet written begin
    let mut i = 0;
    // Misses since the last match, scaled: every 32 of them the step grows by one.
    let mut misses = 32;
    while i + MIN_MATCH <= src.len() {
        let v = read4(src, i);
        let h = hash(v, HASH_BITS);
        // Positions are kept plus one, so that 0 is an empty slot.
        let seen = table[h] as usize;
        table[h] = (i + 1) as u32;
        if let Some(back) = seen.checked_sub(1)
            && i - back <= M4_MAX_OFFSET
            && read4(src, back) == v
        {
            let len = MIN_MATCH + common(src, back + MIN_MATCH, i + MIN_MATCH);
            literals(out, &src[pending..i]);
            copy(out, i - back, len);
            i += len;
            pending = i;
            misses = 32;
            continue;
        }
        i += misses >> 5;
        misses += 1;
    }
    literals(out, &src[pending..]);
    out.extend_from_slice(&END);
}

/// End of stream: a far copy of three bytes from exactly 16 KiB back.
const END: [u8; 3] = [0x11, 0, 0];

/// Every place of a block by the hash of its four bytes: `head` holds the last place (plus
/// one, so that 0 is none) of each hash, `prev` the place (plus one) before each place that
/// has the same hash. A place's `prev` is written when it goes in, before it is ever read, so
/// only `head` needs clearing between blocks.
struct Chains {
    head: Vec<u32>,
    prev: Vec<u32>,
}

/// A match: `len` bytes from `dist` back, which save `saves` bytes over literals.
#[derive(Clone, Copy)]
struct Match {
    dist: usize,
    len: usize,
    saves: usize,
}

impl Chains {
    fn insert(&mut self, src: &[u8], i: usize) {
        let h = hash(read4(src, i), CHAIN_HASH_BITS);
        self.prev[i] = self.head[h];
        self.head[h] = (i + 1) as u32;
    }

    /// The match at `i` (which is not in the chains yet) that saves the most, among the last
    /// `depth` places of its chain within reach.
    fn best(&self, src: &[u8], i: usize, depth: usize) -> Option<Match> {
        let v = read4(src, i);
        let mut best: Option<Match> = None;
        let mut place = self.head[hash(v, CHAIN_HASH_BITS)] as usize;
        for _ in 0..depth {
            let Some(back) = place.checked_sub(1) else {
                break;
            };
            if i - back > M4_MAX_OFFSET {
                break;
            }
            if read4(src, back) == v {
                let len = MIN_MATCH + common(src, back + MIN_MATCH, i + MIN_MATCH);
                let dist = i - back;
                let saves = len.saturating_sub(copy_len(dist, len));
                if saves > best.map_or(0, |b| b.saves) {
                    best = Some(Match { dist, len, saves });
                }
                if len >= NICE_LEN {
                    break;
                }
            }
            place = self.prev[back] as usize;
        }
        best
    }
}

/// One block as an LZO1X stream, as [`lzo1x`] makes it but with the match that saves the most
/// among the last `depth` places of the chain, put off by a byte where the next place has one
/// that saves more than the byte costs. Every place goes into the chains, inside matches too.
fn lzo1x_chained(src: &[u8], chains: &mut Chains, depth: usize, out: &mut Vec<u8>) {
    let mut pending = 0;
    let mut i = 0;
    let mut misses = 32;
    while i + MIN_MATCH <= src.len() {
        let found = chains.best(src, i, depth);
        chains.insert(src, i);
        let Some(m) = found else {
            i += misses >> 5;
            misses += 1;
            continue;
        };
        let later = i + 1 + MIN_MATCH <= src.len()
            && chains
                .best(src, i + 1, depth)
                .is_some_and(|next| next.saves > m.saves + 1);
        if later {
            i += 1;
            continue;
        }
        literals(out, &src[pending..i]);
        copy(out, m.dist, m.len);
        for j in i + 1..(i + m.len).min(src.len() + 1 - MIN_MATCH) {
            chains.insert(src, j);
        }
        i += m.len;
        pending = i;
        misses = 32;
    }
    literals(out, &src[pending..]);
    out.extend_from_slice(&END);
}

/// A run of literals. One to three after a copy ride in the copy's last-but-one byte; at the
/// start of a stream the first byte says how many there are.
fn literals(out: &mut Vec<u8>, lit: &[u8]) {
    let t = lit.len();
    if t == 0 {
        return;
    }
    if out.is_empty() && t <= 238 {
        out.push((t + 17) as u8);
    } else if t <= 3 {
        // Something came before, and it was a copy: two literal runs are never next to
        // each other, and every copy is at least two bytes long.
        let at = out.len() - 2;
        out[at] |= t as u8;
    } else if t <= 18 {
        out.push((t - 3) as u8);
    } else {
        out.push(0);
        extra_length(out, t - 18);
    }
    out.extend_from_slice(lit);
}

/// A length beyond what an opcode holds: a zero byte per 255, then the rest (never zero).
fn extra_length(out: &mut Vec<u8>, mut n: usize) {
    while n > 255 {
        n -= 255;
        out.push(0);
    }
    out.push(n as u8);
}

/// How many bytes [`copy`] writes for a copy of `len` bytes from `dist` back.
fn copy_len(dist: usize, len: usize) -> usize {
    let extra = |max: usize| {
        if len <= max {
            0
        } else {
            1 + (len - max - 1) / 255
        }
    };
    if len <= M2_MAX_LEN && dist <= M2_MAX_OFFSET {
        2
    } else if dist <= M3_MAX_OFFSET {
        3 + extra(M3_MAX_LEN)
    } else {
        3 + extra(M4_MAX_LEN)
    }
}

/// A copy of `len` (at least 4) bytes from `dist` back.
fn copy(out: &mut Vec<u8>, dist: usize, len: usize) {
    if len <= M2_MAX_LEN && dist <= M2_MAX_OFFSET {
        let d = dist - 1;
        out.push((((len - 1) << 5) | ((d & 7) << 2)) as u8);
        out.push((d >> 3) as u8);
        return;
    }
    let d = if dist <= M3_MAX_OFFSET {
        if len <= M3_MAX_LEN {
            out.push(32 | (len - 2) as u8);
        } else {
            out.push(32);
            extra_length(out, len - M3_MAX_LEN);
        }
        dist - 1
    } else {
        let d = dist - 0x4000;
        let high = ((d >> 11) & 8) as u8;
        if len <= M4_MAX_LEN {
            out.push(16 | high | (len - 2) as u8);
        } else {
            out.push(16 | high);
            extra_length(out, len - M4_MAX_LEN);
        }
        d
    };
    out.push((d << 2) as u8);
    out.push((d >> 6) as u8);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// What busybox's `lzop -d` makes of `packed`.
    pub(crate) fn busybox_unpacks(packed: &[u8]) -> Vec<u8> {
        unpacks(&["busybox", "lzop", "-d", "-c"], packed)
    }

    /// What `command` (an lzop decompressor writing to stdout) makes of `packed`.
    fn unpacks(command: &[&str], packed: &[u8]) -> Vec<u8> {
        let mut child = Command::new(command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{command:?} runs (the tests need busybox-static and lzop): {e}")
            });
        let mut stdin = child.stdin.take().expect("stdin");
        let packed = packed.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&packed));
        let out = child.wait_with_output().expect("the decompressor ends");
        writer.join().expect("writer").expect("written");
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A small deterministic generator of test data (xorshift64).
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        fn step(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `n`.
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.step() % n
        }

        /// `n` bytes that do not compress.
        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.step() as u8).collect()
        }
    }

    /// A few MiB of every shape the compressor meets: text, runs, far and near repeats, long
    /// matches, data that does not compress, and the short ends of each.
    fn samples() -> Vec<Vec<u8>> {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut random = |n: usize| rng.bytes(n);
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("line {i}: the quick brown fox {}\n", i % 97).into_bytes())
            .collect();
        let noise = random(700_000);
        let mut far = random(20_000);
        far.extend_from_slice(&random(30_000));
        far.extend_from_within(..20_000); // 50 kB back: too far, literals
        far.extend_from_within(25_000..45_000); // 16 to 48 kB back
        far.extend_from_within(60_000..70_000); // within 16 kB
        let mut near = Vec::new();
        for k in 0..5_000u32 {
            near.extend_from_slice(&random((k % 7) as usize)); // 0 to 6 literals between
            near.extend_from_slice(b"abcdefgh"[..4 + (k % 5) as usize].as_ref());
        }
        let mut out = vec![
            Vec::new(),
            b"a".to_vec(),
            b"abc".to_vec(),
            b"abcd".to_vec(),
            b"abcdabcd".to_vec(),
            vec![0; 1],
            vec![0; 5],
            vec![0; 300],
            vec![7; 3 * BLOCK + 17], // runs longer than any extra length
            random(238),
            random(239),
            random(BLOCK),
            text,
            noise,
            far,
            near,
        ];
        for n in [
            1, 2, 3, 4, 5, 17, 18, 19, 20, 33, 34, 35, 288, 289, 290, 600,
        ] {
            let mut v = random(50);
            v.extend_from_slice(&vec![b'x'; n]);
            v.extend_from_slice(&random(n % 5));
            out.push(v);
        }
        out
    }

    #[test]
    fn busybox_lzop_gives_back_every_sample() {
        for (k, sample) in samples().iter().enumerate() {
            for effort in 0..EFFORTS {
                let packed = compress(sample, effort);
                assert_eq!(
                    busybox_unpacks(&packed),
                    *sample,
                    "sample {k}, effort {effort}"
                );
            }
            let stored = store(sample);
            assert_eq!(busybox_unpacks(&stored), *sample, "sample {k} stored");
        }
    }

    #[test]
    fn the_real_lzop_gives_back_every_sample_too() {
        for (k, sample) in samples().iter().enumerate() {
            let lzop = ["lzop", "-d", "-c"];
            for effort in 0..EFFORTS {
                let packed = compress(sample, effort);
                assert_eq!(
                    unpacks(&lzop, &packed),
                    *sample,
                    "sample {k}, effort {effort}"
                );
            }
            assert_eq!(unpacks(&lzop, &store(sample)), *sample, "sample {k} stored");
        }
    }

    #[test]
    fn busybox_lzop_gives_back_random_mixes_of_literals_and_repeats() {
        // Data made the way the compressor sees it: runs of new bytes and repeats of earlier
        // ones at every distance the format reaches and past it, of every length.
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut next = |n: u64| rng.below(n);
        for case in 0..200 {
            let size = 1 + next(if case % 10 == 0 { 600_000 } else { 20_000 }) as usize;
            let mut data = Vec::with_capacity(size);
            while data.len() < size {
                if data.is_empty() || next(3) == 0 {
                    let alphabet = if next(2) == 0 { 4 } else { 256 };
                    for _ in 0..1 + next(300) {
                        data.push(next(alphabet) as u8);
                    }
                } else {
                    let far = [8, 2_100, 16_500, 49_200, 70_000][next(5) as usize];
                    let back = 1 + next(far.min(data.len() as u64)) as usize;
                    let start = data.len() - back;
                    // Longer than the distance is a run that repeats itself.
                    for k in 0..1 + next(700) as usize {
                        data.push(data[start + k]);
                    }
                }
            }
            data.truncate(size);
            let effort = case % EFFORTS;
            let packed = compress(&data, effort);
            assert_eq!(
                busybox_unpacks(&packed),
                data,
                "case {case}, effort {effort}"
            );
        }
    }

    #[test]
    fn busybox_lzop_refuses_a_damaged_block() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{i} words\n").into_bytes())
            .collect();
        for mut packed in [
            compress(&text, 0),
            compress(&text, EFFORTS - 1),
            store(&text),
        ] {
            // A byte of the first block's data, past the header and the block's 12 bytes.
            let at = packed.len() / 2;
            packed[at] ^= 0x20;
            let out = Command::new("busybox")
                .args(["sh", "-c", "lzop -d -c >/dev/null"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .and_then(|mut child| {
                    let mut stdin = child.stdin.take().expect("stdin");
                    stdin.write_all(&packed)?;
                    drop(stdin);
                    child.wait()
                })
                .expect("busybox runs");
            assert!(!out.success());
        }
    }

    #[test]
    fn text_compresses_and_noise_is_stored() {
        let text: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{i} and some words that repeat\n").into_bytes())
            .collect();
        let s = samples();
        let noise = &s[13];
        for effort in 0..EFFORTS {
            assert!(compress(&text, effort).len() < text.len() / 3);
            let packed = compress(noise, effort);
            // Stored blocks cost their 12 bytes of lengths and sum, and the header and end.
            assert!(packed.len() <= noise.len() + 12 * noise.len().div_ceil(BLOCK) + 64);
        }
    }

    #[test]
    fn more_effort_never_packs_the_samples_worse_by_much_and_text_better() {
        let size = |effort| -> usize { samples().iter().map(|s| compress(s, effort).len()).sum() };
        let sizes: Vec<usize> = (0..EFFORTS).map(size).collect();
        assert!(sizes[1] < sizes[0], "{sizes:?}");
        for pair in sizes.windows(2).skip(1) {
            assert!(pair[1] <= pair[0] + pair[0] / 100, "{sizes:?}");
        }
    }

    #[test]
    fn a_copy_costs_what_it_writes() {
        for dist in [
            1,
            7,
            8,
            9,
            2047,
            2048,
            2049,
            16383,
            16384,
            16385,
            M4_MAX_OFFSET,
        ] {
            for len in (4..700).chain([5000, 70_000]) {
                let mut out = Vec::new();
                copy(&mut out, dist, len);
                assert_eq!(copy_len(dist, len), out.len(), "{dist} back, {len} long");
            }
        }
    }

    #[test]
    fn adler32_is_the_known_one() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(&vec![0xff; 100_000]), {
            // The sums by their definition, without the deferred reductions.
            let (mut a, mut b) = (1u64, 0u64);
            for _ in 0..100_000 {
                a = (a + 0xff) % 65521;
                b = (b + a) % 65521;
            }
            ((b << 16) | a) as u32
        });
    }
}
