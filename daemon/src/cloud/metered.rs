//! An object store that times every request it passes on, by operation, for the store latency
//! histograms. Reads are timed until their answer begins (the body streams on afterwards);
//! listings until their last page.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::latency::Latencies;

#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ObjectStore>,
    latency: Arc<Latencies>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>, latency: Arc<Latencies>) -> Metered {
        Metered { inner, latency }
    }
}

impl fmt::Display for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// A stream that records how long it took, from its start to its end, when it ends.
fn timed<T: Send + 'static>(
    stream: BoxStream<'static, T>,
    latency: Arc<Latencies>,
    op: &'static str,
) -> BoxStream<'static, T> {
    let start = Instant::now();
    let end = futures::stream::once(async move {
        latency.record(op, start.elapsed());
        None
    });
    stream
        .map(Some)
        .chain(end)
        .filter_map(futures::future::ready)
        .boxed()
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts);
        self.latency.time("put", put).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let start = self.inner.put_multipart_opts(location, opts);
        self.latency.time("put_multipart", start).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            "head"
        } else if options.range.is_some() {
            "get_range"
        } else {
            "get"
        };
        self.latency
            .time(op, self.inner.get_opts(location, options))
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.latency
            .time("get_ranges", self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        timed(
            self.inner.delete_stream(locations),
            self.latency.clone(),
            "delete",
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        timed(self.inner.list(prefix), self.latency.clone(), "list")
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        timed(
            self.inner.list_with_offset(prefix, offset),
            self.latency.clone(),
            "list",
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.latency
            .time("list", self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.latency
            .time("copy", self.inner.copy_opts(from, to, options))
            .await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    #[tokio::test]
    async fn each_operation_is_timed() {
        let latency = Arc::new(Latencies::default());
        let store = Metered::new(Arc::new(InMemory::new()), latency.clone());
        let p = Path::from("a/b");
        store
            .put(&p, PutPayload::from_static(b"abc"))
            .await
            .unwrap();
        store.get_range(&p, 0..2).await.unwrap();
        store.head(&p).await.unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 1);
        let ops: Vec<String> = latency.snapshot().into_iter().map(|l| l.op).collect();
        assert_eq!(ops, ["get_range", "head", "list", "put"]);
    }
}
