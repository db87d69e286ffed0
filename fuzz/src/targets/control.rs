//! The control socket: one JSON line per request from any process of the user, and the
//! answers and mount records the CLI reads back.

use serde::Serialize;
use serde::de::DeserializeOwned;
use snapfs_control::wire::{MountRecord, Request, Response};

/// A line read from the socket (or from a mount record file): decoded as each kind of message;
/// whatever decodes must encode and decode again to the same message.
pub fn wire(data: &[u8]) {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip::<MountRecord>(data);
}

fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(message) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = match serde_json::to_string(&message) {
        Ok(encoded) => encoded,
        Err(e) => panic!("a decoded message does not encode: {e}"),
    };
    let again = match serde_json::from_str::<T>(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("an encoded message does not decode: {e}: {encoded}"),
    };
    assert_eq!(
        serde_json::to_string(&again).ok().as_deref(),
        Some(encoded.as_str()),
        "a message changed through encoding and decoding"
    );
}
