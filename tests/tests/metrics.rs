//! `[metrics] listen`: the daemon serves Prometheus text over HTTP, scraped here with curl and
//! read with the Prometheus client library's own parser.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use snapfs_tests::emulators::installed;
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, sh};

/// Parses exposition text with prometheus_client and answers its families as JSON:
/// `{name: {"type": ..., "samples": [[name, labels, value], ...]}}`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

fn parse(text: &str) -> Value {
    let python = installed(
        "venv/bin/python",
        "prometheus_client (pip prometheus-client, in the venv .ci/run makes)",
    );
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the text");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {family}: {samples:?}"))
}

#[test]
fn metrics_are_served_over_http_and_parse() {
    if !fuse_available() {
        return;
    }
    // Port 0: the kernel picks a free one, and the log says which.
    let m = Mount::start_with(&format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let url = m
        .log()
        .lines()
        .find_map(|l| l.split("metrics at ").nth(1).map(str::to_owned))
        .expect("the address in the log");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );

    // Something to count: an upload, a read of it, and a name that is not there.
    let src = m.root.path().join("data.bin");
    sh(&format!(
        "head -c 300000 /dev/urandom > '{}'",
        src.display()
    ));
    m.upload(&src, "one");
    sh(&format!(
        "cmp '{}' '{}/snapshots/one'",
        src.display(),
        m.target().display()
    ));
    assert!(!m.target().join("snapshots/missing").exists());

    let headers = sh(&format!("curl -sS -f -D - -o /dev/null '{url}'"));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let families = parse(&sh(&format!("curl -sS -f '{url}'")));

    let mp = m.mountpoint.to_str().expect("utf-8");
    let store = [("mountpoint", mp), ("target", "cloud/local")];
    assert!(
        sample(
            &families,
            "snapfs_store_put_bytes",
            "snapfs_store_put_bytes_total",
            &store
        ) > 0.0
    );
    assert_eq!(families["snapfs_store_put_bytes"]["type"], "counter");
    let failed = [("mountpoint", mp), ("state", "failed")];
    assert_eq!(
        sample(&families, "snapfs_jobs", "snapfs_jobs", &failed),
        0.0
    );
    assert!(
        sample(
            &families,
            "snapfs_cache_misses",
            "snapfs_cache_misses_total",
            &[]
        ) > 0.0,
        "the first read fetched"
    );
    let ok = [("op", "lookup"), ("outcome", "ok")];
    let ops = "snapfs_fuse_operations";
    assert!(sample(&families, ops, "snapfs_fuse_operations_total", &ok) > 0.0);
    let enoent = [("op", "lookup"), ("outcome", "ENOENT")];
    assert!(sample(&families, ops, "snapfs_fuse_operations_total", &enoent) >= 1.0);
    let read = [("op", "read")];
    let latency = "snapfs_fuse_operation_seconds";
    assert_eq!(families[latency]["type"], "histogram");
    let count = sample(
        &families,
        latency,
        "snapfs_fuse_operation_seconds_count",
        &read,
    );
    let inf = [("op", "read"), ("le", "+Inf")];
    assert_eq!(
        sample(
            &families,
            latency,
            "snapfs_fuse_operation_seconds_bucket",
            &inf
        ),
        count
    );
    assert!(count > 0.0);

    // Store requests by operation: the upload's puts, the read's ranged gets.
    let store_latency = "snapfs_store_request_seconds";
    assert_eq!(families[store_latency]["type"], "histogram");
    for op in ["put", "get_range", "list"] {
        let labels = [("target", "cloud/local"), ("op", op)];
        let n = sample(
            &families,
            store_latency,
            "snapfs_store_request_seconds_count",
            &labels,
        );
        assert!(n > 0.0, "no {op} timed");
    }
    assert_eq!(
        sample(
            &families,
            "snapfs_store_retries",
            "snapfs_store_retries_total",
            &store
        ),
        0.0
    );

    // Only /metrics is there; anything else is a plain 404.
    let other = url.replace("/metrics", "/other");
    let code = sh(&format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' '{other}'"
    ));
    assert_eq!(code, "404");
}
