//! SPDY/3.1 framing as `kubectl port-forward` speaks it (through a WebSocket tunnel): the frames
//! a server reads and writes, and header blocks compressed with zlib over the SPDY/3
//! dictionary, one compression stream per direction for the whole connection.

mod dictionary;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// The flag that ends a stream in one direction.
const FIN: u8 = 0x01;
/// Frames larger than this are refused (a guess at a sane bound; kubectl's are small).
const MAX_FRAME: usize = 16 << 20;

/// RST_STREAM status: the stream was refused.
pub(crate) const REFUSED_STREAM: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY header block does not decompress: {0}")]
    Compression(String),
}

/// The frames a port-forward server acts on; others are `Ignored`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream: u32,
        headers: Vec<(String, String)>,
        fin: bool,
    },
    Data {
        stream: u32,
        data: Vec<u8>,
        fin: bool,
    },
    RstStream {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    Ignored,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(SpdyError::Malformed("short frame"))
}

/// Reads frames from the bytes of a connection, as they arrive.
pub(crate) struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buf: Vec::new(),
            inflate: Decompress::new(true),
            dictionary: dictionary::dictionary(),
        }
    }
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or None until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let length = u32_at(&self.buf, 4)? as usize & 0x00ff_ffff;
        if length > MAX_FRAME {
            return Err(SpdyError::TooLarge(length));
        }
        if self.buf.len() < 8 + length {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..8 + length).collect();
        let flags = frame[4];
        let body = &frame[8..];
        if frame[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: u32_at(&frame, 0)? & 0x7fff_ffff,
                data: body.to_vec(),
                fin: flags & FIN != 0,
            }));
        }
        let version = u16::from_be_bytes([frame[0], frame[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let stream = || u32_at(body, 0).map(|s| s & 0x7fff_ffff);
        Ok(Some(match u16::from_be_bytes([frame[2], frame[3]]) {
            SYN_STREAM => {
                let block = body
                    .get(10..)
                    .ok_or(SpdyError::Malformed("short SYN_STREAM"))?;
                let headers = self.headers(block)?;
                Frame::SynStream {
                    stream: stream()?,
                    headers,
                    fin: flags & FIN != 0,
                }
            }
            RST_STREAM => Frame::RstStream { stream: stream()? },
            PING => Frame::Ping(u32_at(body, 0)?),
            GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result =
                self.inflate
                    .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - in_before) as usize;
            let progressed =
                self.inflate.total_in() != in_before || self.inflate.total_out() != out_before;
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            } else if pos >= block.len() {
                return Ok(out);
            } else if !progressed {
                return Err(SpdyError::Compression("no progress".into()));
            }
        }
    }

    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let plain = self.inflate(block)?;
        let count = u32_at(&plain, 0)? as usize;
        let mut at = 4;
        let field = |at: &mut usize| -> Result<String, SpdyError> {
            let len = u32_at(&plain, *at)? as usize;
            let bytes = plain
                .get(*at + 4..*at + 4 + len)
                .ok_or(SpdyError::Malformed("short header block"))?;
            *at += 4 + len;
            Ok(String::from_utf8_lossy(bytes).into_owned())
        };
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = field(&mut at)?;
            let value = field(&mut at)?;
            headers.push((name.to_ascii_lowercase(), value));
        }
        Ok(headers)
    }
}

/// Writes frames; header blocks share one compression stream.
pub(crate) struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh stream always accepts a dictionary.
        let _ = deflate.set_dictionary(&dictionary::dictionary());
        Encoder { deflate }
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&(body.len() as u32 | (u32::from(flags) << 24)).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

impl Encoder {
    fn deflate(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            // Compression into a Vec with room left cannot fail.
            let _ = self
                .deflate
                .compress_vec(&plain[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= plain.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name, value] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        self.deflate(&plain)
    }

    pub fn syn_reply(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend(self.header_block(headers));
        control(SYN_REPLY, 0, &body)
    }

    /// What a client sends, for tests.
    #[cfg(test)]
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.header_block(headers));
        control(SYN_STREAM, 0, &body)
    }
}

pub(crate) fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.len());
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { u32::from(FIN) << 24 } else { 0 };
    frame.extend_from_slice(&(data.len() as u32 | flags).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

pub(crate) fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub(crate) fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut body = stream.to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

/// GOAWAY with status OK: no new streams after the last one seen.
pub(crate) fn goaway(last_stream: u32) -> Vec<u8> {
    let mut body = last_stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dict = dictionary::dictionary();
        assert_eq!(dict.len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(&dict).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_across_split_reads() {
        let mut client = Encoder::default();
        let mut wire = client.syn_stream(
            1,
            &[
                ("streamType", "error"),
                ("port", "8888"),
                ("requestID", "0"),
            ],
        );
        wire.extend(client.syn_stream(
            3,
            &[("streamType", "data"), ("port", "8888"), ("requestID", "0")],
        ));
        wire.extend(data(3, b"GET / HTTP/1.1\r\n\r\n", false));
        wire.extend(data(3, b"", true));
        wire.extend(ping(7));
        wire.extend(rst_stream(3, REFUSED_STREAM));
        wire.extend(goaway(3));
        let mut server = Decoder::default();
        let mut frames = Vec::new();
        for chunk in wire.chunks(5) {
            server.push(chunk);
            while let Some(f) = server.next_frame().unwrap() {
                frames.push(f);
            }
        }
        let headers = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".to_string(), "8888".to_string()),
                ("requestid".to_string(), "0".to_string()),
            ]
        };
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    stream: 1,
                    headers: headers("error"),
                    fin: false
                },
                Frame::SynStream {
                    stream: 3,
                    headers: headers("data"),
                    fin: false
                },
                Frame::Data {
                    stream: 3,
                    data: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                    fin: false
                },
                Frame::Data {
                    stream: 3,
                    data: Vec::new(),
                    fin: true
                },
                Frame::Ping(7),
                Frame::RstStream { stream: 3 },
                Frame::GoAway,
            ]
        );
    }

    #[test]
    fn replies_decompress_with_the_dictionary() {
        let mut server = Encoder::default();
        let reply = server.syn_reply(5, &[]);
        assert_eq!(&reply[..4], &[0x80, 3, 0, 2]);
        let block = &reply[12..];
        let mut inflate = Decompress::new(true);
        let mut out = Vec::with_capacity(64);
        let e = inflate
            .decompress_vec(block, &mut out, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(e.needs_dictionary(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut d = Decoder::default();
        d.push(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(SpdyError::Version(2))));
        let mut d = Decoder::default();
        d.push(&[
            0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
        ]);
        assert!(matches!(d.next_frame(), Err(SpdyError::Compression(_))));
    }
}
