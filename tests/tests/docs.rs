//! The documents the code cites are in the repository, and every citation lands: a comment that
//! says `DESIGN §N` names a section docs/DESIGN.md has.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above tests/")
        .to_path_buf()
}

/// Every `.rs` file below `dir`, build output left out.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("a readable folder").flatten() {
        let path = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The section numbers cited in `text` as `DESIGN §N`.
fn citations(text: &str) -> Vec<u32> {
    text.match_indices("DESIGN §")
        .filter_map(|(at, m)| {
            let digits: String = text[at + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn every_design_section_the_code_cites_exists() {
    let root = workspace();
    let design = std::fs::read_to_string(root.join("docs/DESIGN.md")).expect("docs/DESIGN.md");
    let mut files = Vec::new();
    for crate_dir in ["fs", "daemon", "cli", "control", "tests"] {
        let dir = root.join(crate_dir);
        if dir.is_dir() {
            sources(&dir, &mut files);
        }
    }
    let mut cited = 0;
    let mut dangling = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for n in citations(&text) {
            cited += 1;
            if !design.contains(&format!("\n## {n}. ")) {
                dangling.push(format!("{}: DESIGN §{n}", file.display()));
            }
        }
    }
    assert!(
        cited > 0,
        "no citations found: is the search looking in the right place?"
    );
    assert!(
        dangling.is_empty(),
        "citations of missing sections: {dangling:#?}"
    );
}

#[test]
fn citations_are_read_as_written() {
    assert_eq!(
        citations("see DESIGN §6 and DESIGN §10, not DESIGN §x"),
        [6, 10]
    );
}
