//! PodSecurity admission through the kube client: labelled namespaces refuse pods their level
//! forbids with the API server's message, admit pods that comply, and exec in an admitted
//! restricted pod runs as its user with its fsGroup volume writable.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{AttachParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::support::{bounded, client, is_bound, pod_spec, pvc_spec, start, wait_for};

async fn namespace(client: &Client, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Creates a pod from JSON; the refusal's Status when refused.
async fn create(pods: &Api<Pod>, pod: Value) -> Result<Pod, kube::core::Status> {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => *status,
            other => panic!("expected an API error, got {other:?}"),
        })
}

fn refused(result: Result<Pod, kube::core::Status>, name: &str) -> String {
    let status = result.expect_err("pod refused");
    assert_eq!(
        (status.code, status.reason.as_str()),
        (403, "Forbidden"),
        "{status:?}"
    );
    let details = status.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        (name, "pods")
    );
    status.message
}

/// Runs a command in the pod's container `main`; returns stdout, failing on a non-zero exit.
async fn run(pods: &Api<Pod>, pod: &str, command: &[&str]) -> String {
    let mut attached = pods
        .exec(pod, command.to_vec(), &AttachParams::default().stderr(true))
        .await
        .expect("exec starts");
    let mut stdout = attached.stdout().unwrap();
    let mut stderr = attached.stderr().unwrap();
    let status = attached.take_status().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    a.unwrap();
    b.unwrap();
    let status = status.await.expect("status frame");
    assert_eq!(
        status.status.as_deref(),
        Some("Success"),
        "{command:?}: {err} {status:?}"
    );
    out
}

/// A pod that meets the restricted level, mounting claim `data` at /data.
fn hardened(name: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"],
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_namespace_refuses_root_and_runs_hardened_pods() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        namespace(
            &client,
            "locked",
            json!({"pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"}),
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "locked");

        let root = serde_json::to_value(pod_spec("root", None)).unwrap();
        assert_eq!(
            refused(create(&pods, root).await, "root"),
            "pods \"root\" is forbidden: violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"main\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"main\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"main\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"main\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert!(pods.get_opt("root").await.unwrap().is_none());

        // Asking to run as root is refused even with everything else in place.
        let mut as_root = hardened("as-root");
        as_root["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        assert_eq!(
            refused(create(&pods, as_root).await, "as-root"),
            "pods \"as-root\" is forbidden: violates PodSecurity \"restricted:latest\": \
             runAsUser=0 (container \"main\" must not set runAsUser=0)"
        );

        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "locked");
        pvcs.create(&PostParams::default(), &pvc_spec("data", "1Gi"))
            .await
            .unwrap();
        wait_for(pvcs, "data", is_bound()).await;
        create(&pods, hardened("app")).await.expect("pod admitted");
        wait_for(
            pods.clone(),
            "app",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        assert_eq!(run(&pods, "app", &["id", "-u"]).await, "1000\n");
        assert_eq!(
            run(
                &pods,
                "app",
                &["sh", "-c", "echo hi > /data/f && cat /data/f && stat -c '%u %g' /data/f"],
            )
            .await,
            "hi\n1000 2000\n"
        );

        // Pods a Deployment makes are checked too: only the compliant template gets pods.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "locked");
        let root_template = serde_json::to_value(pod_spec("root-web", None)).unwrap();
        let mut hardened_template = hardened("web");
        hardened_template["metadata"] = json!({"labels": {"app": "web"}});
        for (name, template) in [("root-web", root_template), ("web", hardened_template)] {
            let deployment: Deployment = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
            }))
            .unwrap();
            deployments
                .create(&PostParams::default(), &deployment)
                .await
                .unwrap();
        }
        wait_for(deployments.clone(), "web", |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                == Some(1)
        })
        .await;
        let root_web = deployments.get("root-web").await.unwrap();
        assert_eq!(root_web.status.and_then(|s| s.replicas), Some(0));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_namespace_refuses_privileged_and_host_paths() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        namespace(
            &client,
            "base",
            json!({"pod-security.kubernetes.io/enforce": "baseline"}),
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "base");

        let mut privileged = serde_json::to_value(pod_spec("priv", None)).unwrap();
        privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        assert_eq!(
            refused(create(&pods, privileged).await, "priv"),
            "pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": \
             privileged (container \"main\" must not set securityContext.privileged=true)"
        );

        let mut host = serde_json::to_value(pod_spec("host", None)).unwrap();
        host["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
        host["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "root", "mountPath": "/host"}]);
        assert_eq!(
            refused(create(&pods, host).await, "host"),
            "pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": \
             hostPath volumes (volume \"root\")"
        );

        // Root with only default capabilities is baseline.
        let mut root = serde_json::to_value(pod_spec("root", None)).unwrap();
        root["spec"]["containers"][0]["securityContext"] = json!({"capabilities": {
            "drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}});
        create(&pods, root).await.expect("pod admitted");
        wait_for(
            pods.clone(),
            "root",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        assert_eq!(run(&pods, "root", &["id", "-u"]).await, "0\n");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlabelled_namespaces_admit_anything() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        namespace(&client, "open", json!({})).await;
        for ns in ["default", "open"] {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let mut anything = serde_json::to_value(pod_spec("anything", None)).unwrap();
            anything["spec"]["hostNetwork"] = json!(true);
            anything["spec"]["hostPID"] = json!(true);
            anything["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
            anything["spec"]["containers"][0]["securityContext"] = json!({
                "privileged": true, "runAsUser": 0,
                "capabilities": {"add": ["SYS_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"}});
            anything["spec"]["containers"][0]["ports"] =
                json!([{"containerPort": 80, "hostPort": 80}]);
            create(&pods, anything).await.expect("pod admitted");
        }
        sim.shutdown().await;
    })
    .await;
}
