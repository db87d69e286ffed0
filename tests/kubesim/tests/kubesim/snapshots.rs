//! VolumeSnapshots: the controller's status fields, contents, errors, restores and faults.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::support::{
    bounded, client, content_resource, is_bound, poll_until, pvc_spec, snapshots, start, wait_for,
};

fn snapshot(name: &str, claim: &str, class: Option<&str>) -> DynamicObject {
    let mut obj = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"persistentVolumeClaimName": claim}}
    });
    if let Some(class) = class {
        obj["spec"]["volumeSnapshotClassName"] = json!(class);
    }
    serde_json::from_value(obj).unwrap()
}

fn ready(vs: &DynamicObject) -> bool {
    vs.data.pointer("/status/readyToUse") == Some(&json!(true))
}

fn has_error(vs: &DynamicObject) -> bool {
    vs.data.pointer("/status/error/message").is_some()
}

async fn bound_claim(client: &Client, name: &str, size: &str) -> Api<PersistentVolumeClaim> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    pvcs.create(&PostParams::default(), &pvc_spec(name, size))
        .await
        .unwrap();
    wait_for(pvcs.clone(), name, is_bound()).await;
    pvcs
}

fn error_message(vs: &DynamicObject) -> String {
    vs.data
        .pointer("/status/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_becomes_ready_and_restores() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pvcs = bound_claim(&client, "src", "1Gi").await;
        let volume = sim.volume_dir("default", "src").unwrap();
        std::fs::create_dir_all(volume.join("dir")).unwrap();
        std::fs::write(volume.join("dir/file"), "snapshotted\n").unwrap();

        let vss = snapshots(&client, "default");
        vss.create(&PostParams::default(), &snapshot("snap", "src", None)).await.unwrap();
        let vs = poll_until(&vss, "snap", ready).await;
        let status = vs.data.get("status").unwrap();
        assert_eq!(status["restoreSize"], json!("1Gi"));
        assert!(status["creationTime"].as_str().unwrap().ends_with('Z'));
        assert_eq!(vs.data["spec"]["volumeSnapshotClassName"], json!(kubesim::SNAPSHOT_CLASS));
        let content_name = status["boundVolumeSnapshotContentName"].as_str().unwrap().to_string();
        let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource());
        let content = contents.get(&content_name).await.unwrap();
        assert!(content.data["status"]["creationTime"].is_i64());
        assert_eq!(content.data["status"]["restoreSize"], json!(1u64 << 30));
        assert_eq!(content.data["spec"]["driver"], json!(kubesim::DRIVER));
        // The snapshot is a copy: later writes to the claim do not change it.
        std::fs::write(volume.join("dir/file"), "changed\n").unwrap();
        let snap_dir = sim.snapshot_dir("default", "snap").unwrap();
        assert_eq!(std::fs::read_to_string(snap_dir.join("dir/file")).unwrap(), "snapshotted\n");

        let mut restore = pvc_spec("restored", "1Gi");
        restore.spec.as_mut().unwrap().data_source = Some(serde_json::from_value(json!(
            {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}
        )).unwrap());
        pvcs.create(&PostParams::default(), &restore).await.unwrap();
        wait_for(pvcs.clone(), "restored", is_bound()).await;
        let restored = sim.volume_dir("default", "restored").unwrap();
        assert_eq!(std::fs::read_to_string(restored.join("dir/file")).unwrap(), "snapshotted\n");

        let mut small = restore.clone();
        small.metadata.name = Some("too-small".into());
        small.spec.as_mut().unwrap().resources.as_mut().unwrap().requests =
            Some([("storage".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("500Mi".into()))].into());
        pvcs.create(&PostParams::default(), &small).await.unwrap();
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let failure = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let list = events
                    .list(&ListParams::default().fields("involvedObject.name=too-small,reason=ProvisioningFailed"))
                    .await
                    .unwrap();
                if let Some(e) = list.items.into_iter().next() {
                    return e.message.unwrap_or_default();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap();
        assert!(failure.contains("requested volume size 524288000 is less than the size 1073741824 for the source snapshot snap"), "{failure}");
        let pending = pvcs.get("too-small").await.unwrap();
        assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));

        let uid = vs.metadata.uid.clone().unwrap();
        vss.delete("snap", &DeleteParams::default()).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            kube::runtime::wait::await_condition(vss.clone(), "snap", kube::runtime::conditions::is_deleted(&uid)),
        )
        .await
        .unwrap()
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while contents.get_opt(&content_name).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
        assert!(!sim.data_dir().join("snapshots").join(&content_name).exists());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_errors_name_the_cause() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let vss = snapshots(&client, "default");

        vss.create(&PostParams::default(), &snapshot("no-claim", "ghost", None))
            .await
            .unwrap();
        let vs = poll_until(&vss, "no-claim", has_error).await;
        assert!(
            error_message(&vs).contains("persistentvolumeclaim \\\\\\\"ghost\\\\\\\" not found"),
            "{}",
            error_message(&vs)
        );

        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        let mut unbound = pvc_spec("unbound", "1Gi");
        unbound.spec.as_mut().unwrap().storage_class_name = Some("no-such-class".into());
        pvcs.create(&PostParams::default(), &unbound).await.unwrap();
        vss.create(&PostParams::default(), &snapshot("early", "unbound", None))
            .await
            .unwrap();
        let vs = poll_until(&vss, "early", has_error).await;
        assert!(error_message(&vs).contains(
            "the PVC unbound is not yet bound to a PV, will not attempt to take a snapshot"
        ));

        bound_claim(&client, "ok", "1Gi").await;
        vss.create(
            &PostParams::default(),
            &snapshot("bad-class", "ok", Some("nope")),
        )
        .await
        .unwrap();
        let vs = poll_until(&vss, "bad-class", has_error).await;
        assert!(
            error_message(&vs)
                .contains("volumesnapshotclass.snapshot.storage.k8s.io \"nope\" not found")
        );

        let invalid = vss
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": {"name": "no-source"}, "spec": {"source": {}}
                }))
                .unwrap(),
            )
            .await
            .unwrap_err();
        assert!(matches!(invalid, kube::Error::Api(e) if e.code == 422));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_faults() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        bound_claim(&client, "src", "1Gi").await;
        let vss = snapshots(&client, "default");

        sim.faults().set_snapshot_never_ready(true);
        vss.create(&PostParams::default(), &snapshot("stuck", "src", None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stuck = vss.get("stuck").await.unwrap();
        assert_eq!(stuck.data["status"]["readyToUse"], json!(false));
        assert!(stuck.data["status"]["boundVolumeSnapshotContentName"].is_string());
        sim.faults().set_snapshot_never_ready(false);
        poll_until(&vss, "stuck", ready).await;

        sim.faults()
            .set_snapshot_error(Some("Failed to create snapshot: injected"));
        vss.create(&PostParams::default(), &snapshot("broken", "src", None))
            .await
            .unwrap();
        let broken = poll_until(&vss, "broken", has_error).await;
        assert_eq!(
            error_message(&broken),
            "Failed to create snapshot: injected"
        );
        sim.faults().set_snapshot_error(None);

        sim.faults().set_snapshot_api_missing(true);
        let groups = client.list_api_groups().await.unwrap();
        assert!(
            !groups
                .groups
                .iter()
                .any(|g| g.name == "snapshot.storage.k8s.io")
        );
        match vss.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
            other => panic!("expected 404, got {other:?}"),
        }
        sim.shutdown().await;
    })
    .await;
}
