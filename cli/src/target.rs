//! Turning TARGET / SNAPSHOT / PATH arguments into a mount, a target and a place under it
//! (DESIGN §9).
//!
//! Arguments are paths inside a mount, absolute or relative to the current directory, made
//! absolute and normalized lexically: going through the mount to canonicalize them would stat
//! remote things and resolve `latest`. When exactly one mount is active, a path relative to its
//! root (`cloud/local/snapshots/x`) works too.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use snapfs_control::client::{active_mounts, answers, mount_records};
use snapfs_control::paths::Paths;
use snapfs_control::wire::MountRecord;

use crate::daemon;
use crate::exit::usage;

/// Where under a target an argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The target itself (`cloud/local`).
    Target,
    /// `snapshots/NAME`, possibly deeper (`rest`).
    Snapshot { name: String, rest: PathBuf },
    /// `uploads/NAME` or something inside it.
    Upload { name: String },
    /// `uploads/NAME.status`.
    UploadStatus { name: String },
    /// Anything else under the target (`objects/…`, `snapshots`).
    Other,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub mount: MountRecord,
    /// The target's path in the mount (`cloud/local`).
    pub target: String,
    pub place: Place,
    /// What the user typed, for messages.
    pub arg: PathBuf,
    /// The path it names below the mount point.
    pub rel: PathBuf,
}

impl Resolved {
    /// Where the argument is, through the mount point.
    pub fn path(&self) -> PathBuf {
        self.mount.mountpoint.join(&self.rel)
    }

    /// The snapshot name, or a usage error naming what was expected. A link such as
    /// `snapshots/latest` names the snapshot it points at.
    pub fn snapshot(&self) -> anyhow::Result<String> {
        match &self.place {
            Place::Snapshot { name, rest } if rest.as_os_str().is_empty() => {
                let path = self.path();
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let to = std::fs::read_link(&path)
                            .with_context(|| path.display().to_string())?;
                        match to.file_name().and_then(|n| n.to_str()) {
                            Some(n) => Ok(n.to_owned()),
                            None => Err(usage(format!(
                                "{}: points at {}, not a snapshot",
                                self.arg.display(),
                                to.display()
                            ))),
                        }
                    }
                    _ => Ok(name.clone()),
                }
            }
            _ => Err(usage(format!(
                "{}: expected a snapshot (…/{}/snapshots/NAME)",
                self.arg.display(),
                self.target
            ))),
        }
    }

    /// A usage error unless the argument names the target itself.
    pub fn require_target(&self) -> anyhow::Result<()> {
        match self.place {
            Place::Target => Ok(()),
            _ => Err(usage(format!(
                "{}: expected a target such as {}",
                self.arg.display(),
                self.target
            ))),
        }
    }
}

/// Resolves `arg` against the active mounts, asking the chosen daemon for its targets.
pub fn resolve(paths: &Paths, arg: &Path) -> anyhow::Result<Resolved> {
    let cwd = std::env::current_dir()?;
    let mounts = active_mounts(paths)?;
    let (mount, rel) = match pick_mount(arg, &cwd, &mounts) {
        Ok(found) => found,
        // The path may reach the mount through a symlink (`~/snapfs` with a linked home).
        Err(e) => match via_canonical_prefix(&absolute(arg, &cwd), &mounts) {
            Some(found) => found,
            None => return Err(died(paths, arg, &cwd, &mounts).unwrap_or(e)),
        },
    };
    let info = daemon::info(&mount.socket)?;
    let (target, place) = split_target(&rel, &info.targets).map_err(|msg| {
        usage(format!(
            "{}: {msg} of the mount at {}",
            arg.display(),
            mount.mountpoint.display()
        ))
    })?;
    Ok(Resolved {
        mount,
        target,
        place,
        arg: arg.to_path_buf(),
        rel,
    })
}

/// The error for an argument that would be in a mount whose daemon is gone (killed, crashed):
/// its record is still there but nobody answers on its socket.
fn died(paths: &Paths, arg: &Path, cwd: &Path, active: &[MountRecord]) -> Option<anyhow::Error> {
    let dead: Vec<MountRecord> = mount_records(paths)
        .ok()?
        .into_iter()
        .filter(|r| !answers(r))
        .collect();
    let abs = absolute(arg, cwd);
    let short = arg.is_relative() && active.is_empty();
    let m = match dead.iter().find(|m| abs.starts_with(&m.mountpoint)) {
        Some(m) => m,
        None if short && dead.len() == 1 => &dead[0],
        None => return None,
    };
    Some(anyhow::anyhow!(
        "{}: the daemon of {mp} died; run `snapfs unmount {mp}`, then mount again",
        arg.display(),
        mp = m.mountpoint.display()
    ))
}

