//! Drives kubesim with the real `kube` client and, where installed, real `kubectl`.

mod kubesim {
    pub mod api;
    pub mod binary;
    pub mod commands;
    pub mod exec;
    pub mod faults;
    pub mod kubectl;
    pub mod pod_security;
    pub mod portforward;
    pub mod secrets;
    pub mod snapshots;
    pub mod support;
    pub mod workloads;
}
