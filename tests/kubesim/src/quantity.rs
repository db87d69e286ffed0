//! Storage quantities (`1Gi`, `500M`, `1073741824`) as whole bytes.

/// Bytes in a quantity string; fractional results round up, as the API server does for storage.
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    if let (Ok(n), true) = (number.parse::<u64>(), multiplier >= 1.0) {
        return n.checked_mul(multiplier as u64);
    }
    let n: f64 = number.parse().ok()?;
    Some((n * multiplier).ceil() as u64)
}

/// Canonical form of a byte count in binary-SI format: the largest exact power-of-1024 suffix,
/// plain digits otherwise.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        let unit = 1u64 << (10 * (6 - i));
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("500M"), Some(500_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Some(1536));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("1Xi"), None);
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1536), "1536");
        assert_eq!(format_bytes(3 << 20), "3Mi");
    }
}
