//! The WebSocket side of exec and port-forward: the upgrade handshake with subprotocol
//! negotiation, and the channel-prefixed binary frames.

use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::api::{Body, full};
use crate::error::ApiError;

pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const STATUS: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
/// v5: `[255, channel]` half-closes a channel.
pub(crate) const CLOSE: u8 = 255;

pub(crate) const V5: &str = "v5.channel.k8s.io";
pub(crate) const V4: &str = "v4.channel.k8s.io";

pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An accepted upgrade: the response to send and the connection to come.
pub(crate) struct Upgrade {
    pub protocol: &'static str,
    pub response: Response<Body>,
    pub pending: OnUpgrade,
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks a WebSocket upgrade request and picks the first subprotocol the client offers that
/// the server supports, as the API server's wsstream does. Errors are plain HTTP answers.
pub(crate) fn upgrade(
    mut req: Request<Incoming>,
    supported: &[&'static str],
) -> Result<Upgrade, ApiError> {
    if !header_has(&req, UPGRADE, "websocket") || !header_has(&req, CONNECTION, "upgrade") {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?
        .as_bytes()
        .to_vec();
    let offered: Vec<String> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = offered
        .iter()
        .find_map(|p| supported.iter().find(|s| **s == p.as_str()))
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade connection: requested protocol(s) are not supported: {offered:?}; supports {supported:?}"
            ))
        })?;
    let pending = hyper::upgrade::on(&mut req);
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(&key))
            .map_err(|e| ApiError::internal(e.to_string()))?,
    );
    headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    Ok(Upgrade {
        protocol,
        response,
        pending,
    })
}

/// Waits for the upgraded connection and wraps it as a server-side WebSocket.
pub(crate) async fn accept(pending: OnUpgrade) -> Option<Socket> {
    match pending.await {
        Ok(upgraded) => {
            Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
        }
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            None
        }
    }
}

/// The close frame that ends a session normally. Clients (kubectl) treat anything but 1000 as
/// an error.
pub(crate) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// A binary frame: the channel byte, then the data.
pub(crate) fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    bytes
}
