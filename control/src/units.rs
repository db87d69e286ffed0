//! Sizes and durations as the configuration, the command line and Kubernetes write them; one
//! set of rules for all three (snapfs.toml(5), VALUES).
//!
//! Sizes follow Kubernetes resource quantities, so `20G` means the same in `config.toml`, after
//! `snapfs snapshot --size` and in a claim: `k`, `M`, `G`, `T`, `P`, `E` are powers of 1000 and
//! `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` powers of 1024. Units are case-sensitive, as kubectl's
//! are: `m` is a thousandth there, so reading `500m` as megabytes would silently mean a size a
//! billion times the one Kubernetes reads. A wrong case is refused with the unit it may have
//! meant. People may add the `B` they are used to (`GiB` is `Gi`, `GB` is `G`, `B` alone is
//! bytes); thousandths are refused, since no size is a fraction of a byte.
//!
//! Numbers may have a fraction (`1.5Gi`), computed exactly with integers and rounded up to a
//! whole byte or nanosecond. Anything that does not fit is an error, never a panic.

mod decimal;
mod duration;
mod size;
#[cfg(test)]
mod tests;

use std::fmt;

pub use duration::{format_duration, parse_duration};
pub use size::{format_size, format_size_rounded, parse_quantity, parse_size};

/// A size or duration that does not parse: the text, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    input: String,
    /// "size", "quantity", "duration" or "mode".
    what: &'static str,
    reason: String,
}

impl UnitError {
    fn new(input: &str, what: &'static str, reason: String) -> UnitError {
        UnitError {
            input: input.to_string(),
            what,
            reason,
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a {}: {}",
            self.input, self.what, self.reason
        )
    }
}

impl std::error::Error for UnitError {}

/// A permission mode in octal, as chmod takes it (`644`, `0644` or `0o644`), at most `7777`.
pub fn parse_mode(s: &str) -> Result<u16, UnitError> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(UnitError::new(
            s,
            "mode",
            "octal digits expected, such as 644".into(),
        ));
    }
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(UnitError::new(s, "mode", "above 7777".into())),
    }
}
