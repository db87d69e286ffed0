//! What the tree asks the API server: namespaces (kept by a watch), VolumeSnapshots, pods and
//! the ready pod of a workload.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use snapfs_control::units::parse_quantity;
use snapfs_fs::backend::BackendError;

use super::errors::retry;

/// Annotation a snapshot's expiry time is read from (RFC 3339), as the retention job sets it.
pub const EXPIRES_ANNOTATION: &str = "snapfs.io/expires";

/// One ready VolumeSnapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub created: DateTime<Utc>,
    pub size: u64,
    pub uid: String,
    pub expires: Option<DateTime<Utc>>,
}

/// The namespaces of a cluster: the watch's view while it is healthy, else a list at most
/// `ttl` old; the context's own namespace always, as kubectl uses it without listing, and
/// alone when the user may not list namespaces.
pub struct Namespaces {
    watched: Mutex<Option<BTreeSet<String>>>,
    listed: Mutex<Option<(Instant, BTreeSet<String>)>>,
    ttl: Duration,
    context: String,
    /// The context's namespace (`default` when it names none).
    home: String,
    /// Whether the user was told that listing namespaces is denied.
    told: AtomicBool,
}

impl Namespaces {
    /// Starts the watch; it runs until the runtime stops, restarting with backoff on errors.
    pub fn watch(client: Client, ttl: Duration, context: String, home: String) -> Arc<Namespaces> {
        let ns = Arc::new(Namespaces {
            watched: Mutex::new(None),
            listed: Mutex::new(None),
            ttl,
            context: context.clone(),
            home,
            told: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&ns);
        let api: Api<Namespace> = Api::all(client);
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut initial = BTreeSet::new();
            while let Some(event) = stream.next().await {
                let Some(ns) = weak.upgrade() else { return };
                let mut watched = ns.watched.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(watcher::Event::Init) => initial.clear(),
                    Ok(watcher::Event::InitApply(n)) => {
                        initial.extend(n.metadata.name);
                    }
                    Ok(watcher::Event::InitDone) => *watched = Some(initial.clone()),
                    Ok(watcher::Event::Apply(n)) => {
                        if let (Some(set), Some(name)) = (watched.as_mut(), n.metadata.name) {
                            set.insert(name);
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        if let (Some(set), Some(name)) = (watched.as_mut(), n.metadata.name) {
                            set.remove(&name);
                        }
                    }
                    Err(e) => {
                        // Until the watch is back, listings ask the API server directly.
                        if watched.take().is_some() {
                            tracing::warn!(context, error = %e, "namespace watch failed; listing instead");
                        }
                    }
                }
            }
        });
        ns
    }

    /// The context's own namespace, reachable whatever listing namespaces gives.
    pub fn home(&self) -> &str {
        &self.home
    }

    pub async fn names(&self, client: &Client) -> Result<BTreeSet<String>, BackendError> {
        let mut set = self.listing(client).await?;
        set.insert(self.home.clone());
        Ok(set)
    }

    async fn listing(&self, client: &Client) -> Result<BTreeSet<String>, BackendError> {
        if let Some(set) = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(set);
        }
        if let Some((at, set)) = &*self.listed.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < self.ttl
        {
            return Ok(set.clone());
        }
        let api: Api<Namespace> = Api::all(client.clone());
        let lp = ListParams::default();
        let set: BTreeSet<String> = match retry(|| api.list(&lp), "list namespaces").await {
            Ok(list) => list
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect(),
            // Namespace-scoped RBAC, common in shared clusters: the context's namespace is
            // still there, as it is for kubectl.
            Err(BackendError::PermissionDenied(why)) => {
                if !self.told.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        context = self.context,
                        "this user may not list namespaces ({why}); only the context's namespace {} is shown: name others in a [[kubernetes]] table's `namespaces` to see them",
                        self.home
                    );
                }
                BTreeSet::new()
            }
            Err(e) => return Err(e),
        };
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), set.clone()));
        Ok(set)
    }
}

/// A `v1` resource of an API group that k8s-openapi does not type (or types as cluster
/// objects snapfs reads only a field or two of).
pub fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn snapshot_resource() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

