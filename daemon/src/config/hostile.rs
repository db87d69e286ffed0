//! No configuration value can panic the daemon: every key of every section (as the parser
//! names them, see `keys`), and every key of the tables they hold, is given arbitrary values,
//! and the parser answers with a configuration or an error.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;

use super::keys::{Section, accepted, parse_error};

fn sections() -> &'static Vec<Section> {
    static ALL: OnceLock<Vec<Section>> = OnceLock::new();
    ALL.get_or_init(|| accepted().into_values().collect())
}

fn string(s: String) -> String {
    toml::Value::String(s).to_string()
}

/// A TOML value: any string, number or boolean; strings shaped like sizes, durations and URLs,
/// where overflow and rounding live; arrays and inline tables of those.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<String>().prop_map(string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{1,5})? ?(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m|B|ms|s|h|d|w|ns|us|[a-z])?B?([0-9]{1,20}(ms|s|m|h|d))*"
            .prop_map(string),
        "(file|memory|s3|gs|az|http|https|ftp)://[ -~]{0,30}".prop_map(string),
        "~?/?[ -~]{0,30}".prop_map(string),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| {
                let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// `section` with `key` (or `key.nested`) set to `value`, and the keys its tables require.
fn document(section: &Section, key: &str, nested: Option<&str>, value: &str) -> String {
    let required: &[(&str, &str)] = match section.header.as_str() {
        "[[remote]]" => &[("name", "\"r\""), ("url", "\"memory://\"")],
        "[[hivemq]]" => &[("name", "\"h\""), ("url", "\"http://127.0.0.1:1\"")],
        "[[kubernetes]]" => &[("context", "\"c\"")],
        _ => &[],
    };
    let mut text = format!("{}\n", section.header);
    for (k, v) in required.iter().filter(|(k, _)| *k != key) {
        text += &format!("{k} = {v}\n");
    }
    match nested {
        Some(n) => text += &format!("{key} = {{ {n} = {value} }}\n"),
        None => text += &format!("{key} = {value}\n"),
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_value_of_any_key_panics(
        section in any::<Index>(),
        key in any::<Index>(),
        nested in any::<Index>(),
        into_table in any::<bool>(),
        value in value(),
    ) {
        let section = section.get(sections());
        let (key, table) = key.get(&section.keys);
        let nested = (into_table && !table.is_empty()).then(|| nested.get(table).as_str());
        // A panic fails the test; an error is a fine answer.
        let _ = parse_error(&document(section, key, nested, &value));
    }
}

#[test]
fn every_key_is_reached() {
    let s = sections();
    assert!(s.iter().any(|s| s.header == "[[remote]]"));
    let remote = s.iter().find(|s| s.header == "[[remote]]").unwrap();
    // The document a case makes is valid but for the value under test.
    assert_eq!(parse_error(&document(remote, "ttl", None, "\"1d\"")), "");
    assert_eq!(
        parse_error(&document(remote, "retention", Some("min_count"), "3")),
        ""
    );
}
