//! The upload stream compressed for the link to the cluster, which is what bounds an upload
//! there: frames of up to `SEGMENT` bytes of the stream, each after a line that says what it is
//! and how long: `z N` for a gzip member of N bytes, `r N` for N bytes as they are, and `e 0`
//! at the end. A shell loop of `read` and `dd` in the pod takes the frames apart ([`UNFRAME`];
//! the end of stdin never comes, since closing it would end the exec session), and `gunzip`
//! opens each member. A segment that does not compress by a tenth makes the next ones go as
//! they are, which costs nothing on either side (busybox's `gunzip` takes about 100 MB/s even
//! of stored data), until a probe every `PROBE_EVERY` segments finds data that compresses
//! again. Segments are compressed on as many cores as there are (up to 4), one thread each,
//! and sent in order.

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
pub const UNFRAME: &str = "while read -r kind n && [ \"$n\" -gt 0 ]; do \
     if [ \"$kind\" = z ]; then dd bs=\"$n\" count=1 iflag=fullblock 2>/dev/null | gunzip; \
     else dd bs=\"$n\" count=1 iflag=fullblock 2>/dev/null; fi; done";

/// Cuts a stream pushed piece by piece into frames handed to `send`, compressing up to one
/// segment per core at a time.
pub struct Framer<F> {
    segment: BytesMut,
    send: F,
    choice: Choice,
    /// Segments being made into frames, oldest first.
    making: VecDeque<JoinHandle<io::Result<Made>>>,
    parallel: usize,
}

/// A segment, and its gzip member where it was compressed.
struct Made {
    data: Bytes,
    member: Option<Vec<u8>>,
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

    /// A segment of `len` bytes compressed to `member` bytes.
    fn saw(&mut self, len: usize, member: usize) {
        if member > len / 10 * 9 {
            self.raw = PROBE_EVERY - 1;
        }
    }
}

impl<F: FnMut(Bytes) -> io::Result<()>> Framer<F> {
    pub fn new(send: F) -> Self {
        Framer {
            segment: BytesMut::with_capacity(SEGMENT),
            send,
            choice: Choice::default(),
            making: VecDeque::new(),
            parallel: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
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

    /// Sends what is left and the end line.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.segment.is_empty() {
            self.emit()?;
        }
        while !self.making.is_empty() {
            self.send_oldest()?;
        }
        (self.send)(Bytes::from_static(b"e 0\n"))
    }

    fn emit(&mut self) -> io::Result<()> {
        let data = self.segment.split().freeze();
        self.segment.reserve(SEGMENT);
        if self.making.len() >= self.parallel {
            self.send_oldest()?;
        }
        let compress = self.choice.compress_next();
        let making = std::thread::Builder::new()
            .name("snapfs-gzip".into())
            .spawn(move || {
                let member = compress.then(|| gzip(&data)).transpose()?;
                Ok(Made { data, member })
            })?;
        self.making.push_back(making);
        Ok(())
    }

    fn send_oldest(&mut self) -> io::Result<()> {
        let Some(making) = self.making.pop_front() else {
            return Ok(());
        };
        let made = making
            .join()
            .map_err(|_| io::Error::other("compressing the stream failed"))??;
        if let Some(member) = &made.member {
            self.choice.saw(made.data.len(), member.len());
        }
        let (kind, body) = match made.member {
            Some(member) if member.len() < made.data.len() => ('z', Bytes::from(member)),
            _ => ('r', made.data),
        };
        (self.send)(Bytes::from(format!("{kind} {}\n", body.len())))?;
        (self.send)(body)
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Takes frames apart as the pod's loop does: the stream, how many frames were gzip, and
    /// whether the end line came last.
    fn unframe(mut frames: &[u8]) -> (Vec<u8>, usize, bool) {
        let (mut stream, mut zipped) = (Vec::new(), 0);
        while let Some(nl) = frames.iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&frames[..nl]).unwrap();
            let (kind, n) = line.split_once(' ').unwrap();
            let n: usize = n.parse().unwrap();
            if n == 0 {
                return (stream, zipped, kind == "e" && nl + 1 == frames.len());
            }
            let body = &frames[nl + 1..nl + 1 + n];
            match kind {
                "z" => {
                    zipped += 1;
                    flate2::read::GzDecoder::new(body)
                        .read_to_end(&mut stream)
                        .unwrap();
                }
                "r" => stream.extend_from_slice(body),
                other => panic!("frame kind {other}"),
            }
            frames = &frames[nl + 1 + n..];
        }
        (stream, zipped, false)
    }

    fn framed(stream: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut framer = Framer::new(|frame: Bytes| {
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
        let frames = framed(&text, 1 << 20);
        let (stream, zipped, ended) = unframe(&frames);
        assert!(ended);
        assert_eq!(zipped, 4);
        assert_eq!(stream, text);
        assert!(frames.len() < text.len() / 20, "{} bytes", frames.len());
        assert_eq!(framed(&[], 1), b"e 0\n");
    }

    #[test]
    fn data_that_does_not_compress_goes_as_it_is_between_probes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..3 * SEGMENT)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let frames = framed(&noise, 1 << 20);
        let (stream, zipped, ended) = unframe(&frames);
        assert!(ended);
        assert_eq!((stream == noise, zipped), (true, 0));
        assert!(frames.len() < noise.len() + 64, "{} bytes", frames.len());

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
}
