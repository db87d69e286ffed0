//! One libFuzzer binary for every target of `snapfs-fuzz`, chosen by `SNAPFS_FUZZ_TARGET`:
//! `SNAPFS_FUZZ_TARGET=manifest cargo +nightly fuzz run target ../corpus/manifest`.

#![no_main]

use std::sync::LazyLock;

static TARGET: LazyLock<&'static snapfs_fuzz::Target> = LazyLock::new(|| {
    let name = std::env::var("SNAPFS_FUZZ_TARGET").unwrap_or_default();
    snapfs_fuzz::target(&name).unwrap_or_else(|| {
        let names: Vec<_> = snapfs_fuzz::TARGETS.iter().map(|t| t.name).collect();
        panic!("set SNAPFS_FUZZ_TARGET to one of {}", names.join(", "))
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| (TARGET.run)(data));
