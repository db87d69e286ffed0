//! `snapfs mount -o KEY[=VALUE],…`: the mount options of fstab and `mount -t fuse.snapfs`
//! (which the helper `mount.fuse.snapfs` hands on unchanged), each the same as a flag.

use std::path::PathBuf;

use snapfs_control::units::{parse_mode, parse_size};

use crate::exit::usage;
use crate::mount::Config;

/// What `-o` knows, for the message about an unknown one.
const KNOWN: &str = "config=FILE, ro, rw, allow_other, allow_root, auto_unmount, uid=N, gid=N, \
                     file_mode=MODE, dir_mode=MODE, cache_dir=DIR, cache_size=SIZE, threads=N";

/// Options that only mean something to mount(8), fstab or the kernel's generic mount flags
/// (snapfs always mounts nodev, nosuid, noatime).
fn ignored(key: &str) -> bool {
    matches!(
        key,
        "" | "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "_netdev"
            | "nofail"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "atime"
            | "noatime"
            | "diratime"
            | "nodiratime"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "nostrictatime"
            | "lazytime"
            | "nolazytime"
            | "sync"
            | "async"
            | "dirsync"
            | "silent"
            | "loud"
    ) || key.starts_with("x-")
        || ["user=", "helper=", "uhelper=", "comment="]
            .iter()
            .any(|p| key.starts_with(p))
}

/// Applies each of `lists` (comma-separated options) to `cfg`. An unknown option is a usage
/// error, or with `sloppy` (mount's -s) a warning. `expand` resolves a leading `~/` in paths.
pub fn apply(
    cfg: &mut Config,
    lists: &[String],
    sloppy: bool,
    expand: impl Fn(&str) -> PathBuf,
) -> anyhow::Result<()> {
    for opt in lists.iter().flat_map(|l| l.split(',')) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = |what: &str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| usage(format!("-o {key}= needs {what}")))
        };
        let bad = |e: &dyn std::fmt::Display| usage(format!("-o {opt}: {e}"));
        match key {
            "config" => cfg.config = Some(expand(need("a file name")?)),
            "cache_dir" => cfg.cache_dir = Some(expand(need("a directory")?)),
            "cache_size" => {
                cfg.cache_size = Some(parse_size(need("a size")?).map_err(|e| bad(&e))?)
            }
            "file_mode" => cfg.file_mode = Some(parse_mode(need("a mode")?).map_err(|e| bad(&e))?),
            "dir_mode" => cfg.dir_mode = Some(parse_mode(need("a mode")?).map_err(|e| bad(&e))?),
            "uid" => cfg.uid = Some(need("a number")?.parse().map_err(|e| bad(&e))?),
            "gid" => cfg.gid = Some(need("a number")?.parse().map_err(|e| bad(&e))?),
            "threads" => cfg.threads = Some(need("a number")?.parse().map_err(|e| bad(&e))?),
            "ro" if value.is_none() => cfg.read_only = true,
            "rw" if value.is_none() => cfg.read_only = false,
            "allow_other" if value.is_none() => cfg.allow_other = true,
            "allow_root" if value.is_none() => cfg.allow_root = true,
            "auto_unmount" if value.is_none() => cfg.auto_unmount = true,
            _ if ignored(opt) => {}
            _ if sloppy => eprintln!("snapfs: ignoring unknown mount option {opt}"),
            _ => {
                return Err(usage(format!(
                    "unknown mount option {opt} (known: {KNOWN})"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lists: &[&str], sloppy: bool) -> anyhow::Result<Config> {
        let mut cfg = Config::default();
        let lists: Vec<String> = lists.iter().map(|s| s.to_string()).collect();
        apply(&mut cfg, &lists, sloppy, |p| {
            PathBuf::from(p.replace("~/", "/home/u/"))
        })?;
        Ok(cfg)
    }

    #[test]
    fn every_option_sets_what_its_flag_sets() {
        let cfg = parse(
            &[
                "ro,allow_other,allow_root,auto_unmount,uid=1000,gid=100",
                "file_mode=0644,dir_mode=755,cache_dir=~/c,cache_size=1Gi,threads=4,config=~/s.toml",
                "noauto,user,_netdev,x-systemd.automount,nodev",
            ],
            false,
        )
        .unwrap();
        assert!(cfg.read_only && cfg.allow_other && cfg.allow_root && cfg.auto_unmount);
        assert_eq!((cfg.uid, cfg.gid), (Some(1000), Some(100)));
        assert_eq!((cfg.file_mode, cfg.dir_mode), (Some(0o644), Some(0o755)));
        assert_eq!(cfg.cache_dir, Some(PathBuf::from("/home/u/c")));
        assert_eq!(cfg.cache_size, Some(1 << 30));
        assert_eq!(cfg.threads, Some(4));
        assert_eq!(cfg.config, Some(PathBuf::from("/home/u/s.toml")));
        assert!(
            !parse(&["ro,rw"], false).unwrap().read_only,
            "the last one wins"
        );
    }

    #[test]
    fn unknown_and_malformed_options_are_usage_errors() {
        for bad in [
            "bogus",
            "uid=me",
            "file_mode=rw",
            "cache_size=lots",
            "config=",
            "ro=1",
        ] {
            let err = parse(&[bad], false).unwrap_err();
            assert!(
                err.downcast_ref::<crate::exit::Usage>().is_some(),
                "{bad}: {err}"
            );
        }
        assert!(parse(&["bogus"], true).is_ok(), "sloppy");
    }
}
