//! Token auth and RBAC denials, latency, API server restart, counters.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{AttachParams, ListParams, PostParams, WatchParams};

use super::support::{bounded, client, client_with_token, pod_spec, pod_with_volume, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_denials() {
    bounded(async {
        let sim = start().await;
        sim.add_user("reader-token", "reader");
        sim.deny("reader", "list", "pods", "*");
        sim.deny("reader", "create", "pods/exec", "");
        let admin = client(&sim).await;
        pod_with_volume(&admin, "default", "box").await;
        let reader = client_with_token(&sim, "reader-token").await;
        let pods: Api<Pod> = Api::namespaced(reader.clone(), "default");
        match pods.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
                assert_eq!(e.message, "pods is forbidden: User \"reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
            }
            other => panic!("expected 403, got {other:?}"),
        }
        assert!(pods.get("box").await.is_ok(), "get is still allowed");
        match pods.exec("box", vec!["ls"], &AttachParams::default()).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
            Err(other) => panic!("expected 403, got {other:?}"),
            Ok(_) => panic!("expected 403"),
        }
        let stranger = client_with_token(&sim, "wrong").await;
        let pods: Api<Pod> = Api::namespaced(stranger, "default");
        match pods.get("box").await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 401),
            other => panic!("expected 401, got {other:?}"),
        }
        sim.allow_all();
        let pods: Api<Pod> = Api::namespaced(reader, "default");
        assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_restart() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod_spec("survivor", None))
            .await
            .unwrap();

        sim.faults().set_latency(Duration::from_millis(300));
        let started = Instant::now();
        pods.get("survivor").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        sim.faults().set_latency(Duration::ZERO);

        let requests = sim.counters().requests();
        let mut watch = pods
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        watch.try_next().await.unwrap().expect("initial event");
        let restart = sim.restart_api(Duration::from_millis(500));
        let check = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let down = tokio::time::timeout(Duration::from_secs(5), pods.get("survivor")).await;
            assert!(
                matches!(down, Ok(Err(_))),
                "requests fail while the server is down"
            );
            // The watch ends with the restart; what the kubelet changed before it (the pod
            // starting) may come first.
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match watch.next().await {
                        Some(Ok(_)) => continue,
                        other => break other,
                    }
                }
            })
            .await
            .unwrap();
            assert!(!matches!(end, Some(Ok(_))));
        };
        let (restarted, ()) = tokio::join!(restart, check);
        restarted.unwrap();
        let back = pods.get("survivor").await.unwrap();
        assert_eq!(back.metadata.name.as_deref(), Some("survivor"));
        assert!(sim.counters().requests() > requests);
        sim.shutdown().await;
    })
    .await;
}
