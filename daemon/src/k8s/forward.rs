//! A port of a Ready pod, reached by port-forward through the kube client (no kubectl
//! process), served on a private Unix socket so that an HTTP client can use it as it would a
//! TCP address.
//!
//! Each connection to the socket is one port-forward to the pod picked at that moment, so an
//! HTTP client's pool of kept-alive connections is a pool of forwards, and a connection opened
//! after a pod went away reaches another one. The first pick is the first Ready pod by
//! ordinal; later ones stay with the pod last used while it is Ready, and pass over pods whose
//! forward broke until no other Ready pod is left, so a pod that failed is not picked again
//! merely because it came back under the same name. A forward
//! that cannot be opened is answered on the socket as HTTP (403, or 502 with the reason), so
//! the HTTP client reports why in its own terms; one that breaks after bytes flowed is closed,
//! which the client sees as an answer cut off and tries again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::client::{Connection, UpgradeConnectionError};
use kube::core::Request;
use kube::{Api, Client, Resource};
use snapfs_control::paths::{Paths, make_private_dir};
use snapfs_fs::backend::BackendError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::channels::relay;
use super::cluster::{is_ready, label_selector};
use super::contexts::client_for;
use super::errors::{classify, retry};
use crate::config::{Coordinates, Pods, PortRef, REST_PORT, REST_PORT_NAME, SecretRef};

/// What a forward's socket file is called, before the daemon's pid and a counter.
const SOCKET_PREFIX: &str = "forward-";

/// The most of a request's head read before answering it with an error.
const MAX_HEAD: usize = 64 * 1024;

pub struct PodForward {
    coords: Coordinates,
    paths: Paths,
    /// What to tell a user whose pod refuses connections on the port.
    refused_hint: String,
    socket: PathBuf,
    /// The context's client and namespace, made on first use and again after a failure to
    /// make it, so that a login done since counts.
    kube: tokio::sync::Mutex<Option<(Client, String)>>,
    choice: Mutex<Choice>,
}

/// What decides the next pick among the Ready pods.
#[derive(Debug, Default)]
struct Choice {
    /// The pod the last forward went to.
    last: Option<String>,
    /// Pods whose forward broke, passed over while another pod is Ready.
    broken: BTreeSet<String>,
}

impl Choice {
    /// Which of `ready` (in ordinal order, not empty) to forward to.
    fn pick(&mut self, ready: &[String]) -> usize {
        let usable = |p: &String| !self.broken.contains(p);
        let last = ready
            .iter()
            .position(|p| usable(p) && Some(p) == self.last.as_ref());
        match last.or_else(|| ready.iter().position(usable)) {
            Some(i) => i,
            None => {
                // Every Ready pod failed once: start over rather than give up.
                self.broken.clear();
                0
            }
        }
    }
}

/// The pod and port one forward reached.
struct Opened {
    pod: String,
    port: u16,
    connection: Connection,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodForward {
    /// Serves forwards to the pods at `coords` on a new socket in the runtime directory.
    /// Must be called within the runtime.
    pub fn start(
        coords: Coordinates,
        paths: Paths,
        refused_hint: String,
    ) -> std::io::Result<Arc<PodForward>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = paths.runtime_dir();
        make_private_dir(&dir)?;
        remove_stale_sockets(&dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let socket = dir.join(format!("{SOCKET_PREFIX}{}-{n}.sock", std::process::id()));
        // A file left by an earlier process with this pid is stale by construction.
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let forward = Arc::new(PodForward {
            coords,
            paths,
            refused_hint,
            socket,
            kube: tokio::sync::Mutex::new(None),
            choice: Mutex::new(Choice::default()),
        });
        tokio::spawn(accept(listener, Arc::downgrade(&forward)));
        Ok(forward)
    }

    /// The socket an HTTP client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn kube(&self) -> Result<(Client, String), BackendError> {
        let mut kube = self.kube.lock().await;
        if let Some(k) = kube.as_ref() {
            return Ok(k.clone());
        }
        let client = client_for(self.coords.context.as_deref(), &self.paths)
            .await
            .map_err(BackendError::Unavailable)?;
        let ns = self
            .coords
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        *kube = Some((client.clone(), ns.clone()));
        Ok((client, ns))
    }

    /// The value of a key of a Secret in the pods' namespace, read with the user's own
    /// permissions; one trailing line break is not part of it.
    pub async fn secret(&self, r: &SecretRef) -> Result<String, BackendError> {
        let (client, ns) = self.kube().await?;
        let api: Api<Secret> = Api::namespaced(client, &ns);
        let what = format!("Secret {} in namespace {ns}", r.name);
        let secret = retry(|| api.get(&r.name), &format!("get {what}")).await?;
        let bytes = secret
            .data
            .and_then(|mut d| d.remove(&r.key))
            .ok_or_else(|| BackendError::NotFound(format!("key {:?} of {what}", r.key)))?;
        let text = String::from_utf8(bytes.0)
            .map_err(|_| BackendError::Other(format!("key {:?} of {what} is not text", r.key)))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
    }

