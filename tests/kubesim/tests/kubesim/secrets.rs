//! Secrets with the kube client and with real kubectl: stringData folded into base64 data,
//! every verb, and RBAC.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

use super::kubectl::setup;
use super::support::{bounded, client, client_with_token, start};

fn secret(name: &str, strings: &[(&str, &str)]) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "broker"}},
        "stringData": strings.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

fn data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_with_the_kube_client() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let mut watch = secrets
            .watch(&WatchParams::default().labels("app=broker"), "0")
            .await
            .unwrap()
            .boxed();

        let created = secrets
            .create(&PostParams::default(), &secret("creds", &[("user", "admin"), ("password", "s3cret")]))
            .await
            .unwrap();
        assert_eq!(created.type_.as_deref(), Some("Opaque"));
        assert!(created.string_data.is_none(), "stringData is never stored");
        assert_eq!(data(&created)["password"], b"s3cret");
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Added(s)) => assert_eq!(data(&s)["user"], b"admin"),
            other => panic!("expected ADDED, got {other:?}"),
        }

        // A merge patch with stringData replaces one key and keeps the rest.
        let patched = secrets
            .patch("creds", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"password": "n3w"}})))
            .await
            .unwrap();
        assert_eq!(data(&patched)["password"], b"n3w");
        assert_eq!(data(&patched)["user"], b"admin");
        // Server-side apply creates and updates.
        let applied = secrets
            .patch(
                "token",
                &PatchParams::apply("test"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "token"}, "stringData": {"t": "abc"}})),
            )
            .await
            .unwrap();
        assert_eq!(data(&applied)["t"], b"abc");
        // Update with plain data.
        let mut replaced = patched.clone();
        replaced.data = Some(BTreeMap::from([("only".to_string(), ByteString(b"one".to_vec()))]));
        let replaced = secrets.replace("creds", &PostParams::default(), &replaced).await.unwrap();
        assert_eq!(data(&replaced).keys().collect::<Vec<_>>(), vec!["only"]);
        let names: Vec<String> = secrets
            .list(&ListParams::default().fields("type=Opaque"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(names, vec!["creds", "token"]);
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Modified(s)) => assert_eq!(data(&s)["password"], b"n3w"),
            other => panic!("expected MODIFIED, got {other:?}"),
        }

        // A Secret without data is fine (and typed Opaque).
        let empty = secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "empty"}})).unwrap())
            .await
            .unwrap();
        assert!(empty.data.is_none());

        // RBAC: a namespace-scoped user denied secrets.
        sim.add_user("dev-token", "dev");
        sim.deny("dev", "get", "secrets", "default");
        let dev: Api<Secret> = Api::namespaced(client_with_token(&sim, "dev-token").await, "default");
        match dev.get("creds").await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403);
                assert_eq!(e.message, "secrets \"creds\" is forbidden: User \"dev\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"");
            }
            other => panic!("expected 403, got {other:?}"),
        }
        assert_eq!(dev.list(&ListParams::default()).await.unwrap().items.len(), 3);

        secrets.delete("creds", &DeleteParams::default()).await.unwrap();
        assert!(secrets.get_opt("creds").await.unwrap().is_none());
        loop {
            match watch.try_next().await.unwrap() {
                Some(WatchEvent::Deleted(s)) => {
                    assert_eq!(s.metadata.name.as_deref(), Some("creds"));
                    break;
                }
                Some(_) => {}
                None => panic!("watch ended"),
            }
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_with_kubectl() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let Some((sim, k)) = setup(dir.path()).await else {
            return;
        };
        let manifest = dir.path().join("secret.yaml");
        let write = |password: &str| {
            std::fs::write(
                &manifest,
                format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: hivemq-admin\ntype: Opaque\nstringData:\n  user: admin\n  password: {password}\ndata:\n  extra: ZXh0cmE=\n"),
            )
            .unwrap()
        };
        write("first");
        let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
        assert!(out.contains("secret/hivemq-admin created"), "{out}");
        write("second");
        let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
        assert!(out.contains("secret/hivemq-admin configured"), "{out}");

        let json: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "secret", "hivemq-admin", "-o", "json"]).await).unwrap();
        assert_eq!(json["kind"], "Secret");
        assert_eq!(json["type"], "Opaque");
        assert_eq!(json["data"], json!({"user": "YWRtaW4=", "password": "c2Vjb25k", "extra": "ZXh0cmE="}));
        assert!(json.get("stringData").is_none());

        let table = k.ok(&["get", "secrets"]).await;
        let row = table.lines().find(|l| l.starts_with("hivemq-admin")).unwrap_or_default();
        assert_eq!(row.split_whitespace().take(3).collect::<Vec<_>>(), vec!["hivemq-admin", "Opaque", "3"], "{table}");
        let decoded = k
            .ok(&["get", "secret", "hivemq-admin", "-o", "jsonpath={.data.password}"])
            .await;
        assert_eq!(decoded, "c2Vjb25k");
        let out = k.ok(&["delete", "secret", "hivemq-admin"]).await;
        assert!(out.contains("deleted"), "{out}");
        let missing = k.run(&["get", "secret", "hivemq-admin"]).await;
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("secrets \"hivemq-admin\" not found"));
        sim.shutdown().await;
    })
    .await;
}
