//! The `kubesim` binary: writes a kubeconfig, prints its address, serves until killed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::conditions::is_pod_running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{bounded, wait_for};

/// A running `kubesim` binary: what it printed first (its address) and the kubeconfig it wrote.
struct Running {
    child: Child,
    line: String,
    yaml: String,
}

impl Running {
    /// Starts `kubesim --kubeconfig DIR/config ARGS…` and reads its first line.
    fn start(dir: &Path, args: &[&str]) -> Running {
        let kubeconfig = dir.join("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let yaml = std::fs::read_to_string(&kubeconfig).unwrap();
        Running { child, line, yaml }
    }

    /// A client from the kubeconfig it wrote.
    async fn client(&self) -> kube::Client {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(&self.yaml).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// SIGTERM, by the child's own PID; it must exit cleanly.
    fn stop(mut self) {
        // SAFETY: sends a signal to a process this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_its_kubeconfig() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sim = Running::start(dir.path(), &["--data-dir", data.to_str().unwrap()]);
        let (line, yaml) = (&sim.line, &sim.yaml);
        assert!(line.starts_with("http://127.0.0.1:"), "{line}");
        assert!(yaml.contains("current-context: kubesim") && yaml.contains(line.trim()));
        let namespaces: Api<Namespace> = Api::all(sim.client().await);
        assert_eq!(
            namespaces
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        sim.stop();
    })
    .await;
}

#[test]
fn malformed_routes_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .arg("--kubeconfig")
        .arg(dir.path().join("config"))
        .args(["--route", "default/sts/hivemq:rest=127.0.0.1:8888"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'default/sts/hivemq:rest=127.0.0.1:8888' for '--route")
            && stderr.contains("pod port \"rest\" is not a port number (1-65535)"),
        "{stderr}"
    );
    assert!(!dir.path().join("config").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_routes_statefulset_ports() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let web = super::portforward::http_server().await;
        let route = format!("default/sts/web:8080={web}");
        let sim = Running::start(dir.path(), &["--route", &route, "--exec-bandwidth", "50Mi"]);
        let client = sim.client().await;
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}
        }))
        .unwrap();
        statefulsets
            .create(&PostParams::default(), &sts)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        wait_for(pods.clone(), "web-0", is_pod_running()).await;
        let mut forwarder = pods.portforward("web-0", &[8080]).await.unwrap();
        let mut stream = forwarder.take_stream(8080).unwrap();
        stream
            .write_all(b"GET /routed HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.ends_with("you asked: GET /routed HTTP/1.1"),
            "{reply}"
        );
        drop(stream);
        let _ = forwarder.join().await;
        sim.stop();
    })
    .await;
}
