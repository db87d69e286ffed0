//! Decimal numbers as sizes and durations write them ("20", "1.5", ".25"), scaled to whole
//! units with integers only: "1.5Gi" is exactly 1610612736 bytes, with nothing lost to floats.

/// A non-negative decimal number: its digits, and where the point falls among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decimal {
    /// Digit values, most significant first.
    digits: Vec<u8>,
    /// How many of `digits` stand before the point; below zero or past the end once shifted.
    point: i64,
}

/// Splits the leading number (digits and points) off `s`: "1.5Gi" → ("1.5", "Gi").
pub(super) fn split(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

impl Decimal {
    /// Digits with at most one point and at least one digit: "12", "1.5", ".5", "5.".
    pub(super) fn parse(text: &str) -> Option<Decimal> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let is_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
            return None;
        }
        Some(Decimal {
            digits: whole
                .bytes()
                .chain(fraction.bytes())
                .map(|b| b - b'0')
                .collect(),
            point: i64::try_from(whole.len()).ok()?,
        })
    }

    /// Multiplies by ten to the power `exponent`; None when the point leaves the i64 range.
    pub(super) fn shift(&mut self, exponent: i64) -> Option<()> {
        self.point = self.point.checked_add(exponent)?;
        Some(())
    }

    /// The number times `unit`, rounded up to a whole count; None when it exceeds u128.
    pub(super) fn times_ceil(&self, unit: u64) -> Option<u128> {
        // Also spares the loops below from walking a point shifted far from any digit.
        if self.digits.iter().all(|d| *d == 0) {
            return Some(0);
        }
        let unit = u128::from(unit);
        let len = self.digits.len();
        // The whole part; a point past the digits stands for trailing zeros. Ends within ~40
        // steps of the first nonzero digit, by overflow.
        let mut whole: u128 = 0;
        let mut i: i64 = 0;
        while i < self.point {
            let digit = usize::try_from(i)
                .ok()
                .and_then(|i| self.digits.get(i))
                .copied()
                .unwrap_or(0);
            whole = whole.checked_mul(10)?.checked_add(u128::from(digit))?;
            i += 1;
        }
        // The fraction times `unit` by long multiplication from its last digit: `carry` ends as
        // the whole units, and `inexact` tells whether anything was left over to round up.
        let first = usize::try_from(self.point.max(0)).map_or(len, |p| p.min(len));
        let mut carry: u128 = 0;
        let mut inexact = false;
        for &digit in self.digits[first..].iter().rev() {
            let t = u128::from(digit) * unit + carry;
            inexact |= !t.is_multiple_of(10);
            carry = t / 10;
        }
        // Zeros between the point and the first digit (a point shifted left past them).
        let mut zeros = self.point.min(0).unsigned_abs();
        while zeros > 0 && carry > 0 {
            inexact |= !carry.is_multiple_of(10);
            carry /= 10;
            zeros -= 1;
        }
        whole
            .checked_mul(unit)?
            .checked_add(carry)?
            .checked_add(u128::from(inexact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(text: &str, shift: i64, unit: u64) -> Option<u128> {
        let mut d = Decimal::parse(text)?;
        d.shift(shift)?;
        d.times_ceil(unit)
    }

    #[test]
    fn scales_exactly_and_rounds_up() {
        assert_eq!(scaled("1.5", 0, 1 << 30), Some(1_610_612_736));
        assert_eq!(scaled("0.1", 0, 1024), Some(103)); // 102.4
        assert_eq!(scaled("500", -3, 1), Some(1)); // 0.5
        assert_eq!(scaled(".25", 2, 1), Some(25));
        assert_eq!(scaled("5.", 0, 3), Some(15));
        assert_eq!(
            scaled("000000000000000000000000000000000000000000012", 0, 1),
            Some(12)
        );
        assert_eq!(
            scaled("1.0000000000000000000000000000000000000001", 0, 1 << 60),
            Some((1 << 60) + 1)
        );
        assert_eq!(scaled("1", -4000, 1), Some(1));
        assert_eq!(scaled("0", i64::MAX - 1, 7), Some(0));
    }

    #[test]
    fn refuses_what_is_not_a_number_or_too_large() {
        for text in ["", ".", "1.2.3", "1a", "-1"] {
            assert_eq!(Decimal::parse(text), None, "{text:?}");
        }
        assert_eq!(scaled("1", 39, 1), None);
        assert_eq!(scaled("1", i64::MAX - 1, 1), None);
        assert_eq!(
            Decimal::parse("1").and_then(|mut d| d.shift(i64::MAX)),
            None
        );
    }
}
