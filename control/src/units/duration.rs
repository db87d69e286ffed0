//! Durations: "500ms", "2s", "5m", "12h", "14d", "2w", "0", and compounds such as "1h30m".

use std::time::Duration;

use super::UnitError;
use super::decimal::{self, Decimal};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The units, largest first, with their length in nanoseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 86_400 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// The index of `s` in [`UNITS`], which a lone number without a unit is counted in.
const SECONDS: usize = 4;

/// "2s", "500ms", "1.5h", "1h30m", "14d", "0" → a duration. Each part is a number and a unit,
/// units from the largest to the smallest and each at most once; a lone number is seconds.
/// Fractions are exact and rounded up to the nanosecond.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = |reason: &str| UnitError::new(s, "duration", reason.to_string());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err(
            "expected a number and a unit, such as 30s, 5m or 1h30m",
        ));
    }
    let mut nanos: u128 = 0;
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let (number, after) = decimal::split(rest);
        let n = Decimal::parse(number)
            .ok_or_else(|| err("expected a number and a unit, such as 30s, 5m or 1h30m"))?;
        let end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(end);
        let i = if unit.is_empty() {
            if last.is_some() || !after.is_empty() {
                return Err(err(
                    "every number of a compound needs its unit, as in 1h30m",
                ));
            }
            SECONDS
        } else {
            UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(|| {
                err(&format!(
                    "unknown unit {unit:?}; units are ms, s, m, h, d and w (case-sensitive)"
                ))
            })?
        };
        if last.is_some_and(|l| i <= l) {
            return Err(err(
                "units go from the largest to the smallest, each once, as in 1d12h",
            ));
        }
        nanos = n
            .times_ceil(UNITS[i].1)
            .and_then(|part| nanos.checked_add(part))
            .ok_or_else(|| err("too long"))?;
        last = Some(i);
        rest = after;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| err("too long"))?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| err("too long"))?;
    Ok(Duration::new(secs, subsec))
}

/// The exact duration as `parse_duration` reads it back: "0", "1h30m", "14d", "1s500ms",
/// "0.000001ms". Weeks are left as days, which people read more easily.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".into();
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, nanos) in &UNITS[1..=SECONDS] {
        let len = nanos / 1_000_000_000;
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    let sub = d.subsec_nanos();
    let (ms, rest) = (sub / 1_000_000, sub % 1_000_000);
    match (ms, rest) {
        (0, 0) => {}
        (ms, 0) => out.push_str(&format!("{ms}ms")),
        (ms, rest) => {
            let fraction = format!("{rest:06}");
            out.push_str(&format!("{ms}.{}ms", fraction.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_compounds() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("14d", Duration::from_secs(14 * 86_400)),
            ("2w", Duration::from_secs(14 * 86_400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1d12h", Duration::from_secs(36 * 3600)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.5s", Duration::from_millis(500)),
            ("0.0000001ms", Duration::from_nanos(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_nonsense_and_overflow_without_panicking() {
        for text in [
            "",
            "3 fortnights",
            "1H",
            "1h30",
            "30m1h",
            "1m1m",
            "-1s",
            "1.2.3s",
            "s",
            "1h 30m",
            "999999999999999d",
            "99999999999999999999999999999999999999999w",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        let e = parse_duration("999999999999999d").unwrap_err().to_string();
        assert_eq!(e, "\"999999999999999d\" is not a duration: too long");
        let e = parse_duration("5M").unwrap_err().to_string();
        assert!(e.contains("unknown unit \"M\""), "{e}");
    }

    #[test]
    fn formats_what_it_reads() {
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(14 * 86_400)), "14d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000001ms");
        assert_eq!(format_duration(Duration::from_nanos(2_500_000)), "2.5ms");
    }
}
