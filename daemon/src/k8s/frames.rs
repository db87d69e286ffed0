//! The upload stream compressed for the link to the cluster, which is what bounds an upload
//! there: frames of up to `SEGMENT` bytes of the stream, each after a line that says what it is
//! and how long: `zs N` for a zstd frame of N bytes, `l N` for an lzop file, `z N` for a gzip
//! member, and `e 0` at the end. A shell loop of `read` and `dd` in the pod takes the frames
//! apart ([`UNFRAME`]; the end of stdin never comes, since closing it would end the exec
//! session), and `zstd -d`, `lzop -d` or `gunzip` opens each one. `dd` passes a frame on 64 KiB at a time as it arrives (then the
//! rest, never reading past the frame; busybox `head -c` reads ahead), so the pod unpacks and
//! writes one part of a frame while the next part is on the link: one `dd` of a whole frame
//! left the link idle while each frame was unpacked.
//!
//! Every byte is checked as it arrives: zstd keeps a checksum of every frame, lzop an Adler-32
//! of every 256 KiB block, gzip a CRC-32 of every member, all taken here from the bytes read,
//! and the pod's decompressor fails on a mismatch before tar goes on. So segments that are
//! not worth compressing go stored in the same format, not bare.
//!
//! The pod is asked which of them it has ([`UNPACKERS`], [`Codec`]). zstd is best on both
//! counts, where an image has it: a source tree and a database went to 0.40 of their size at
//! level 1, against 0.49 with lzop and 0.42 with gzip, and it unpacks fastest. Busybox has
//! `lzop`, which it takes apart about five times faster than gzip; with gzip, busybox's
//! `gunzip` on one core held the stream back below the speed of a 50 MiB/s link. Pods with
//! neither get gzip. A segment that does not compress by a tenth makes the
//! next ones go stored, which costs little on either side, until a probe every `PROBE_EVERY`
//! segments finds data that compresses again. Segments are compressed on as many cores as
//! there are (up to 4), one thread each, and sent in order.
//!
//! How hard each segment is compressed follows the link ([`Pace`]), as `zstd --adapt` does:
//! where frames are made before the link can take them, the link is what bounds the upload
//! and the next segments get more effort, which makes the stream smaller; where the link has
//! to wait for one, the next gets less. Sending a source tree and a database through a
//! 20 MiB/s link, lzop frames went mostly at the most effort and the stream took 8 % less
//! time. Where the pod shares the uploading machine's cores (a cluster on the same machine),
//! more effort takes cores from the pod's side: with no limit on the link, the stream took up
//! to 9 % more time.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Bytes of the stream in one frame.
const SEGMENT: usize = 4 << 20;
/// While data does not compress, one segment in this many is tried again.
const PROBE_EVERY: u32 = 16;

/// The pod's side, in busybox sh: the frames on stdin, the stream on stdout.
pub const UNFRAME: &str = "take() { \
     dd bs=65536 count=$(($1 / 65536)) iflag=fullblock 2>/dev/null; r=$(($1 % 65536)); \
     [ \"$r\" -eq 0 ] || dd bs=\"$r\" count=1 iflag=fullblock 2>/dev/null; }; \
     while read -r kind n && [ \"$n\" -gt 0 ]; do \
     case \"$kind\" in \
     zs) take \"$n\" | zstd -d -c -q;; \
     l) take \"$n\" | lzop -d -c;; \
     z) take \"$n\" | gunzip;; \
     *) echo \"unknown frame $kind\" >&2; exit 1;; esac; done";

/// Asks the pod which decompressors it has besides `gunzip`: a line each.
pub const UNPACKERS: &str =
    "for c in zstd lzop; do command -v \"$c\" >/dev/null 2>&1 && echo \"$c\"; done; true";

/// zstd's levels for upload frames, by effort: from its fastest, which still compresses
/// better than gzip, to one that runs at about a quarter of its speed.
const ZSTD_LEVELS: [i32; 5] = [1, 2, 3, 5, 7];
/// gzip's levels, by effort.
const GZIP_LEVELS: [u32; 4] = [1, 2, 4, 6];

/// How segments are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zstd frames, for a pod with `zstd`.
    Zstd,
    /// lzop frames, for a pod with `lzop`.
    Lzop,
    /// gzip members, which any pod with `gunzip` opens.
    Gzip,
}

