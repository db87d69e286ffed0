//! `snapfs wait PATH`: block until an upload ends; the exit status says how.

use std::io::Write;
use std::path::Path;

use snapfs_control::paths::Paths;
use snapfs_control::wire::{Request, Response, UploadState, UploadStatus};

use crate::exit::{self, Exit, usage};
use crate::target::{self, Place};
use crate::daemon;

pub fn run(paths: &Paths, path: &Path, out: &mut dyn Write) -> anyhow::Result<Exit> {
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
    let status = wait_for(&r.mount.socket, &r.target, &name)?;
    report(&status, out)
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
fn report(status: &UploadStatus, out: &mut dyn Write) -> anyhow::Result<Exit> {
    match status.state {
        UploadState::Done => {
            writeln!(out, "ready {}/snapshots/{}", status.target, status.snapshot)?;
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
        let exit = report(&status(UploadState::Done, None), &mut out).unwrap();
        assert_eq!(exit, Exit::Success);
        assert_eq!(out, b"ready cloud/local/snapshots/db\n");
    }

    #[test]
    fn failure_names_the_upload_and_cause() {
        let mut out = Vec::new();
        let exit = report(&status(UploadState::Failed, Some("EDQUOT")), &mut out).unwrap();
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
