//! `snapfs wait PATH`: block until an upload ends; the exit status says how.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use snapfs_control::paths::Paths;
use snapfs_control::wire::{Request, Response, UploadState, UploadStatus};

use crate::daemon;
use crate::exit::{self, Exit, usage};
use crate::progress::Progress;
use crate::target::{self, Place};

/// How often the progress line is refreshed.
const POLL: Duration = Duration::from_millis(250);

pub fn run(paths: &Paths, path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, path)?;
    let name = match &r.place {
        Place::Upload { name } | Place::UploadStatus { name } => name.clone(),
        Place::Snapshot { name, rest } if rest.as_os_str().is_empty() => name.clone(),
        _ => {
            return Err(usage(format!(
                "{}: expected …/{}/uploads/NAME or …/snapshots/NAME",
                path.display(),
                r.target
            )));
        }
    };
    exit::exit_on_interrupt();
    let status = follow(&r.mount.socket, &r.target, &name)?;
    report(&status, json, out)
}

/// Waits for the job to end, showing its progress on a terminal meanwhile; answers its final
/// status.
pub fn follow(socket: &Path, target: &str, name: &str) -> anyhow::Result<UploadStatus> {
    let (tx, rx) = mpsc::channel();
    let (s, t, n) = (socket.to_path_buf(), target.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        let _ = tx.send(wait_for(&s, &t, &n));
    });
    let mut progress = Progress::on_terminal();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("lost the wait on snapfsd"),
        }
        if progress.is_shown()
            && let Some(job) = current(socket, target, name)
        {
            let what = format!("{}  {}/{}", job.state.word(), job.target, job.snapshot);
            progress.show(job.bytes_done, job.bytes_total, &what);
        }
    }
}

/// The job's status now, if the daemon lists it.
fn current(socket: &Path, target: &str, name: &str) -> Option<UploadStatus> {
    match daemon::call(socket, &Request::Status).ok()? {
        Response::Status(report) => report
            .jobs
            .into_iter()
            .find(|j| j.target == target && j.snapshot == name),
        _ => None,
    }
}

/// A job's end as one JSON object: target, snapshot, state, bytes, and error and note when
/// there are.
pub fn json(status: &UploadStatus) -> serde_json::Value {
    let mut v = serde_json::json!({
        "target": status.target,
        "snapshot": status.snapshot,
        "state": status.state.word(),
        "bytes": status.bytes_total,
    });
    if let Some(err) = &status.error {
        v["error"] = err.clone().into();
    }
    if let Some(note) = &status.note {
        v["note"] = note.clone().into();
    }
    v
}

/// Blocks on the daemon until the job ends and returns its final status.
pub fn wait_for(socket: &Path, target: &str, name: &str) -> anyhow::Result<UploadStatus> {
    let req = Request::Wait {
        target: target.to_owned(),
        name: name.to_owned(),
    };
    match daemon::call(socket, &req)? {
        Response::Job(status) => Ok(status),
        other => Err(daemon::unexpected(&other)),
    }
}

/// `ready …` on stdout for a snapshot that exists; the error on stderr and status 1 otherwise.
/// With `json`, the object of [`json`] on stdout either way.
fn report(status: &UploadStatus, json: bool, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if json {
        writeln!(out, "{}", self::json(status))?;
    }
    match status.state {
        UploadState::Done => {
            if !json {
                writeln!(out, "ready {}/snapshots/{}", status.target, status.snapshot)?;
            }
            Ok(Exit::Success)
        }
        state => {
            eprintln!("snapfs: {}", failure(status, state));
            Ok(Exit::Failed)
        }
    }
}

/// One line saying why a job did not make its snapshot.
pub fn failure(status: &UploadStatus, state: UploadState) -> String {
    let what = format!("{}/uploads/{}", status.target, status.snapshot);
    match (&status.error, state) {
        (Some(err), _) => format!("{what} failed: {err}"),
        (None, UploadState::Failed) => format!("{what} failed"),
        (None, other) => format!("{what} ended while {}", other.word()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: UploadState, error: Option<&str>) -> UploadStatus {
        UploadStatus {
            kind: Default::default(),
            state,
            bytes_done: 1,
            bytes_total: 1,
            target: "cloud/local".into(),
            snapshot: "db".into(),
            error: error.map(str::to_owned),
            note: None,
        }
    }

    #[test]
    fn done_prints_ready_and_succeeds() {
        let mut out = Vec::new();
        let exit = report(&status(UploadState::Done, None), false, &mut out).unwrap();
        assert_eq!(exit, Exit::Success);
        assert_eq!(out, b"ready cloud/local/snapshots/db\n");
        let mut out = Vec::new();
        report(&status(UploadState::Done, None), true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["state"], "done");
        assert_eq!(v["snapshot"], "db");
    }

    #[test]
    fn failure_names_the_upload_and_cause() {
        let mut out = Vec::new();
        let exit = report(
            &status(UploadState::Failed, Some("EDQUOT")),
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(exit, Exit::Failed);
        assert!(out.is_empty());
        assert_eq!(
            failure(
                &status(UploadState::Failed, Some("quota")),
                UploadState::Failed
            ),
            "cloud/local/uploads/db failed: quota"
        );
    }
}
