//! The one registry of the mount's targets. Each entry owns what the VFS reads (its `Target`),
//! its powers and its lifecycle settings, under an id that never changes. The VFS, the job
//! engine, cleanup and the control socket all ask it; a target found while the mount runs (a
//! Kubernetes namespace on first use) is added by one call and is there for all of them at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use snapfs_fs::backend::{Backend, BackendError, RawObjects};
use snapfs_fs::vfs::{Target, TargetId, TargetSet};

use crate::config::Retention;
use crate::powers::{Power, Powers};
use snapfs_control::wire::TargetMetrics;

/// A target to register.
pub struct NewTarget {
    /// Kind directory: "cloud", "k8s" or "hivemq".
    pub kind: &'static str,
    /// Path below the kind directory (`local`, `prod/shop`).
    pub name: String,
    /// One line for the generated README.
    pub description: String,
    pub backend: Arc<dyn Backend>,
    pub raw: Option<Arc<dyn RawObjects>>,
    pub powers: Powers,
    pub retention: Retention,
}

/// One registered target.
pub struct Entry {
    /// What the VFS reads; `uploads/` is there exactly when the target takes local data.
    pub target: Arc<Target>,
    pub powers: Powers,
    pub retention: Retention,
    path: String,
}

impl Entry {
    pub fn id(&self) -> TargetId {
        self.target.id
    }

    /// The target's path in the mount (`cloud/local`, `k8s/prod/shop`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `power` of this target, or the error that says it has none.
    pub fn need<T: ?Sized>(
        &self,
        power: &Option<Arc<T>>,
        which: Power,
    ) -> Result<Arc<T>, BackendError> {
        power
            .clone()
            .ok_or_else(|| self.powers.lacking(&self.path, which))
    }

    pub fn metrics(&self) -> TargetMetrics {
        self.powers
            .counts
            .as_ref()
            .map_or_else(TargetMetrics::default, |c| c.metrics())
    }
}

/// Finds targets nobody configured that can be there all the same (the namespaces of a
/// Kubernetes context).
#[async_trait]
pub trait FindsTargets: Send + Sync {
    /// The target at `path`, if one can be there. No request is made: a target is cheap until
    /// it is used.
    fn find(&self, path: &str) -> Option<NewTarget>;
    /// Paths of the targets where snapfs left something that cleanup must look at.
    async fn in_use(&self) -> Vec<String>;
}

/// Told the target and the name of a snapshot that appeared or went outside a request.
type OnChange = Box<dyn Fn(TargetId, &str) + Send + Sync>;

#[derive(Default)]
struct Entries {
    by_id: BTreeMap<TargetId, Arc<Entry>>,
    by_path: HashMap<String, TargetId>,
    last: u32,
}

pub struct Registry {
    entries: RwLock<Entries>,
    finders: Vec<Arc<dyn FindsTargets>>,
    on_change: OnceLock<OnChange>,
}

impl Registry {
    pub fn new(finders: Vec<Arc<dyn FindsTargets>>) -> Arc<Registry> {
        Arc::new(Registry {
            entries: RwLock::new(Entries::default()),
            finders,
            on_change: OnceLock::new(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a target; one already at its path stays and is answered instead.
    pub fn add(&self, new: NewTarget) -> Arc<Entry> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let path = format!("{}/{}", new.kind, new.name);
        if let Some(id) = entries.by_path.get(&path)
            && let Some(e) = entries.by_id.get(id)
        {
            return e.clone();
        }
        entries.last += 1;
        let id = TargetId(entries.last);
        let entry = Arc::new(Entry {
            target: Arc::new(Target {
                id,
                kind: new.kind,
                name: new.name,
                description: new.description,
                backend: new.backend,
                raw: new.raw,
                uploads: new.powers.local_data.is_some(),
            }),
            powers: new.powers,
            retention: new.retention,
            path: path.clone(),
        });
        entries.by_id.insert(id, entry.clone());
        entries.by_path.insert(path, id);
        entry
    }

    pub fn entry(&self, id: TargetId) -> Option<Arc<Entry>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Every target known now, in the order they were registered.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.read().by_id.values().cloned().collect()
    }

    /// The target at `path` (`cloud/local`, `k8s/prod/shop`), registered now if a finder knows
    /// one can be there.
    pub fn find(&self, path: &str) -> Option<Arc<Entry>> {
        let path = path.trim_matches('/');
        if let Some(e) = self.known(path) {
            return Some(e);
        }
        let new = self.finders.iter().find_map(|f| f.find(path))?;
        if format!("{}/{}", new.kind, new.name) != path {
            tracing::error!(path, "a finder answered a target at another path");
            return None;
        }
        let entry = self.add(new);
        tracing::info!(target = path, id = %entry.id(), "target added");
        Some(entry)
    }

    fn known(&self, path: &str) -> Option<Arc<Entry>> {
        let entries = self.read();
        entries
            .by_path
            .get(path)
            .and_then(|id| entries.by_id.get(id))
            .cloned()
    }

    /// Registers every target where snapfs left something, so cleanup looks at each.
    pub async fn find_in_use(&self) {
        for f in &self.finders {
            for path in f.in_use().await {
                self.find(&path);
            }
        }
    }

    /// Sets who is told when a snapshot appears or goes outside a request (the mount).
    pub fn on_change(&self, f: impl Fn(TargetId, &str) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    /// Snapshot `name` of target `id` appeared or went. Callers may hold locks (the job engine
    /// tells while holding its own), so whoever is told must not wait on anything, above all
    /// not on the kernel (see `Vfs::entry_changed`).
    pub fn changed(&self, id: TargetId, name: &str) {
        if let Some(f) = self.on_change.get() {
            f(id, name);
        }
    }
}

impl TargetSet for Registry {
    fn get(&self, id: TargetId) -> Option<Arc<Target>> {
        self.entry(id).map(|e| e.target.clone())
    }

    fn all(&self) -> Vec<Arc<Target>> {
        self.read()
            .by_id
            .values()
            .map(|e| e.target.clone())
            .collect()
    }

    fn find(&self, path: &str) -> Option<Arc<Target>> {
        Registry::find(self, path).map(|e| e.target.clone())
    }
}