impl Codec {
    /// The codec of a pod whose answer to [`UNPACKERS`] was `answer`.
    pub fn from_answer(answer: &[u8]) -> Codec {
        let has = |name: &[u8]| {
            answer
                .split(|&b| b == b'\n')
                .any(|l| l.trim_ascii() == name)
        };
        if has(b"zstd") {
            Codec::Zstd
        } else if has(b"lzop") {
            Codec::Lzop
        } else {
            Codec::Gzip
        }
    }

    /// How many efforts [`Codec::pack`] takes: 0 (the fastest) to one less than this.
    fn efforts(self) -> usize {
        match self {
            Codec::Zstd => ZSTD_LEVELS.len(),
            Codec::Lzop => crate::k8s::lzop::EFFORTS,
            Codec::Gzip => GZIP_LEVELS.len(),
        }
    }

    /// `data` compressed with `effort`, below [`Codec::efforts`].
    fn pack(self, data: &[u8], effort: usize) -> io::Result<Vec<u8>> {
        let effort = effort.min(self.efforts() - 1);
        match self {
            Codec::Zstd => Ok(snapfs_fs::format::compress_chunk(data, ZSTD_LEVELS[effort])),
            Codec::Lzop => Ok(crate::k8s::lzop::compress(data, effort)),
            Codec::Gzip => gzip(data, Compression::new(GZIP_LEVELS[effort])),
        }
    }

    /// `data` in this format, stored as it is but still checked, where `tried` (what
    /// compressing it gave, if that was tried) did not come out smaller. zstd stores by
    /// itself, within its frame, what does not compress: what was tried is that.
    fn store(self, data: &[u8], tried: Option<Vec<u8>>) -> io::Result<Vec<u8>> {
        match (self, tried) {
            (Codec::Zstd, Some(tried)) => Ok(tried),
            (Codec::Zstd, None) => self.pack(data, 0),
            (Codec::Lzop, _) => Ok(crate::k8s::lzop::store(data)),
            (Codec::Gzip, _) => gzip(data, Compression::none()),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Codec::Zstd => "zs",
            Codec::Lzop => "l",
            Codec::Gzip => "z",
        }
    }
}

/// Cuts a stream pushed piece by piece into frames handed to `send`, compressing up to one
/// segment per core at a time.
pub struct Framer<F> {
    segment: BytesMut,
    send: F,
    choice: Choice,
    pace: Pace,
    /// Segments being made into frames, oldest first.
    making: VecDeque<JoinHandle<io::Result<Made>>>,
    parallel: usize,
    codec: Codec,
    /// How many segments were compressed with each effort.
    efforts: Vec<u32>,
}

/// A segment made into a frame's body.
struct Made {
    /// The segment's length.
    len: usize,
    /// What it compressed to, where that was tried.
    tried: Option<usize>,
    body: Vec<u8>,
}

/// Whether each segment is compressed, from how the ones before it did.
#[derive(Default)]
struct Choice {
    /// Segments still to go as they are before the next probe.
    raw: u32,
}

impl Choice {
    fn compress_next(&mut self) -> bool {
        if self.raw > 0 {
            self.raw -= 1;
            false
        } else {
            true
        }
    }

    /// A segment of `len` bytes compressed to `packed` bytes.
    fn saw(&mut self, len: usize, packed: usize) {
        if packed > len / 10 * 9 {
            self.raw = PROBE_EVERY - 1;
        }
    }
}

/// The effort for the next segment, from whether the frames before it were ready by the time
/// the link could take them: one more after `RAISE_AFTER` in a row that were, one less after
/// each one that was not. Where compressing is about as fast as the link, it goes back and
/// forth between two efforts, which keeps both busy.
struct Pace {
    effort: usize,
    most: usize,
    /// Frames in a row that were ready, since the effort last changed.
    ready: u32,
}

/// Frames in a row that must be ready before the effort is raised: a frame that is late
/// leaves the link idle, so the effort falls at once and rises slowly.
const RAISE_AFTER: u32 = 2;

impl Pace {
    fn new(codec: Codec) -> Pace {
        Pace {
            effort: 0,
            most: codec.efforts() - 1,
            ready: 0,
        }
    }

    /// A frame was (`true`) or was not yet made when the link could take it.
    fn saw(&mut self, ready: bool) {
        if ready {
            self.ready += 1;
            if self.ready == RAISE_AFTER {
                self.effort = (self.effort + 1).min(self.most);
                self.ready = 0;
            }
        } else {
            self.effort = self.effort.saturating_sub(1);
            self.ready = 0;
        }
    }
}

