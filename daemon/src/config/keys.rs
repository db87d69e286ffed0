//! The sections and keys the configuration parser accepts, asked of the parser itself: serde
//! names every field it knows when it refuses an unknown one. What the documentation test and
//! the hostile-values test walk over, so neither can miss a key added later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use snapfs_control::paths::Paths;

use super::Config;

/// One section of the file.
#[derive(Debug, Clone)]
pub struct Section {
    /// `[cache]` or `[[remote]]`.
    pub header: String,
    /// Its keys, each with the keys of the table it holds where it holds one of known fields
    /// (`retention`).
    pub keys: Vec<(String, Vec<String>)>,
}

impl Section {
    /// Its keys and their tables' keys, together.
    pub fn all(&self) -> BTreeSet<String> {
        self.keys
            .iter()
            .flat_map(|(k, nested)| std::iter::once(k.clone()).chain(nested.iter().cloned()))
            .collect()
    }
}

pub fn parse_error(text: &str) -> String {
    let paths = Paths::for_home(Path::new("/home/u"));
    match Config::parse(text, &paths) {
        Ok(_) => String::new(),
        Err(e) => format!("{e:#}"),
    }
}

/// The fields serde lists when `text` holds the unknown key `__probe__`; None when the error
/// is another one (the place is not a table of known fields).
fn fields(text: &str) -> Option<Vec<String>> {
    let e = parse_error(text);
    let (_, expected) = e.split_once("unknown field `__probe__`, expected ")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every section by name (`cache`, `remote`, …).
pub fn accepted() -> BTreeMap<String, Section> {
    let mut out = BTreeMap::new();
    for name in fields("__probe__ = 1").expect("top-level keys") {
        let (header, keys) = [format!("[{name}]"), format!("[[{name}]]")]
            .into_iter()
            .find_map(|h| fields(&format!("{h}\n__probe__ = 1")).map(|k| (h, k)))
            .unwrap_or_else(|| panic!("section {name} is neither a table nor an array"));
        let keys = keys
            .into_iter()
            .map(|k| {
                let nested = fields(&format!("{header}\n{k} = {{ __probe__ = 1 }}"));
                (k, nested.unwrap_or_default())
            })
            .collect();
        out.insert(name, Section { header, keys });
    }
    out
}
