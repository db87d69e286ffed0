//! Where snapfs keeps things, following the XDG base directory rules.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    home: PathBuf,
    config: PathBuf,
    data: PathBuf,
    cache: PathBuf,
    state: PathBuf,
    runtime: PathBuf,
}

impl Paths {
    /// From the environment: $HOME and the XDG_* variables.
    pub fn from_env() -> Paths {
        Paths::from_vars(|v| std::env::var_os(v))
    }

    /// From variables looked up by `get`, as `from_env` does with the real environment.
    pub fn from_vars(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Paths {
        let home = get("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        // `$VAR/snapfs` when the variable holds an absolute path, else the default.
        let xdg = |var: &str, fallback: PathBuf| {
            get(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map_or(fallback, |p| p.join("snapfs"))
        };
        let mut p = Paths::for_home(&home);
        p.config = xdg("XDG_CONFIG_HOME", p.config);
        p.data = xdg("XDG_DATA_HOME", p.data);
        p.cache = xdg("XDG_CACHE_HOME", p.cache);
        p.state = xdg("XDG_STATE_HOME", p.state);
        p.runtime = xdg("XDG_RUNTIME_DIR", p.runtime);
        p
    }

    /// The defaults for a home directory, ignoring the environment.
    pub fn for_home(home: &Path) -> Paths {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        Paths {
            home: home.to_path_buf(),
            config: home.join(".config/snapfs"),
            data: home.join(".local/share/snapfs"),
            cache: home.join(".cache/snapfs"),
            state: home.join(".local/state/snapfs"),
            runtime: std::env::temp_dir().join(format!("snapfs-{uid}")),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone()
    }
    pub fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
    /// Sockets and the records of active mounts.
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime.clone()
    }

    /// Expands a leading `~/`.
    pub fn expand(&self, p: &str) -> PathBuf {
        match p.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None if p == "~" => self.home.clone(),
            None => PathBuf::from(p),
        }
    }
}

/// Makes `dir` (the runtime directory) if it is missing, then checks it as
/// [`check_private_dir`] does. Only the last component is made with mode 0700; its parents
/// are made as `mkdir -p` would.
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // mkdir never follows a link in the last component: whatever is there is checked.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    check_private_dir(dir)
}

/// Fails unless `dir` is a real directory (not a symlink) owned by this user with mode 0700:
/// in a shared /tmp anyone could have made it first, to read our sockets or plant their own.
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    // lstat: a symlink is judged as itself, never by what it points at.
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let why = if meta.file_type().is_symlink() {
        Some("is a symlink".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != uid {
        Some(format!(
            "belongs to uid {}, not to you (uid {uid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o777 != 0o700 {
        Some(format!("has mode {:o}, not 700", meta.mode() & 0o777))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the runtime directory {} {why}, so it cannot be trusted with snapfs sockets; \
                 remove it if it is yours (it is made again), or set XDG_RUNTIME_DIR to a \
                 private directory",
                dir.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_private_dir_is_made_and_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/snapfs-1");
        make_private_dir(&dir).unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        make_private_dir(&dir).unwrap();
    }

    #[test]
    fn symlinks_open_modes_and_files_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = make_private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"), "{err}");
        let mode = std::fs::metadata(&elsewhere).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "the link's target is not touched");

        let err = make_private_dir(&elsewhere).unwrap_err();
        assert!(err.to_string().contains("mode 755"), "{err}");
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().mode() & 0o777, 0o755);

        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(make_private_dir(&file).is_err());
    }

    #[test]
    fn another_users_dir_is_refused() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root can give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snapfs-0");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = make_private_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
    }
}
