//! `snapfs status`: the jobs of every active mount, for people, scripts or Prometheus.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use snapfs_control::client::active_mounts;
use snapfs_control::paths::Paths;
use snapfs_control::prometheus;
use snapfs_control::wire::{Request, Response, StatusReport};

use crate::daemon;
use crate::exit::Exit;
use crate::human;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Prometheus,
}

#[derive(Debug, Serialize)]
struct MountStatus {
    mountpoint: PathBuf,
    status: StatusReport,
}

pub fn run(paths: &Paths, format: Format, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let mut all = Vec::new();
    for m in active_mounts(paths)? {
        let status = match daemon::call(&m.socket, &Request::Status)
            .with_context(|| m.mountpoint.display().to_string())?
        {
            Response::Status(s) => s,
            other => return Err(daemon::unexpected(&other)),
        };
        all.push(MountStatus {
            mountpoint: m.mountpoint,
            status,
        });
    }
    match format {
        Format::Human => out.write_all(human_text(&all).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &all)?;
            writeln!(out)?;
        }
        Format::Prometheus => out.write_all(prometheus(&all).as_bytes())?,
    }
    Ok(Exit::Success)
}

fn human_text(all: &[MountStatus]) -> String {
    let mut s = String::new();
    if all.is_empty() {
        s.push_str("no snapfs mount is active\n");
    }
    for m in all {
        let _ = writeln!(s, "{}", m.mountpoint.display());
        if m.status.jobs.is_empty() {
            s.push_str("  no jobs\n");
        }
        for job in &m.status.jobs {
            let _ = writeln!(s, "  {}", human::job_line(job));
            if let Some(err) = &job.error {
                let _ = writeln!(s, "      error: {err}");
            }
            if let Some(note) = &job.note {
                let _ = writeln!(s, "      note: {note}");
            }
        }
    }
    s
}

/// The metrics in the Prometheus text exposition format.
fn prometheus(all: &[MountStatus]) -> String {
    let mounts: Vec<(&Path, &StatusReport)> = all
        .iter()
        .map(|m| (m.mountpoint.as_path(), &m.status))
        .collect();
    let mut text = prometheus::Text::new();
    prometheus::status(&mut text, &mounts);
    text.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapfs_control::wire::{CacheStats, Metrics, TargetMetrics, UploadState, UploadStatus};

    fn sample() -> Vec<MountStatus> {
        let job = |state, error: Option<&str>| UploadStatus {
            kind: Default::default(),
            state,
            bytes_done: 5,
            bytes_total: 10,
            target: "cloud/local".into(),
            snapshot: "db".into(),
            error: error.map(str::to_owned),
            note: None,
        };
        vec![MountStatus {
            mountpoint: PathBuf::from("/m"),
            status: StatusReport {
                jobs: vec![
                    job(UploadState::Uploading, None),
                    job(UploadState::Failed, Some("bucket gone")),
                ],
                metrics: Metrics {
                    targets: vec![TargetMetrics {
                        target: "cloud/local".into(),
                        get_bytes: 42,
                        ..Default::default()
                    }],
                    cache: CacheStats {
                        memory_hits: 3,
                        disk_hits: 4,
                        misses: 1,
                        ..Default::default()
                    },
                },
            },
        }]
    }

    #[test]
    fn human_shows_bars_and_errors() {
        let text = human_text(&sample());
        assert!(text.starts_with("/m\n  [#####.....]  50%"), "{text}");
        assert!(text.contains("      error: bucket gone\n"), "{text}");
        assert_eq!(human_text(&[]), "no snapfs mount is active\n");
    }

    #[test]
    fn prometheus_labels_each_mount() {
        let text = prometheus(&sample());
        let line = "snapfs_jobs{mountpoint=\"/m\",state=\"uploading\"} 1";
        assert!(text.lines().any(|l| l == line), "{text}");
    }
}
