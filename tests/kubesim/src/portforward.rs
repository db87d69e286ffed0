//! `pods/portforward` over WebSocket: each requested pod port is connected to the TCP address a
//! test registered for it, with data on channel 2i and errors on channel 2i+1.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Body, Call};
use crate::channel::{self, Socket, V4};
use crate::error::ApiError;
use crate::exec::running_pod;
use crate::meta;
use crate::server::State;

/// The plain channel protocol the kubelet also accepts for port-forward.
const CHANNEL: &str = "channel.k8s.io";

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
    // kubectl 1.31+ offers only SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`)
    // and sends no `ports` parameter; that is not simulated and gets the "not supported" answer.
    let up = channel::upgrade(req, &[V4, CHANNEL])?;
    let ports = ports(&call)?;
    let pending = up.pending;
    tokio::spawn(async move {
        if let Some(socket) = channel::accept(pending).await {
            run(state, pod, ports, socket).await;
        }
    });
    Ok(up.response)
}

/// Data from the pod side, or the end of one port's connection.
enum FromPod {
    Data(u8, Vec<u8>),
    Closed,
}

async fn run(state: Arc<State>, pod: serde_json::Value, ports: Vec<u16>, socket: Socket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<FromPod>(64);
    let mut writers: Vec<Option<OwnedWriteHalf>> = Vec::new();
    let mut open = 0;
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        let prefix = port.to_le_bytes();
        for ch in [data, error] {
            if sink
                .send(Message::binary(channel::frame(ch, &prefix)))
                .await
                .is_err()
            {
                return;
            }
        }
        let target = state.routes.target(&pod, *port);
        let conn = match target {
            Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
            None => Err("connect: connection refused".to_string()),
        };
        match conn {
            Ok(conn) => {
                let (mut read, write) = conn.into_split();
                writers.push(Some(write));
                open += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match read.read(&mut buf).await {
                            Ok(n) if n > 0 => {
                                if tx
                                    .send(FromPod::Data(data, buf[..n].to_vec()))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            _ => {
                                let _ = tx.send(FromPod::Closed).await;
                                return;
                            }
                        }
                    }
                });
            }
            Err(why) => {
                // The kubelet's wording, shortened (a guess at the parts clients show).
                let message = format!(
                    "error forwarding port {port} to pod {}, uid : failed to connect to localhost:{port} inside namespace: dial tcp4 127.0.0.1:{port}: {why}",
                    meta::uid(&pod)
                );
                let _ = sink
                    .send(Message::binary(channel::frame(error, message.as_bytes())))
                    .await;
                writers.push(None);
            }
        }
    }
    drop(tx);
    let mut epoch = state.epoch.subscribe();
    while open > 0 {
        tokio::select! {
            from_pod = rx.recv() => match from_pod {
                Some(FromPod::Data(ch, data)) => {
                    state.counters.add_portforward_out(data.len());
                    if sink.send(Message::binary(channel::frame(ch, &data))).await.is_err() {
                        return;
                    }
                }
                // A guess: when the pod side closes, the whole forward ends, as the connection
                // carries one stream per port.
                Some(FromPod::Closed) | None => open -= 1,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) if data.len() > 1 => {
                    let index = usize::from(data[0] / 2);
                    if data[0] % 2 == 0
                        && let Some(Some(writer)) = writers.get_mut(index)
                    {
                        state.counters.add_portforward_in(data.len() - 1);
                        if writer.write_all(&data[1..]).await.is_err() {
                            writers[index] = None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    for writer in writers.iter_mut().flatten() {
                        let _ = writer.shutdown().await;
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = epoch.changed() => return,
        }
    }
    let _ = sink.send(channel::normal_close()).await;
    let _ = sink.close().await;
}