    /// The Ready pods at the coordinates, ordinal 0 first; none is an error that says how many
    /// pods there are.
    async fn ready_pods(&self, client: &Client, ns: &str) -> Result<Vec<Pod>, BackendError> {
        let (labels, wanted, what) = match &self.coords.pods {
            Pods::StatefulSet(name) => {
                let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                let what = format!("StatefulSet {name} in namespace {ns}");
                let set = retry(|| sets.get_opt(name), &format!("get {what}"))
                    .await?
                    .ok_or_else(|| BackendError::NotFound(what.clone()))?;
                let spec = set.spec.unwrap_or_default();
                let labels = label_selector(&spec.selector).ok_or_else(|| {
                    BackendError::Other(format!(
                        "{what} has no selector of labels to find its pods by"
                    ))
                })?;
                (labels, Some(spec.replicas.unwrap_or(1)), what)
            }
            Pods::Selector(labels) => (
                labels.clone(),
                None,
                format!("pods {labels} in namespace {ns}"),
            ),
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().labels(&labels);
        let list = retry(|| api.list(&lp), &format!("list pods in namespace {ns}")).await?;
        let total = list.items.len();
        let mut ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        ready.sort_by_key(|p| ordinal_key(p.metadata.name.as_deref().unwrap_or("")));
        if ready.is_empty() {
            let of = wanted.map_or(total as i64, i64::from);
            return Err(BackendError::Unavailable(format!(
                "{what} has 0/{of} Ready pods"
            )));
        }
        Ok(ready)
    }

    /// Opens a forward to the first Ready pod.
    async fn open(&self) -> Result<Opened, BackendError> {
        let (client, ns) = self.kube().await?;
        let pods = self.ready_pods(&client, &ns).await?;
        let names: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        let (pod, name, before) = {
            let mut choice = lock(&self.choice);
            let i = choice.pick(&names);
            (
                &pods[i],
                names[i].clone(),
                choice.last.replace(names[i].clone()),
            )
        };
        let port = port_of(pod, &self.coords.port).ok_or_else(|| {
            BackendError::Other(format!(
                "pod {name} in namespace {ns} declares no container port named {}",
                match &self.coords.port {
                    PortRef::Name(n) => n.as_str(),
                    _ => REST_PORT_NAME,
                }
            ))
        })?;
        let what = format!("port-forward to port {port} of pod {name} in namespace {ns}");
        let request = Request::new(Pod::url_path(&(), Some(&ns)))
            .portforward(&name, &[port])
            .map_err(|e| BackendError::Other(format!("{what}: {e}")))?;
        let connection = match client.connect(request).await {
            Ok(c) => c,
            Err(e) => {
                self.broke(&name);
                return Err(refused_upgrade(&e, &what));
            }
        };
        if before.as_deref() != Some(name.as_str()) {
            match before {
                Some(old) => tracing::info!(
                    pod = name,
                    previous = old,
                    namespace = ns,
                    port,
                    "port-forward moved to another pod"
                ),
                None => tracing::info!(pod = name, namespace = ns, port, "port-forward to pod"),
            }
        }
        Ok(Opened {
            pod: name,
            port,
            connection,
        })
    }

    /// Passes over `pod` in the next picks while another pod is Ready.
    fn broke(&self, pod: &str) {
        lock(&self.choice).broken.insert(pod.to_string());
    }

    /// Carries one connection to a pod, or answers it with why it cannot be.
    async fn serve(&self, mut conn: UnixStream) {
        let opened = match self.open().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "port-forward not opened");
                skip_head(&mut conn).await;
                answer(&mut conn, &e).await;
                return;
            }
        };
        let (from_client, to_client) = conn.split();
        let ended = relay(opened.connection.into_stream(), from_client, to_client).await;
        let pod = &opened.pod;
        let received = ended.received;
        let message = match (ended.error, received) {
            // An answer came and the forward ended without complaint: the usual end.
            (None, 1..) => return,
            (None, 0) => "the forward ended before any answer came".to_string(),
            (Some(message), _) => message,
        };
        self.broke(pod);
        if received > 0 {
            tracing::warn!(
                pod,
                error = message,
                "port-forward broke off; the next request goes to a Ready pod"
            );
            return;
        }
        let why = if message.to_ascii_lowercase().contains("connection refused") {
            format!(
                "pod {pod} refuses connections on port {}: {}",
                opened.port, self.refused_hint
            )
        } else {
            format!("pod {pod}, port {}: {message}", opened.port)
        };
        tracing::warn!(pod, error = message, "port-forward failed: {why}");
        // The request went to the pod already; the answer is ours.
        answer(&mut conn, &BackendError::Unavailable(why)).await;
    }
}

impl Drop for PodForward {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn accept(listener: UnixListener, forward: Weak<PodForward>) {
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "port-forward socket: accept failed");
                continue;
            }
        };
        let Some(forward) = forward.upgrade() else {
            return;
        };
        tokio::spawn(async move { forward.serve(conn).await });
    }
}

