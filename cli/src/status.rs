//! `snapfs status`: the jobs of every active mount, for people, scripts or Prometheus.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use snapfs_control::client::active_mounts;
use snapfs_control::paths::Paths;
use snapfs_control::wire::{Request, Response, StatusReport, UploadState};

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

/// A label value with `\`, `"` and newlines escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in the Prometheus text exposition format, one family after another.
fn prometheus(all: &[MountStatus]) -> String {
    let mut s = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(s, "{name}{{{labels}}} {value}");
        }
    };
    type Pick = fn(&snapfs_control::wire::TargetMetrics) -> u64;
    let store: [(&str, &str, Pick); 6] = [
        ("get_requests", "Reads sent to the store.", |t| {
            t.get_requests
        }),
        ("get_bytes", "Bytes read from the store.", |t| t.get_bytes),
        ("put_requests", "Writes sent to the store.", |t| {
            t.put_requests
        }),
        ("put_bytes", "Bytes written to the store.", |t| t.put_bytes),
        ("list_requests", "Listings sent to the store.", |t| {
            t.list_requests
        }),
        ("errors", "Store requests that failed.", |t| t.errors),
    ];
    for (what, help, pick) in store {
        let samples = all
            .iter()
            .flat_map(|m| {
                m.status.metrics.targets.iter().map(move |t| {
                    (
                        format!(
                            "mountpoint=\"{}\",target=\"{}\"",
                            label(&m.mountpoint.to_string_lossy()),
                            label(&t.target)
                        ),
                        pick(t),
                    )
                })
            })
            .collect();
        family(
            &format!("snapfs_store_{what}_total"),
            "counter",
            help,
            samples,
        );
    }

    let per_mount = |extra: &str, pick: &dyn Fn(&MountStatus) -> u64| -> Vec<(String, u64)> {
        all.iter()
            .map(|m| {
                (
                    format!(
                        "mountpoint=\"{}\"{extra}",
                        label(&m.mountpoint.to_string_lossy())
                    ),
                    pick(m),
                )
            })
            .collect()
    };
    let mut hits = per_mount(",tier=\"memory\"", &|m| m.status.metrics.cache.memory_hits);
    hits.extend(per_mount(",tier=\"disk\"", &|m| {
        m.status.metrics.cache.disk_hits
    }));
    family(
        "snapfs_cache_hits_total",
        "counter",
        "Reads served from the cache.",
        hits,
    );
    family(
        "snapfs_cache_misses_total",
        "counter",
        "Reads that had to fetch from the store.",
        per_mount("", &|m| m.status.metrics.cache.misses),
    );
    family(
        "snapfs_cache_fetched_bytes_total",
        "counter",
        "Bytes fetched into the cache.",
        per_mount("", &|m| m.status.metrics.cache.fetched_bytes),
    );
    let mut held = per_mount(",tier=\"memory\"", &|m| m.status.metrics.cache.memory_bytes);
    held.extend(per_mount(",tier=\"disk\"", &|m| {
        m.status.metrics.cache.disk_bytes
    }));
    family(
        "snapfs_cache_bytes",
        "gauge",
        "Bytes held by the cache.",
        held,
    );
    family(
        "snapfs_cache_evicted_bytes_total",
        "counter",
        "Bytes the cache let go to stay within its limits.",
        per_mount("", &|m| m.status.metrics.cache.evicted_bytes),
    );
    family(
        "snapfs_cache_corrupt_blocks_total",
        "counter",
        "Cached blocks found damaged on disk (checksum) and fetched again.",
        per_mount("", &|m| m.status.metrics.cache.corrupt_dropped),
    );

    let mut jobs = Vec::new();
    for state in [
        UploadState::Staging,
        UploadState::Queued,
        UploadState::Uploading,
        UploadState::Done,
        UploadState::Failed,
    ] {
        let word = human::state(state);
        let count =
            move |m: &MountStatus| m.status.jobs.iter().filter(|j| j.state == state).count() as u64;
        jobs.extend(per_mount(&format!(",state=\"{word}\""), &count));
    }
    family("snapfs_jobs", "gauge", "Upload jobs by state.", jobs);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapfs_control::wire::{CacheStats, Metrics, TargetMetrics, UploadStatus};

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
    fn prometheus_families() {
        let text = prometheus(&sample());
        for line in [
            "# TYPE snapfs_store_get_bytes_total counter",
            "snapfs_store_get_bytes_total{mountpoint=\"/m\",target=\"cloud/local\"} 42",
            "snapfs_cache_hits_total{mountpoint=\"/m\",tier=\"memory\"} 3",
            "snapfs_cache_hits_total{mountpoint=\"/m\",tier=\"disk\"} 4",
            "snapfs_cache_misses_total{mountpoint=\"/m\"} 1",
            "snapfs_jobs{mountpoint=\"/m\",state=\"uploading\"} 1",
            "snapfs_jobs{mountpoint=\"/m\",state=\"failed\"} 1",
            "snapfs_jobs{mountpoint=\"/m\",state=\"queued\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
