//! A HiveMQ cluster as a StatefulSet: every pod's REST port routes to hivemqsim, pods become
//! Ready, and a deleted pod comes back under its name and is reachable again.

use std::net::SocketAddr;
use std::time::Duration;

use hivemqsim::Seed;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use kubesim::KubeSim;
use serde_json::json;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{
    BACKUPS, bounded, exchange, file, kube_client, stalling_server, start, start_kube,
};

pub const REST: u16 = 8888;

pub fn hivemq_statefulset(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "hivemq", "image": "hivemq/hivemq4",
                         "ports": [{"name": "rest", "containerPort": REST}]}]}}}
    }))
    .unwrap()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls until pod `name` is Ready and is not the one with uid `not`; returns it.
pub async fn wait_ready(pods: &Api<Pod>, name: &str, not: Option<&str>) -> Pod {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(pod) = pods.get_opt(name).await.unwrap()
                && is_ready(&pod)
                && pod.metadata.uid.as_deref() != not
            {
                return pod;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} Ready in time"))
}

/// kubesim with a StatefulSet `hivemq` of `replicas` pods whose REST port routes to `target`,
/// every pod Ready.
pub async fn hivemq_cluster(target: SocketAddr, replicas: i32) -> (KubeSim, Api<Pod>) {
    let kube = start_kube().await;
    // Routed before the pods exist: the route covers future pods.
    kube.register_statefulset_port("default", "hivemq", REST, target);
    let client = kube_client(&kube).await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    statefulsets
        .create(
            &PostParams::default(),
            &hivemq_statefulset("hivemq", replicas),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for i in 0..replicas {
        wait_ready(&pods, &format!("hivemq-{i}"), None).await;
    }
    (kube, pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_route_to_hivemq_and_come_back_after_deletion() {
    bounded(async {
        let hivemq = start().await;
        let seeded = hivemq.seed(Seed::with_size(50_000)).unwrap();
        let (kube, pods) = hivemq_cluster(hivemq.addr(), 2).await;

        let mut forwarder = pods.portforward("hivemq-1", &[REST]).await.unwrap();
        let mut stream = forwarder.take_stream(REST).unwrap();
        let reply = exchange(&mut stream, "GET", BACKUPS, &[]).await;
        assert_eq!(reply.json()["items"][0]["id"], seeded.id.as_str());
        drop(stream);
        let _ = forwarder.join().await;

        let old = pods.get("hivemq-0").await.unwrap();
        pods.delete("hivemq-0", &DeleteParams::default())
            .await
            .unwrap();
        let new = wait_ready(&pods, "hivemq-0", old.metadata.uid.as_deref()).await;
        assert_eq!(new.name_any(), "hivemq-0");
        assert_ne!(new.metadata.uid, old.metadata.uid);
        assert_eq!(
            new.owner_references()[0].name,
            "hivemq",
            "the StatefulSet owns the new pod"
        );

        let mut forwarder = pods.portforward("hivemq-0", &[REST]).await.unwrap();
        let mut stream = forwarder.take_stream(REST).unwrap();
        let reply = exchange(&mut stream, "GET", &file(&seeded.id), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, hivemq.file(&seeded.id).unwrap());
        drop(stream);
        let _ = forwarder.join().await;

        let statefulsets: Api<StatefulSet> = Api::namespaced(kube_client(&kube).await, "default");
        let sts = statefulsets.get("hivemq").await.unwrap();
        assert_eq!(sts.status.and_then(|s| s.ready_replicas), Some(2));
        kube.shutdown().await;
        hivemq.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pod_ends_its_forwards_with_an_error() {
    bounded(async {
        let (kube, pods) = hivemq_cluster(stalling_server(65_536).await, 1).await;
        let mut forwarder = pods.portforward("hivemq-0", &[REST]).await.unwrap();
        let mut stream = forwarder.take_stream(REST).unwrap();
        let error = forwarder.take_error(REST).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut first = vec![0u8; 65_536];
        stream.read_exact(&mut first).await.unwrap();

        // Mid-download, the pod goes: the download ends, the error channel says why.
        pods.delete("hivemq-0", &DeleteParams::default())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "the download ends");
        let message = error.await.expect("an error message");
        assert!(
            message.starts_with("error forwarding to pod ")
                && message.ends_with(": the pod is being deleted"),
            "{message}"
        );
        drop(stream);
        let _ = forwarder.join().await;
        kube.shutdown().await;
    })
    .await;
}
