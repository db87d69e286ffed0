//! The configuration file: anything a user may type into it.

use std::path::Path;

use snapfs_control::paths::Paths;
use snapfsd::config::Config;

use snapfs_fs::tree::is_file_name;

/// A configuration file's bytes; an accepted one names only targets that can be directories.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, &Paths::for_home(Path::new("/home/fuzz"))) else {
        return;
    };
    for name in config.remotes.iter().map(|r| &r.name) {
        assert!(is_file_name(name), "remote name {name:?}");
    }
    for name in config.hivemq.iter().map(|c| &c.name) {
        assert!(is_file_name(name), "cluster name {name:?}");
    }
    for name in config.kubernetes.iter().flatten().map(|k| &k.name) {
        assert!(is_file_name(name), "context directory {name:?}");
    }
}
