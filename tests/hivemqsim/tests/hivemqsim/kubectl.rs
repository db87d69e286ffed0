//! Real `kubectl port-forward` (SPDY/3.1 tunnelled in WebSocket) to a HiveMQ pod's REST port.
//! Skipped without kubectl.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hivemqsim::Seed;
use kube::api::DeleteParams;
use kubesim::KubeSim;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

use super::statefulset::{REST, hivemq_cluster};
use super::support::{BACKUPS, bounded, file, get, stalling_server, start};

/// kubectl, pointed by a kubeconfig of its own at one kubesim.
struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    /// None when kubectl is not installed: the test is skipped.
    fn find() -> Option<Kubectl> {
        let Some(binary) = kubesim::kubectl_on_path() else {
            println!("skipping: kubectl is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        Some(Kubectl {
            binary,
            kubeconfig: dir.path().join("kubeconfig"),
            _dir: dir,
        })
    }

    /// Writes the kubeconfig of `kube`.
    fn point_at(&self, kube: &KubeSim) {
        kube.write_kubeconfig(&self.kubeconfig).unwrap();
    }

    /// `kubectl --kubeconfig KUBECONFIG`, to be given its arguments.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }
}

/// A running `kubectl port-forward`, killed by its pid when dropped (also when a test fails).
struct PortForward {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    local: std::net::SocketAddr,
}

impl PortForward {
    /// Starts `kubectl port-forward pod/NAME :PORT` and reads the local port it chose.
    async fn start(kubectl: &Kubectl, pod: &str, port: u16) -> PortForward {
        let mut child = kubectl
            .command()
            .args(["port-forward", &format!("pod/{pod}"), &format!(":{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("kubectl prints its port in time")
            .expect("stdout readable")
            .unwrap_or_default();
        // "Forwarding from 127.0.0.1:PORT -> 8888"
        let local = line
            .strip_prefix("Forwarding from ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        PortForward {
            child,
            stdout,
            local,
        }
    }

    /// Waits for kubectl to exit; its status and stderr.
    async fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("kubectl exits in time")
            .expect("wait works");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        (status, stderr)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signals the process this test started, by its pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_downloads_a_backup() {
    bounded(async {
        let Some(kubectl) = Kubectl::find() else {
            return;
        };
        let hivemq = start().await;
        let seeded = hivemq.seed(Seed::with_size(3 << 20)).unwrap();
        let (kube, _) = hivemq_cluster(hivemq.addr(), 1).await;
        kubectl.point_at(&kube);
        // kubectl sees the pod Ready.
        let waited = kubectl
            .command()
            .args([
                "wait",
                "--for=condition=Ready",
                "pod/hivemq-0",
                "--timeout=20s",
            ])
            .output()
            .await
            .unwrap();
        assert!(
            waited.status.success(),
            "{}",
            String::from_utf8_lossy(&waited.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&waited.stdout).trim(),
            "pod/hivemq-0 condition met"
        );

        let mut forward = PortForward::start(&kubectl, "hivemq-0", REST).await;
        // Two requests, one after the other, through the same kubectl.
        let listing = get(forward.local, BACKUPS).await;
        assert_eq!(listing.status, 200);
        assert_eq!(listing.json()["items"][0]["id"], seeded.id.as_str());
        let download = get(forward.local, &file(&seeded.id)).await;
        assert_eq!(download.status, 200);
        assert_eq!(download.body, hivemq.file(&seeded.id).unwrap());
        assert_eq!(hivemq.counters().requests(), 2);
        // kubectl reports each connection it handles.
        let mut handled = 0;
        while handled < 2 {
            let line = forward
                .stdout
                .next_line()
                .await
                .unwrap()
                .unwrap_or_default();
            if line.starts_with("Handling connection for ") {
                handled += 1;
            }
        }
        drop(forward);
        kube.shutdown().await;
        hivemq.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pod_ends_kubectl_port_forward_with_an_error() {
    bounded(async {
        let Some(kubectl) = Kubectl::find() else {
            return;
        };
        let (kube, pods) = hivemq_cluster(stalling_server(65_536).await, 1).await;
        kubectl.point_at(&kube);

        let mut forward = PortForward::start(&kubectl, "hivemq-0", REST).await;
        let mut conn = TcpStream::connect(forward.local).await.unwrap();
        conn.write_all(b"GET /download HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 65_536];
        conn.read_exact(&mut got).await.unwrap();

        // Mid-download, the pod goes: the download ends and so does kubectl.
        pods.delete("hivemq-0", &DeleteParams::default())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "nothing more arrives");
        let (status, stderr) = forward.exit().await;
        assert!(!status.success(), "kubectl failed: {stderr}");
        assert!(
            stderr.contains("an error occurred forwarding")
                && stderr.contains("the pod is being deleted")
                && stderr.contains("error: lost connection to pod"),
            "{stderr}"
        );
        kube.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_a_closed_port_reports_connection_refused() {
    bounded(async {
        let Some(kubectl) = Kubectl::find() else {
            return;
        };
        let hivemq = start().await;
        let (kube, _) = hivemq_cluster(hivemq.addr(), 1).await;
        kubectl.point_at(&kube);
        // Nothing routes (listens on) port 9999 of the pod.
        let mut forward = PortForward::start(&kubectl, "hivemq-0", 9999).await;
        let mut conn = TcpStream::connect(forward.local).await.unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got).await;
        assert!(got.is_empty());
        let (status, stderr) = forward.exit().await;
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains("an error occurred forwarding")
                && stderr.contains("failed to connect to localhost:9999 inside namespace")
                && stderr.contains("dial tcp4 127.0.0.1:9999: connect: connection refused"),
            "{stderr}"
        );
        kube.shutdown().await;
        hivemq.shutdown().await;
    })
    .await;
}
