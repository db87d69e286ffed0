//! The data of an upload (DESIGN §6 step 4): the staged tree streamed into the upload pod as
//! a tar over exec, compressed, with exact progress, and checked as it arrives: every block
//! of the stream against the checksum its frame carries (`frames`), then the size of every
//! file on the volume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use snapfs_fs::backend::BackendError;

use super::manifests::{CONTAINER, DATA};
use super::{KubeTarget, Progress};
use crate::k8s::errors::cancelled;
use crate::k8s::frames::{self, Codec};
use crate::k8s::{exec, tarball};

/// How often progress and cancellation are looked at while the bytes flow.
const POLL: Duration = Duration::from_millis(250);

impl KubeTarget {
    /// Streams the tar into the pod, compressed in frames (`frames`), and checks what
    /// arrived: the pod's decompressor checks every block of the stream against the checksum
    /// taken here, any failure in the pipe fails the whole (`pipefail`), and the size of every
    /// file on the volume is compared with the one sent.
    pub(super) async fn transfer(
        &self,
        pod: &str,
        plan: tarball::Plan,
        restricted: bool,
        progress: &Progress,
        cancel: &AtomicBool,
        limit: Duration,
    ) -> Result<(), BackendError> {
        // The sizes come one `stat` at a time, so that their lines never cut into each other,
        // and no list of names passes through a pipe. A shell without `pipefail` (an old
        // dash) still fails the upload on a refused frame, through the sizes: tar then sees
        // the stream end early and stops, short of the files after it.
        let script = format!(
            "set -e\n\
             (set -o pipefail) 2>/dev/null && set -o pipefail\n\
             {{ {unframe}; }} | tar -x -f - -C {DATA} \"$1\"\n\
             cd {DATA} && {{ find . -type f -exec stat -c '%s|%n' {{}} + 2>/dev/null || true; }}",
            unframe = frames::UNFRAME
        );
        // As root tar keeps owners by number; as anyone else it cannot, and is told so.
        let owners = if restricted { "-o" } else { "--numeric-owner" };
        let total = plan.total;
        let command = exec::sh(&script, &[owners]);
        let pods = exec::Pods {
            api: self.pods(),
            counters: self.counters.clone(),
        };
        // The pod is asked which decompressors it has while the stream's session starts: only
        // the first frame waits for the answer. A pod that cannot be asked gets gzip, which any
        // image with a shell opens.
        let (answer, asked) = tokio::sync::oneshot::channel();
        let probe = async {
            let unpackers = exec::sh(frames::UNPACKERS, &[]);
            let codec = match exec::run(&pods, pod, CONTAINER, unpackers).await {
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
        let stop = Arc::new(AtomicBool::new(false));
        // Bytes of the stream framed and handed to the exec session; the channel holds at most
        // a few frames of them.
        let sent = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(plan);
        let producer = {
            let (plan, stop, sent) = (plan.clone(), stop.clone(), sent.clone());
            let pod_name = pod.to_string();
            // What the stream logs belongs to the upload's job, as the rest of its lines do.
            let job = tracing::Span::current();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let _job = job.enter();
                let session_ended = || {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the exec session ended")
                };
                // No answer means the session ended before the pod was asked.
                let codec = asked.blocking_recv().map_err(|_| session_ended())?;
                let mut framer = frames::Framer::new(codec, |frame| {
                    tx.blocking_send(frame).map_err(|_| session_ended())
                });
                tarball::write(&plan, |piece| {
                    if stop.load(Ordering::Relaxed) {
                        return Err(std::io::Error::other("cancelled"));
                    }
                    framer.push(&piece)?;
                    sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    Ok(())
                })?;
                let segments_by_effort = framer.finish()?;
                // The end of the input, for the session (see `exec::run_with_input`).
                tx.blocking_send(Bytes::new())
                    .map_err(|_| session_ended())?;
                tracing::info!(
                    pod = pod_name,
                    ?segments_by_effort,
                    "stream sent; checking what arrived"
                );
                Ok(())
            })
        };
        let session = exec::run_with_input(&pods, pod, CONTAINER, command, Some(rx), limit);
        tokio::pin!(session);
        // Progress and cancellation are looked at while the bytes flow.
        let mut probing = true;
        let out = loop {
            tokio::select! {
                out = &mut session => break out,
                () = &mut probe, if probing => probing = false,
                () = tokio::time::sleep(POLL) => {
                    progress.done.store(sent.load(Ordering::Relaxed), Ordering::Relaxed);
                    if cancel.load(Ordering::Relaxed) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        let streamed = producer
            .await
            .map_err(|e| BackendError::Other(format!("tar stream: {e}")))?;
        check_cancel(cancel)?;
        match streamed {
            Ok(()) => {}
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
        }
        let out = out?;
        progress.done.store(total, Ordering::Relaxed);
        if let Some(f) = &out.failure {
            return Err(exec::failed(DATA, &out, f));
        }
        check_arrival(&String::from_utf8_lossy(&out.stdout), &plan.files)
    }
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
