//! The data of an upload (DESIGN §6 step 4): the staged tree streamed into the upload pod as
//! a tar over exec, compressed, with exact progress, and checked as it arrives: every block
//! of the stream against the checksum its frame carries (`frames`), then the size of every
//! file on the volume.
//!
//! The stream can begin before the tree is known (`early`): files go first as they are closed,
//! each under a name of its own in a folder of the upload's own at the volume's root
//! (`early_dir`), and the tree last, where a file already sent is a hard link to it. The pod
//! removes that folder once tar ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use snapfs_fs::backend::BackendError;
use tokio::task::JoinHandle;

use super::manifests::{CONTAINER, DATA};
use super::{KubeTarget, Progress};
use crate::early::Held;
use crate::k8s::errors::cancelled;
use crate::k8s::frames::{self, Codec};
use crate::k8s::labels::job_label;
use crate::k8s::{exec, tarball};

/// How often progress and cancellation are looked at while the bytes flow.
const POLL: Duration = Duration::from_millis(250);

/// How long files sent early wait in a frame that is not full for the next file.
const IDLE: Duration = Duration::from_millis(100);

/// Where the files of upload `id` sent before its tree was known arrive, relative to the
/// volume's root.
pub(super) fn early_dir(id: &str) -> String {
    format!(".snapfs-early-{}", job_label(id))
}

/// What goes into the stream, in order.
pub(super) enum Part {
    /// A file sent before the tree is known, under `name`; `done` is told what was sent of it,
    /// or None where what arrives is not the file (it changed or went while read).
    File {
        name: String,
        path: PathBuf,
        held: Arc<Held>,
        key: u64,
        done: Box<dyn FnOnce(Option<tarball::Meta>) + Send>,
    },
    /// Answered once every part before it went.
    Mark(tokio::sync::oneshot::Sender<()>),
    /// The tree, the last part.
    Plan(Arc<tarball::Plan>),
}

/// The sending end of a stream: parts to put in it, and what it sent so far.
pub(super) struct Feed {
    parts: std::sync::mpsc::Sender<Part>,
    /// Parts put in and not taken yet.
    waiting: Arc<AtomicU64>,
    /// Bytes of the stream framed and handed to the exec session.
    sent: Arc<AtomicU64>,
    /// Bytes of the entries of the files put in (`Feed::put_file`).
    queued: AtomicU64,
    /// Where a run's progress counts from: the bytes sent before it began, and those it waits
    /// for before its tree (`Feed::count_from_here`).
    base: u64,
    ahead: u64,
    stop: Arc<AtomicBool>,
}

/// What a stream's session takes its parts from.
pub(super) struct Parts {
    rx: std::sync::mpsc::Receiver<Part>,
    waiting: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// A stream not started yet: parts put in wait for its session.
pub(super) fn stream() -> (Feed, Parts) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (sent, stop, waiting) = (Arc::default(), Arc::default(), Arc::<AtomicU64>::default());
    let feed = Feed {
        parts: tx,
        waiting: Arc::clone(&waiting),
        sent: Arc::clone(&sent),
        queued: AtomicU64::new(0),
        base: 0,
        ahead: 0,
        stop: Arc::clone(&stop),
    };
    (
        feed,
        Parts {
            rx,
            waiting,
            sent,
            stop,
        },
    )
}

impl Feed {
    /// Puts `part` in the stream; false once the stream has ended.
    pub(super) fn put(&self, part: Part) -> bool {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.parts.send(part).is_ok()
    }

    /// Puts file `part`, whose entry takes `len` bytes of the stream, in the stream; a stream
    /// that ended takes nothing, which the run finds when it drains it.
    pub(super) fn put_file(&self, part: Part, len: u64) {
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.put(part);
    }

