//! Containers' own commands: run as the init of a PID namespace, stopped on deletion with
//! SIGTERM and, past the grace period, SIGKILL; their end is the pod's.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::conditions::{is_deleted, is_pod_running};
use kube::runtime::wait::await_condition;
use serde_json::json;

use super::support::{bounded, client, event_reasons, start, wait_for};

fn pod(name: &str, grace: u64, command: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": grace,
                 "containers": [{"name": "main", "image": "busybox:1.36", "command": command}]}
    }))
    .expect("valid pod")
}

/// A bare `sleep` as init ignores SIGTERM and is killed once its grace period is out; a shell
/// that traps SIGTERM ends at once, long before its grace period of an hour would (the test's
/// own time limit is a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_waits_for_its_command_to_end_on_sigterm_or_its_grace_period() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let trapping = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
        for p in [
            pod("bare", 1, &["sleep", "3600"]),
            pod("trapping", 3600, &trapping),
        ] {
            pods.create(&PostParams::default(), &p).await.unwrap();
        }
        let mut uids = Vec::new();
        for name in ["bare", "trapping"] {
            let running = wait_for(pods.clone(), name, is_pod_running()).await;
            uids.push(running.metadata.uid.unwrap());
            pods.delete(name, &DeleteParams::default()).await.unwrap();
        }
        for (name, uid) in ["bare", "trapping"].iter().zip(&uids) {
            await_condition(pods.clone(), name, is_deleted(uid))
                .await
                .unwrap();
        }
        let bare = event_reasons(&client, "default", "bare").await;
        assert!(
            bare.contains(&"Killing".into()) && bare.contains(&"ExceededGracePeriod".into()),
            "{bare:?}"
        );
        let trapping = event_reasons(&client, "default", "trapping").await;
        assert!(trapping.contains(&"Killing".into()), "{trapping:?}");
        assert!(
            !trapping.contains(&"ExceededGracePeriod".into()),
            "{trapping:?}"
        );
        sim.shutdown().await;
    })
    .await;
}

/// A pod whose command ends has Succeeded or Failed, with the command's exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ends_ends_its_pod_with_its_exit_code() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for (name, script) in [("done", "exit 0"), ("broken", "exit 3")] {
            pods.create(
                &PostParams::default(),
                &pod(name, 30, &["sh", "-c", script]),
            )
            .await
            .unwrap();
        }
        for (name, phase, code) in [("done", "Succeeded", 0), ("broken", "Failed", 3)] {
            let ended = wait_for(pods.clone(), name, move |p: Option<&Pod>| {
                p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some(phase)
            })
            .await;
            let status = ended.status.unwrap().container_statuses.unwrap();
            let terminated = status[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap();
            assert_eq!(terminated.exit_code, code, "{name}");
        }
        sim.shutdown().await;
    })
    .await;
}
