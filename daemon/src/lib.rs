//! snapfsd: mounts the snapfs file system and runs the jobs that make snapshots.

pub mod backoff;
pub mod check;
pub mod cloud;
pub mod config;
pub mod control;
pub mod early;
#[cfg(test)]
mod fake_target;
pub mod hivemq;
pub mod jobs;
pub mod k8s;
pub mod latency;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod powers;
pub mod registry;
pub mod service;
