//! What `snapfs` and `snapfsd` share, and nothing else, so the command-line client builds
//! without the daemon: the control protocol (`wire`) and its blocking client, where each user's
//! files and sockets live (`paths`), how sizes and durations are written (`units`), the
//! Prometheus text both sides print (`prometheus`), and flushing a file system (`disk`).

pub mod client;
pub mod disk;
pub mod paths;
pub mod prometheus;
pub mod units;
pub mod wire;
