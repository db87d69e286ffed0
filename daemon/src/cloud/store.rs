//! Opening the object store behind a remote URL: `file://`, `memory://`, `s3://`, `gs://` and
//! `az://`. Credentials come from where each cloud's own tools look (see `aws_chain` and
//! `credentials`), the remote's `options` winning; the retry budget is ours (see `retry`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;

use super::aws_chain::{self, Plan};
use super::aws_fetch::CredentialError;
use super::bucket_region::{self, RegionFound};
use super::credentials;
use super::gcp_impersonation;
use super::retry::RetryBudget;
use super::transient::Counting;

/// The folder a `file://` remote URL names; None for other URLs.
pub fn local_dir(url: &str) -> Option<std::path::PathBuf> {
    let parsed = url::Url::parse(url).ok()?;
    (parsed.scheme() == "file")
        .then(|| parsed.to_file_path().ok())
        .flatten()
}

/// The store for `url`, rooted at the URL's path; a cloud store's transient failures are
/// counted by `counting`.
pub fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
    counting: &Counting,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    // reqwest is built without a TLS provider of its own; ring is the one the workspace uses.
    // Installing fails harmlessly when a provider is there already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = options.clone();
    let retry = RetryBudget::take_from(&mut options)?.config();
    let scheme = parsed.scheme();
    let store: Arc<dyn ObjectStore> = match scheme {
        "file" => {
            let dir =
                local_dir(url).ok_or_else(|| anyhow::anyhow!("{url:?} is not a local path"))?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // Every object is on the disk, and named in its folder, before its write returns,
            // as a cloud store's is: a snapshot's manifest goes last, so after a power cut a
            // snapshot is there whole or not at all, never as a manifest naming lost packs.
            let store = LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("opening {}", dir.display()))?
                .with_automatic_cleanup(true)
                .with_fsync(true);
            return Ok(Arc::new(store));
        }
        "memory" => {
            if !matches!(parsed.path(), "" | "/") {
                bail!("memory:// takes no path");
            }
            return Ok(Arc::new(object_store::memory::InMemory::new()));
        }
        "s3" | "s3a" => {
            let b = aws_chain::configure(
                s3_builder(url, &options)?
                    .with_retry(retry)
                    .with_http_connector(counting.clone()),
            )?;
            let built = b
                .clone()
                .build()
                .with_context(|| format!("opening {url}"))?;
            match bucket_region::unknown(&b) {
                true => Arc::new(RegionFound::new(b, parsed.host_str().unwrap_or_default())),
                false => Arc::new(built),
            }
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_http_connector(counting.clone());
            for (k, v) in &options {
                let key: GoogleConfigKey = k.parse().map_err(|_| unknown(k, "gs"))?;
                b = b.with_config(key, v);
            }
            let b = gcp_impersonation::configure(b)?;
            Arc::new(b.build().with_context(|| format!("opening {url}"))?)
        }
        "az" | "azure" | "adl" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env();
            for (k, v) in credentials::azure_connection_string(&mut options)? {
                b = b.with_config(k, v);
            }
            b = b
                .with_url(url)
                .with_retry(retry)
                .with_http_connector(counting.clone());
            for (k, v) in &options {
                let key: AzureConfigKey = k.parse().map_err(|_| unknown(k, "az"))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().with_context(|| format!("opening {url}"))?)
        }
        other => {
            bail!("{other}:// is not a kind of remote snapfs knows (file, memory, s3, gs, az)")
        }
    };
    // The URL's host names the bucket; its path is a prefix inside it.
    let prefix = StorePath::from_url_path(parsed.path())
        .with_context(|| format!("the path of {url} cannot be an object prefix"))?;
    if prefix.as_ref().is_empty() {
        return Ok(store);
    }
    Ok(Arc::new(PrefixStore::new(store, prefix)))
}

/// The HTTP client of requests made before a store's own (credentials, a bucket's region),
/// bounded so that a silent endpoint fails the request instead of hanging it.
pub(super) fn side_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
}

/// The builder of an `s3://` remote: the environment, then the options.
fn s3_builder(url: &str, options: &BTreeMap<String, String>) -> anyhow::Result<AmazonS3Builder> {
    let mut b = AmazonS3Builder::from_env().with_url(url);
    for (k, v) in options {
        let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(k, "s3"))?;
        b = b.with_config(key, v);
    }
    Ok(aws_chain::metadata_endpoint(b))
}

/// Where an `s3://` remote's credentials would come from, named without a secret; None for
/// other remotes.
pub fn aws_credential_source(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Option<anyhow::Result<String>> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !matches!(scheme, "s3" | "s3a") {
        return None;
    }
    let mut options = options.clone();
    Some((|| {
        RetryBudget::take_from(&mut options)?;
        Ok(match aws_chain::plan(&s3_builder(url, &options)?)? {
            Plan::Given(label) => label.to_string(),
            Plan::Profile(found) => aws_chain::describe(&found.0, &found.1),
            Plan::Fallback(label) => label,
            Plan::Nothing(tried) => format!("none found ({tried})"),
        })
    })())
}

/// Why a store refused the credentials, in one line ("403 Forbidden, AuthorizationFailure"),
/// when `e` is such a refusal. Some requests (listings) report a 401 or 403 only inside a
/// generic error, and the store's XML answer is too long for a log line or `snapfs status`.
pub(crate) fn rejection(e: &object_store::Error) -> Option<String> {
    if let object_store::Error::Unauthenticated { source, .. } = e
        && let Some(c) = source.downcast_ref::<CredentialError>()
    {
        return Some(c.message.clone());
    }
    let text = e.to_string();
    let status = ["401 Unauthorized", "403 Forbidden"]
        .into_iter()
        .find(|s| text.contains(&format!("status code: {s}")))?;
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.trim());
    Some(match code {
        Some(code) => format!("credentials rejected ({status}, {code})"),
        None => format!("credentials rejected ({status})"),
    })
}

fn unknown(key: &str, scheme: &str) -> anyhow::Error {
    anyhow::anyhow!("option {key:?} is not known for {scheme}:// remotes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn open(url: &str, options: &BTreeMap<String, String>) -> anyhow::Result<Arc<dyn ObjectStore>> {
        open_store(url, options, &Counting::default())
    }

    #[test]
    fn opens_each_kind_without_io() {
        let s3 = opts(&[
            ("endpoint", "http://127.0.0.1:9"),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "k"),
            ("secret_access_key", "s"),
            ("retry_timeout", "2s"),
        ]);
        assert!(open("s3://bucket/some/prefix", &s3).is_ok());
        let az = opts(&[("account_name", "a"), ("account_key", "a2V5")]);
        assert!(open("az://container", &az).is_ok());
        assert!(open("memory://", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let e = open("s3://b", &opts(&[("colour", "blue")])).unwrap_err();
        assert!(format!("{e:#}").contains("\"colour\""), "{e:#}");
        let e = open("ftp://x/y", &BTreeMap::new()).unwrap_err();
        assert!(format!("{e:#}").contains("ftp://"), "{e:#}");
        assert!(open("memory:///p", &BTreeMap::new()).is_err());
        assert!(open("s3://b", &opts(&[("retry_timeout", "soon")])).is_err());
    }
}
