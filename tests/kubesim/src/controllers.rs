//! The simulated cluster components: kubelet, provisioner, snapshot controller, workload
//! controllers, namespace controller. Each reconciles everything it owns after every change in
//! the store and on a short tick, so delays are measured from when an object was first seen.

pub(crate) mod kubelet;
mod namespaces;
mod provisioner;
mod recorder;
mod snapshots;
mod workloads;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::server::State;
use crate::store::Event;

const TICK: Duration = Duration::from_millis(50);

/// Returns after the next store change or tick.
async fn next_change(feed: &mut broadcast::Receiver<Arc<Event>>) {
    tokio::select! {
        _ = feed.recv() => {}
        _ = tokio::time::sleep(TICK) => {}
    }
    // Take everything already queued in one go.
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = feed.try_recv() {}
}

/// Creates an object on behalf of a controller, counted like an API create.
fn create(state: &State, rt: &'static ResourceType, mut obj: Value) -> Result<Value, ApiError> {
    obj["kind"] = json!(rt.kind);
    obj["apiVersion"] = json!(rt.api_version());
    let created = state.store.create(rt, obj)?;
    state.counters.add_created(rt.plural);
    Ok(created)
}

macro_rules! controller {
    ($state:expr, $ty:ty) => {{
        let state = $state.clone();
        tokio::spawn(async move {
            let mut feed = state.store.feed();
            let mut controller = <$ty>::default();
            loop {
                controller.reconcile(&state).await;
                next_change(&mut feed).await;
            }
        })
    }};
}

pub(crate) fn spawn_all(state: &Arc<State>) -> Vec<JoinHandle<()>> {
    vec![
        controller!(state, kubelet::Kubelet),
        controller!(state, provisioner::Provisioner),
        controller!(state, snapshots::SnapshotController),
        controller!(state, workloads::Workloads),
        controller!(state, namespaces::NamespaceController),
    ]
}
