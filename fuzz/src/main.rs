//! `snapfs-fuzz`: the stable fuzz driver by hand.
//!
//! - `snapfs-fuzz run [TARGET…] [--runs N] [--seed S]`: every corpus input, then N mutants per
//!   target (all targets if none is named); exits 1 at the first panic, keeping the input.
//! - `snapfs-fuzz replay TARGET FILE…`: runs the given inputs, e.g. one a run kept.
//! - `snapfs-fuzz seed`: (re)writes the `seed-*` inputs of every corpus from the real encoders.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use snapfs_fuzz::drive::{corpus_dir, load_corpus, one, run};
use snapfs_fuzz::seeds::seeds;
use snapfs_fuzz::{TARGETS, Target, target};

#[derive(Parser)]
#[command(about = "Fuzz the decoders of snapfs on the stable toolchain")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run corpus inputs and mutants of them.
    Run {
        /// Targets to run; all when none is given.
        targets: Vec<String>,
        /// Mutants per target.
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        /// Seed of the mutations; the same seed runs the same inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the given inputs through one target.
    Replay { target: String, files: Vec<PathBuf> },
    /// Write the seed inputs of every corpus.
    Seed,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Run {
            targets,
            runs,
            seed,
        } => run_targets(&targets, runs, seed),
        Command::Replay {
            target: name,
            files,
        } => replay(&name, &files),
        Command::Seed => write_seeds(),
    }
}

fn named(names: &[String]) -> Result<Vec<&'static Target>, String> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names
        .iter()
        .map(|n| target(n).ok_or_else(|| format!("no target {n:?}; targets: {}", list())))
        .collect()
}

fn list() -> String {
    TARGETS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_targets(names: &[String], runs: u64, seed: u64) -> ExitCode {
    let targets = match named(names) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    for t in targets {
        let corpus = match load_corpus(&corpus_dir(t)) {
            Ok(c) => c,
            Err(e) => return fail(&format!("{}: corpus: {e}", t.name)),
        };
        let started = Instant::now();
        match run(t, &corpus, runs, seed) {
            Ok(n) => println!(
                "{}: {n} inputs ({} from the corpus), no panic, {:.1} s",
                t.name,
                corpus.len(),
                started.elapsed().as_secs_f64()
            ),
            Err(crash) => return fail(&crash.to_string()),
        }
    }
    ExitCode::SUCCESS
}

fn replay(name: &str, files: &[PathBuf]) -> ExitCode {
    let Some(t) = target(name) else {
        return fail(&format!("no target {name:?}; targets: {}", list()));
    };
    for f in files {
        let input = match std::fs::read(f) {
            Ok(input) => input,
            Err(e) => return fail(&format!("{}: {e}", f.display())),
        };
        if let Err(crash) = one(t, &input) {
            return fail(&format!("{}: {crash}", f.display()));
        }
        println!("{}: no panic", f.display());
    }
    ExitCode::SUCCESS
}

fn write_seeds() -> ExitCode {
    for t in TARGETS {
        let dir = corpus_dir(t);
        for (name, bytes) in seeds(t.name) {
            let path = dir.join(format!("seed-{name}"));
            let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes));
            if let Err(e) = written {
                return fail(&format!("{}: {e}", path.display()));
            }
        }
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("snapfs-fuzz: {message}");
    ExitCode::FAILURE
}
