//! Finding the real kubectl, for tests and harnesses that drive it against this server.

use std::path::PathBuf;

/// The first `kubectl` on `PATH`, if any (tests that need it skip without it).
pub fn kubectl_on_path() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}
