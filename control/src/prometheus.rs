//! The Prometheus text exposition format (version 0.0.4): what `snapfs status --prometheus`
//! prints and what the daemon serves at `/metrics` when `[metrics] listen` is set.

use std::fmt::Write as _;
use std::path::Path;

use crate::wire::{STORE_LATENCY_BOUNDS, StatusReport, TargetMetrics, UploadState};

/// The media type of the format, for an HTTP answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped as the format requires.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts of observations at or below each bound, as a histogram family shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds in seconds (or whatever the family measures), ascending; `+Inf` is added.
    pub bounds: &'static [f64],
    /// Observations at or below each bound, not cumulative: one count per bound, then the rest.
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// A text being written, one family after another.
#[derive(Debug, Default)]
pub struct Text(String);

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// A counter or gauge family; each sample is its labels (`a="x",b="y"`, maybe empty) and
    /// its value.
    pub fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, u64)>,
    ) {
        self.head(name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{} {value}", braces(&labels));
        }
    }

    /// A histogram family: per series its labels and its counts.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (String, Histogram)>,
    ) {
        self.head(name, "histogram", help);
        for (labels, h) in series {
            let sep = if labels.is_empty() { "" } else { "," };
            let mut below = 0u64;
            let bounds = h.bounds.iter().map(|b| b.to_string());
            for (i, le) in bounds.chain(["+Inf".to_string()]).enumerate() {
                below += h.counts.get(i).copied().unwrap_or(0);
                let _ = writeln!(self.0, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {below}");
            }
            let _ = writeln!(self.0, "{name}_sum{} {}", braces(&labels), h.sum);
            let _ = writeln!(self.0, "{name}_count{} {below}", braces(&labels));
        }
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub fn finish(self) -> String {
        self.0
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// The families of a daemon's status (store traffic per target, the cache, jobs by state), of
/// each mount labelled with its mount point.
pub fn status(text: &mut Text, mounts: &[(&Path, &StatusReport)]) {
    let mountpoint = |m: &Path| format!("mountpoint=\"{}\"", label(&m.to_string_lossy()));
    type Pick = fn(&TargetMetrics) -> u64;
    let store: [(&str, &str, Pick); 7] = [
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
        (
            "retries",
            "Store requests tried again after a transient failure (for cloud remotes: each failed try of their HTTP client's retry loop, the last one of a request that gave up included).",
            |t| t.retries,
        ),
    ];
    for (what, help, pick) in store {
        let samples = mounts.iter().flat_map(|(m, s)| {
            s.metrics.targets.iter().map(move |t| {
                let labels = format!("{},target=\"{}\"", mountpoint(m), label(&t.target));
                (labels, pick(t))
            })
        });
        text.family(
            &format!("snapfs_store_{what}_total"),
            "counter",
            help,
            samples,
        );
    }

    text.histogram(
        "snapfs_store_request_seconds",
        "How long store requests took to answer (for reads: until the first byte), by operation.",
        mounts.iter().flat_map(|(m, s)| {
            s.metrics.targets.iter().flat_map(move |t| {
                t.latency.iter().map(move |l| {
                    let labels = format!(
                        "{},target=\"{}\",op=\"{}\"",
                        mountpoint(m),
                        label(&t.target),
                        label(&l.op)
                    );
                    let h = Histogram {
                        bounds: STORE_LATENCY_BOUNDS,
                        counts: l.counts.clone(),
                        sum: l.sum_micros as f64 / 1e6,
                    };
                    (labels, h)
                })
            })
        }),
    );

    let per_mount = |extra: &str, pick: &dyn Fn(&StatusReport) -> u64| -> Vec<(String, u64)> {
        mounts
            .iter()
            .map(|(m, s)| (format!("{}{extra}", mountpoint(m)), pick(s)))
            .collect()
    };
    let mut hits = per_mount(",tier=\"memory\"", &|s| s.metrics.cache.memory_hits);
    hits.extend(per_mount(",tier=\"disk\"", &|s| s.metrics.cache.disk_hits));
    text.family(
        "snapfs_cache_hits_total",
        "counter",
        "Reads served from the cache.",
        hits,
    );
    text.family(
        "snapfs_cache_misses_total",
        "counter",
        "Reads that had to fetch from the store.",
        per_mount("", &|s| s.metrics.cache.misses),
    );
    text.family(
        "snapfs_cache_fetched_bytes_total",
        "counter",
        "Bytes fetched into the cache.",
        per_mount("", &|s| s.metrics.cache.fetched_bytes),
    );
    let mut held = per_mount(",tier=\"memory\"", &|s| s.metrics.cache.memory_bytes);
    held.extend(per_mount(",tier=\"disk\"", &|s| s.metrics.cache.disk_bytes));
    text.family(
        "snapfs_cache_bytes",
        "gauge",
        "Bytes held by the cache.",
        held,
    );
    text.family(
        "snapfs_cache_evicted_bytes_total",
        "counter",
        "Bytes the cache let go to stay within its limits.",
        per_mount("", &|s| s.metrics.cache.evicted_bytes),
    );
    text.family(
        "snapfs_cache_corrupt_blocks_total",
        "counter",
        "Cached blocks found damaged on disk (checksum) and fetched again.",
        per_mount("", &|s| s.metrics.cache.corrupt_dropped),
    );

    let mut jobs = Vec::new();
    for state in UploadState::ALL {
        let count =
            move |s: &StatusReport| s.jobs.iter().filter(|j| j.state == state).count() as u64;
        jobs.extend(per_mount(&format!(",state=\"{}\"", state.word()), &count));
    }
    text.family("snapfs_jobs", "gauge", "Upload jobs by state.", jobs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CacheStats, Metrics, UploadStatus};

    fn sample() -> StatusReport {
        let job = |state| UploadStatus {
            kind: Default::default(),
            state,
            bytes_done: 5,
            bytes_total: 10,
            target: "cloud/local".into(),
            snapshot: "db".into(),
            error: None,
            note: None,
        };
        StatusReport {
            jobs: vec![job(UploadState::Uploading), job(UploadState::Failed)],
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
        }
    }

    #[test]
    fn status_families() {
        let report = sample();
        let mut text = Text::new();
        status(&mut text, &[(Path::new("/m"), &report)]);
        let text = text.finish();
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
    fn histogram_buckets_are_cumulative() {
        let mut text = Text::new();
        let h = Histogram {
            bounds: &[0.001, 0.1],
            counts: vec![2, 0, 1],
            sum: 3.5,
        };
        text.histogram("x_seconds", "X.", [("op=\"read\"".to_string(), h)]);
        let text = text.finish();
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{op=\"read\",le=\"0.001\"} 2",
            "x_seconds_bucket{op=\"read\",le=\"0.1\"} 2",
            "x_seconds_bucket{op=\"read\",le=\"+Inf\"} 3",
            "x_seconds_sum{op=\"read\"} 3.5",
            "x_seconds_count{op=\"read\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
