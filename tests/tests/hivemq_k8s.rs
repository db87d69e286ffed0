//! HiveMQ clusters found by Kubernetes coordinates, through a real mount: a StatefulSet of
//! three broker pods in kubesim whose REST port (`rest-8888`) is served by the HiveMQ test
//! server, reached by snapfs's own port-forward. Backups are listed, read, made and restored;
//! a pod deleted mid-download is replaced by another; credentials come from a Secret; and
//! each failure (no Ready pod, RBAC, a port that refuses) says what to do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use hivemqsim::{Access, BackupState, HiveMqSim, Seed};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use kubesim::{ADMIN_TOKEN, Config, KubeSim, Timings};
use serde_json::json;
use snapfs_control::wire::{JobKind, Request, Response, UploadState};
use snapfs_tests::{Mount, fuse_available};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "mq";

/// kubesim and the HiveMQ test server on one runtime; dropping it stops both.
struct Setup {
    kube: Option<KubeSim>,
    hivemq: Option<HiveMqSim>,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl Setup {
    /// Namespace `mq` with StatefulSet `hivemq` of three Ready pods whose port 8888 is the
    /// HiveMQ test server.
    fn start() -> Setup {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (kube, hivemq, client) = rt.block_on(async {
            let kube = KubeSim::start(Config {
                timings: Timings {
                    pod_start: Duration::from_millis(100),
                    pod_stop: Duration::from_millis(50),
                    ..Timings::default()
                },
                ..Config::default()
            })
            .await
            .expect("kubesim starts");
            let hivemq = HiveMqSim::start(hivemqsim::Config::default())
                .await
                .expect("hivemqsim starts");
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig()).expect("yaml");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("kubeconfig loads");
            (kube, hivemq, Client::try_from(config).expect("client"))
        });
        let s = Setup {
            kube: Some(kube),
            hivemq: Some(hivemq),
            client,
            rt,
        };
        let namespaces: Api<Namespace> = Api::all(s.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
        s.rt.block_on(namespaces.create(&PostParams::default(), &ns))
            .expect("namespace created");
        s.statefulset("hivemq", 3);
        // Every pod of the set, recreated ones too.
        s.kube()
            .register_statefulset_port(NS, "hivemq", 8888, s.hivemq().addr());
        s
    }

    fn kube(&self) -> &KubeSim {
        self.kube.as_ref().expect("running")
    }

    fn hivemq(&self) -> &HiveMqSim {
        self.hivemq.as_ref().expect("running")
    }

    /// A StatefulSet whose pods declare the REST port as the HiveMQ Helm chart names it;
    /// answers once all `replicas` pods are Ready.
    fn statefulset(&self, name: &str, replicas: i32) {
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), NS);
        let set = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "hivemq", "image": "hivemq/hivemq4",
                        "ports": [{"name": "rest-8888", "containerPort": 8888},
                                  {"name": "mqtt", "containerPort": 1883}]}]}
                }
            }
        }))
        .expect("statefulset");
        self.rt
            .block_on(sets.create(&PostParams::default(), &set))
            .expect("statefulset created");
        wait_for("Ready pods", || {
            (self.ready_pods(name).len() == replicas as usize).then_some(())
        });
    }

    fn ready_pods(&self, set: &str) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let lp = ListParams::default().labels(&format!("app={set}"));
        let list = self.rt.block_on(pods.list(&lp)).expect("pods listed");
        list.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// Port 8888 of `pod` alone goes to `to`, whatever its StatefulSet's route says.
    fn route(&self, pod: &str, to: SocketAddr) {
        self.kube().register_port(NS, pod, 8888, to);
    }

    fn delete_pod(&self, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        self.rt
            .block_on(pods.delete(name, &DeleteParams::default()))
            .expect("pod deleted");
    }

    fn secret(&self, name: &str, password: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"password": password}
        }))
        .expect("secret");
        self.rt
            .block_on(secrets.create(&PostParams::default(), &secret))
            .expect("secret created");
    }

    fn seed(&self, size: u64, minute: u32) -> String {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, 0).unwrap();
        self.hivemq()
            .seed(Seed::with_size(size).created_at(at))
            .expect("seeded")
            .id
    }

    /// A mount whose cluster `mq` is `coordinates` (the inside of `kubernetes = { … }`), with
    /// `extra` keys, reached with `kubeconfig` (default: kubesim's own).
    fn mount_as(&self, coordinates: &str, extra: &str, kubeconfig: Option<&str>) -> Mount {
        let own = self.kube().kubeconfig();
        Mount::start_with_home(
            &format!(
                "[list]\nttl = \"100ms\"\n[[hivemq]]\nname = \"mq\"\nkubernetes = {{ {coordinates} }}\n\
                 poll_start = \"50ms\"\npoll_max = \"200ms\"\nretry_start = \"20ms\"\nretry_max = 3\n{extra}"
            ),
            &[(".kube/config", kubeconfig.unwrap_or(&own))],
        )
    }

    fn mount(&self) -> Mount {
        self.mount_as(
            "namespace = \"mq\", statefulset = \"hivemq\", port = \"rest-8888\"",
            "",
            None,
        )
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(h) = self.hivemq.take() {
            self.rt.block_on(h.shutdown());
        }
        if let Some(k) = self.kube.take() {
            self.rt.block_on(k.shutdown());
        }
    }
}