impl<F: FnMut(Bytes) -> io::Result<()>> Framer<F> {
    pub fn new(codec: Codec, send: F) -> Self {
        Framer {
            codec,
            segment: BytesMut::with_capacity(SEGMENT),
            send,
            choice: Choice::default(),
            pace: Pace::new(codec),
            making: VecDeque::new(),
            parallel: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            efforts: vec![0; codec.efforts()],
        }
    }

    pub fn push(&mut self, mut piece: &[u8]) -> io::Result<()> {
        while !piece.is_empty() {
            let take = piece.len().min(SEGMENT - self.segment.len());
            self.segment.put_slice(&piece[..take]);
            piece = &piece[take..];
            if self.segment.len() == SEGMENT {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Keeps the next segments at the fastest effort while `on`; the pace takes over again
    /// from there once it is off.
    pub fn fastest_only(&mut self, on: bool) {
        self.pace.most = if on { 0 } else { self.codec.efforts() - 1 };
        self.pace.effort = self.pace.effort.min(self.pace.most);
    }

    /// Sends what was pushed so far, in a frame shorter than a segment where it must.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.segment.is_empty() {
            self.emit()?;
        }
        while !self.making.is_empty() {
            self.send_oldest()?;
        }
        Ok(())
    }

    /// Sends what is left and the end line. Answers how many segments were compressed with
    /// each effort, from the fastest on (segments sent stored, between probes, are not counted).
    pub fn finish(mut self) -> io::Result<Vec<u32>> {
        self.flush()?;
        (self.send)(Bytes::from_static(b"e 0\n"))?;
        Ok(self.efforts)
    }

    fn emit(&mut self) -> io::Result<()> {
        let data = self.segment.split().freeze();
        self.segment.reserve(SEGMENT);
        if self.making.len() >= self.parallel {
            self.send_oldest()?;
        }
        let (compress, codec, effort) = (self.choice.compress_next(), self.codec, self.pace.effort);
        if compress {
            self.efforts[effort] += 1;
        }
        let making = std::thread::Builder::new()
            .name("snapfs-pack".into())
            .spawn(move || {
                let packed = compress.then(|| codec.pack(&data, effort)).transpose()?;
                let tried = packed.as_ref().map(Vec::len);
                let body = match packed {
                    Some(packed) if packed.len() < data.len() => packed,
                    tried => codec.store(&data, tried)?,
                };
                Ok(Made {
                    len: data.len(),
                    tried,
                    body,
                })
            })?;
        self.making.push_back(making);
        Ok(())
    }

    fn send_oldest(&mut self) -> io::Result<()> {
        let Some(making) = self.making.pop_front() else {
            return Ok(());
        };
        self.pace.saw(making.is_finished());
        let made = making
            .join()
            .map_err(|_| io::Error::other("compressing the stream failed"))??;
        if let Some(packed) = made.tried {
            self.choice.saw(made.len, packed);
        }
        let kind = self.codec.kind();
        (self.send)(Bytes::from(format!("{kind} {}\n", made.body.len())))?;
        (self.send)(Bytes::from(made.body))
    }
}

fn gzip(data: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), level);
    encoder.write_all(data)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::lzop::tests::XorShift;
    use std::io::Read;

    /// Takes frames apart as the pod's loop does: the stream, the kind of each frame, and
    /// whether the end line came last.
    fn unframe(mut frames: &[u8]) -> (Vec<u8>, Vec<String>, bool) {
        let (mut stream, mut kinds) = (Vec::new(), Vec::new());
        while let Some(nl) = frames.iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&frames[..nl]).unwrap();
            let (kind, n) = line.split_once(' ').unwrap();
            let n: usize = n.parse().unwrap();
            if n == 0 {
                return (stream, kinds, kind == "e" && nl + 1 == frames.len());
            }
            let body = &frames[nl + 1..nl + 1 + n];
            match kind {
                "zs" => stream.extend(zstd::decode_all(body).unwrap()),
                "l" => stream.extend(crate::k8s::lzop::tests::busybox_unpacks(body)),
                "z" => {
                    flate2::read::GzDecoder::new(body)
                        .read_to_end(&mut stream)
                        .unwrap();
                }
                other => panic!("frame kind {other}"),
            }
            kinds.push(kind.to_string());
            frames = &frames[nl + 1 + n..];
        }
        (stream, kinds, false)
    }

    fn framed(codec: Codec, stream: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut framer = Framer::new(codec, |frame: Bytes| {
            out.extend_from_slice(&frame);
            Ok(())
        });
        for p in stream.chunks(piece) {
            framer.push(p).unwrap();
        }
        framer.finish().unwrap();
        out
    }

    #[test]
    fn frames_give_the_stream_back_and_compress_what_compresses() {
        let text: Vec<u8> = (0..3 * SEGMENT + 12345)
            .map(|i| b"snapshots as paths "[i % 19])
            .collect();
        for codec in [Codec::Zstd, Codec::Lzop, Codec::Gzip] {
            let frames = framed(codec, &text, 1 << 20);
            let (stream, kinds, ended) = unframe(&frames);
            assert!(ended);
            assert_eq!(kinds, [codec.kind(); 4], "{codec:?}");
            assert_eq!(stream, text);
            assert!(frames.len() < text.len() / 20, "{} bytes", frames.len());
            assert_eq!(framed(codec, &[], 1), b"e 0\n");
        }
    }

    #[test]
    fn data_that_does_not_compress_goes_stored_between_probes() {
        let noise = XorShift(0x9e37_79b9_7f4a_7c15).bytes(3 * SEGMENT);
        for codec in [Codec::Zstd, Codec::Lzop, Codec::Gzip] {
            let frames = framed(codec, &noise, 1 << 20);
            let (stream, kinds, ended) = unframe(&frames);
            assert!(ended);
            assert!(stream == noise, "{codec:?}");
            assert_eq!(kinds, [codec.kind(); 3], "{codec:?}");
            // Stored: a few bytes of headers and checksums per block.
            assert!(
                frames.len() < noise.len() + noise.len() / 1000,
                "{} bytes",
                frames.len()
            );
        }

        let mut choice = Choice::default();
        let mut probes = Vec::new();
        for i in 0..40 {
            if choice.compress_next() {
                probes.push(i);
                // Noise until segment 20, text after.
                choice.saw(1000, if i < 20 { 1000 } else { 300 });
            }
        }
        assert_eq!(probes[..3], [0, 16, 32]);
        assert_eq!(probes[3..], (33..40).collect::<Vec<_>>());
    }

    #[test]
    fn every_effort_of_every_codec_gives_the_stream_back_and_more_packs_smaller() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("{i}: {} and {}\n", i % 251, i * 7 % 1013).into_bytes())
            .collect();
        for codec in [Codec::Zstd, Codec::Lzop, Codec::Gzip] {
            let sizes: Vec<usize> = (0..codec.efforts())
                .map(|effort| {
                    let body = codec.pack(&text, effort).unwrap();
                    let frame = [
                        format!("{} {}\n", codec.kind(), body.len()).as_bytes(),
                        &body,
                    ]
                    .concat();
                    let (stream, _, _) = unframe(&frame);
                    assert!(stream == text, "{codec:?}, effort {effort}");
                    body.len()
                })
                .collect();
            assert!(sizes.last() < sizes.first(), "{codec:?}: {sizes:?}");
        }
    }

    #[test]
    fn effort_rises_while_frames_wait_for_the_link_and_falls_while_the_link_waits() {
        let mut pace = Pace::new(Codec::Lzop);
        let mut seen = Vec::new();
        let (t, f) = (true, false);
        for ready in [t, t, t, t, t, t, t, t, f, f, t, f, t, t, f, f, f, f] {
            pace.saw(ready);
            seen.push(pace.effort);
        }
        // Up every second ready frame to the most, down at each late one, never below the
        // fastest; a late frame starts the count of ready ones again.
        assert_eq!(seen, [0, 1, 1, 2, 2, 3, 3, 3, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(Pace::new(Codec::Zstd).most, ZSTD_LEVELS.len() - 1);
    }

    #[test]
    fn a_pod_gets_the_best_codec_it_said_it_has() {
        assert_eq!(Codec::from_answer(b"zstd\nlzop\n"), Codec::Zstd);
        assert_eq!(Codec::from_answer(b"zstd\n"), Codec::Zstd);
        assert_eq!(Codec::from_answer(b"lzop\n"), Codec::Lzop);
        assert_eq!(Codec::from_answer(b""), Codec::Gzip);
        assert_eq!(Codec::from_answer(b"sh: command: not found\n"), Codec::Gzip);
        assert_eq!(Codec::from_answer(b"/usr/bin/zstdcat\n"), Codec::Gzip);
    }
}
