//! The packaging run for real: `split-debug` on a built binary (what ships is stripped, and
//! the debug info it lost is found again, by debug link and by build id), and the systemd unit
//! checked by systemd itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use snapfs_tests::{binary, sh};

/// A copy of the built `snapfs` in `dir`, or None (with the reason printed) when the tools are
/// missing or it was built without debug info.
fn copy_with_debug_info(dir: &Path) -> Option<PathBuf> {
    if !has_tool("objcopy") || !has_tool("readelf") {
        return None;
    }
    let bin = dir.join("snapfs");
    std::fs::copy(binary("snapfs"), &bin).expect("copy snapfs");
    if !sections(&bin).contains(".debug_info") {
        eprintln!("skipping: snapfs was built without debug info");
        return None;
    }
    Some(bin)
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn split_debug() -> PathBuf {
    packaging().join("split-debug")
}

fn has_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

fn sections(file: &Path) -> String {
    sh(&format!("readelf -S -W '{}'", file.display()))
}

fn build_id(file: &Path) -> String {
    let notes = sh(&format!("readelf -n '{}' 2>/dev/null", file.display()));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .to_owned()
}

/// The source line gdb finds for the CLI's `main`, or None when it finds none.
fn line_of_main(bin: &Path) -> Option<String> {
    // gdb exits 1 when it knows no such function: that is an answer too.
    let out = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "info line snapfs::main"])
        .arg(bin)
        .output()
        .expect("run gdb");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("cli/src/main.rs"))
        .map(str::to_owned)
}

#[test]
fn split_debug_strips_the_binary_and_keeps_its_debug_info_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(bin) = copy_with_debug_info(dir.path()) else {
        return;
    };
    let id = build_id(&bin);
    let before = std::fs::metadata(&bin).expect("stat").len();

    sh(&format!(
        "'{}' '{}'",
        split_debug().display(),
        bin.display()
    ));
    let debug = dir.path().join("snapfs.debug");
    assert!(!sections(&bin).contains(".debug_info"), "stripped");
    assert!(sections(&debug).contains(".debug_info"), "kept apart");
    assert!(std::fs::metadata(&bin).expect("stat").len() < before / 2);
    assert_eq!(build_id(&bin), id, "the build id ties the two together");
    assert_eq!(build_id(&debug), id);
    let link = sh(&format!("readelf -p .gnu_debuglink '{}'", bin.display()));
    assert!(link.contains("snapfs.debug"), "{link}");
    let version = sh(&format!("'{}' --version", bin.display()));
    assert!(version.starts_with("snapfs "), "{version}");

    // Stripping twice is refused, not a second, empty debug file.
    let again = Command::new(split_debug())
        .arg(&bin)
        .output()
        .expect("run split-debug");
    assert_eq!(again.status.code(), Some(2));

    if has_tool("gdb") {
        // Found by debug link beside the binary; without it, no lines.
        assert!(line_of_main(&bin).is_some(), "gdb reads snapfs.debug");
        let alone = dir.path().join("alone");
        std::fs::create_dir(&alone).expect("mkdir");
        std::fs::copy(&bin, alone.join("snapfs")).expect("copy");
        assert_eq!(line_of_main(&alone.join("snapfs")), None);
    }
}

#[test]
fn split_debug_files_by_build_id_under_a_debug_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(bin) = copy_with_debug_info(dir.path()) else {
        return;
    };
    let id = build_id(&bin);
    let debug_dir = dir.path().join("usr/lib/debug");
    sh(&format!(
        "'{}' -d '{}' '{}'",
        split_debug().display(),
        debug_dir.display(),
        bin.display()
    ));
    let debug = debug_dir.join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]));
    assert!(
        sections(&debug).contains(".debug_info"),
        "{}",
        debug.display()
    );
    assert!(!sections(&bin).contains(".debug_info"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !has_tool("systemd-analyze") {
        return;
    }
    // The unit names the installed /usr/bin/snapfsd, which systemd checks is there: point it
    // at the built one. A user manager's runtime folder of its own keeps the check private.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = std::fs::read_to_string(packaging().join("systemd/snapfs.service")).expect("unit");
    assert!(unit.contains("\nType=notify\n"), "readiness is told");
    let daemon = binary("snapfsd");
    let copy = dir.path().join("snapfs.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/snapfsd", daemon.to_str().expect("utf-8 path")),
    )
    .expect("write the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--user"])
        .arg(&copy)
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("run systemd-analyze");
    // It exits 0 on warnings too (an unknown Type= is one): it must say nothing.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_package_ships_every_manual_page() {
    let listed = std::fs::read_to_string(packaging().join("debian/snapfs.manpages"))
        .expect("snapfs.manpages");
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&man).expect("man/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !listed.lines().any(|l| l.trim() == format!("man/{name}")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not in debian/snapfs.manpages: {missing:?}"
    );
}
