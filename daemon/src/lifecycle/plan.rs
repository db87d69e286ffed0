//! Which snapshots of a target a cleanup deletes, and why: a pure function of the snapshots, the
//! time and the target's retention, so its rules can be checked against every input.
//!
//! The rules (snapfs.toml(5), `retention`):
//! - a snapshot is a candidate when its recorded expiry has passed (`ttl`) or it is older than
//!   `max_days`;
//! - a candidate is kept anyway when it is one of the newest `min_count` ready snapshots or
//!   younger than `min_days`. Keeping wins over every reason to delete, the TTL included: a
//!   promise to keep is the one a user cannot recover from if broken, an extra snapshot costs
//!   only space.

use chrono::{DateTime, Utc};
use snapfs_control::wire::GcReason;
use snapfs_fs::backend::{SnapshotInfo, SnapshotState};

use crate::config::Retention;

const DAY_SECS: i64 = 86_400;

/// One snapshot the plan deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub name: String,
    pub created: DateTime<Utc>,
    pub reason: GcReason,
}

/// The snapshots to delete, oldest first. Snapshots that are not ready (being made or being
/// deleted elsewhere) are neither deleted nor counted towards `min_count`.
pub fn plan(snapshots: &[SnapshotInfo], now: DateTime<Utc>, retention: &Retention) -> Vec<Doomed> {
    let mut ready: Vec<&SnapshotInfo> = snapshots
        .iter()
        .filter(|s| s.state == SnapshotState::Ready)
        .collect();
    // Newest first, as `snapfs list` numbers them; names break ties so the order is total.
    ready.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    let min_count = usize::try_from(retention.min_count).unwrap_or(usize::MAX);
    let mut doomed: Vec<Doomed> = ready
        .iter()
        .enumerate()
        .filter(|(i, s)| *i >= min_count && !young(s, now, retention))
        .filter_map(|(_, s)| {
            reason(s, now, retention).map(|reason| Doomed {
                name: s.name.clone(),
                created: s.created,
                reason,
            })
        })
        .collect();
    doomed.reverse();
    doomed
}

/// Age in whole seconds; negative for a snapshot from a clock ahead of ours.
fn age_secs(s: &SnapshotInfo, now: DateTime<Utc>) -> i64 {
    (now - s.created).num_seconds()
}

fn days_secs(days: u64) -> i64 {
    i64::try_from(days)
        .unwrap_or(i64::MAX)
        .saturating_mul(DAY_SECS)
}

/// Younger than `min_days`, so kept whatever else holds.
fn young(s: &SnapshotInfo, now: DateTime<Utc>, retention: &Retention) -> bool {
    retention
        .min_days
        .is_some_and(|d| age_secs(s, now) < days_secs(d))
}

