//! The targets of the mount as the VFS sees them. The VFS keeps no list of its own: it asks the
//! set it was given (the daemon's registry), so a target added while the mount runs is there
//! for every part of the daemon at once.

use std::sync::Arc;

use crate::backend::{Backend, RawObjects};

/// A target's id for the life of the mount: handed out once when the target is registered and
/// never reused, so it is not a position in any list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A directory of the mount backed by one backend (`cloud/local`).
pub struct Target {
    pub id: TargetId,
    /// Kind directory: "cloud", "k8s" or "hivemq".
    pub kind: &'static str,
    /// Path below the kind directory, '/'-separated (`local`, `prod/shop`). A target of more
    /// than one component sits inside a live tree (a Kubernetes namespace), which leads to it.
    pub name: String,
    /// One line for the generated README.
    pub description: String,
    pub backend: Arc<dyn Backend>,
    pub raw: Option<Arc<dyn RawObjects>>,
    /// Whether `uploads/` exists: false where snapshots are made by the backend itself and
    /// nothing can be written in (a HiveMQ cluster has no upload endpoint).
    pub uploads: bool,
}

impl Target {
    /// The target's path in the mount (`cloud/local`).
    pub fn path(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Where the VFS finds targets.
pub trait TargetSet: Send + Sync + 'static {
    fn get(&self, id: TargetId) -> Option<Arc<Target>>;
    /// Every target known now, in the order they were registered.
    fn all(&self) -> Vec<Arc<Target>>;
    /// The target at `path` (`k8s/prod/shop`), registered now if one can be there but was not
    /// known yet (a Kubernetes namespace on first use); None when no target can be there.
    fn find(&self, path: &str) -> Option<Arc<Target>>;
}