/// The ready VolumeSnapshots of a namespace. Without the snapshot CRDs there are none: the
/// directory is empty and the log says why, since a cluster without them is common.
pub async fn snapshots(client: &Client, ns: &str) -> Result<Vec<Snapshot>, BackendError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &snapshot_resource());
    let what = format!("list volumesnapshots in namespace {ns}");
    let lp = ListParams::default();
    match retry(|| api.list(&lp), &what).await {
        Ok(list) => Ok(list.items.iter().filter_map(ready_snapshot).collect()),
        Err(BackendError::NotFound(_)) => {
            tracing::warn!(
                namespace = ns,
                "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed; snapshots/ is empty"
            );
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// A VolumeSnapshot that is ready to use, or None.
pub fn ready_snapshot(o: &DynamicObject) -> Option<Snapshot> {
    let status = o.data.get("status")?;
    if status.get("readyToUse")?.as_bool() != Some(true) {
        return None;
    }
    let created = status
        .get("creationTime")
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            o.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        })?;
    let size = status
        .get("restoreSize")
        .and_then(|q| match q {
            serde_json::Value::String(s) => parse_quantity(s).ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .unwrap_or(0);
    let expires = o
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPIRES_ANNOTATION))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(Snapshot {
        name: o.metadata.name.clone()?,
        created,
        size,
        uid: o.metadata.uid.clone().unwrap_or_default(),
        expires,
    })
}

/// Pods of a namespace that are running, by name.
pub async fn running_pods(client: &Client, ns: &str) -> Result<Vec<Pod>, BackendError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("list pods in namespace {ns}");
    let lp = ListParams::default();
    let list = retry(|| api.list(&lp), &what).await?;
    Ok(list.items.into_iter().filter(is_running).collect())
}

pub fn is_running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

pub fn is_ready(p: &Pod) -> bool {
    is_running(p)
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Names of the namespace's Deployments and StatefulSets (a Deployment wins a shared name).
pub async fn workloads(client: &Client, ns: &str) -> Result<BTreeSet<String>, BackendError> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    let d = retry(
        || deps.list(&lp),
        &format!("list deployments in namespace {ns}"),
    )
    .await?;
    let s = retry(
        || sets.list(&lp),
        &format!("list statefulsets in namespace {ns}"),
    )
    .await?;
    let names = d.items.into_iter().filter_map(|x| x.metadata.name);
    Ok(names
        .chain(s.items.into_iter().filter_map(|x| x.metadata.name))
        .collect())
}

/// A ready pod of workload `name` (the first by name, so the link is stable while it lives).
pub async fn ready_pod_of(client: &Client, ns: &str, name: &str) -> Result<String, BackendError> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let what = format!("get deployment {name} in namespace {ns}");
    let selector = match retry(|| deps.get_opt(name), &what).await? {
        Some(d) => d.spec.map(|s| s.selector),
        None => {
            let what = format!("get statefulset {name} in namespace {ns}");
            let s = retry(|| sets.get_opt(name), &what)
                .await?
                .ok_or_else(|| BackendError::NotFound(format!("workload {name}")))?;
            s.spec.map(|s| s.selector)
        }
    };
    let labels = selector
        .as_ref()
        .and_then(label_selector)
        .ok_or_else(|| BackendError::Other(format!("workload {name} has no usable selector")))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("list pods in namespace {ns}");
    let lp = ListParams::default().labels(&labels);
    let list = retry(|| pods.list(&lp), &what).await?;
    let mut ready: Vec<String> = list
        .items
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ready.sort();
    ready
        .into_iter()
        .next()
        .ok_or_else(|| BackendError::NotFound(format!("a ready pod of workload {name}")))
}

/// The `matchLabels` of a selector as a label query; None for an empty selector or one with
/// expressions, which this view does not evaluate.
pub fn label_selector(s: &LabelSelector) -> Option<String> {
    if s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
        return None;
    }
    let labels = s.match_labels.as_ref()?;
    if labels.is_empty() {
        return None;
    }
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_ready_snapshots_are_shown_with_their_details() {
        let obj = |ready: bool| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {
                    "name": "db-1", "uid": "u-1",
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "annotations": {EXPIRES_ANNOTATION: "2026-02-01T00:00:00Z"}
                },
                "status": {"readyToUse": ready, "creationTime": "2026-01-01T00:00:05Z",
                           "restoreSize": "1Gi"}
            }))
            .unwrap()
        };
        assert_eq!(ready_snapshot(&obj(false)), None);
        let s = ready_snapshot(&obj(true)).unwrap();
        assert_eq!(
            (s.name.as_str(), s.uid.as_str(), s.size),
            ("db-1", "u-1", 1 << 30)
        );
        assert_eq!(s.created.to_rfc3339(), "2026-01-01T00:00:05+00:00");
        assert_eq!(
            s.expires.map(|e| e.to_rfc3339()).as_deref(),
            Some("2026-02-01T00:00:00+00:00")
        );
    }

    #[test]
    fn selectors_become_label_queries() {
        let s: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web", "tier": "x"}})).unwrap();
        assert_eq!(label_selector(&s).as_deref(), Some("app=web,tier=x"));
        let e: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]}),
        )
        .unwrap();
        assert_eq!(label_selector(&e), None);
    }
}
