//! `snapfs gc [TARGET]`: what cleanup would delete now, and why; with `--yes`, delete it.

use std::io::Write;
use std::path::PathBuf;

use chrono::SecondsFormat;
use snapfs_control::client::active_mounts;
use snapfs_control::paths::Paths;
use snapfs_control::units::format_size_rounded;
use snapfs_control::wire::{GcReason, GcReport, MountRecord, Request, Response};

use crate::exit::{Exit, usage};
use crate::progress::Progress;
use crate::{daemon, target};

pub struct Config {
    /// One target; None: every target of the only active mount.
    pub target: Option<PathBuf>,
    /// Only report; nothing is deleted unless the user said `--yes`.
    pub dry_run: bool,
    pub json: bool,
}

pub fn run(paths: &Paths, cfg: &Config, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let (mount, target) = match &cfg.target {
        Some(arg) => {
            let r = target::resolve(paths, arg)?;
            r.require_target()?;
            (r.mount, Some(r.target))
        }
        None => (only_mount(paths)?, None),
    };
    // Repacking is what can take long: it moves what snapshots still use out of mostly unused
    // packs. Nothing is drawn while there is none.
    let mut progress = Progress::on_terminal();
    let req = Request::Gc {
        target,
        dry_run: cfg.dry_run,
        progress: progress.is_shown(),
    };
    let answer = daemon::call_watching(&mount.socket, &req, |done, total| {
        if total > 0 {
            progress.show(done, total, "repacking");
        }
    });
    progress.clear();
    let report = match answer? {
        Response::Gc(report) => report,
        other => return Err(daemon::unexpected(&other)),
    };
    if cfg.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(text(&report).as_bytes())?;
    }
    for e in &report.errors {
        eprintln!("snapfs: {}: {}", e.target, e.message);
    }
    Ok(if report.errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// Without a TARGET, gc covers one whole mount, so which one must be clear.
fn only_mount(paths: &Paths) -> anyhow::Result<MountRecord> {
    let mut mounts = active_mounts(paths)?;
    match mounts.len() {
        1 => Ok(mounts.remove(0)),
        0 => Err(usage(
            "no snapfs mount is active (start one with `snapfs mount`)",
        )),
        _ => Err(usage(
            "several mounts are active: name a TARGET inside one of them",
        )),
    }
}

fn reason(r: &GcReason) -> String {
    match r {
        GcReason::Expired { expires } => format!(
            "expired {}",
            expires.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        GcReason::MaxDays { max_days } => format!("older than {max_days} days"),
    }
}

fn text(report: &GcReport) -> String {
    let (snap_verb, pack_verb) = if report.dry_run {
        ("would delete", "would delete")
    } else {
        ("deleted", "deleted")
    };
    let mut s = String::new();
    for d in &report.deleted {
        s.push_str(&format!(
            "{snap_verb} {}/snapshots/{} ({})\n",
            d.target,
            d.name,
            reason(&d.reason)
        ));
    }
    if report.orphan_packs > 0 {
        s.push_str(&format!(
            "{pack_verb} {} orphan pack{} ({})\n",
            report.orphan_packs,
            if report.orphan_packs == 1 { "" } else { "s" },
            format_size_rounded(report.orphan_bytes)
        ));
    }
    if report.leftovers > 0 {
        s.push_str(&format!(
            "{pack_verb} {} leftover Kubernetes object{} (claims, pods, unfinished snapshots)\n",
            report.leftovers,
            if report.leftovers == 1 { "" } else { "s" },
        ));
    }
    if report.repacked_packs > 0 {
        s.push_str(&format!(
            "{} {} mostly unused pack{} ({} unused, deleted by the cleanup after the grace period)\n",
            if report.dry_run { "would repack" } else { "repacked" },
            report.repacked_packs,
            if report.repacked_packs == 1 { "" } else { "s" },
            format_size_rounded(report.repacked_bytes)
        ));
    }
    let nothing = report.deleted.is_empty()
        && report.orphan_packs == 0
        && report.leftovers == 0
        && report.repacked_packs == 0;
    if nothing && report.errors.is_empty() {
        s.push_str("nothing to clean up\n");
    } else if report.dry_run && !nothing {
        s.push_str("dry run: nothing was deleted; run again with --yes to delete\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use snapfs_control::wire::GcDeletion;

    fn report(dry_run: bool) -> GcReport {
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        GcReport {
            dry_run,
            deleted: vec![
                GcDeletion {
                    target: "cloud/local".into(),
                    name: "a".into(),
                    created: at,
                    reason: GcReason::Expired { expires: at },
                },
                GcDeletion {
                    target: "cloud/local".into(),
                    name: "b".into(),
                    created: at,
                    reason: GcReason::MaxDays { max_days: 90 },
                },
            ],
            orphan_packs: 2,
            leftovers: 0,
            orphan_bytes: 2048,
            repacked_packs: 1,
            repacked_bytes: 5 << 20,
            errors: Vec::new(),
        }
    }

    #[test]
    fn dry_run_says_what_would_go_and_why() {
        assert_eq!(
            text(&report(true)),
            "would delete cloud/local/snapshots/a (expired 2026-11-20T12:00:00Z)\n\
             would delete cloud/local/snapshots/b (older than 90 days)\n\
             would delete 2 orphan packs (2.0 KiB)\n\
             would repack 1 mostly unused pack (5.0 MiB unused, deleted by the cleanup after the grace period)\n\
             dry run: nothing was deleted; run again with --yes to delete\n"
        );
    }

    #[test]
    fn a_real_run_says_what_went() {
        let t = text(&report(false));
        assert!(t.starts_with("deleted cloud/local/snapshots/a (expired"));
        assert!(t.contains("deleted 2 orphan packs (2.0 KiB)\n"));
        assert!(t.ends_with("repacked 1 mostly unused pack (5.0 MiB unused, deleted by the cleanup after the grace period)\n"));
        let empty = GcReport {
            deleted: Vec::new(),
            orphan_packs: 0,
            leftovers: 0,
            orphan_bytes: 0,
            repacked_packs: 0,
            ..report(true)
        };
        assert_eq!(text(&empty), "nothing to clean up\n");
    }

    #[test]
    fn json_has_what_a_script_needs() {
        let v = serde_json::to_value(report(true)).unwrap();
        assert_eq!(v["dry_run"], true);
        assert_eq!(v["deleted"][0]["reason"]["kind"], "expired");
        assert_eq!(v["deleted"][1]["reason"]["max_days"], 90);
        assert_eq!(v["orphan_bytes"], 2048);
    }
}
