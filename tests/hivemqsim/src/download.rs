//! The download endpoint's body: HTTP range requests, and the dropped-download fault.
//!
//! HiveMQ documents no range support for this endpoint; the simulator offers it because snapfs
//! reads through a cache with ranged GETs, and a client must also cope with a 200 answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::faults::Counters;

/// What a `Range` header asks of a file of a given length (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    /// The whole file (no header, or one the server may ignore).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the file is in the range: 416.
    Unsatisfiable,
}

impl Range {
    /// Only single `bytes=` ranges are served; several ranges or a malformed header get the
    /// whole file, which RFC 9110 allows (a server may ignore `Range`).
    pub fn parse(header: Option<&str>, len: u64) -> Range {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return Range::Full;
        };
        if spec.contains(',') {
            return Range::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Range::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => Range::Full,
            (Some(start), _) if start >= len => Range::Unsatisfiable,
            (Some(start), None) if last.is_empty() => Range::Part {
                start,
                end: len - 1,
            },
            (Some(start), Some(end)) => Range::Part {
                start,
                end: end.min(len - 1),
            },
            (None, Some(suffix)) if first.is_empty() => {
                if suffix == 0 || len == 0 {
                    Range::Unsatisfiable
                } else {
                    Range::Part {
                        start: len.saturating_sub(suffix),
                        end: len - 1,
                    }
                }
            }
            _ => Range::Full,
        }
    }
}

/// How much one frame carries.
const CHUNK: usize = 64 * 1024;

/// How long a dropped download waits before failing: hyper discards what it has not written yet
/// when a body fails, so the pause lets it flush the head and the bytes before the drop.
const DROP_PAUSE: Duration = Duration::from_millis(50);

/// The content of a download, sent in chunks and counted; with `drop_after` set it ends in an
/// error after that many bytes, which makes hyper close the connection short of the
/// `Content-Length` it announced.
pub(crate) struct DownloadBody {
    data: Bytes,
    drop_after: Option<u64>,
    sent: u64,
    counters: Arc<Counters>,
    /// Set once the drop is due.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DownloadBody {
    pub fn new(data: Bytes, drop_after: Option<u64>, counters: Arc<Counters>) -> DownloadBody {
        DownloadBody {
            data,
            drop_after,
            sent: 0,
            counters,
            pause: None,
        }
    }
}

impl Body for DownloadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let allowed = match self.drop_after {
            Some(limit) if self.sent >= limit && !self.data.is_empty() => {
                let pause = self
                    .pause
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(DROP_PAUSE)));
                ready!(pause.as_mut().poll(cx));
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "download dropped by the fault switch",
                ))));
            }
            Some(limit) => usize::try_from(limit - self.sent).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let n = self.data.len().min(CHUNK).min(allowed);
        if n == 0 {
            return Poll::Ready(None);
        }
        let chunk = self.data.split_to(n);
        self.sent += n as u64;
        self.counters.add_download_bytes(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> Range {
        Range::Part { start, end }
    }

    #[test]
    fn ranges() {
        let len = 1000;
        for (header, want) in [
            (None, Range::Full),
            (Some("bytes=0-99"), part(0, 99)),
            (Some("bytes=100-"), part(100, 999)),
            (Some("bytes=990-5000"), part(990, 999)),
            (Some("bytes=-10"), part(990, 999)),
            (Some("bytes=-5000"), part(0, 999)),
            (Some("bytes=999-999"), part(999, 999)),
            (Some("bytes=1000-"), Range::Unsatisfiable),
            (Some("bytes=-0"), Range::Unsatisfiable),
            (Some("bytes=5-1"), Range::Full),
            (Some("bytes=0-1,5-6"), Range::Full),
            (Some("bytes=x-1"), Range::Full),
            (Some("items=0-1"), Range::Full),
            (Some("bytes=-"), Range::Full),
        ] {
            assert_eq!(Range::parse(header, len), want, "{header:?}");
        }
        assert_eq!(Range::parse(Some("bytes=0-"), 0), Range::Unsatisfiable);
        assert_eq!(Range::parse(Some("bytes=-1"), 0), Range::Unsatisfiable);
    }
}
