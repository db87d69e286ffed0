//! The API core through the kube client: discovery, CRUD, errors, selectors, paging, patch,
//! server-side apply, watch with bookmarks and 410.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::support::{bounded, client, event_reasons, pod_spec, start, wait_for};

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_start_up_objects() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.major, "1");
        let groups = client.list_api_groups().await.unwrap();
        assert!(
            groups
                .groups
                .iter()
                .any(|g| g.name == "snapshot.storage.k8s.io")
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        assert_eq!(names, vec!["default"]);
        let classes: Api<StorageClass> = Api::all(client.clone());
        let sc = classes.get(kubesim::STORAGE_CLASS).await.unwrap();
        assert_eq!(sc.provisioner, kubesim::DRIVER);
        let discovery = kube::Discovery::new(client).run().await.unwrap();
        assert!(discovery.has_group("snapshot.storage.k8s.io"));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_answers_status_errors() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let created = pods
            .create(&PostParams::default(), &pod_spec("p1", None))
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        let rv: u64 = created.resource_version().unwrap().parse().unwrap();

        let dup = api_error(
            pods.create(&PostParams::default(), &pod_spec("p1", None))
                .await
                .unwrap_err(),
        );
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        assert_eq!(dup.message, "pods \"p1\" already exists");

        let missing = api_error(pods.get("nope").await.unwrap_err());
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert_eq!(missing.message, "pods \"nope\" not found");

        let invalid = api_error(
            pods.create(&PostParams::default(), &pod_spec("Bad_Name", None))
                .await
                .unwrap_err(),
        );
        assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
        assert!(
            invalid
                .message
                .starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value")
        );

        let elsewhere: Api<Pod> = Api::namespaced(client.clone(), "absent");
        let no_ns = api_error(
            elsewhere
                .create(&PostParams::default(), &pod_spec("p", None))
                .await
                .unwrap_err(),
        );
        assert_eq!(no_ns.message, "namespaces \"absent\" not found");

        let mut stale = created.clone();
        pods.patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
        stale.metadata.labels = Some([("y".to_string(), "2".to_string())].into());
        let conflict = api_error(
            pods.replace("p1", &PostParams::default(), &stale)
                .await
                .unwrap_err(),
        );
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

        let fetched = pods.get("p1").await.unwrap();
        let now: u64 = fetched.resource_version().unwrap().parse().unwrap();
        assert!(now > rv);
        assert_eq!(sim.counters().created("pods"), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_honour_selectors_and_pages() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
            let mut pod = pod_spec(name, None);
            pod.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
        let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
            list.items.iter().map(|p| p.name_any()).collect()
        };
        let web = pods
            .list(&ListParams::default().labels("tier=web"))
            .await
            .unwrap();
        assert_eq!(names(web), vec!["a", "b"]);
        let not_web = pods
            .list(&ListParams::default().labels("tier notin (web)"))
            .await
            .unwrap();
        assert_eq!(names(not_web), vec!["c"]);
        let by_name = pods
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .unwrap();
        assert_eq!(names(by_name), vec!["b"]);
        let bad = api_error(
            pods.list(&ListParams::default().fields("spec.foo=1"))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (bad.code, bad.message.as_str()),
            (400, "field label not supported: spec.foo")
        );

        let page = pods.list(&ListParams::default().limit(2)).await.unwrap();
        assert_eq!(page.items.len(), 2);
        let token = page.metadata.continue_.clone().expect("continue token");
        let rest = pods
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(names(rest), vec!["c"]);

        wait_for(
            pods.clone(),
            "c",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        let running = pods
            .list(&ListParams::default().fields("status.phase=Running,metadata.name=c"))
            .await
            .unwrap();
        assert_eq!(names(running), vec!["c"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_and_server_side_apply() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let apply = PatchParams::apply("kubesim-test");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssa", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
        let created = pods.patch("ssa", &apply, &Patch::Apply(&pod)).await.unwrap();
        assert_eq!(created.labels().get("a").map(String::as_str), Some("1"));
        let again = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssa", "labels": {"b": "2"}}});
        let applied = pods.patch("ssa", &apply, &Patch::Apply(&again)).await.unwrap();
        assert_eq!(applied.labels().len(), 2);

        let merged = pods
            .patch("ssa", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": null}}})))
            .await
            .unwrap();
        assert!(!merged.labels().contains_key("a"));
        let missing_manager = api_error(
            pods.patch("x", &PatchParams::default(), &Patch::Apply(&pod)).await.unwrap_err(),
        );
        assert_eq!(missing_manager.code, 422);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_events_bookmarks_and_expires() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let first = pods
            .create(&PostParams::default(), &pod_spec("w1", None))
            .await
            .unwrap();
        let start_rv = first.resource_version().unwrap();
        let mut stream = pods
            .watch(&WatchParams::default().timeout(30), &start_rv)
            .await
            .unwrap()
            .boxed();
        pods.create(&PostParams::default(), &pod_spec("w2", None))
            .await
            .unwrap();
        let (mut added, mut modified, mut bookmarks) = (false, false, false);
        while !(added && modified && bookmarks) {
            match stream.try_next().await.unwrap().expect("stream open") {
                WatchEvent::Added(p) => added |= p.name_any() == "w2",
                WatchEvent::Modified(_) => modified = true,
                WatchEvent::Bookmark(b) => {
                    bookmarks = true;
                    assert!(!b.metadata.resource_version.is_empty());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        pods.delete("w2", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        loop {
            if let WatchEvent::Deleted(p) = stream.try_next().await.unwrap().unwrap() {
                assert_eq!(p.name_any(), "w2");
                break;
            }
        }

        sim.compact();
        let mut expired = pods
            .watch(&WatchParams::default(), &start_rv)
            .await
            .unwrap()
            .boxed();
        match expired.try_next().await.unwrap().unwrap() {
            WatchEvent::Error(e) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
                assert!(e.message.starts_with("too old resource version"));
            }
            other => panic!("expected 410, got {other:?}"),
        }
        assert!(sim.counters().watches() >= 2);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watchers_list_and_stream() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod_spec("before", None))
            .await
            .unwrap();
        for config in [
            watcher::Config::default(),
            watcher::Config::default().streaming_lists(),
        ] {
            let mut stream = watcher(pods.clone(), config).applied_objects().boxed();
            let seen = stream.try_next().await.unwrap().unwrap();
            assert_eq!(seen.name_any(), "before");
        }
        let mut stream = watcher(pods.clone(), watcher::Config::default().labels("app=after"))
            .applied_objects()
            .boxed();
        pods.create(&PostParams::default(), &pod_spec("after", None))
            .await
            .unwrap();
        let seen = stream.try_next().await.unwrap().unwrap();
        assert_eq!(seen.name_any(), "after");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_then_end_gracefully() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod_spec("life", None))
            .await
            .unwrap();
        let pending = pods.get("life").await.unwrap();
        assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));
        let running = wait_for(
            pods.clone(),
            "life",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        let status = running.status.unwrap();
        assert!(status.pod_ip.is_some() && status.start_time.is_some());
        let uid = running.metadata.uid.clone().unwrap();
        let deleting = pods.delete("life", &DeleteParams::default()).await.unwrap();
        let terminating = deleting.left().expect("graceful deletion returns the pod");
        assert!(terminating.metadata.deletion_timestamp.is_some());
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            kube::runtime::wait::await_condition(
                pods.clone(),
                "life",
                kube::runtime::conditions::is_deleted(&uid),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        let reasons = event_reasons(&client, "default", "life").await;
        assert!(
            reasons.contains(&"Scheduled".to_string()) && reasons.contains(&"Started".to_string())
        );
        assert_eq!(sim.counters().deleted("pods"), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_empties_it() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "scratch");
        pods.create(&PostParams::default(), &pod_spec("p", None))
            .await
            .unwrap();
        wait_for(
            pods.clone(),
            "p",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        let uid = namespaces
            .get("scratch")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();
        let deleting = namespaces
            .delete("scratch", &DeleteParams::default())
            .await
            .unwrap();
        let terminating = deleting.left().expect("namespaces end gracefully");
        assert!(terminating.metadata.deletion_timestamp.is_some());
        // Creating in a terminating namespace is refused; it may also be gone already.
        let refused = api_error(
            pods.create(&PostParams::default(), &pod_spec("q", None))
                .await
                .unwrap_err(),
        );
        assert!(refused.code == 403 || refused.code == 404, "{refused:?}");
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            kube::runtime::wait::await_condition(
                namespaces.clone(),
                "scratch",
                kube::runtime::conditions::is_deleted(&uid),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        let left = pods.get_opt("p").await.unwrap();
        assert!(left.is_none(), "{left:?}");
        sim.shutdown().await;
    })
    .await;
}