/// Polls `f` every 50 ms until it answers; gives up after a minute.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn cluster(m: &Mount) -> PathBuf {
    m.mountpoint.join("hivemq/mq")
}

#[test]
fn backups_are_listed_read_made_and_restored_through_a_port_forward() {
    if !fuse_available() {
        return;
    }
    let s = Setup::start();
    let old = s.seed(3 << 20, 0);
    let new = s.seed(70_000, 5);
    let m = s.mount();
    let snapshots = cluster(&m).join("snapshots");
    // Newest first with sizes, as `ls -lt` shows them.
    let listing = snapfs_tests::sh(&format!("ls -lt {}", snapshots.display()));
    let names: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(
        names,
        [format!("{new}.backup"), format!("{old}.backup")],
        "{listing}"
    );
    for id in [&old, &new] {
        let path = snapshots.join(format!("{id}.backup"));
        let want = s.hivemq().file(id).expect("file");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            want.len() as u64
        );
        assert_eq!(std::fs::read(&path).expect("read"), want);
    }
    assert!(s.kube().counters().portforward_bytes_out() >= 3 << 20);
    assert!(m.log().contains("port-forward to pod"), "{}", m.log());
    assert!(m.log().contains("hivemq-0"), "ordinal 0 first: {}", m.log());

    // `snapfs snapshot` has the broker make a backup and follows it.
    let out = m.snapfs(&["snapshot", "hivemq/mq", "--json"]);
    assert!(out.status.success(), "{}", m.log());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["state"], "done", "{v}");
    let made = v["snapshot"].as_str().expect("name").to_string();
    let id = made.strip_suffix(".backup").expect("suffix");
    assert_eq!(
        s.hivemq().backup(id).expect("backup").state,
        BackupState::Completed
    );
    assert_eq!(
        std::fs::read(snapshots.join(&made)).expect("read"),
        s.hivemq().file(id).expect("file")
    );

    // `snapfs restore` with no DEST restores into the cluster and follows it.
    let out = m.snapfs(&["restore", &format!("hivemq/mq/snapshots/{old}.backup")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.hivemq().backup(&old).expect("backup").state,
        BackupState::RestoreCompleted
    );
}