/// Reads an HTTP request's head (the requests to a broker have no body), so that answering
/// it does not cut the client off while it writes.
async fn skip_head(conn: &mut UnixStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Answers an HTTP request with `e`, in the error shape the HiveMQ REST API uses.
async fn answer(conn: &mut UnixStream, e: &BackendError) {
    let status = match e {
        BackendError::PermissionDenied(_) => "403 Forbidden",
        _ => "502 Bad Gateway",
    };
    let detail = match e {
        BackendError::PermissionDenied(m)
        | BackendError::Unavailable(m)
        | BackendError::Other(m) => m.clone(),
        other => other.to_string(),
    };
    let body = serde_json::json!({"errors": [{"title": "port-forward", "detail": detail}]});
    let body = body.to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// A port-forward the API server would not open: a refusal that arrives as the upgrade's
/// status rather than as a Status object, so its words are given here.
fn refused_upgrade(e: &kube::Error, what: &str) -> BackendError {
    match e {
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(s))
            if s.as_u16() == 401 || s.as_u16() == 403 =>
        {
            BackendError::PermissionDenied(format!(
                "{what}: {s}: your Kubernetes user may not port-forward there: it needs get and create on resource \"pods/portforward\" in the namespace (an RBAC Role with verbs [get, create] on pods/portforward)"
            ))
        }
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(s))
            if s.as_u16() == 404 =>
        {
            BackendError::Unavailable(format!("{what}: the pod is gone"))
        }
        other => classify(other, what),
    }
}

/// The container port `p` names in `pod`.
fn port_of(pod: &Pod, p: &PortRef) -> Option<u16> {
    let declared = || {
        pod.spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
    };
    let named = |name: &str| {
        declared()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
    };
    match p {
        PortRef::Number(n) => Some(*n),
        PortRef::Name(name) => named(name),
        PortRef::Default => named(REST_PORT_NAME).or(Some(REST_PORT)),
    }
}

/// Pods sorted by StatefulSet ordinal (`hivemq-2` before `hivemq-10`), then by name.
fn ordinal_key(name: &str) -> (u64, String) {
    let ordinal = name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX);
    (ordinal, name.to_string())
}

/// Removes the sockets of daemons that are no longer running.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SOCKET_PREFIX))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ports: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hivemq-0"},
            "spec": {"containers": [{"name": "hivemq", "ports": ports}]}
        }))
        .unwrap()
    }

    #[test]
    fn ports_are_found_by_name_or_default() {
        let p = pod(serde_json::json!([
            {"name": "mqtt", "containerPort": 1883},
            {"name": "rest-8888", "containerPort": 8080}
        ]));
        assert_eq!(port_of(&p, &PortRef::Default), Some(8080));
        assert_eq!(port_of(&p, &PortRef::Name("mqtt".into())), Some(1883));
        assert_eq!(port_of(&p, &PortRef::Name("web".into())), None);
        assert_eq!(port_of(&p, &PortRef::Number(9)), Some(9));
        let bare = pod(serde_json::json!([]));
        assert_eq!(port_of(&bare, &PortRef::Default), Some(REST_PORT));
    }

    #[test]
    fn pods_go_by_ordinal() {
        let mut names = vec!["hivemq-10", "hivemq-2", "other", "hivemq-0"];
        names.sort_by_key(|n| ordinal_key(n));
        assert_eq!(names, ["hivemq-0", "hivemq-2", "hivemq-10", "other"]);
    }

    #[test]
    fn picks_stay_with_a_pod_and_pass_over_broken_ones() {
        let mut c = Choice::default();
        fn pick(c: &mut Choice, names: &[&'static str]) -> &'static str {
            let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            names[c.pick(&owned)]
        }
        let all = ["h-0", "h-1", "h-2"];
        assert_eq!(pick(&mut c, &all), "h-0");
        c.last = Some("h-0".into());
        c.broken.insert("h-0".into());
        // h-0 is back under its name: still passed over while h-1 is Ready.
        assert_eq!(pick(&mut c, &all), "h-1");
        c.last = Some("h-1".into());
        assert_eq!(pick(&mut c, &["h-0", "h-1"]), "h-1");
        // The pod last used went away: the first usable one by ordinal.
        assert_eq!(pick(&mut c, &["h-0", "h-2"]), "h-2");
        // Only broken pods are Ready: start over with them.
        assert_eq!(pick(&mut c, &["h-0"]), "h-0");
        assert!(c.broken.is_empty());
    }

    #[test]
    fn a_refused_upgrade_names_the_permission() {
        let e = kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(
            reqwest::StatusCode::FORBIDDEN,
        ));
        let BackendError::PermissionDenied(m) = refused_upgrade(&e, "port-forward to pod p") else {
            panic!()
        };
        assert!(
            m.contains("pods/portforward") && m.contains("create"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn errors_are_answered_as_http() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            skip_head(&mut a).await;
            answer(&mut a, &BackendError::PermissionDenied("no".into())).await;
        });
        b.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        b.read_to_string(&mut reply).await.unwrap();
        server.await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
        assert!(
            reply.ends_with(r#"{"errors":[{"detail":"no","title":"port-forward"}]}"#),
            "{reply}"
        );
    }
}