    /// A run's progress counts from here: what was sent so far is not its work, what was put in
    /// and not sent yet is.
    pub(super) fn count_from_here(&mut self) {
        self.base = self.sent.load(Ordering::Relaxed);
        self.ahead = self
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.base);
    }

    fn show(&self, progress: &Progress) {
        let done = self.sent.load(Ordering::Relaxed).saturating_sub(self.base);
        progress.done.store(done, Ordering::Relaxed);
    }

    /// Waits until every part put in so far went, or `cancel` is set; false where the stream
    /// ended first. Progress counts what goes meanwhile, out of `plan_total` more to come.
    pub(super) async fn drain(
        &self,
        plan_total: u64,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> bool {
        let (answer, went) = tokio::sync::oneshot::channel();
        if !self.put(Part::Mark(answer)) {
            return false;
        }
        progress
            .total
            .store(self.ahead + plan_total, Ordering::Relaxed);
        tokio::pin!(went);
        loop {
            tokio::select! {
                went = &mut went => return went.is_ok(),
                () = tokio::time::sleep(POLL) => {
                    self.show(progress);
                    if cancel.load(Ordering::Relaxed) {
                        return false;
                    }
                }
            }
        }
    }

    /// Ends the stream with `plan` and follows it until the pod answered what arrived, with
    /// progress (`count_from_here`); `cancel` stops it.
    pub(super) async fn finish(
        self,
        session: JoinHandle<Result<(), BackendError>>,
        plan: tarball::Plan,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<(), BackendError> {
        progress
            .total
            .store(self.ahead + plan.total, Ordering::Relaxed);
        // A session that ended already says why when joined.
        let _ = self.put(Part::Plan(Arc::new(plan)));
        tokio::pin!(session);
        loop {
            tokio::select! {
                out = &mut session => {
                    check_cancel(cancel)?;
                    out.map_err(|e| BackendError::Other(format!("tar stream: {e}")))??;
                    progress.done.store(progress.total.load(Ordering::Relaxed), Ordering::Relaxed);
                    return Ok(());
                }
                () = tokio::time::sleep(POLL) => {
                    self.show(progress);
                    if cancel.load(Ordering::Relaxed) {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl Drop for Feed {
    /// A stream no one finishes stops at once.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl KubeTarget {
    /// Streams the tar into the pod, compressed in frames (`frames`), and checks what
    /// arrived.
    pub(super) async fn transfer(
        &self,
        pod: &str,
        plan: tarball::Plan,
        restricted: bool,
        progress: &Progress,
        cancel: &AtomicBool,
        limit: Duration,
    ) -> Result<(), BackendError> {
        let (feed, parts) = stream();
        let session = self.start_stream(pod, parts, restricted, limit, None);
        feed.finish(session, plan, progress, cancel).await
    }

    /// Starts the session that takes `parts` into pod `pod` and checks what arrived: the
    /// pod's decompressor checks every block of the stream against the checksum taken here,
    /// any failure in the pipe fails the whole (`pipefail`), and the size of every file of the
    /// tree on the volume is compared with the one sent. Ends once the tree went and was
    /// checked, or when the session or the parts end before it. Files sent before the tree go
    /// into folder `early` (`early_dir`), which goes once the tree is there.
    pub(super) fn start_stream(
        &self,
        pod: &str,
        parts: Parts,
        restricted: bool,
        limit: Duration,
        early: Option<&str>,
    ) -> JoinHandle<Result<(), BackendError>> {
        // The sizes come one `stat` at a time, so that their lines never cut into each other,
        // and no list of names passes through a pipe. A shell without `pipefail` (an old
        // dash) still fails the upload on a refused frame, through the sizes: tar then sees
        // the stream end early and stops, short of the files after it.
        let script = format!(
            "set -e\n\
             (set -o pipefail) 2>/dev/null && set -o pipefail\n\
             {{ {unframe}; }} | tar -x -f - -C {DATA} \"$1\"\n\
             cd {DATA}\n\
             [ -z \"$2\" ] || rm -rf -- \"$2\"\n\
             {{ find . -type f -exec stat -c '%s|%n' {{}} + 2>/dev/null || true; }}",
            unframe = frames::UNFRAME
        );
        // As root tar keeps owners by number; as anyone else it cannot, and is told so.
        let owners = if restricted { "-o" } else { "--numeric-owner" };
        let command = exec::sh(&script, &[owners, early.unwrap_or_default()]);
        let pods = exec::Pods {
            api: self.pods(),
            counters: self.counters.clone(),
        };
        let pod = pod.to_string();
        // What the stream logs belongs to the upload's job, as the rest of its lines do.
        let job = tracing::Span::current();
        let session = stream_session(pods, pod, command, parts, limit, job.clone());
        tokio::spawn(tracing::Instrument::instrument(session, job))
    }
}

/// The session of `start_stream`.
async fn stream_session(
    pods: exec::Pods,
    pod: String,
    command: Vec<String>,
    parts: Parts,
    limit: Duration,
    job: tracing::Span,
) -> Result<(), BackendError> {
    // The pod is asked which decompressors it has while the stream's session starts: only
    // the first frame waits for the answer. A pod that cannot be asked gets gzip, which any
    // image with a shell opens.
    let (answer, asked) = tokio::sync::oneshot::channel();
    let probe = async {
        let unpackers = exec::sh(frames::UNPACKERS, &[]);
        let codec = match exec::run(&pods, &pod, CONTAINER, unpackers).await {
            Ok(out) => Codec::from_answer(&out.stdout),
            Err(e) => {
                tracing::info!(pod, error = %e, "could not ask the pod for zstd or lzop; sending gzip");
                Codec::Gzip
            }
        };
        tracing::info!(pod, ?codec, "stream compression");
        // The stream may have ended already, and no longer wait for it.
        let _ = answer.send(codec);
    };
    tokio::pin!(probe);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let producer = {
        let pod = pod.clone();
        tokio::task::spawn_blocking(move || {
            let _job = job.enter();
            produce(&pod, asked, parts, tx)
        })
    };
    let session = exec::run_with_input(&pods, &pod, CONTAINER, command, Some(rx), limit);
    tokio::pin!(session);
    let mut probing = true;
    let out = loop {
        tokio::select! {
            out = &mut session => break out,
            () = &mut probe, if probing => probing = false,
        }
    };
    let streamed = producer
        .await
        .map_err(|e| BackendError::Other(format!("tar stream: {e}")))?;
    let plan = match streamed {
        Ok(plan) => plan,
        // The session ended before it took the whole stream: it tells why.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            let out = out?;
            return Err(match &out.failure {
                Some(f) => exec::failed(DATA, &out, f),
                None => BackendError::Other(format!(
                    "upload pod {pod} ended before it took the whole stream"
                )),
            });
        }
        Err(e) => return Err(BackendError::Other(format!("tar stream: {e}"))),
    };
    let out = out?;
    if let Some(f) = &out.failure {
        return Err(exec::failed(DATA, &out, f));
    }
    check_arrival(&String::from_utf8_lossy(&out.stdout), &plan.files)
}

/// Frames the parts into the session's input until the tree went; answers the tree.
fn produce(
    pod: &str,
    asked: tokio::sync::oneshot::Receiver<Codec>,
    parts: Parts,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<Arc<tarball::Plan>> {
    let session_ended =
        || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the exec session ended");
    // No answer means the session ended before the pod was asked.
    let codec = asked.blocking_recv().map_err(|_| session_ended())?;
    let mut framer = frames::Framer::new(codec, |frame| {
        tx.blocking_send(frame).map_err(|_| session_ended())
    });
    // Whether the stream had sent every file handed to it before the one it sends now: the
    // copy, not the link, is what it waits on then, and compressing harder would save no time
    // but take it from the copy (and, on a cluster on this machine, from the pod). One that
    // falls behind the copy compresses as hard as the link makes worth it (`frames::Pace`).
    let caught_up = std::cell::Cell::new(false);
    let mut tar = tarball::Tar::new(|piece: Bytes| {
        if parts.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled"));
        }
        framer.fastest_only(caught_up.get());
        if piece.is_empty() {
            // `Tar::sync`: what waits goes now.
            return framer.flush();
        }
        framer.push(&piece)?;
        parts.sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        Ok(())
    });
    let given_up = || std::io::Error::other("the stream was given up");
    let plan = loop {
        // Files that come while the copy runs wait for more to fill frames, but not long once
        // none come: what is in the pod when the copy ends need not go again.
        let part = match parts.rx.recv_timeout(IDLE) {
            Ok(part) => part,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tar.sync()?;
                parts.rx.recv().map_err(|_| given_up())?
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(given_up()),
        };
        let behind = parts.waiting.fetch_sub(1, Ordering::Relaxed) > 1;
        // The tree is the last part: nothing comes after it to wait on.
        caught_up.set(matches!(part, Part::File { .. }) && !behind);
        match part {
            Part::File {
                name,
                path,
                held,
                key,
                done,
            } => {
                // Before the open: a removal from now on waits for the close.
                held.set(Some(key));
                let sent = tar.file_as(name, &path, &held);
                held.set(None);
                done(sent?);
            }
            Part::Mark(answer) => {
                let _ = answer.send(());
            }
            Part::Plan(plan) => {
                tar.plan(&plan)?;
                break plan;
            }
        }
    };
    tar.end()?;
    let segments_by_effort = framer.finish()?;
    // The end of the input, for the session (see `exec::run_with_input`).
    tx.blocking_send(Bytes::new())
        .map_err(|_| session_ended())?;
    tracing::info!(
        pod,
        ?segments_by_effort,
        "stream sent; checking what arrived"
    );
    Ok(plan)
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), BackendError> {
    if cancel.load(Ordering::Relaxed) {
        Err(cancelled())
    } else {
        Ok(())
    }
}

/// Compares the pod's `SIZE|./path` lines with the files sent.
fn check_arrival(sizes: &str, files: &[(String, u64)]) -> Result<(), BackendError> {
    let arrived: BTreeMap<&str, &str> = sizes
        .lines()
        .filter_map(|l| {
            let (size, path) = l.split_once('|')?;
            Some((path.strip_prefix("./")?, size))
        })
        .collect();
    for (path, size) in files {
        match arrived.get(path.as_str()) {
            Some(s) if s.parse() == Ok(*size) => {}
            Some(s) => {
                return Err(BackendError::Corrupt(format!(
                    "{path} arrived with {s} bytes where {size} were sent"
                )));
            }
            None => {
                return Err(BackendError::Corrupt(format!(
                    "{path} did not arrive (the pod found {} of {} files)",
                    arrived.len(),
                    files.len()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_size_is_checked() {
        let files = vec![("a b/c.txt".to_string(), 5), ("d".to_string(), 0)];
        let good = "5|./a b/c.txt\n0|./d\n9|./lost+found/x\n";
        assert!(check_arrival(good, &files).is_ok());

        let e = check_arrival("5|./a b/c.txt\n", &files).unwrap_err();
        assert!(e.to_string().contains("d did not arrive"), "{e}");

        let e = check_arrival("4|./a b/c.txt\n0|./d\n", &files).unwrap_err();
        assert!(
            e.to_string().contains("a b/c.txt arrived with 4 bytes"),
            "{e}"
        );
    }
}