/// Why `s` should go, before the keep rules are applied; expiry is named first when both hold.
fn reason(s: &SnapshotInfo, now: DateTime<Utc>, retention: &Retention) -> Option<GcReason> {
    if let Some(expires) = s.expires
        && expires <= now
    {
        return Some(GcReason::Expired { expires });
    }
    match retention.max_days {
        Some(max_days) if age_secs(s, now) > days_secs(max_days) => {
            Some(GcReason::MaxDays { max_days })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
    }

    /// A ready snapshot made `age_h` hours before `now()`, expiring `expires_h` hours after it.
    fn snap(name: &str, age_h: i64, expires_h: Option<i64>) -> SnapshotInfo {
        SnapshotInfo {
            name: name.into(),
            created: now() - chrono::Duration::hours(age_h),
            state: SnapshotState::Ready,
            is_file: true,
            size: 1,
            files: 1,
            crc32c: None,
            expires: expires_h.map(|h| now() + chrono::Duration::hours(h)),
            id: name.into(),
        }
    }

    fn names(d: &[Doomed]) -> Vec<&str> {
        d.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn nothing_configured_deletes_only_the_expired() {
        let s = [
            snap("a", 10, Some(-1)),
            snap("b", 5, Some(1)),
            snap("c", 9000, None),
        ];
        let d = plan(&s, now(), &Retention::default());
        assert_eq!(names(&d), ["a"]);
        assert!(matches!(d[0].reason, GcReason::Expired { .. }));
    }

    #[test]
    fn expiry_at_this_very_moment_counts() {
        let d = plan(&[snap("a", 1, Some(0))], now(), &Retention::default());
        assert_eq!(names(&d), ["a"]);
    }

    #[test]
    fn max_days_retires_old_ones_oldest_first() {
        let r = Retention {
            max_days: Some(2),
            ..Retention::default()
        };
        let s = [
            snap("new", 1, None),
            snap("old", 72, None),
            snap("older", 96, None),
        ];
        let d = plan(&s, now(), &r);
        assert_eq!(names(&d), ["older", "old"]);
        assert_eq!(d[0].reason, GcReason::MaxDays { max_days: 2 });
    }

    #[test]
    fn keep_rules_win_over_expiry() {
        let s = [
            snap("a", 1, Some(-1)),
            snap("b", 30, Some(-1)),
            snap("c", 50, Some(-1)),
        ];
        let by_count = Retention {
            min_count: 2,
            ..Retention::default()
        };
        assert_eq!(names(&plan(&s, now(), &by_count)), ["c"]);
        let by_age = Retention {
            min_days: Some(2),
            ..Retention::default()
        };
        assert_eq!(names(&plan(&s, now(), &by_age)), ["c"]);
    }

    #[test]
    fn snapshots_not_ready_are_left_alone_and_not_counted() {
        let mut busy = snap("busy", 0, Some(-1));
        busy.state = SnapshotState::Creating;
        let s = [busy, snap("a", 10, Some(-1)), snap("b", 20, Some(-1))];
        let r = Retention {
            min_count: 1,
            ..Retention::default()
        };
        assert_eq!(names(&plan(&s, now(), &r)), ["b"]);
    }

    fn snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
        // Ages up to 20 days and expiries around now, in hours, so every rule is exercised.
        prop::collection::vec((0i64..480, prop::option::of(-240i64..240)), 0..24).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (age, exp))| snap(&format!("s{i}"), age, exp))
                .collect()
        })
    }

    fn retention() -> impl Strategy<Value = Retention> {
        (
            0u64..6,
            prop::option::of(0u64..12),
            prop::option::of(0u64..24),
        )
            .prop_map(|(min_count, min_days, max_days)| Retention {
                min_count,
                min_days,
                max_days,
            })
    }

    proptest! {
        #[test]
        fn plan_keeps_its_promises(s in snapshots(), r in retention()) {
            let d = plan(&s, now(), &r);
            let mut newest = s.clone();
            newest.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
            let protected: Vec<&str> = newest
                .iter()
                .take(r.min_count as usize)
                .map(|x| x.name.as_str())
                .collect();
            for x in &d {
                let orig = s.iter().find(|o| o.name == x.name).unwrap();
                // Never one of the newest min_count.
                prop_assert!(!protected.contains(&x.name.as_str()));
                // Never one younger than min_days.
                if let Some(min) = r.min_days {
                    prop_assert!((now() - orig.created).num_seconds() >= min as i64 * DAY_SECS);
                }
                // The reason given is true.
                match x.reason {
                    GcReason::Expired { expires } => {
                        prop_assert_eq!(Some(expires), orig.expires);
                        prop_assert!(expires <= now());
                    }
                    GcReason::MaxDays { max_days } => {
                        prop_assert_eq!(Some(max_days), r.max_days);
                        prop_assert!((now() - orig.created).num_seconds() > max_days as i64 * DAY_SECS);
                    }
                }
            }
            // Oldest first, each at most once.
            prop_assert!(d.windows(2).all(|w| (w[0].created, &w[1].name) <= (w[1].created, &w[0].name)));
            let mut unique = names(&d);
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), d.len());
            // Everything that should go and is not kept does go.
            for o in &s {
                let kept = protected.contains(&o.name.as_str())
                    || r.min_days.is_some_and(|m| (now() - o.created).num_seconds() < m as i64 * DAY_SECS);
                let due = o.expires.is_some_and(|e| e <= now())
                    || r.max_days.is_some_and(|m| (now() - o.created).num_seconds() > m as i64 * DAY_SECS);
                prop_assert_eq!(due && !kept, d.iter().any(|x| x.name == o.name), "{}", o.name);
            }
            // Planning again over what is left deletes nothing more.
            let rest: Vec<SnapshotInfo> =
                s.iter().filter(|o| !d.iter().any(|x| x.name == o.name)).cloned().collect();
            prop_assert!(plan(&rest, now(), &r).is_empty());
        }
    }
}
