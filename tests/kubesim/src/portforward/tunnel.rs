//! kubectl's port-forward: SPDY/3.1 in binary WebSocket messages. Each local connection of
//! kubectl is one request: an error stream and a data stream carrying the same `requestID` and
//! `port` headers. Once both are open the port is connected and bytes flow on the data stream;
//! when the pod side closes, the server ends both streams, an error (if any) on the error
//! stream first, which is how the kubelet ends a request.

use std::collections::HashMap;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Forward;
use crate::channel::{self, Socket};
use crate::spdy::{self, Decoder, Encoder, Frame, REFUSED_STREAM};

/// How long a client whose forwards got an error has to close the connection itself.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// One forwarded connection: its two streams and the pod side's writer once connected.
#[derive(Default)]
struct Request {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    writer: Option<OwnedWriteHalf>,
    started: bool,
}

/// Data from the pod side of a request, or its end.
enum FromPod {
    Data(String, Vec<u8>),
    Closed(String),
}

/// The client went away or the connection broke: the session ends.
struct Gone;

struct Session {
    forward: Forward,
    sink: SplitSink<Socket, Message>,
    encoder: Encoder,
    requests: HashMap<String, Request>,
    last_stream: u32,
    to_session: mpsc::Sender<FromPod>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Session {
    async fn send(&mut self, frame: Vec<u8>) -> Result<(), Gone> {
        self.sink
            .send(Message::binary(frame))
            .await
            .map_err(|_| Gone)
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Gone> {
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => self.open_stream(stream, &headers).await,
            Frame::Data { stream, data, fin } => {
                let Some(request) = self.requests.values_mut().find(|r| r.data == Some(stream))
                else {
                    return Ok(());
                };
                if let Some(writer) = request.writer.as_mut() {
                    self.forward.state.counters.add_portforward_in(data.len());
                    let written = writer.write_all(&data).await;
                    if fin || written.is_err() {
                        let _ = writer.shutdown().await;
                        request.writer = None;
                    }
                }
                Ok(())
            }
            Frame::RstStream { stream } => {
                // Dropping the writer closes the pod side's connection.
                self.requests
                    .retain(|_, r| r.data != Some(stream) && r.error != Some(stream));
                Ok(())
            }
            Frame::Ping(id) => self.send(spdy::ping(id)).await,
            Frame::GoAway => Err(Gone),
            Frame::Ignored => Ok(()),
        }
    }

    async fn open_stream(&mut self, stream: u32, headers: &[(String, String)]) -> Result<(), Gone> {
        self.last_stream = self.last_stream.max(stream);
        let kind = header(headers, "streamtype").unwrap_or("");
        let port = header(headers, "port").and_then(|p| p.parse::<u16>().ok());
        let (Some(port), "data" | "error") = (port, kind) else {
            tracing::debug!(stream, ?headers, "port-forward stream refused");
            return self.send(spdy::rst_stream(stream, REFUSED_STREAM)).await;
        };
        let reply = self.encoder.syn_reply(stream, &[]);
        self.send(reply).await?;
        // Clients without a requestID header pair an error stream with the data stream two ids
        // later, as the kubelet assumes.
        let id = match header(headers, "requestid") {
            Some(id) => id.to_string(),
            None if kind == "data" => stream.saturating_sub(2).to_string(),
            None => stream.to_string(),
        };
        let request = self.requests.entry(id.clone()).or_default();
        request.port = port;
        if kind == "data" {
            request.data = Some(stream);
        } else {
            request.error = Some(stream);
        }
        if request.data.is_some() && request.error.is_some() && !request.started {
            request.started = true;
            self.start(id).await?;
        }
        Ok(())
    }

    async fn start(&mut self, id: String) -> Result<(), Gone> {
        let Some(port) = self.requests.get(&id).map(|r| r.port) else {
            return Ok(());
        };
        match self.forward.connect(port).await {
            Ok(conn) => {
                let (mut read, write) = conn.into_split();
                if let Some(request) = self.requests.get_mut(&id) {
                    request.writer = Some(write);
                }
                let tx = self.to_session.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match read.read(&mut buf).await {
                            Ok(n) if n > 0 => {
                                if tx
                                    .send(FromPod::Data(id.clone(), buf[..n].to_vec()))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            _ => {
                                let _ = tx.send(FromPod::Closed(id)).await;
                                return;
                            }
                        }
                    }
                });
                Ok(())
            }
            Err(message) => self.finish(&id, Some(&message)).await,
        }
    }

    /// Ends a request: the error message (if any) on its error stream, then both streams end.
    async fn finish(&mut self, id: &str, message: Option<&str>) -> Result<(), Gone> {
        let Some(request) = self.requests.remove(id) else {
            return Ok(());
        };
        if let Some(error) = request.error {
            if let Some(message) = message {
                self.send(spdy::data(error, message.as_bytes(), false))
                    .await?;
            }
            self.send(spdy::data(error, b"", true)).await?;
        }
        if let Some(data) = request.data {
            self.send(spdy::data(data, b"", true)).await?;
        }
        Ok(())
    }

    async fn on_pod_side(&mut self, from_pod: FromPod) -> Result<(), Gone> {
        match from_pod {
            FromPod::Data(id, bytes) => {
                let Some(stream) = self.requests.get(&id).and_then(|r| r.data) else {
                    return Ok(());
                };
                self.forward.state.counters.add_portforward_out(bytes.len());
                self.send(spdy::data(stream, &bytes, false)).await
            }
            FromPod::Closed(id) => self.finish(&id, None).await,
        }
    }

    /// The pod stopped: every request gets the message and ends. Whether any did.
    async fn pod_ended(&mut self, message: &str) -> bool {
        let ids: Vec<String> = self.requests.keys().cloned().collect();
        for id in &ids {
            if self.finish(id, Some(message)).await.is_err() {
                return false;
            }
        }
        !ids.is_empty()
    }
}

