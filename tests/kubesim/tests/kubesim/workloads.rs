//! Deployments and StatefulSets resolve to pods by selector.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::support::{bounded, client, is_bound, start, wait_for};

fn template(app: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "main", "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_resolve_to_ready_pods() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let mut web = template("web");
        web["spec"]["containers"][0].as_object_mut().unwrap().remove("volumeMounts");
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": web}
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &deployment).await.unwrap();
        let ready = wait_for(deployments.clone(), "web", |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas) == Some(2)
        })
        .await;
        let selector = ready.spec.unwrap().selector.match_labels.unwrap();
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let owned = pods.list(&ListParams::default().labels(&labels.join(","))).await.unwrap();
        assert_eq!(owned.items.len(), 2);
        assert!(owned.items.iter().all(|p| p.name_any().starts_with("web-")));

        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "broker"},
            "spec": {"replicas": 2, "serviceName": "broker", "selector": {"matchLabels": {"app": "broker"}},
                     "template": template("broker"),
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        }))
        .unwrap();
        statefulsets.create(&PostParams::default(), &sts).await.unwrap();
        wait_for(statefulsets.clone(), "broker", |s: Option<&StatefulSet>| {
            s.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(2)
        })
        .await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        wait_for(pvcs.clone(), "data-broker-1", is_bound()).await;
        let pod = pods.get("broker-0").await.unwrap();
        assert_eq!(pod.labels().get("statefulset.kubernetes.io/pod-name").map(String::as_str), Some("broker-0"));

        deployments.delete("web", &DeleteParams::default()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !pods.list(&ListParams::default().labels("app=web")).await.unwrap().items.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("orphaned pods are collected");
        sim.shutdown().await;
    })
    .await;
}
