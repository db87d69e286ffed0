//! Starting a server and a client, and bounded waits.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client};
use kubesim::{Config, KubeSim, Timings};
use serde_json::json;

/// Every test body finishes within this.
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn fast() -> Timings {
    Timings {
        pod_start: Duration::from_millis(100),
        pod_stop: Duration::from_millis(50),
        pvc_bind: Duration::from_millis(50),
        snapshot_ready: Duration::from_millis(300),
        bookmark_interval: Duration::from_millis(200),
    }
}

pub async fn start() -> KubeSim {
    KubeSim::start(Config {
        timings: fast(),
        ..Config::default()
    })
    .await
    .expect("server starts")
}

pub async fn client_with_token(sim: &KubeSim, token: &str) -> Client {
    let yaml = sim.kubeconfig().replace(kubesim::ADMIN_TOKEN, token);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

pub async fn client(sim: &KubeSim) -> Client {
    client_with_token(sim, kubesim::ADMIN_TOKEN).await
}

/// Runs a test body under the time limit.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(LIMIT, body)
        .await
        .expect("test finished in time");
}

/// `await_condition` has no timeout and gives up on watch errors: wrap it.
pub async fn wait_for<K>(api: Api<K>, name: &str, cond: impl Condition<K>) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    tokio::time::timeout(Duration::from_secs(20), await_condition(api, name, cond))
        .await
        .expect("condition met in time")
        .expect("watch works")
        .expect("object exists")
}

/// Polls an object until `cond` holds; for dynamic types, which `await_condition` cannot watch.
pub async fn poll_until(
    api: &Api<DynamicObject>,
    name: &str,
    cond: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(obj) = api.get_opt(name).await.expect("get works")
                && cond(&obj)
            {
                return obj;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("condition met in time")
}

pub fn snapshot_resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    }
}

pub fn content_resource() -> ApiResource {
    ApiResource {
        kind: "VolumeSnapshotContent".into(),
        plural: "volumesnapshotcontents".into(),
        ..snapshot_resource()
    }
}

pub fn snapshots(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &snapshot_resource())
}

pub fn pvc_spec(name: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    }))
    .expect("valid claim")
}

pub fn pod_spec(name: &str, claim: Option<&str>) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "labels": {"app": name}},
        // A bare `sleep` ignores SIGTERM as its container's init: deleted, it is killed after
        // the grace period, kept short here.
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
    });
    if let Some(claim) = claim {
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    serde_json::from_value(pod).expect("valid pod")
}

pub fn is_bound() -> impl Condition<PersistentVolumeClaim> {
    |pvc: Option<&PersistentVolumeClaim>| {
        pvc.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Bound")
    }
}

/// A Bound claim `data` of 1Gi and a Running pod `name` mounting it at /data.
pub async fn pod_with_volume(client: &Client, ns: &str, name: &str) -> Pod {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = format!("{name}-data");
    pvcs.create(&PostParams::default(), &pvc_spec(&claim, "1Gi"))
        .await
        .expect("claim created");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod_spec(name, Some(&claim)))
        .await
        .expect("pod created");
    wait_for(pods, name, kube::runtime::conditions::is_pod_running()).await
}

/// The reasons of the events about object `name` in namespace `ns`.
pub async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}
