//! An object store that dies after a set number of writes and deletes: the next one and every
//! call after it fail, as if the process had been killed right there. The bucket underneath is
//! the real one, so what is left in it is exactly what a kill at that step leaves. (A wrapper,
//! since no real component stops a process between two requests on demand.)

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug)]
pub struct Dying {
    inner: Arc<dyn ObjectStore>,
    budget: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    /// Writes and deletes still allowed.
    left: AtomicU64,
    /// Writes and deletes made.
    made: AtomicU64,
    dead: AtomicBool,
}

impl Dying {
    /// A store over `inner` that makes `writes` writes or deletes, then dies at the next.
    pub fn after(inner: Arc<dyn ObjectStore>, writes: u64) -> Arc<Dying> {
        Arc::new(Dying {
            inner,
            budget: Arc::new(Budget {
                left: AtomicU64::new(writes),
                made: AtomicU64::new(0),
                dead: AtomicBool::new(false),
            }),
        })
    }

    /// Writes and deletes made.
    pub fn made(&self) -> u64 {
        self.budget.made.load(Ordering::SeqCst)
    }

    /// Whether a write was refused: the process is gone.
    pub fn died(&self) -> bool {
        self.budget.dead.load(Ordering::SeqCst)
    }
}

impl Budget {
    fn write(&self) -> Result<()> {
        self.read()?;
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if taken.is_err() {
            self.dead.store(true, Ordering::SeqCst);
            return Err(killed());
        }
        self.made.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn read(&self) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(killed());
        }
        Ok(())
    }
}

fn killed() -> object_store::Error {
    object_store::Error::Generic {
        store: "dying",
        source: "the process was killed here".into(),
    }
}

impl fmt::Display for Dying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dying({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Dying {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.budget.write()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.budget.write()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.budget.read()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Each path is one delete, allowed or refused when the store comes to it.
        let budget = self.budget.clone();
        let gated = locations.map(move |path| path.and_then(|p| budget.write().map(|()| p)));
        self.inner.delete_stream(gated.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = self.budget.read() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.budget.read()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.budget.write()?;
        self.inner.copy_opts(from, to, options).await
    }
}
