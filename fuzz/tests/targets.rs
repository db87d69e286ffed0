//! Every fuzz target over its corpus and a fixed number of mutants (20,000 each unless
//! `SNAPFS_FUZZ_RUNS` says otherwise, divided by the target's cost): a panic fails the test and
//! keeps the input for replay.
//! Long runs are made by hand (`cargo run --release -p snapfs-fuzz -- run`, see fuzz/README.md).

use snapfs_fuzz::drive::{corpus_dir, load_corpus, run};
use snapfs_fuzz::seeds::seeds;
use snapfs_fuzz::target;

fn fuzz(name: &str) {
    let t = target(name).unwrap_or_else(|| panic!("no target {name}"));
    let corpus = load_corpus(&corpus_dir(t)).unwrap();
    assert!(
        corpus.len() >= seeds(name).len().max(1),
        "{name}: the corpus lacks its seeds (`cargo run -p snapfs-fuzz -- seed`)"
    );
    let runs = std::env::var("SNAPFS_FUZZ_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    if let Err(crash) = run(t, &corpus, runs / t.cost, 1) {
        panic!("{crash}");
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test]
        fn $name() {
            fuzz(stringify!($name));
        })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for t in snapfs_fuzz::TARGETS {
                assert!(tested.contains(&t.name), "{} is not run here", t.name);
            }
        }
    };
}

targets!(
    manifest,
    manifest_json,
    pack_frame,
    config,
    control_wire,
    hivemq_listing,
    k8s_stat,
    tar_stream,
);
