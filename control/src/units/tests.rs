//! Properties of both parsers: any text is answered without a panic, and what the formatters
//! write reads back as the same value.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// Text close to what parsers see: digits, points, unit letters, signs and spaces, with some
/// arbitrary characters mixed in.
fn unit_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9.eE+\\- ]{0,12}[kKmMgGtTpPeEiIbBsShdw ]{0,4}([0-9.]{0,6}[a-zA-Z]{0,3}){0,3}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn parsers_never_panic(text in unit_text()) {
        let _ = parse_size(&text);
        let _ = parse_quantity(&text);
        let _ = parse_duration(&text);
        let _ = parse_mode(&text);
    }

    #[test]
    fn modes_read_back_as_octal(mode in 0u16..=0o7777) {
        prop_assert_eq!(parse_mode(&format!("{mode:o}")), Ok(mode));
        prop_assert_eq!(parse_mode(&format!("0o{mode:04o}")), Ok(mode));
    }

    #[test]
    fn sizes_read_back_as_formatted(bytes in any::<u64>(), shift in 0u32..64) {
        // Shifted values exercise every unit, not only plain bytes.
        let bytes = bytes >> shift << shift;
        prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        prop_assert_eq!(parse_quantity(&format_size(bytes)), Ok(bytes));
    }

    #[test]
    fn durations_read_back_as_formatted(secs in any::<u64>(), nanos in 0u32..1_000_000_000, whole in any::<bool>()) {
        let d = Duration::new(secs, if whole { 0 } else { nanos });
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn fractions_are_exact(whole in 0u64..1 << 20, tenths in 0u64..10) {
        let text = format!("{whole}.{tenths}Mi");
        prop_assert_eq!(parse_size(&text), Ok(whole * (1 << 20) + (tenths * (1 << 20)).div_ceil(10)));
    }
}

#[test]
fn modes_outside_octal_are_refused() {
    for bad in ["", "0o", "8", "644a", "17777", "-1", "rw-"] {
        assert!(parse_mode(bad).is_err(), "{bad}");
    }
}
