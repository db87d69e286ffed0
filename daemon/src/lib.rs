//! snapfsd: mounts the snapfs file system and runs the jobs that make snapshots.

pub mod config;
pub mod control;
pub mod paths;
