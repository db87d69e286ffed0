//! Drives hivemqsim over plain HTTP, and through kubesim's port-forward with the kube client.

mod hivemqsim {
    pub mod api;
    pub mod auth;
    pub mod binary;
    pub mod download;
    pub mod faults;
    pub mod kubectl;
    pub mod portforward;
    pub mod statefulset;
    pub mod support;
}
