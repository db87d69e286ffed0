//! snapfsd: mounts the snapfs file system and runs the jobs that make snapshots.

pub mod backoff;
pub mod cloud;
pub mod config;
pub mod control;
pub mod hivemq;
pub mod jobs;
pub mod k8s;
pub mod lifecycle;
pub mod paths;
pub mod service;
pub mod target;
