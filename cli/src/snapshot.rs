//! `snapfs snapshot TARGET [SOURCE]`: the daemon reads SOURCE in place, or (with no SOURCE,
//! for a HiveMQ cluster) has the broker make a backup; we show progress and report the
//! snapshot it became.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use snapfs_control::paths::Paths;
use snapfs_control::wire::{Request, Response, UploadState, UploadStatus};

use crate::exit::{self, Exit, usage};
use crate::{daemon, target, wait};

pub struct Config {
    pub target: PathBuf,
    pub source: Option<PathBuf>,
    pub name: Option<String>,
    pub json: bool,
    /// Size of the volume made for the upload (Kubernetes).
    pub size: Option<u64>,
}

pub fn run(paths: &Paths, cfg: &Config, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, &cfg.target)?;
    r.require_target()?;
    let name = match &cfg.source {
        Some(source) => start_local(&r, source, cfg.name.as_deref(), cfg.size)?,
        None if cfg.name.is_some() => {
            return Err(usage(
                "--name needs a SOURCE: a snapshot made without one is named by its target",
            ));
        }
        None => start_backup(&r)?,
    };

    // The job runs in the daemon whatever happens here, so Ctrl-C only stops watching.
    exit::exit_on_interrupt();
    let status = wait::follow(&r.mount.socket, &r.target, &name)?;
    report(&status, cfg.json, out)
}

/// Asks the daemon to read `source` into a new snapshot; answers its name.
fn start_local(
    r: &target::Resolved,
    source: &Path,
    name: Option<&str>,
    size: Option<u64>,
) -> anyhow::Result<String> {
    let source =
        std::fs::canonicalize(source).map_err(|e| usage(format!("{}: {e}", source.display())))?;
    let name = match name {
        Some(n) => n.to_owned(),
        None => default_name(&source, Utc::now())?,
    };
    let req = Request::Snapshot {
        target: r.target.clone(),
        source,
        name: name.clone(),
        size,
    };
    match daemon::call(&r.mount.socket, &req)
        .with_context(|| format!("snapshot {}/snapshots/{name}", r.target))?
    {
        Response::Job(_) | Response::Done => Ok(name),
        other => Err(daemon::unexpected(&other)),
    }
}

/// Asks the daemon to have the target make a snapshot itself; answers its name.
fn start_backup(r: &target::Resolved) -> anyhow::Result<String> {
    let req = Request::Backup {
        target: r.target.clone(),
    };
    match daemon::call(&r.mount.socket, &req).with_context(|| format!("snapshot {}", r.target))? {
        Response::Job(job) => Ok(job.snapshot),
        other => Err(daemon::unexpected(&other)),
    }
}

/// `<basename>-<UTC yyyy-mm-ddTHH-MM-SS>`.
fn default_name(source: &Path, now: DateTime<Utc>) -> anyhow::Result<String> {
    let base = source
        .file_name()
        .and_then(|b| b.to_str())
        .ok_or_else(|| usage(format!("{}: give the snapshot a --name", source.display())))?;
    Ok(format!("{base}-{}", now.format("%Y-%m-%dT%H-%M-%S")))
}

fn report(status: &UploadStatus, json: bool, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let ok = status.state == UploadState::Done;
    if json {
        writeln!(out, "{}", wait::json(status))?;
    } else if ok {
        writeln!(out, "{}/snapshots/{}", status.target, status.snapshot)?;
        if let Some(note) = &status.note {
            eprintln!("snapfs: note: {note}");
        }
    }
    if ok {
        return Ok(Exit::Success);
    }
    eprintln!("snapfs: {}", wait::failure(status, status.state));
    Ok(Exit::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn default_name_is_basename_and_utc_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 9, 5, 3).unwrap();
        assert_eq!(
            default_name(Path::new("/data/fixtures"), now).unwrap(),
            "fixtures-2026-11-20T09-05-03"
        );
        assert!(default_name(Path::new("/"), now).is_err());
    }

    #[test]
    fn json_report() {
        let status = UploadStatus {
            kind: Default::default(),
            state: UploadState::Done,
            bytes_done: 7,
            bytes_total: 7,
            target: "cloud/local".into(),
            snapshot: "db".into(),
            error: None,
            note: None,
        };
        let mut out = Vec::new();
        assert_eq!(report(&status, true, &mut out).unwrap(), Exit::Success);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"target": "cloud/local", "snapshot": "db", "state": "done", "bytes": 7})
        );
        out.clear();
        assert_eq!(report(&status, false, &mut out).unwrap(), Exit::Success);
        assert_eq!(out, b"cloud/local/snapshots/db\n");
    }
}
