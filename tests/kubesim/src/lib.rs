//! kubesim: a Kubernetes API server for tests, with a simulated kubelet, volume provisioner and
//! snapshot controller, that the real `kube` client and real `kubectl` talk to.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = kubesim::KubeSim::start(kubesim::Config::default()).await?;
//! std::fs::write("/tmp/kubeconfig", sim.kubeconfig())?;
//! sim.faults().set_snapshot_never_ready(true);
//! assert_eq!(sim.counters().exec_sessions(), 0);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod auth;
mod channel;
mod controllers;
mod error;
mod exec;
mod faults;
mod kubectl;
mod meta;
mod patch;
mod portforward;
mod resources;
mod routes;
mod sandbox;
mod selector;
mod server;
mod spdy;
mod store;

pub use faults::{Counters, Faults};
pub use kubectl::kubectl_on_path;
pub use routes::{PortRoute, RouteError, RouteTarget};
pub use server::{
    ADMIN_TOKEN, ADMIN_USER, Config, DRIVER, KubeSim, NODE, SNAPSHOT_CLASS, STORAGE_CLASS, Timings,
};
