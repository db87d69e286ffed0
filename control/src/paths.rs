//! Where snapfs keeps things, following the XDG base directory rules.

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
