//! `snapfs verify SNAPSHOT`: the daemon reads every block and checks it; we report.

use std::io::Write;
use std::path::Path;

use snapfs_control::paths::Paths;
use snapfs_control::units::format_size_rounded;
use snapfs_control::wire::{Request, Response, VerifyReport};

use crate::exit::Exit;
use crate::progress::Progress;
use crate::{daemon, target};

pub fn run(
    paths: &Paths,
    snapshot: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, snapshot)?;
    let name = r.snapshot()?;
    let mut progress = Progress::on_terminal();
    let what = format!("verifying {name}");
    let req = Request::Verify {
        target: r.target.clone(),
        name,
        progress: progress.is_shown(),
    };
    let answer = daemon::call_watching(&r.mount.socket, &req, |done, total| {
        progress.show(done, total, &what)
    });
    progress.clear();
    let report = match answer? {
        Response::Verified(report) => report,
        other => return Err(daemon::unexpected(&other)),
    };
    if json {
        writeln!(out, "{}", as_json(&report))?;
    } else {
        out.write_all(text(&report).as_bytes())?;
    }
    Ok(if report.errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

fn as_json(report: &VerifyReport) -> serde_json::Value {
    let errors: Vec<serde_json::Value> = report
        .errors
        .iter()
        .map(|(path, why)| serde_json::json!({ "path": path, "error": why }))
        .collect();
    serde_json::json!({ "files": report.files, "bytes": report.bytes, "errors": errors })
}

fn text(report: &VerifyReport) -> String {
    let mut s = format!(
        "checked {} files, {} ({} bytes)\n",
        report.files,
        format_size_rounded(report.bytes),
        report.bytes
    );
    for (path, why) in &report.errors {
        s.push_str(&format!("error: {path}: {why}\n"));
    }
    if !report.errors.is_empty() {
        s.push_str(&format!(
            "{} of {} files failed\n",
            report.errors.len(),
            report.files
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_error() {
        let report = VerifyReport {
            files: 2,
            bytes: 2048,
            errors: vec![("a/b".into(), "crc32c mismatch".into())],
        };
        assert_eq!(
            text(&report),
            "checked 2 files, 2.0 KiB (2048 bytes)\nerror: a/b: crc32c mismatch\n1 of 2 files failed\n"
        );
        assert_eq!(
            as_json(&report).to_string(),
            r#"{"bytes":2048,"errors":[{"error":"crc32c mismatch","path":"a/b"}],"files":2}"#
        );
    }
}
