//! Sizes in bytes, read the way Kubernetes reads resource quantities.

use super::UnitError;
use super::decimal::{self, Decimal};

/// Powers of 1000, from 1000¹.
const DECIMAL: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
/// Powers of 1024, from 1024¹.
const BINARY: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// Which spellings a size may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// What people write in the configuration and on the command line: a `B` may follow the
    /// unit and a space may precede it; thousandths (`m`) are refused.
    Size,
    /// A Kubernetes resource quantity exactly as the API server takes it.
    Quantity,
}

impl Spelling {
    fn noun(self) -> &'static str {
        match self {
            Spelling::Size => "size",
            Spelling::Quantity => "quantity",
        }
    }
}

/// How a unit scales the number before it.
enum Scale {
    /// Times ten to this power (k, M, …, and `m` for thousandths, or an exponent `e3`).
    Ten(i64),
    /// Times this power of 1024 (Ki, Mi, …).
    Binary(u64),
}

/// "20GiB", "512 MiB", "1.5G", "4096" → bytes. Units are Kubernetes': k, M, G, T, P, E are
/// powers of 1000 and Ki, Mi, Gi, Ti, Pi, Ei powers of 1024, case-sensitive, optionally followed
/// by `B`. A fraction that is not whole bytes is rounded up.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    parse(s, Spelling::Size)
}

/// A Kubernetes resource quantity ("1Gi", "500M", "1e9", "1073741824") in bytes, rounded up as
/// the API server rounds a storage quantity.
pub fn parse_quantity(s: &str) -> Result<u64, UnitError> {
    parse(s, Spelling::Quantity)
}

/// The exact size in the largest power-of-1024 unit that divides it, else plain bytes: "20Gi",
/// "1536". Both `parse_size` and `parse_quantity` read it back.
pub fn format_size(bytes: u64) -> String {
    for (i, unit) in BINARY.iter().enumerate().rev() {
        let one = 1u64 << (10 * (i + 1));
        if bytes >= one && bytes.is_multiple_of(one) {
            return format!("{}{unit}", bytes / one);
        }
    }
    bytes.to_string()
}

/// A size for people to read, to one decimal in the largest power-of-1024 unit below it:
/// "512 B", "104.0 MiB".
pub fn format_size_rounded(bytes: u64) -> String {
    let Some(i) = (0..BINARY.len())
        .rev()
        .find(|i| bytes >= 1u64 << (10 * (i + 1)))
    else {
        return format!("{bytes} B");
    };
    let one = 1u128 << (10 * (i + 1));
    let tenths = (u128::from(bytes) * 10 + one / 2) / one;
    format!("{}.{} {}B", tenths / 10, tenths % 10, BINARY[i])
}

fn parse(s: &str, spelling: Spelling) -> Result<u64, UnitError> {
    let err = |reason: String| UnitError::new(s, spelling.noun(), reason);
    let (number, unit) = decimal::split(s.trim());
    let mut n = Decimal::parse(number)
        .ok_or_else(|| err("expected a number, then an optional unit such as Gi".into()))?;
    let unit = match spelling {
        Spelling::Size => unit.trim_start(),
        Spelling::Quantity => unit,
    };
    let scale = match exponent(unit) {
        Some(e) => Scale::Ten(e.ok_or_else(|| err("the exponent is out of range".into()))?),
        None => scale(unit, spelling).ok_or_else(|| err(unknown_unit(unit, spelling)))?,
    };
    let unit_bytes = match scale {
        Scale::Ten(power) => {
            n.shift(power)
                .ok_or_else(|| err("the exponent is out of range".into()))?;
            1
        }
        Scale::Binary(b) => b,
    };
    n.times_ceil(unit_bytes)
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| err("16 EiB or more".into()))
}

/// A decimal exponent (`e3`, `E-2`, as Kubernetes writes 1e3); None when `unit` is not one
/// (`E` alone is exa), Some(None) when its value does not fit.
fn exponent(unit: &str) -> Option<Option<i64>> {
    let rest = unit.strip_prefix(['e', 'E'])?;
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(rest.parse().ok())
}

