//! Records of retired packs (`snapfs/retired/<repack-id>.json`): the packs a repack took out
//! of use, kept for the cleanup's grace period so that a reader that opened a snapshot before
//! the repack still finds its bytes (see `repack`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use snapfs_fs::backend::BackendError;
use snapfs_fs::format;

use super::{CloudBackend, store_error};

/// The record of the packs one repack took out of use.
#[derive(serde::Serialize, serde::Deserialize)]
struct Retired {
    repack: String,
    written: DateTime<Utc>,
    packs: Vec<String>,
}

/// Records of retired packs, each with the packs it names and whether it is older than the
/// grace period.
pub(super) struct RetiredRecords(Vec<(String, Vec<String>, bool)>);

impl RetiredRecords {
    /// Every pack some record names, however old.
    pub fn all(&self) -> HashSet<String> {
        self.0
            .iter()
            .flat_map(|(_, p, _)| p.iter().cloned())
            .collect()
    }

    /// The packs of records younger than the grace period: still kept.
    pub fn held(&self) -> HashSet<String> {
        self.0
            .iter()
            .filter(|(_, _, old)| !old)
            .flat_map(|(_, p, _)| p.iter().cloned())
            .collect()
    }

    /// Keys of records older than the grace period: their packs are ordinary garbage now.
    pub fn expired(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|(_, _, old)| *old)
            .map(|(k, _, _)| k.as_str())
    }
}

impl CloudBackend {
    /// The records of retired packs. One that cannot be read or parsed holds nothing: it
    /// was not written by a repack, which writes them whole.
    pub(super) async fn retired(&self, grace: Duration) -> Result<RetiredRecords, BackendError> {
        let metas = self
            .list_under(format::RETIRED_PREFIX, "retired packs")
            .await?;
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let mut out = Vec::new();
        for m in metas {
            let key = m.location.to_string();
            let old = now.signed_duration_since(m.last_modified) >= grace;
            let packs = match self.store.get(&m.location).await {
                Ok(r) => r.bytes().await.ok(),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.failed(store_error(&key, e))),
            }
            .and_then(|b| serde_json::from_slice::<Retired>(&b).ok())
            .map(|r| r.packs)
            .unwrap_or_default();
            out.push((key, packs, old));
        }
        Ok(RetiredRecords(out))
    }

    /// Writes the record of repack `id`: the packs it took out of use.
    pub(super) async fn write_retired(
        &self,
        id: &str,
        packs: Vec<String>,
    ) -> Result<(), BackendError> {
        let key = format::retired_key(id);
        let record = Retired {
            repack: id.to_string(),
            written: Utc::now(),
            packs,
        };
        let body = serde_json::to_vec(&record).map_err(|e| BackendError::Other(e.to_string()))?;
        self.store
            .put(&StorePath::from(key.as_str()), PutPayload::from(body))
            .await
            .map_err(|e| self.failed(store_error(&key, e)))?;
        Ok(())
    }
}
