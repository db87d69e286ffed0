//! A context that could not be connected (its credential plugin failed, say): its directory
//! stays, and every access to it fails with the reason, so the user finds the cause where
//! they looked rather than a context gone missing.

use async_trait::async_trait;
use bytes::Bytes;
use snapfs_fs::backend::{BackendError, LiveEntry, LiveTree};

pub struct Unavailable {
    /// One line: the context, the cause and what to do.
    pub why: String,
}

impl Unavailable {
    fn error(&self) -> BackendError {
        BackendError::PermissionDenied(self.why.clone())
    }
}

#[async_trait]
impl LiveTree for Unavailable {
    async fn list(&self, _path: &str) -> Result<Vec<LiveEntry>, BackendError> {
        Err(self.error())
    }

    async fn stat(&self, _path: &str) -> Result<LiveEntry, BackendError> {
        Err(self.error())
    }

    async fn read(&self, _path: &str, _offset: u64, _len: u64) -> Result<Bytes, BackendError> {
        Err(self.error())
    }
}
