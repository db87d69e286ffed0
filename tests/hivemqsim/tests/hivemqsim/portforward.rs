//! The REST port reached as a pod's port through kubesim's port-forward, with the kube client.

use hivemqsim::Seed;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::conditions::is_pod_running;
use kube::runtime::wait::await_condition;
use kubesim::{Config, KubeSim, Timings};

use super::support::{BACKUPS, bounded, exchange, file, kube_client, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_listed_and_downloaded_through_a_port_forward() {
    bounded(async {
        let hivemq = start().await;
        let seeded = hivemq.seed(Seed::with_size(100_000)).unwrap();
        let kube = KubeSim::start(Config {
            timings: Timings {
                pod_start: std::time::Duration::from_millis(50),
                ..Timings::default()
            },
            ..Config::default()
        })
        .await
        .unwrap();
        let client = kube_client(&kube).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "broker-0", "labels": {"app": "broker"}},
            "spec": {"containers": [{"name": "hivemq", "image": "hivemq/hivemq4",
                "ports": [{"name": "rest-8888", "containerPort": 8888}]}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        await_condition(pods.clone(), "broker-0", is_pod_running())
            .await
            .unwrap();
        kube.register_port("default", "broker-0", 8888, hivemq.addr());

        let mut forwarder = pods.portforward("broker-0", &[8888]).await.unwrap();
        let mut stream = forwarder.take_stream(8888).unwrap();
        let reply = exchange(&mut stream, "GET", BACKUPS, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["items"][0]["id"], seeded.id.as_str());
        drop(stream);
        // kube's join may report that it could not send its own close frame once the pod side
        // closed; harmless here.
        let _ = forwarder.join().await;

        let mut forwarder = pods.portforward("broker-0", &[8888]).await.unwrap();
        let mut stream = forwarder.take_stream(8888).unwrap();
        let reply = exchange(&mut stream, "GET", &file(&seeded.id), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, hivemq.file(&seeded.id).unwrap());
        drop(stream);
        let _ = forwarder.join().await;

        assert_eq!(hivemq.counters().requests(), 2);
        assert!(kube.counters().portforward_bytes_out() >= 100_000);
        kube.shutdown().await;
        hivemq.shutdown().await;
    })
    .await;
}
