//! Fuzz targets for every decoder that reads bytes snapfs did not write itself, or writes bytes
//! another program reads: manifests and pack frames from buckets, the configuration file,
//! control-socket requests, HiveMQ's and a pod's answers, and the tar stream an upload sends.
//!
//! Each target takes arbitrary bytes and must not panic; where a decoder accepts its input, the
//! target also checks what the rest of snapfs relies on (names usable as file names, chunks that
//! hash to their ids, a tar stream another reader parses back to the same files).
//!
//! Two drivers run the same targets: [`drive`], a seeded mutation loop on the stable toolchain
//! that `cargo test` runs for a fixed number of inputs per target, and libFuzzer's
//! coverage-guided loop under `fuzz/libfuzzer` (nightly, by hand). Both start from the corpus
//! kept in `fuzz/corpus/<target>/`.

pub mod drive;
pub mod mutate;
pub mod seeds;
mod targets;

/// One fuzz target: a name (also its corpus folder), the function under test, tokens worth
/// splicing into its inputs, and what one input costs against the others' (a test runs
/// proportionally fewer of the costly ones).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub tokens: &'static [&'static [u8]],
    pub cost: u64,
}

/// Tokens of JSON documents, for targets whose input is JSON.
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e400",
    b"4294967296",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"\"",
    b"\"/\"",
    b"\"..\"",
    b"\"a/b\"",
    b"\"\\u0000\"",
    b"\"1970-01-01T00:00:00Z\"",
    b"\"9999-12-31T23:59:59Z\"",
];

pub const TARGETS: &[Target] = &[
    Target {
        name: "manifest",
        run: targets::format::manifest,
        tokens: &[&[0x28, 0xb5, 0x2f, 0xfd], &[0xff; 8], &[0; 8]],
        cost: 1,
    },
    Target {
        name: "manifest_json",
        run: targets::format::manifest_json,
        tokens: JSON_TOKENS,
        cost: 1,
    },
    Target {
        name: "pack_frame",
        run: targets::format::pack_frame,
        tokens: &[
            &[0x28, 0xb5, 0x2f, 0xfd],
            &[0xff; 4],
            &[0; 4],
            &[0, 0, 0x10, 0],
        ],
        cost: 1,
    },
    Target {
        name: "config",
        run: targets::config::config,
        tokens: &[
            b"[[remote]]\n",
            b"[[kubernetes]]\n",
            b"[[hivemq]]\n",
            b"[cache]\n",
            b" = ",
            b"\"\"",
            b"\"99999999999999999999d\"",
            b"\"18446744073709551616\"",
            b"-1",
            b"1e400",
            b"\"s3://b/p\"",
            b"\"gs://b\"",
            b"\"az://c\"",
            b"\"file:///tmp\"",
            b"\"memory://\"",
            b"\"../..\"",
            b"\"\\u0000\"",
            b"\"1TiB\"",
            b"\"0s\"",
            b"ttl",
            b"url",
            b"name",
        ],
        cost: 1,
    },
    Target {
        name: "control_wire",
        run: targets::control::wire,
        tokens: JSON_TOKENS,
        cost: 1,
    },
    Target {
        name: "hivemq_listing",
        run: targets::broker::listing,
        tokens: JSON_TOKENS,
        cost: 1,
    },
    Target {
        name: "k8s_stat",
        run: targets::pod::stat_lines,
        tokens: &[
            b"regular file|",
            b"directory|",
            b"symbolic link|",
            b"|",
            b"\n",
            b"18446744073709551616",
            b"777",
            b"./",
            b"../",
            b"/",
        ],
        cost: 1,
    },
    Target {
        name: "tar_stream",
        run: targets::pod::tar_stream,
        tokens: &[
            b"f",
            b"d",
            b"l",
            b"/",
            b"\n",
            b"\x01",
            b"..",
            &[b'n'; 120],
            &[0xc3, 0xa9],
        ],
        cost: 1,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
