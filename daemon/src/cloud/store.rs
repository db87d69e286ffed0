//! Opening the object store behind a remote URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

/// The store for `url` (`file://`, `memory://`, and what object_store was built with),
/// rooted at the URL's path.
pub fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if parsed.scheme() == "file" {
        let dir = parsed
            .to_file_path()
            .map_err(|()| anyhow::anyhow!("{url:?} is not a local path"))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .with_context(|| format!("opening {}", dir.display()))?
            .with_automatic_cleanup(true);
        return Ok(Arc::new(store));
    }
    let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter())
        .with_context(|| format!("opening {url}"))?;
    if prefix.as_ref().is_empty() {
        return Ok(Arc::from(store));
    }
    if parsed.scheme() == "memory" {
        bail!("memory:// takes no path");
    }
    Ok(Arc::new(PrefixStore::new(store, prefix)))
}
