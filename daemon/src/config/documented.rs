//! snapfs.toml(5) and packaging/config.toml.example against the parser: every section, key
//! and remote URL scheme the parser accepts is documented in both, and the man page documents
//! none it refuses. The keys are asked of the parser itself (serde names them all when it
//! refuses an unknown one), so a new key cannot be forgotten here either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::keys::accepted;

/// URL schemes tried on the remote parser, besides those the man page names.
const SCHEMES: &[&str] = &[
    "file", "memory", "s3", "s3a", "gs", "gcs", "az", "azure", "adl", "abfs", "abfss", "http",
    "https", "ftp", "sftp", "hdfs", "webdav", "r2", "oss", "cos", "b2", "swift",
];

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The man page's sections by title (`[cache]`, `[[remote]]`, `NOT YET SUPPORTED`).
fn man_sections(man: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in man.split("\n.SH ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        out.insert(title.trim().trim_matches('"').to_string(), body.to_string());
    }
    out
}

/// Words set in bold at the start of a macro line (`.B key`, `.BI key " = …"`, `.BR key ,`,
/// `.RB ( key ,`) or inline (`\fBkey\fP`).
fn bold_words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let rest = [".BI ", ".BR ", ".B ", ".RB ( "]
            .iter()
            .find_map(|m| line.strip_prefix(m));
        if let Some(rest) = rest {
            let word: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
        for (_, after) in line
            .match_indices("\\fB")
            .map(|(i, _)| line.split_at(i + 3))
        {
            let word: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
    }
    out
}

/// Keys the man page documents with a value (`.BI key " = TYPE"`).
fn man_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(".BI "))
        .filter_map(|rest| rest.split_once(" \" = ").map(|(k, _)| k.to_string()))
        .collect()
}

/// `scheme` of every `scheme://` in `text`.
fn schemes_in(text: &str) -> BTreeSet<String> {
    text.match_indices("://")
        .map(|(i, _)| {
            text[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether remotes take `scheme://` URLs (they may still want more, such as a bucket).
fn scheme_accepted(scheme: &str) -> bool {
    let url = format!("{scheme}://snapfs-docs-test");
    match crate::cloud::open_store(&url, &BTreeMap::new(), &Default::default()) {
        Ok(_) => true,
        Err(e) => !format!("{e:#}").contains("is not a kind of remote"),
    }
}

/// The example's sections (`cache`, `remote`, …), commented or not, by name.
fn example_sections(example: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in example.lines() {
        let bare = line.trim_start_matches('#').trim();
        if bare.starts_with('[') && bare.ends_with(']') && !bare.contains('=') {
            current = bare.trim_matches(['[', ']']).to_string();
        }
        let text = out.entry(current.clone()).or_default();
        text.push_str(line);
        text.push('\n');
    }
    out
}

/// Keys set in example text: `key = …` at a line's start (commented or not), or inside an
/// inline table.
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim_start();
        let mut parts: Vec<&str> = vec![bare];
        parts.extend(bare.split(['{', ',']).skip(1));
        for p in parts {
            if let Some((key, _)) = p.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.insert(key.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn the_parser_is_probed_for_its_keys() {
    let a = accepted();
    assert_eq!(a["cache"].header, "[cache]");
    assert_eq!(a["remote"].header, "[[remote]]");
    assert!(a["remote"].all().contains("min_count"), "{:?}", a["remote"]);
    assert!(a["kubernetes"].all().contains("pod_uid"));
    assert!(scheme_accepted("s3") && scheme_accepted("memory") && !scheme_accepted("ftp"));
}

#[test]
fn the_man_page_documents_every_key_and_scheme_and_no_other() {
    let man = read("man/snapfs.toml.5");
    let sections = man_sections(&man);
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    let accepted = accepted();
    for (section, s) in &accepted {
        let (header, keys) = (&s.header, s.all());
        let Some(text) = sections.get(header.as_str()) else {
            missing.push(format!("section {header}"));
            continue;
        };
        let bold = bold_words(text);
        for k in &keys {
            if !bold.contains(k) {
                missing.push(format!("{section}.{k}"));
            }
        }
        for k in man_keys(text) {
            if !keys.contains(&k) {
                unknown.push(format!("{section}.{k}"));
            }
        }
    }
    for title in sections.keys().filter(|t| t.starts_with('[')) {
        let name = title.trim_matches(['[', ']']);
        if accepted.get(name).is_none_or(|s| &s.header != title) {
            unknown.push(format!("section {title}"));
        }
    }
    let remote = &sections["[[remote]]"];
    let tags: String = remote
        .lines()
        .filter(|l| l.starts_with(".B"))
        .collect::<Vec<_>>()
        .join("\n");
    let documented = schemes_in(&tags);
    let tried: BTreeSet<String> = SCHEMES
        .iter()
        .map(|s| s.to_string())
        .chain(documented.iter().cloned())
        .collect();
    for s in tried {
        match (scheme_accepted(&s), documented.contains(&s)) {
            (true, false) => missing.push(format!("{s}:// remotes")),
            (false, true) => unknown.push(format!("{s}:// remotes")),
            _ => {}
        }
    }
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "snapfs.toml(5) misses {missing:?} and documents what the parser refuses: {unknown:?}"
    );
}

#[test]
fn the_example_shows_every_key_and_scheme() {
    let example = read("packaging/config.toml.example");
    let sections = example_sections(&example);
    let mut missing = Vec::new();
    for (section, s) in accepted() {
        let keys = s.all();
        let Some(text) = sections.get(&section) else {
            missing.push(format!("section {section}"));
            continue;
        };
        let shown = example_keys(text);
        for k in keys {
            if !shown.contains(&k) {
                missing.push(format!("{section}.{k}"));
            }
        }
    }
    let shown = schemes_in(&example);
    for s in SCHEMES.iter().filter(|s| scheme_accepted(s)) {
        if !shown.contains(*s) {
            missing.push(format!("{s}:// remotes"));
        }
    }
    assert!(missing.is_empty(), "config.toml.example misses {missing:?}");
}

#[test]
fn the_helpers_read_what_they_should() {
    let man =
        "x\n.SH [a]\n.BI key \" = X\"\n.B other\n.RB ( third ,\nsee \\fBfourth\\fP.\n.SH B\nx\n";
    let s = man_sections(man);
    assert_eq!(man_keys(&s["[a]"]), BTreeSet::from(["key".to_string()]));
    let bold = bold_words(&s["[a]"]);
    for w in ["key", "other", "third", "fourth"] {
        assert!(bold.contains(w), "{w}: {bold:?}");
    }
    let ex = example_sections(
        "[cache]\n#dir = 1\n#[[remote]]\n#retention = { min_count = 5, max_days = 9 }\n",
    );
    assert!(example_keys(&ex["cache"]).contains("dir"));
    let r = example_keys(&ex["remote"]);
    assert!(r.contains("retention") && r.contains("min_count") && r.contains("max_days"));
    assert_eq!(
        schemes_in("url = \"s3://b\" and az://c, not ://"),
        BTreeSet::from(["s3".to_string(), "az".to_string()])
    );
}
