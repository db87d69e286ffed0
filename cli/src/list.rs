//! `snapfs list TARGET`: the snapshots of a target, newest first.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use snapfs_control::paths::Paths;
use snapfs_control::units::format_size_rounded;
use snapfs_control::wire::{Request, Response, SnapshotInfo};

use crate::exit::Exit;
use crate::{daemon, target};

/// One row of `--json`; the names are part of the CLI's contract with scripts.
#[derive(Debug, Serialize)]
struct Row<'a> {
    /// 1 is the newest.
    index: usize,
    name: &'a str,
    size: u64,
    created: String,
    expires: Option<String>,
    /// 8 hex digits.
    crc32c: Option<String>,
    state: &'static str,
    files: u64,
    is_file: bool,
}

pub fn run(
    paths: &Paths,
    target_arg: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, target_arg)?;
    r.require_target()?;
    let req = Request::List {
        target: r.target.clone(),
    };
    let mut snapshots = match daemon::call(&r.mount.socket, &req)? {
        Response::Snapshots { snapshots } => snapshots,
        other => return Err(daemon::unexpected(&other)),
    };
    // Stable, so snapshots made in the same second keep the daemon's order.
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.created));
    let rows = rows(&snapshots);
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else {
        out.write_all(table(&rows).as_bytes())?;
    }
    Ok(Exit::Success)
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn rows(snapshots: &[SnapshotInfo]) -> Vec<Row<'_>> {
    snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| Row {
            index: i + 1,
            name: &s.name,
            size: s.size,
            created: time(&s.created),
            expires: s.expires.as_ref().map(time),
            crc32c: s.crc32c.map(|c| format!("{c:08x}")),
            state: s.state.as_str(),
            files: s.files,
            is_file: s.is_file,
        })
        .collect()
}

fn table(rows: &[Row<'_>]) -> String {
    let header = ["INDEX", "NAME", "SIZE", "CREATED", "STATE", "EXPIRES"].map(str::to_owned);
    let mut lines = vec![header];
    for r in rows {
        lines.push([
            r.index.to_string(),
            r.name.to_owned(),
            format_size_rounded(r.size),
            r.created.clone(),
            r.state.to_owned(),
            r.expires.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let mut widths = [0usize; 6];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| match i {
                // Numbers read best right-aligned.
                0 | 2 => format!("{cell:>w$}"),
                _ => format!("{cell:<w$}"),
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use snapfs_control::wire::SnapshotInfo;

    fn snap(name: &str, day: u32) -> SnapshotInfo {
        SnapshotInfo {
            name: name.into(),
            created: Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap(),
            // The state type is not re-exported by the wire module; its JSON form is.
            state: serde_json::from_str("\"ready\"").unwrap(),
            is_file: false,
            size: 2048,
            files: 3,
            crc32c: Some(0xab),
            expires: None,
            id: name.into(),
        }
    }

    #[test]
    fn table_and_json_rows() {
        let s = vec![snap("new", 20), snap("old", 1)];
        let text = table(&rows(&s));
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "INDEX  NAME     SIZE  CREATED               STATE  EXPIRES"
        );
        assert_eq!(
            lines.next().unwrap(),
            "    1  new   2.0 KiB  2026-11-20T12:00:00Z  ready  -"
        );
        let v = serde_json::to_value(rows(&s)).unwrap();
        assert_eq!(v[1]["index"], 2);
        assert_eq!(v[1]["crc32c"], "000000ab");
        assert_eq!(v[1]["expires"], serde_json::Value::Null);
        assert_eq!(v[0]["created"], "2026-11-20T12:00:00Z");
    }
}