/// `path` made absolute against `cwd`, with `.` and `..` resolved lexically.
pub fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    normalize(&joined)
}

/// Lexical normalization; `..` at the root stays at the root, as the kernel does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if out.parent().is_some() {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The mount an argument is in, and the path below its root.
pub fn pick_mount(
    arg: &Path,
    cwd: &Path,
    mounts: &[MountRecord],
) -> anyhow::Result<(MountRecord, PathBuf)> {
    let abs = absolute(arg, cwd);
    let inside = mounts
        .iter()
        .filter(|m| abs.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.components().count());
    if let Some(m) = inside {
        let rel = abs.strip_prefix(&m.mountpoint)?.to_path_buf();
        return Ok((m.clone(), rel));
    }
    let short = normalize(arg);
    let is_short = arg.is_relative() && !short.starts_with("..");
    match (is_short, mounts) {
        (true, [only]) => Ok((only.clone(), short)),
        (true, []) | (false, []) => Err(usage(format!(
            "{}: no snapfs mount is active (start one with `snapfs mount`)",
            arg.display()
        ))),
        (true, _) => Err(usage(format!(
            "{}: several mounts are active, so give a path inside one of: {}",
            arg.display(),
            list(mounts)
        ))),
        (false, _) => Err(usage(format!(
            "{}: not inside a snapfs mount (active: {})",
            arg.display(),
            list(mounts)
        ))),
    }
}

fn list(mounts: &[MountRecord]) -> String {
    let names: Vec<String> = mounts
        .iter()
        .map(|m| m.mountpoint.display().to_string())
        .collect();
    names.join(", ")
}

/// Finds a mount whose mount point is an ancestor of `abs` once the ancestors are
/// canonicalized. Walks down from `/` and stops at the first match, so nothing below a mount
/// point is ever looked at.
pub fn via_canonical_prefix(abs: &Path, mounts: &[MountRecord]) -> Option<(MountRecord, PathBuf)> {
    if mounts.is_empty() {
        return None;
    }
    let mut prefix = PathBuf::new();
    for (i, c) in abs.components().enumerate() {
        prefix.push(c);
        let canonical = std::fs::canonicalize(&prefix).ok()?;
        if let Some(m) = mounts.iter().find(|m| m.mountpoint == canonical) {
            let rel: PathBuf = abs.components().skip(i + 1).collect();
            return Some((m.clone(), rel));
        }
    }
    None
}

