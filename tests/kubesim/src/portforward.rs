//! `pods/portforward`: each requested pod port connects to the TCP address routed to it (see
//! `routes`). Two wire protocols: the channel protocol the kube client speaks (`channels`) and
//! SPDY/3.1 tunnelled in WebSocket, which kubectl 1.31+ speaks (`tunnel`). Like the kubelet's,
//! every forward to a pod ends, with a message on its error stream, when the pod stops running.

mod channels;
mod tunnel;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::api::{Body, Call};
use crate::channel::{self, V4};
use crate::error::ApiError;
use crate::exec::running_pod;
use crate::meta;
use crate::resources::PODS;
use crate::server::State;

/// The plain channel protocol the kubelet also accepts for port-forward.
const CHANNEL: &str = "channel.k8s.io";
/// kubectl's protocol: SPDY/3.1 frames carried in binary WebSocket messages.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

fn ports(call: &Call) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for value in call.query.all("ports") {
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid port {p:?}")))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request("at least 1 port must be specified"));
    }
    Ok(ports)
}

pub(crate) async fn handle(
    state: Arc<State>,
    call: Call,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pod = running_pod(&state, &call)?;
    let up = channel::upgrade(req, &[V4, CHANNEL, SPDY_TUNNEL])?;
    // SPDY clients name their ports in stream headers; channel clients in the query.
    let ports = if up.protocol == SPDY_TUNNEL {
        Vec::new()
    } else {
        ports(&call)?
    };
    let pending = up.pending;
    let spdy = up.protocol == SPDY_TUNNEL;
    tokio::spawn(async move {
        if let Some(socket) = channel::accept(pending).await {
            let forward = Forward { state, pod };
            if spdy {
                tunnel::run(forward, socket).await;
            } else {
                channels::run(forward, ports, socket).await;
            }
        }
    });
    Ok(up.response)
}

/// One port-forward session's pod.
struct Forward {
    state: Arc<State>,
    pod: Value,
}

impl Forward {
    /// The container runtime's sandbox id, as the kubelet names the pod in its errors (made up
    /// from the uid: 64 hex digits).
    fn sandbox_id(&self) -> String {
        meta::uid(&self.pod).replace('-', "").repeat(2)
    }

    /// Connects to what `port` routes to; the error is the kubelet's message for the error
    /// stream (containerd's wording for a port nothing listens on).
    async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        let target = self.state.routes.target(&self.pod, port);
        let refused = |why: &str| {
            let sandbox = self.sandbox_id();
            format!(
                "error forwarding port {port} to pod {sandbox}, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-{}\": failed to connect to localhost:{port} inside namespace \"{sandbox}\", IPv4: dial tcp4 127.0.0.1:{port}: {why} IPv6 dial tcp6 [::1]:{port}: {why} ",
                meta::uid(&self.pod)
            )
        };
        match target {
            Some(addr) => TcpStream::connect(addr).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    refused("connect: connection refused")
                } else {
                    refused(&format!("connect: {e}"))
                }
            }),
            None => Err(refused("connect: connection refused")),
        }
    }

    /// Resolves when the pod is deleted, is being deleted or stops running, with the message
    /// its open forwards get. The wording is a guess: the kubelet's streams just end when the
    /// sandbox goes.
    async fn ended(&self) -> String {
        let (ns, name, uid) = (
            meta::namespace(&self.pod),
            meta::name(&self.pod),
            meta::uid(&self.pod),
        );
        let mut feed = self.state.store.feed();
        loop {
            let why = match self.state.store.get(&PODS, ns, name) {
                None => Some("the pod was deleted".to_string()),
                Some(p) if meta::uid(&p) != uid => Some("the pod was deleted".to_string()),
                Some(p) if meta::is_terminating(&p) => Some("the pod is being deleted".to_string()),
                Some(p) => match meta::str_at(&p, &["status", "phase"]).unwrap_or("") {
                    "Running" => None,
                    phase => Some(format!("the pod is no longer running (phase {phase})")),
                },
            };
            if let Some(why) = why {
                return format!(
                    "error forwarding to pod {}, uid {uid}: {why}",
                    self.sandbox_id()
                );
            }
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = feed.recv().await {
                std::future::pending::<()>().await;
            }
        }
    }
}
