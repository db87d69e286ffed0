//! The control socket: the daemon's side in `server`; the contract and the client's side are
//! in `snapfs_control`.

pub mod server;
