//! The stable driver: every corpus input once, then mutants of them, each under
//! `catch_unwind`; the first input that panics is kept in a file so it can be replayed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use snapfs_fs::format::ChunkId;

use crate::Target;
use crate::mutate::{Rng, mutate};

/// An input that made a target panic.
#[derive(Debug)]
pub struct Crash {
    pub target: &'static str,
    pub message: String,
    /// Where the input was written, if it could be.
    pub saved: Option<PathBuf>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} panicked: {}", self.target, self.message)?;
        match &self.saved {
            Some(p) => write!(
                f,
                " (input kept in {}; replay: cargo run -p snapfs-fuzz -- replay {} {})",
                p.display(),
                self.target,
                p.display()
            ),
            None => write!(f, " (the input could not be written to a file)"),
        }
    }
}

/// The corpus folder of a target, in the source tree.
pub fn corpus_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.name)
}

/// The inputs of a corpus folder, in name order so runs are reproducible; none if it is missing.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// Runs `input` through `target`; a panic becomes a [`Crash`] with the input kept.
pub fn one(target: &Target, input: &[u8]) -> Result<(), Crash> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".to_owned());
        // Named by content, so the same crash found twice is kept once.
        let id = ChunkId::of(input).to_string();
        let path = std::env::temp_dir().join(format!("snapfs-fuzz-{}-{}", target.name, &id[..16]));
        Crash {
            target: target.name,
            message,
            saved: std::fs::write(&path, input).ok().map(|()| path),
        }
    })
}

/// Every corpus input once, then `runs` mutants drawn from `seed`; answers how many inputs ran.
pub fn run(target: &Target, corpus: &[Vec<u8>], runs: u64, seed: u64) -> Result<u64, Crash> {
    for input in corpus {
        one(target, input)?;
    }
    let empty = Vec::new();
    let mut rng = Rng::new(seed);
    for _ in 0..runs {
        let base = corpus.get(rng.below(corpus.len())).unwrap_or(&empty);
        let other = corpus.get(rng.below(corpus.len())).unwrap_or(&empty);
        let input = mutate(base, target.tokens, other, &mut rng);
        one(target, &input)?;
    }
    Ok(corpus.len() as u64 + runs)
}
