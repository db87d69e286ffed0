//! DESIGN §6 step 7: a VolumeSnapshot watched until `status.readyToUse`, its
//! `status.error.message` shown while it waits, within `k8s.ready_timeout`.

use std::sync::atomic::AtomicBool;

use serde_json::Value;
use snapfs_fs::backend::{BackendError, SnapshotInfo, SnapshotState};

use super::{KubeTarget, Progress, lock, snapshot_info};
use crate::k8s::watch::Watch;

impl KubeTarget {
    /// Watches VolumeSnapshot `name` until it is ready, telling its error while it waits.
    pub(super) async fn wait_ready(
        &self,
        name: &str,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<SnapshotInfo, BackendError> {
        let timeout = self.settings.ready_timeout;
        let what = self.what("watch", "volumesnapshot", name);
        let mut watch = Watch::new(self.snapshots_api(), name, timeout, what).cancelled_by(cancel);
        let mut last_error: Option<String> = None;
        loop {
            let obj = match watch.next().await {
                Ok(obj) => obj,
                Err(stop) => {
                    return Err(stop.error(|| {
                        let why = last_error.map_or(String::new(), |e| format!(": {e}"));
                        format!("VolumeSnapshot {name} was not ready after {timeout:?}{why}")
                    }));
                }
            };
            // Not there (yet, or any more): waited for until the timeout, as before it is made.
            let Some(obj) = obj else { continue };
            if let Some(info) = snapshot_info(&obj).filter(|i| i.state == SnapshotState::Ready) {
                *lock(&progress.waiting) = None;
                return Ok(info);
            }
            let error = obj
                .data
                .pointer("/status/error/message")
                .and_then(Value::as_str)
                .map(str::to_string);
            if error.is_some() && error != last_error {
                tracing::warn!(
                    target = self.path,
                    snapshot = name,
                    error = error.as_deref().unwrap_or_default(),
                    "VolumeSnapshot reports an error; still waiting"
                );
                *lock(&progress.waiting) = error.clone();
                last_error = error;
            }
        }
    }
}
