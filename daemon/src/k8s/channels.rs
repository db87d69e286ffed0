//! One port of a pod carried over the API server's WebSocket channel protocol
//! (`v4.channel.k8s.io` and its successor): the port's bytes on channel 0, its error on
//! channel 1, each channel opened by a frame that carries only the port number.
//!
//! The kube client has a port-forwarder of its own; it is not used, because it loses the
//! pod's error whenever the client's first bytes are still on their way out when the server
//! closes. That is precisely what happens when a pod refuses the connection: the server sends
//! the error and closes at once, a request arrives at a socket already closed, and the
//! forwarder stops before it passes the error on. Here reading never waits on writing: a
//! request that cannot be sent any more stops the sending side only, and whatever the server
//! said is still read to its end.

use std::convert::Infallible;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// The channel of the port's bytes.
const DATA: u8 = 0;
/// The channel of the port's error, a line of text sent once, after which the port is done.
const ERROR: u8 = 1;

/// How a forward ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ended {
    /// The error the server sent for the port, if it sent one.
    pub error: Option<String>,
    /// Bytes of the port passed on to the client.
    pub received: u64,
}

/// Carries `client`'s bytes to the port over `ws` and the port's back, until the server ends
/// the forward, sends the port's error, or the client stops reading. A client that has sent
/// all it will (its end of file) closes the forward, which the server ends once the pod's
/// answer is through.
pub(super) async fn relay<W>(
    ws: W,
    mut from_client: impl AsyncRead + Unpin,
    mut to_client: impl AsyncWrite + Unpin,
) -> Ended
where
    W: Stream<Item = Result<Message, tungstenite::Error>> + Sink<Message> + Unpin,
{
    let (mut to_server, mut from_server) = ws.split();
    let up = async {
        // One byte ahead of the data for the channel, so that a frame is made in one copy.
        let mut buf = vec![0u8; 64 * 1024 + 1];
        buf[0] = DATA;
        loop {
            match from_client.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::binary(buf[..=n].to_vec());
                    if to_server.send(frame).await.is_err() {
                        // Closed under it: what the server said is still to be read.
                        return std::future::pending::<Infallible>().await;
                    }
                }
            }
        }
        let _ = to_server.send(Message::Close(None)).await;
        std::future::pending::<Infallible>().await
    };
    let down = async {
        let mut received = 0u64;
        // Whether each channel's opening frame (the port number) has come.
        let mut opened = [false; 2];
        let mut error = None;
        while let Some(Ok(message)) = from_server.next().await {
            let Message::Binary(frame) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&channel, bytes)) = frame.split_first() else {
                continue;
            };
            let Some(seen) = opened.get_mut(usize::from(channel)) else {
                continue;
            };
            if !std::mem::replace(seen, true) {
                continue;
            }
            if channel == ERROR {
                if !bytes.is_empty() {
                    error = Some(String::from_utf8_lossy(bytes).trim_end().to_string());
                    break;
                }
                continue;
            }
            received += bytes.len() as u64;
            if to_client.write_all(bytes).await.is_err() {
                break;
            }
        }
        Ended { error, received }
    };
    tokio::select! {
        never = up => match never {},
        ended = down => ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    const PORT: [u8; 2] = 8888u16.to_le_bytes();

    async fn pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            WebSocketStream::from_raw_socket(a, Role::Client, None).await,
            WebSocketStream::from_raw_socket(b, Role::Server, None).await,
        )
    }

    fn frame(channel: u8, bytes: &[u8]) -> Message {
        Message::binary([&[channel][..], bytes].concat())
    }

    async fn open(server: &mut WebSocketStream<DuplexStream>) {
        server.send(frame(DATA, &PORT)).await.unwrap();
        server.send(frame(ERROR, &PORT)).await.unwrap();
    }

    #[tokio::test]
    async fn an_answer_reaches_the_client_and_a_request_the_server() {
        let (client, mut server) = pair().await;
        let pod = tokio::spawn(async move {
            open(&mut server).await;
            let Some(Ok(Message::Binary(request))) = server.next().await else {
                panic!("no request")
            };
            assert_eq!(&request[..], b"\0GET / HTTP/1.1\r\n\r\n");
            server
                .send(frame(DATA, b"HTTP/1.1 200 OK\r\n"))
                .await
                .unwrap();
            server.send(frame(DATA, b"\r\n")).await.unwrap();
            server.close(None).await.unwrap();
        });
        let mut answer = Vec::new();
        let ended = relay(client, &b"GET / HTTP/1.1\r\n\r\n"[..], &mut answer).await;
        pod.await.unwrap();
        assert_eq!(answer, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            ended,
            Ended {
                error: None,
                received: 19
            }
        );
    }

    #[tokio::test]
    async fn an_error_sent_just_before_closing_is_read_whatever_became_of_the_request() {
        // The server says its piece and closes before the request is even read, as one does
        // for a pod that refuses connections on the port.
        let (client, mut server) = pair().await;
        open(&mut server).await;
        server
            .send(frame(
                ERROR,
                b"dial tcp 10.0.0.1:8888: connect: connection refused\n",
            ))
            .await
            .unwrap();
        server.close(None).await.unwrap();
        // The client has already read the server's close when its request goes out.
        let mut answer = Vec::new();
        let ended = relay(client, &b"GET / HTTP/1.1\r\n\r\n"[..], &mut answer).await;
        assert!(answer.is_empty());
        assert_eq!(
            ended.error.as_deref(),
            Some("dial tcp 10.0.0.1:8888: connect: connection refused")
        );
        drop(server);
    }

    #[tokio::test]
    async fn the_end_of_the_request_closes_the_forward() {
        let (client, mut server) = pair().await;
        let pod = tokio::spawn(async move {
            open(&mut server).await;
            while let Some(Ok(m)) = server.next().await {
                if let Message::Close(_) = m {
                    break;
                }
            }
        });
        let ended = relay(client, &b""[..], Vec::new()).await;
        pod.await.unwrap();
        assert_eq!(
            ended,
            Ended {
                error: None,
                received: 0
            }
        );
    }
}