/// A relay in front of the HiveMQ test server that passes on the first `limit` bytes of its
/// answers (over all connections) and then holds every connection open without a byte more:
/// a download stops mid-way for as long as the test wants.
struct Stall {
    addr: SocketAddr,
    passed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Stall {
    fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr, limit: u64) -> Stall {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let passed = Arc::new(AtomicU64::new(0));
        let counted = passed.clone();
        let task = rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = conn.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut uw).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let room = limit.saturating_sub(counted.load(Ordering::SeqCst));
                        if room == 0 {
                            // Hold the connection: the pod is there, its answer is not.
                            std::future::pending::<()>().await;
                        }
                        let want = buf.len().min(room as usize);
                        let n = match ur.read(&mut buf[..want]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Stall { addr, passed, task }
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn a_pod_deleted_mid_download_is_replaced_and_the_bytes_are_the_same() {
    if !fuse_available() {
        return;
    }
    let s = Setup::start();
    let id = s.seed(200 << 20, 0);
    let want = s.hivemq().file(&id).expect("file");
    // Pod 0 serves the first 40 MiB of answers and then nothing: the download is under way
    // when the pod is deleted.
    let stall = Stall::start(&s.rt, s.hivemq().addr(), 40 << 20);
    s.route("hivemq-0", stall.addr);
    // A minute of silence is allowed, so it is the pod's deletion that ends the stall.
    let m = s.mount_as(
        "namespace = \"mq\", statefulset = \"hivemq\"",
        "timeout = \"60s\"\n",
        None,
    );
    let expected = m.root.path().join("expected");
    std::fs::write(&expected, &want).expect("expected bytes");
    let file = cluster(&m).join(format!("snapshots/{id}.backup"));
    let cmp = std::process::Command::new("cmp")
        .arg(&file)
        .arg(&expected)
        .spawn()
        .expect("cmp");
    wait_for("the download to stall", || {
        (stall.passed.load(Ordering::SeqCst) >= 40 << 20).then_some(())
    });
    s.delete_pod("hivemq-0");
    let out = cmp.wait_with_output().expect("cmp ends");
    assert!(out.status.success(), "bytes differ\n{}", m.log());
    let log = m.log();
    let moved = log
        .lines()
        .find(|l| l.contains("port-forward moved to another pod"))
        .unwrap_or_else(|| panic!("no move logged:\n{log}"));
    assert!(
        moved.contains("hivemq-0") && moved.contains("hivemq-1"),
        "{moved}"
    );
}

#[test]
fn the_password_comes_from_a_secret_and_a_wrong_one_is_eacces() {
    if !fuse_available() {
        return;
    }
    let s = Setup::start();
    let id = s.seed(10_000, 0);
    s.hivemq().add_user("admin", "s3cret", Access::Full);
    s.secret("hivemq-auth", "s3cret\n");
    s.secret("wrong-auth", "guess");
    let coords = "namespace = \"mq\", statefulset = \"hivemq\"";
    let m = s.mount_as(
        coords,
        "username = \"admin\"\npassword_secret = { name = \"hivemq-auth\" }\n",
        None,
    );
    let file = cluster(&m).join(format!("snapshots/{id}.backup"));
    assert_eq!(
        std::fs::read(&file).expect("read"),
        s.hivemq().file(&id).expect("file")
    );
    assert!(!m.log().contains("s3cret"), "the password is never logged");
    drop(m);
    let m = s.mount_as(
        coords,
        "username = \"admin\"\npassword_secret = { name = \"wrong-auth\" }\n",
        None,
    );
    assert_eq!(
        errno(std::fs::read_dir(cluster(&m).join("snapshots"))),
        libc::EACCES
    );
}

#[test]
fn failures_say_what_to_do() {
    if !fuse_available() {
        return;
    }
    let s = Setup::start();
    s.seed(10_000, 0);
    // No Ready pod: a StatefulSet scaled to zero.
    s.statefulset("idle", 0);
    let m = s.mount_as("namespace = \"mq\", statefulset = \"idle\"", "", None);
    assert_eq!(
        errno(std::fs::read_dir(cluster(&m).join("snapshots"))),
        libc::EIO
    );
    assert!(
        m.log()
            .contains("StatefulSet idle in namespace mq has 0/0 Ready pods"),
        "{}",
        m.log()
    );
    drop(m);

    // A pod that refuses connections on the port: the REST API listener is off.
    s.statefulset("quiet", 1);
    // Not from the ephemeral range, so no listener another test binds to port 0 can take it.
    let nobody = SocketAddr::from(([127, 0, 0, 1], snapfs_tests::emulators::free_port()));
    s.route("quiet-0", nobody);
    let m = s.mount_as("namespace = \"mq\", statefulset = \"quiet\"", "", None);
    assert_eq!(
        errno(std::fs::read_dir(cluster(&m).join("snapshots"))),
        libc::EIO
    );
    assert!(
        m.log().contains("REST API listener is off by default"),
        "{}",
        m.log()
    );
    drop(m);

    // A user who may not port-forward in the namespace: EACCES naming the resource.
    s.kube().add_user("dev-token", "dev");
    s.kube().deny("dev", "*", "pods/portforward", NS);
    let kubeconfig = s
        .kube()
        .kubeconfig()
        .replace(&format!("token: {ADMIN_TOKEN}"), "token: dev-token");
    let m = s.mount_as(
        "namespace = \"mq\", statefulset = \"hivemq\"",
        "",
        Some(&kubeconfig),
    );
    assert_eq!(
        errno(std::fs::read_dir(cluster(&m).join("snapshots"))),
        libc::EACCES
    );
    assert!(m.log().contains("pods/portforward"), "{}", m.log());
}

#[test]
fn a_backup_is_followed_across_a_daemon_restart() {
    if !fuse_available() {
        return;
    }
    let s = Setup::start();
    let mut m = s.mount();
    s.hivemq()
        .faults()
        .set_slow_backup(Some(Duration::from_secs(3)));
    let Response::Job(job) = m.call(&Request::Backup {
        target: "hivemq/mq".into(),
    }) else {
        panic!("no job")
    };
    let name = job.snapshot.clone();
    m.kill9();
    m.relaunch();
    // Remembered by the daemon, not only by the broker: the job is there after the restart,
    // running or (on a slow machine) already done.
    let status = m.status();
    let again = status
        .jobs
        .iter()
        .find(|j| j.target == "hivemq/mq" && j.snapshot == name)
        .unwrap_or_else(|| panic!("the backup is not followed after a restart: {status:?}"));
    assert_eq!(again.kind, JobKind::Backup);
    wait_for("the backup to end", || {
        let status = m.status();
        let j = status.jobs.iter().find(|j| j.snapshot == name)?;
        (j.state == UploadState::Done).then_some(())
    });
    assert!(cluster(&m).join("snapshots").join(&name).exists());
}
