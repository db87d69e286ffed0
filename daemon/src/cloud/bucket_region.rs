//! An S3 bucket's region, found when neither the remote nor the environment gives one: S3
//! answers a HEAD of the bucket, from any region and even when it refuses the request, with
//! `x-amz-bucket-region`. The HEAD waits for the store's first use, so opening a remote never
//! needs the network; a failed lookup is tried again on the next use.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use tokio::sync::OnceCell;

/// Whether the builder leaves the region to be found: no endpoint and no region given.
pub fn unknown(b: &AmazonS3Builder) -> bool {
    [
        Key::Region,
        Key::DefaultRegion,
        Key::Endpoint,
        Key::S3Endpoint,
    ]
    .iter()
    .all(|k| b.get_config_value(k).is_none())
}

/// The store of a bucket in a region found on first use.
#[derive(Debug, Clone)]
pub struct RegionFound(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    builder: AmazonS3Builder,
    /// Where the HEAD goes: the bucket's global virtual-host address.
    head_url: String,
    store: OnceCell<Arc<dyn ObjectStore>>,
}

impl RegionFound {
    pub fn new(builder: AmazonS3Builder, bucket: &str) -> RegionFound {
        // The wildcard certificate of s3.amazonaws.com covers one label: dotted names go by
        // path.
        let head_url = match bucket.contains('.') {
            true => format!("https://s3.amazonaws.com/{bucket}"),
            false => format!("https://{bucket}.s3.amazonaws.com"),
        };
        RegionFound(Arc::new(Inner {
            builder,
            head_url,
            store: OnceCell::new(),
        }))
    }

    async fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        let inner = &self.0;
        inner
            .store
            .get_or_try_init(|| async {
                let region = head_region(&inner.head_url).await.map_err(|e| {
                    object_store::Error::Generic {
                        store: "S3",
                        source: format!(
                            "finding the region of the bucket at {}: {e}",
                            inner.head_url
                        )
                        .into(),
                    }
                })?;
                tracing::info!(%region, url = %inner.head_url, "found the bucket's region");
                let store = inner.builder.clone().with_region(region).build()?;
                Ok(Arc::new(store) as Arc<dyn ObjectStore>)
            })
            .await
            .cloned()
    }
}

/// The region S3 names in its answer to a HEAD of `url`.
async fn head_region(url: &str) -> std::result::Result<String, String> {
    let client = super::store::side_client().map_err(|e| e.to_string())?;
    let response = client.head(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .headers()
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| format!("{status} without x-amz-bucket-region"))
}

impl std::fmt::Display for RegionFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3 bucket at {} (region found on first use)",
            self.0.head_url
        )
    }
}

#[async_trait]
impl ObjectStore for RegionFound {
    async fn put_opts(&self, at: &Path, payload: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.store().await?.put_opts(at, payload, o).await
    }

    async fn put_multipart_opts(
        &self,
        at: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.store().await?.put_multipart_opts(at, o).await
    }

    async fn get_opts(&self, at: &Path, o: GetOptions) -> Result<GetResult> {
        self.store().await?.get_opts(at, o).await
    }

    async fn get_ranges(&self, at: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.store().await?.get_ranges(at, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        futures::stream::once(async move { this.store().await.map(|s| s.delete_stream(locations)) })
            .try_flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (this, prefix) = (self.clone(), prefix.cloned());
        futures::stream::once(async move { this.store().await.map(|s| s.list(prefix.as_ref())) })
            .try_flatten()
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (this, prefix, offset) = (self.clone(), prefix.cloned(), offset.clone());
        futures::stream::once(async move {
            let store = this.store().await;
            store.map(|s| s.list_with_offset(prefix.as_ref(), &offset))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.store().await?.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.store().await?.copy_opts(from, to, o).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, o: RenameOptions) -> Result<()> {
        self.store().await?.rename_opts(from, to, o).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_without_an_endpoint_or_a_region() {
        let b = AmazonS3Builder::new().with_bucket_name("b");
        assert!(unknown(&b));
        assert!(!unknown(&b.clone().with_region("eu-west-1")));
        assert!(!unknown(&b.with_endpoint("http://127.0.0.1:9000")));
    }

    #[tokio::test]
    async fn reads_the_region_from_a_refusal() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bucket", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf).await.unwrap();
            conn.write_all(
                b"HTTP/1.1 403 Forbidden\r\nx-amz-bucket-region: eu-central-1\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        });
        assert_eq!(head_region(&url).await.unwrap(), "eu-central-1");
        server.await.unwrap();
    }
}
