//! Real kubectl against the server: get, apply, exec, cp, get -w. Skipped without kubectl.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::support::{bounded, start};

fn kubectl_binary() -> Option<PathBuf> {
    let found = kubesim::kubectl_on_path();
    if found.is_none() {
        println!("skipping: kubectl is not installed");
    }
    found
}

pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(30), self.command(args).output())
            .await
            .expect("kubectl finished in time")
            .expect("kubectl runs")
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn wait_running(&self, pod: &str) {
        for _ in 0..100 {
            let phase = self
                .ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
                .await;
            if phase == "Running" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pod {pod} never ran");
    }
}

const MANIFEST: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: box
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: [sleep, '3600']
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
";

pub async fn setup(dir: &Path) -> Option<(kubesim::KubeSim, Kubectl)> {
    let binary = kubectl_binary()?;
    let sim = start().await;
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    Some((sim, Kubectl { binary, kubeconfig }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_exec_and_cp() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let Some((sim, k)) = setup(dir.path()).await else {
            return;
        };
        let manifest = dir.path().join("app.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        let applied = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
        assert!(
            applied.contains("persistentvolumeclaim/data created")
                && applied.contains("pod/box created"),
            "{applied}"
        );
        k.wait_running("box").await;
        let again = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
        assert!(again.contains("unchanged"), "{again}");

        let listing = k.ok(&["get", "ns,pods,pvc,volumesnapshots"]).await;
        for want in [
            "namespace/default",
            "pod/box",
            "Running",
            "persistentvolumeclaim/data",
            "Bound",
        ] {
            assert!(listing.contains(want), "{want} missing from:\n{listing}");
        }

        let source = dir.path().join("fixture");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("a.txt"), "alpha\n").unwrap();
        std::fs::write(source.join("sub/b.bin"), vec![7u8; 200_000]).unwrap();
        k.ok(&["cp", source.to_str().unwrap(), "box:/data/in"])
            .await;
        let ls = k.ok(&["exec", "box", "--", "ls", "/data/in"]).await;
        assert_eq!(ls, "a.txt\nsub\n");
        let out = dir.path().join("out");
        k.ok(&["cp", "box:/data/in", out.to_str().unwrap()]).await;
        let diff = std::process::Command::new("diff")
            .arg("-r")
            .arg(&source)
            .arg(&out)
            .status()
            .unwrap();
        assert!(diff.success(), "diff -r after kubectl cp");

        let failed = k
            .run(&["exec", "box", "--", "sh", "-c", "echo partial; exit 3"])
            .await;
        assert_eq!(failed.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&failed.stdout), "partial\n");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_snapshot_ready() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let Some((sim, k)) = setup(dir.path()).await else { return };
        let manifest = dir.path().join("app.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
        k.wait_running("box").await;

        let mut watch = k
            .command(&["get", "volumesnapshot", "-w"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let snapshot = dir.path().join("snap.yaml");
        std::fs::write(
            &snapshot,
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: snap\nspec:\n  source:\n    persistentVolumeClaimName: data\n",
        )
        .unwrap();
        k.ok(&["apply", "-f", snapshot.to_str().unwrap()]).await;
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let ready = line.starts_with("snap ") && line.split_whitespace().nth(1) == Some("true");
                seen.push(line);
                if ready {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("readyToUse never flipped; saw {seen:?}"));
        assert!(seen[0].starts_with("NAME") && seen[0].contains("READYTOUSE"), "{seen:?}");
        assert!(seen.iter().any(|l| l.starts_with("snap ") && l.split_whitespace().nth(1) == Some("false")), "{seen:?}");
        let _ = watch.kill().await;
        sim.shutdown().await;
    })
    .await;
}
