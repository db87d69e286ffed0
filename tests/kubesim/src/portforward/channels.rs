//! The channel protocol (`v4.channel.k8s.io`, `channel.k8s.io`): for the i-th port, data on
//! channel 2i and errors on channel 2i+1, each opened with `[channel, port_lo, port_hi]`.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Forward;
use crate::channel::{self, Socket};

/// Data from the pod side, or the end of one port's connection.
enum FromPod {
    Data(u8, Vec<u8>),
    Closed,
}

pub(super) async fn run(forward: Forward, ports: Vec<u16>, socket: Socket) {
    let state = forward.state.clone();
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
        match forward.connect(*port).await {
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
                                let chunk = FromPod::Data(data, buf[..n].to_vec());
                                if tx.send(chunk).await.is_err() {
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
            Err(message) => {
                let _ = sink
                    .send(Message::binary(channel::frame(error, message.as_bytes())))
                    .await;
                writers.push(None);
            }
        }
    }
    drop(tx);
    let mut epoch = state.epoch.subscribe();
    let ended = forward.ended();
    tokio::pin!(ended);
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
            message = &mut ended => {
                // The kubelet's way: the error on every open port's error channel, then close.
                for (i, writer) in writers.iter().enumerate() {
                    if writer.is_some() {
                        let frame = channel::frame(2 * i as u8 + 1, message.as_bytes());
                        let _ = sink.send(Message::binary(frame)).await;
                    }
                }
                break;
            }
            _ = epoch.changed() => return,
        }
    }
    let _ = sink.send(channel::normal_close()).await;
    let _ = sink.close().await;
}