pub(super) async fn run(forward: Forward, socket: Socket) {
    let state = forward.state.clone();
    let (sink, mut stream) = socket.split();
    let (to_session, mut rx) = mpsc::channel(64);
    let ended_forward = Forward {
        state: forward.state.clone(),
        pod: forward.pod.clone(),
    };
    let mut session = Session {
        forward,
        sink,
        encoder: Encoder::default(),
        requests: HashMap::new(),
        last_stream: 0,
        to_session,
    };
    let mut decoder = Decoder::default();
    let mut epoch = state.epoch.subscribe();
    let ended = ended_forward.ended();
    tokio::pin!(ended);
    loop {
        let step = tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    decoder.push(&bytes);
                    let mut step = Ok(());
                    while step.is_ok() {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => step = session.on_frame(frame).await,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "port-forward SPDY stream broken");
                                let _ = session.send(spdy::goaway(session.last_stream)).await;
                                step = Err(Gone);
                            }
                        }
                    }
                    step
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(Gone),
                Some(Ok(_)) => Ok(()),
            },
            Some(from_pod) = rx.recv() => session.on_pod_side(from_pod).await,
            message = &mut ended => {
                if session.pod_ended(&message).await {
                    // kubectl reports the error and closes the connection itself; closing
                    // first could make it drop the report. It gets a moment to do so.
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Some(Ok(msg)) = stream.next().await {
                            if msg.is_close() {
                                break;
                            }
                        }
                    })
                    .await;
                }
                let _ = session.sink.send(channel::normal_close()).await;
                let _ = session.sink.close().await;
                return;
            }
            _ = epoch.changed() => return,
        };
        if step.is_err() {
            for request in session.requests.values_mut() {
                if let Some(mut writer) = request.writer.take() {
                    let _ = writer.shutdown().await;
                }
            }
            let _ = session.sink.send(channel::normal_close()).await;
            return;
        }
    }
}
