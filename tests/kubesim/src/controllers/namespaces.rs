//! The namespace controller: a deleted namespace is emptied, then removed.

use serde_json::json;

use crate::meta;
use crate::resources::{ALL, NAMESPACES};
use crate::server::State;

#[derive(Default)]
pub(crate) struct NamespaceController;

impl NamespaceController {
    pub(crate) async fn reconcile(&mut self, state: &State) {
        for ns in state.store.list(&NAMESPACES, None).0 {
            if !meta::is_terminating(&ns) {
                continue;
            }
            let name = meta::name(&ns).to_string();
            if meta::str_at(&ns, &["status", "phase"]) != Some("Terminating") {
                let _ = state.store.modify(&NAMESPACES, "", &name, |n| {
                    n["status"]["phase"] = json!("Terminating");
                    Ok(())
                });
            }
            let mut remaining = 0;
            for rt in ALL.iter().filter(|rt| rt.namespaced) {
                for obj in state.store.list(rt, Some(&name)).0 {
                    remaining += 1;
                    if !meta::is_terminating(&obj) {
                        let graceful = rt.is("pods") && obj.pointer("/spec/nodeName").is_some();
                        let _ = state.store.delete(rt, &name, meta::name(&obj), graceful);
                    }
                }
            }
            if remaining == 0 {
                state.store.remove(&NAMESPACES, "", &name);
            }
        }
    }
}
