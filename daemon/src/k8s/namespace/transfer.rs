//! The data of an upload (DESIGN §6 step 4): the staged tree streamed into the upload pod as
//! a tar over exec, compressed, with exact progress, and checked on arrival file by file.

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
    /// arrived: every file's MD5 as the pod computes it from what it wrote.
    pub(super) async fn transfer(
        &self,
        pod: &str,
        plan: tarball::Plan,
        restricted: bool,
        progress: &Progress,
        cancel: &AtomicBool,
        limit: Duration,
    ) -> Result<(), BackendError> {
        // Every file that arrived is read back for its MD5, by `find -exec md5sum {} +`: one
        // md5sum at a time, so their lines never cut into each other, and no list of names
        // passed through a pipe (busybox `xargs -0 -P` was seen to split a name in two).
        let script = format!(
            "set -e\n\
             {{ {unframe}; }} | tar -x -f - -C {DATA} \"$1\"\n\
             cd {DATA} && {{ find . -type f -exec md5sum {{}} + 2>/dev/null || true; }}",
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
        let codec = Codec::from_answer(&exec::run(&pods, pod, CONTAINER, exec::sh(frames::HAS_LZOP, &[])).await?.stdout);
        tracing::info!(pod, ?codec, "stream compression");
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stop = Arc::new(AtomicBool::new(false));
        // Bytes of the stream framed and handed to the exec session; the channel holds at most
        // a few frames of them.
        let sent = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(plan);
        // The files' MD5s are taken beside the stream, on another core where there is one.
        let hasher = {
            let plan = plan.clone();
            tokio::task::spawn_blocking(move || tarball::digests(&plan))
        };
        let producer = {
            let (plan, stop, sent) = (plan.clone(), stop.clone(), sent.clone());
            let pod_name = pod.to_string();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let session_ended = || {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the exec session ended")
                };
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
                framer.finish()?;
                // The end of the input, for the session (see `exec::run_with_input`).
                tx.blocking_send(Bytes::new())
                    .map_err(|_| session_ended())?;
                tracing::info!(pod = pod_name, "stream sent; checking what arrived");
                Ok(())
            })
        };
        let session = exec::run_with_input(&pods, pod, CONTAINER, command, Some(rx), limit);
        tokio::pin!(session);
        // Progress and cancellation are looked at while the bytes flow.
        let out = loop {
            tokio::select! {
                out = &mut session => break out,
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
        let digests = hasher
            .await
            .map_err(|e| BackendError::Other(format!("checksums: {e}")))?
            .map_err(|e| BackendError::Other(format!("reading the upload: {e}")))?;
        let out = out?;
        progress.done.store(total, Ordering::Relaxed);
        if let Some(f) = &out.failure {
            return Err(exec::failed(DATA, &out, f));
        }
        check_arrival(&String::from_utf8_lossy(&out.stdout), &plan.files, &digests)
    }
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), BackendError> {
    if cancel.load(Ordering::Relaxed) {
        Err(cancelled())
    } else {
        Ok(())
    }
}

/// Compares `md5sum` lines (`HASH  ./path`) with what was sent.
fn check_arrival(
    md5sum: &str,
    files: &[(String, u64)],
    digests: &[[u8; 16]],
) -> Result<(), BackendError> {
    let arrived: BTreeMap<&str, &str> = md5sum
        .lines()
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ")?;
            Some((path.strip_prefix("./")?, hash))
        })
        .collect();
    for ((path, size), digest) in files.iter().zip(digests) {
        match arrived.get(path.as_str()) {
            Some(h) if *h == hex(digest) => {}
            Some(_) => {
                return Err(BackendError::Corrupt(format!(
                    "{path} ({size} bytes) arrived with other content than was sent"
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_checked_file_by_file() {
        use md5::{Digest, Md5};
        let files = vec![("a b/c.txt".to_string(), 5), ("d".to_string(), 0)];
        let digests: Vec<[u8; 16]> = vec![Md5::digest(b"hello").into(), Md5::digest(b"").into()];
        let good = format!(
            "{}  ./a b/c.txt\n{}  ./d\n{}  ./lost+found/x\n",
            hex(&digests[0]),
            hex(&digests[1]),
            hex(&digests[1])
        );
        assert!(check_arrival(&good, &files, &digests).is_ok());
        let missing = format!("{}  ./a b/c.txt\n", hex(&digests[0]));
        let e = check_arrival(&missing, &files, &digests).unwrap_err();
        assert!(e.to_string().contains("d did not arrive"), "{e}");
        let wrong = format!(
            "{}  ./a b/c.txt\n{}  ./d\n",
            hex(&digests[1]),
            hex(&digests[1])
        );
        let e = check_arrival(&wrong, &files, &digests).unwrap_err();
        assert!(e.to_string().contains("a b/c.txt"), "{e}");
    }
}
