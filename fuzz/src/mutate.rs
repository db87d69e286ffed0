//! The mutations the stable driver applies: the classic byte-level ones (flips, interesting
//! values, inserts, deletes, copies within the input), tokens of the target's format, and
//! splices with another corpus input. Without coverage feedback, stacking a few of them on a
//! valid seed is what reaches past the first checks of a decoder.

/// splitmix64: small, fast and reproducible from a seed, which is all a fuzz loop needs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that sit on the edges decoders get wrong.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'/', b'.', b'"', b'\n', b'|',
];

/// Longest input a mutation may produce.
pub const MAX_LEN: usize = 64 << 10;

/// A mutant of `input`: one to eight mutations stacked, using `tokens` and `other` (another
/// corpus input) as material.
pub fn mutate(input: &[u8], tokens: &[&[u8]], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        one(&mut out, tokens, other, rng);
    }
    out.truncate(MAX_LEN);
    out
}

fn one(out: &mut Vec<u8>, tokens: &[&[u8]], other: &[u8], rng: &mut Rng) {
    let at = rng.below(out.len() + 1);
    match rng.below(9) {
        0 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] ^= 1 << rng.below(8);
        }
        1 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
        3 if !out.is_empty() => {
            let n = 1 + rng.below(out.len().min(64));
            let from = rng.below(out.len() - n + 1);
            out.drain(from..from + n);
        }
        4 if !out.is_empty() => {
            // Copy a piece of the input elsewhere in it: repeats structure (entries, fields).
            let n = 1 + rng.below(out.len().min(256));
            let from = rng.below(out.len() - n + 1);
            let piece = out[from..from + n].to_vec();
            out.splice(at..at, piece);
        }
        5 if !tokens.is_empty() => {
            let token = tokens[rng.below(tokens.len())];
            out.splice(at..at, token.iter().copied());
        }
        6 if !tokens.is_empty() && !out.is_empty() => {
            let token = tokens[rng.below(tokens.len())];
            let end = (at + token.len()).min(out.len());
            out.splice(at..end, token.iter().copied());
        }
        7 if !other.is_empty() => {
            // Splice: this input's head with the other's tail.
            let from = rng.below(other.len());
            out.truncate(at);
            out.extend_from_slice(&other[from..]);
        }
        8 if !out.is_empty() => {
            // A digit run changed into an edge number, where the input has digits.
            let i = rng.below(out.len());
            if out[i].is_ascii_digit() {
                let end = out[i..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(out.len(), |n| i + n);
                let edges: [&[u8]; 5] = [
                    b"0",
                    b"4294967295",
                    b"4294967296",
                    b"18446744073709551615",
                    b"99999999999999999999999",
                ];
                out.splice(i..end, edges[rng.below(edges.len())].iter().copied());
            }
        }
        _ => {}
    }
}
