//! Kubernetes (DESIGN §6): the contexts of the kubeconfig as live trees under `k8s/<context>/`,
//! and their namespaces as upload targets.

mod channels;
mod cluster;
mod contexts;
mod credentials;
mod errors;
pub mod exec;
mod forward;
mod frames;
mod kubeconfig;
mod labels;
mod lzop;
mod metered;
mod namespace;
mod powers;
mod reader;
pub mod tarball;
mod tree;
mod unavailable;
mod watch;

pub use contexts::Kube;
pub use forward::PodForward;
pub use kubeconfig::describe;
pub use namespace::KubeTarget;
