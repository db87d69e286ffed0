//! Orphan packs: pack objects that no manifest lists. An upload that was killed, or a deletion
//! interrupted between the manifest and its packs, leaves them; nothing else can reach them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use snapfs_fs::backend::BackendError;
use snapfs_fs::format;

use super::{CloudBackend, store_error};

/// One pack object found by [`CloudBackend::orphan_packs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanPack {
    pub key: String,
    pub size: u64,
}

/// The packs of one upload id.
#[derive(Default)]
struct Upload {
    packs: Vec<OrphanPack>,
    newest: Option<DateTime<Utc>>,
}

impl CloudBackend {
    /// Packs no manifest lists, of uploads that wrote nothing for `grace` and are not in
    /// `running` (upload ids this daemon is writing now).
    ///
    /// Packs are listed before manifests: an upload that commits in between is then seen with
    /// its manifest, never as packs alone. An upload still writing keeps its newest pack
    /// younger than `grace`, which covers uploads of other machines too. A manifest that cannot
    /// be read stops the search, since its packs cannot be told from orphans.
    pub async fn orphan_packs(
        &self,
        grace: Duration,
        running: &HashSet<String>,
    ) -> Result<Vec<OrphanPack>, BackendError> {
        let uploads = self.packs_by_upload().await?;
        if uploads.is_empty() {
            return Ok(Vec::new());
        }
        let mut referenced = HashSet::new();
        for (name, version) in self.manifest_objects().await? {
            match self.manifest(&name, &version).await {
                Ok(m) => referenced.extend(m.packs.iter().cloned()),
                // Deleted since the listing; whoever deleted it takes its packs too.
                Err(BackendError::NotFound(_)) => {}
                Err(e) => {
                    return Err(BackendError::Other(format!(
                        "orphan packs not collected: snapshot {name} cannot be read ({e})"
                    )));
                }
            }
        }
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let idle_since = Utc::now() - grace;
        let mut out = Vec::new();
        for (id, upload) in uploads {
            if running.contains(&id) || upload.newest.is_some_and(|t| t > idle_since) {
                continue;
            }
            out.extend(
                upload
                    .packs
                    .into_iter()
                    .filter(|p| !referenced.contains(&p.key)),
            );
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every object under `snapfs/packs/`, grouped by upload id (the key's next component).
    async fn packs_by_upload(&self) -> Result<HashMap<String, Upload>, BackendError> {
        self.counters
            .list_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = StorePath::from(format::PACK_PREFIX.trim_end_matches('/'));
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.failed(store_error("listing packs", e)))?;
        let mut uploads: HashMap<String, Upload> = HashMap::new();
        for m in metas {
            let key = m.location.to_string();
            let Some(id) = key
                .strip_prefix(format::PACK_PREFIX)
                .and_then(|rest| rest.split('/').next())
            else {
                continue;
            };
            let upload = uploads.entry(id.to_string()).or_default();
            upload.newest = upload.newest.max(Some(m.last_modified));
            upload.packs.push(OrphanPack { key, size: m.size });
        }
        Ok(uploads)
    }

    /// Deletes one pack found by [`CloudBackend::orphan_packs`]; one already gone is fine.
    pub async fn delete_pack(&self, key: &str) -> Result<(), BackendError> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(store_error(key, e))),
        }
    }
}
