//! The control socket: the daemon's side in `server`, the client's in `client`, the contract
//! both share in `wire`.

pub mod client;
pub mod server;
pub mod wire;