fn scale(unit: &str, spelling: Spelling) -> Option<Scale> {
    let bare = match spelling {
        Spelling::Size => unit.strip_suffix('B').unwrap_or(unit),
        Spelling::Quantity => unit,
    };
    if bare.is_empty() {
        return Some(Scale::Ten(0));
    }
    if bare == "m" && spelling == Spelling::Quantity {
        return Some(Scale::Ten(-3));
    }
    if let Some(i) = DECIMAL.iter().position(|u| *u == bare) {
        return i64::try_from(3 * (i + 1)).ok().map(Scale::Ten);
    }
    let i = BINARY.iter().position(|u| *u == bare)?;
    Some(Scale::Binary(1 << (10 * (i + 1))))
}

/// Why `unit` is refused, naming a unit it may have meant when only its case is wrong.
fn unknown_unit(unit: &str, spelling: Spelling) -> String {
    let suffixes: &[&str] = match spelling {
        Spelling::Size => &["", "B"],
        Spelling::Quantity => &[""],
    };
    let guess = DECIMAL
        .iter()
        .chain(&BINARY)
        .flat_map(|u| suffixes.iter().map(move |b| format!("{u}{b}")))
        .find(|known| known.eq_ignore_ascii_case(unit));
    let hint = match (guess, unit) {
        (_, "m" | "mB") if spelling == Spelling::Size => {
            " (m means thousandths in Kubernetes; megabytes are M, mebibytes Mi)".to_string()
        }
        (Some(known), _) => format!(" (units are case-sensitive: did you mean {known:?}?)"),
        (None, _) => String::new(),
    };
    let units = match spelling {
        Spelling::Size => {
            "k, M, G, T, P, E (powers of 1000) or Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024), optionally followed by B"
        }
        Spelling::Quantity => "m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei",
    };
    format!("unknown unit {unit:?}{hint}; units are {units}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_mean_what_they_mean_to_kubectl() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("1k", 1000),
            ("500M", 500_000_000),
            ("1G", 1_000_000_000),
            ("2E", 2_000_000_000_000_000_000),
            ("1Ki", 1024),
            ("1Gi", 1 << 30),
            ("15Ei", 15 << 60),
            ("1.5Gi", 1_610_612_736),
            ("0.1Ki", 103),
            ("1.5Ki", 1536),
            ("1e3", 1000),
            ("1.5E3", 1500),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
            assert_eq!(parse_quantity(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn sizes_also_take_the_spellings_people_type() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 1GB "), Ok(1_000_000_000));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("1kB"), Ok(1000));
        // Kubernetes refuses these, and so does the quantity reader.
        assert!(parse_quantity("20GiB").is_err());
        assert!(parse_quantity("1 Gi").is_err());
    }

    #[test]
    fn thousandths_are_quantities_only() {
        assert_eq!(parse_quantity("1500m"), Ok(2));
        let e = parse_size("500m").unwrap_err().to_string();
        assert!(e.contains("thousandths"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse_size("20gib").unwrap_err().to_string();
        assert!(
            e.starts_with("\"20gib\" is not a size: unknown unit \"gib\""),
            "{e}"
        );
        assert!(e.contains("did you mean \"GiB\""), "{e}");
        assert!(parse_size("1K").unwrap_err().to_string().contains("\"k\""));
        for text in [
            "",
            "Gi",
            "12 parsecs",
            "-1Gi",
            "1.2.3",
            "1e",
            "1BB",
            "1e3B",
            "1iB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?}");
        }
        let e = parse_size("17Ei").unwrap_err().to_string();
        assert!(e.contains("16 EiB or more"), "{e}");
        assert!(parse_size("1e99999999999999999999").is_err());
        assert!(parse_quantity("1e-99999").is_ok_and(|b| b == 1));
    }

    #[test]
    fn formats_exactly_or_for_people() {
        assert_eq!(format_size(20 << 30), "20Gi");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 20), "3Mi");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size_rounded(0), "0 B");
        assert_eq!(format_size_rounded(1023), "1023 B");
        assert_eq!(format_size_rounded(1024), "1.0 KiB");
        assert_eq!(format_size_rounded(104 << 20), "104.0 MiB");
        assert_eq!(format_size_rounded(u64::MAX), "16.0 EiB");
    }
}