/// Splits a path relative to a mount root into the longest matching target and the place
/// below it. The error is a phrase for a usage message.
pub fn split_target(rel: &Path, targets: &[String]) -> Result<(String, Place), String> {
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<_>>()
        .ok_or_else(|| "not valid UTF-8".to_owned())?;
    // Any namespace of a Kubernetes context is a target (DESIGN §2), listed or not yet.
    let namespace = match parts.as_slice() {
        ["k8s", context, ns, ..] => Some(format!("k8s/{context}/{ns}")),
        _ => None,
    };
    let target = targets
        .iter()
        .chain(namespace.as_ref())
        .filter(|t| {
            let tp: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
            parts.starts_with(&tp)
        })
        .max_by_key(|t| t.split('/').filter(|s| !s.is_empty()).count())
        .ok_or_else(|| format!("not a target (targets: {})", targets.join(", ")))?;
    let depth = target.split('/').filter(|s| !s.is_empty()).count();
    let place = match &parts[depth..] {
        [] => Place::Target,
        ["snapshots", name, rest @ ..] => Place::Snapshot {
            name: (*name).to_owned(),
            rest: rest.iter().collect(),
        },
        ["uploads", name] if name.ends_with(".status") && name.len() > ".status".len() => {
            Place::UploadStatus {
                name: name[..name.len() - ".status".len()].to_owned(),
            }
        }
        ["uploads", name, ..] => Place::Upload {
            name: (*name).to_owned(),
        },
        _ => Place::Other,
    };
    Ok((target.clone(), place))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Exit, classify};

    fn mount(p: &str) -> MountRecord {
        MountRecord {
            mountpoint: PathBuf::from(p),
            socket: PathBuf::from(format!("{p}.sock")),
            pid: 1,
        }
    }

    fn targets() -> Vec<String> {
        vec!["cloud/local".into(), "k8s/prod/shop".into()]
    }

    #[test]
    fn normalizes_lexically() {
        let cwd = Path::new("/home/u/snapfs/cloud");
        assert_eq!(
            absolute(Path::new("./local/../local/snapshots/x"), cwd),
            PathBuf::from("/home/u/snapfs/cloud/local/snapshots/x")
        );
        assert_eq!(absolute(Path::new("/../a/./b"), cwd), PathBuf::from("/a/b"));
    }

    #[test]
    fn absolute_and_relative_paths_find_their_mount() {
        let mounts = [mount("/m"), mount("/home/u/snapfs"), mount("/m/inner")];
        let (m, rel) = pick_mount(
            Path::new("/home/u/snapfs/cloud/local"),
            Path::new("/"),
            &mounts,
        )
        .unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/home/u/snapfs"));
        assert_eq!(rel, PathBuf::from("cloud/local"));

        let (m, rel) = pick_mount(
            Path::new("snapshots/x"),
            Path::new("/m/inner/cloud/a"),
            &mounts,
        )
        .unwrap();
        assert_eq!(
            m.mountpoint,
            PathBuf::from("/m/inner"),
            "longest prefix wins"
        );
        assert_eq!(rel, PathBuf::from("cloud/a/snapshots/x"));

        // A sibling whose name merely starts with the mount point is not inside it.
        let err = pick_mount(Path::new("/mx/cloud"), Path::new("/"), &mounts).unwrap_err();
        assert_eq!(classify(&err), Some(Exit::Usage));
    }

    #[test]
    fn short_form_needs_exactly_one_mount() {
        let one = [mount("/home/u/snapfs")];
        let (m, rel) = pick_mount(Path::new("cloud/local"), Path::new("/tmp"), &one).unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/home/u/snapfs"));
        assert_eq!(rel, PathBuf::from("cloud/local"));

        let none = pick_mount(Path::new("cloud/local"), Path::new("/tmp"), &[]).unwrap_err();
        assert_eq!(classify(&none), Some(Exit::Usage));
        assert!(none.to_string().contains("no snapfs mount is active"));

        let two = [mount("/a"), mount("/b")];
        let err = pick_mount(Path::new("cloud/local"), Path::new("/tmp"), &two).unwrap_err();
        assert_eq!(classify(&err), Some(Exit::Usage));
        assert!(err.to_string().contains("/a, /b"), "{err}");

        // Climbing out of the current directory is not a short form.
        assert!(pick_mount(Path::new("../cloud/local"), Path::new("/tmp"), &one).is_err());
    }

    #[test]
    fn longest_target_wins_and_the_rest_is_classified() {
        let t = targets();
        let split = |p: &str| split_target(Path::new(p), &t).unwrap();
        assert_eq!(split("cloud/local"), ("cloud/local".into(), Place::Target));
        assert_eq!(
            split("k8s/prod/shop/snapshots/db/a/b"),
            (
                "k8s/prod/shop".into(),
                Place::Snapshot {
                    name: "db".into(),
                    rest: PathBuf::from("a/b")
                }
            )
        );
        assert_eq!(
            split("k8s/prod/shop/uploads/x"),
            ("k8s/prod/shop".into(), Place::Upload { name: "x".into() })
        );
        // Every namespace of a context is a target, whether the daemon has named it yet or not.
        assert_eq!(
            split("k8s/prod/payments/uploads/x"),
            (
                "k8s/prod/payments".into(),
                Place::Upload { name: "x".into() }
            )
        );
        assert_eq!(
            split("cloud/local/uploads/x.status").1,
            Place::UploadStatus { name: "x".into() }
        );
        assert_eq!(
            split("cloud/local/uploads/x/deep/file").1,
            Place::Upload { name: "x".into() }
        );
        assert_eq!(split("cloud/local/objects/a").1, Place::Other);
        assert_eq!(split("cloud/local/snapshots").1, Place::Other);
    }

    #[test]
    fn unknown_targets_are_named() {
        let err = split_target(Path::new("cloud/other/snapshots/x"), &targets()).unwrap_err();
        assert!(err.contains("cloud/local, k8s/prod/shop"), "{err}");
        // A prefix of a target's name is not the target.
        assert!(split_target(Path::new("cloud/loc"), &targets()).is_err());
        assert!(split_target(Path::new(""), &targets()).is_err());
    }
}
