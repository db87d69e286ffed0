//! Deployments and StatefulSets resolve to pods (and StatefulSets to claims), with the status
//! counts clients read; pods whose owner is gone are garbage-collected.
//!
//! A simplification (a guess at what matters): Deployments own their pods directly, without
//! ReplicaSets, and templates are not rolled out again when they change.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::meta;
use crate::resources::{DEPLOYMENTS, PODS, PVCS, ResourceType, STATEFULSETS};
use crate::selector::LabelSelector;
use crate::server::State;

#[derive(Default)]
pub(crate) struct Workloads;

/// A ten-character hash of the pod template, as `pod-template-hash` is.
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    let mut h = hasher.finish();
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn owned_by<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| {
            meta::namespace(p) == meta::namespace(owner)
                && p.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| meta::str_at(r, &["uid"]) == Some(meta::uid(owner)))
                    })
        })
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    !meta::is_terminating(pod) && meta::str_at(pod, &["status", "phase"]) == Some("Running")
}

fn owner_ref(rt: &ResourceType, owner: &Value) -> Value {
    json!({"apiVersion": rt.api_version(), "kind": rt.kind, "name": meta::name(owner),
           "uid": meta::uid(owner), "controller": true, "blockOwnerDeletion": true})
}

/// A pod from a workload's template, defaulted like an API create.
fn new_pod(
    state: &State,
    rt: &ResourceType,
    owner: &Value,
    name: &str,
    labels: Value,
    spec: Value,
) -> Result<(), String> {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let mut pod = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": meta::namespace(owner),
            "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [owner_ref(rt, owner)],
        },
        "spec": spec,
    });
    crate::api::admission::admit(state, &PODS, &mut pod).map_err(|e| e.message)?;
    super::create(state, &PODS, pod)
        .map(|_| ())
        .map_err(|e| e.message)
}

fn template_labels(owner: &Value) -> serde_json::Map<String, Value> {
    owner
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn replicas(owner: &Value) -> usize {
    owner
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize
}

fn set_status(state: &State, rt: &'static ResourceType, owner: &Value, pods: &[&Value]) {
    let live: Vec<&&Value> = pods.iter().filter(|p| !meta::is_terminating(p)).collect();
    let ready = live.iter().filter(|p| is_ready(p)).count();
    let mut status = json!({
        "observedGeneration": owner.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": live.len(),
    });
    if rt.is("statefulsets") {
        status["currentReplicas"] = json!(live.len());
    }
    if owner.get("status") != Some(&status) {
        let _ = state
            .store
            .modify(rt, meta::namespace(owner), meta::name(owner), |o| {
                o["status"] = status;
                Ok(())
            });
    }
}

impl Workloads {
    pub(crate) async fn reconcile(&mut self, state: &State) {
        let (pods, _) = state.store.list(&PODS, None);
        for d in state.store.list(&DEPLOYMENTS, None).0 {
            if !meta::is_terminating(&d) {
                self.deployment(state, &d, &pods);
            }
        }
        for s in state.store.list(&STATEFULSETS, None).0 {
            if !meta::is_terminating(&s) {
                self.statefulset(state, &s, &pods);
            }
        }
        collect_orphans(state, &pods);
    }

    fn deployment(&self, state: &State, d: &Value, pods: &[Value]) {
        let owned = owned_by(pods, d);
        let live: Vec<&&Value> = owned.iter().filter(|p| !meta::is_terminating(p)).collect();
        let want = replicas(d);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = template_hash(&template);
        for _ in live.len()..want {
            let mut labels = template_labels(d);
            labels.insert("pod-template-hash".into(), json!(hash));
            let name = format!("{}-{hash}-{}", meta::name(d), meta::random_suffix(5));
            let spec = template.get("spec").cloned().unwrap_or(json!({}));
            if let Err(e) = new_pod(state, &DEPLOYMENTS, d, &name, json!(labels), spec) {
                tracing::debug!(error = %e, "creating a deployment pod failed");
            }
        }
        for extra in live.iter().skip(want) {
            let _ = state
                .store
                .delete(&PODS, meta::namespace(extra), meta::name(extra), true);
        }
        set_status(state, &DEPLOYMENTS, d, &owned);
    }

    fn statefulset(&self, state: &State, s: &Value, pods: &[Value]) {
        let owned = owned_by(pods, s);
        let (ns, sts) = (meta::namespace(s), meta::name(s));
        let want = replicas(s);
        let selector =
            LabelSelector::from_object(&s.pointer("/spec/selector").cloned().unwrap_or(json!({})));
        let templates = s
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for i in 0..want {
            let name = format!("{sts}-{i}");
            if owned.iter().any(|p| meta::name(p) == name) {
                continue;
            }
            // OrderedReady: a pod starts only when the ones before it are ready.
            let previous_ready = i == 0
                || owned
                    .iter()
                    .any(|p| meta::name(p) == format!("{sts}-{}", i - 1) && is_ready(p));
            if !previous_ready {
                break;
            }
            let mut spec = s
                .pointer("/spec/template/spec")
                .cloned()
                .unwrap_or(json!({}));
            for t in &templates {
                let tname = meta::name(t);
                let claim = format!("{tname}-{sts}-{i}");
                if state.store.get(&PVCS, ns, &claim).is_none() {
                    let mut pvc = json!({
                        "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                        "metadata": {"name": claim, "namespace": ns,
                                     "labels": t.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
                        "spec": t.get("spec").cloned().unwrap_or(json!({})),
                    });
                    let made = crate::api::admission::admit(state, &PVCS, &mut pvc)
                        .and_then(|_| super::create(state, &PVCS, pvc));
                    if let Err(e) = made {
                        tracing::debug!(error = %e, "creating a statefulset claim failed");
                    }
                }
                let volumes = meta::object_mut(&mut spec)
                    .entry("volumes")
                    .or_insert(json!([]));
                if let Some(list) = volumes.as_array_mut() {
                    list.push(
                        json!({"name": tname, "persistentVolumeClaim": {"claimName": claim}}),
                    );
                }
            }
            spec["hostname"] = json!(name);
            if let Some(service) = s.pointer("/spec/serviceName") {
                spec["subdomain"] = service.clone();
            }
            let mut labels = template_labels(s);
            labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
            labels.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
            if !selector.matches(&json!({"metadata": {"labels": labels}})) {
                break;
            }
            if let Err(e) = new_pod(state, &STATEFULSETS, s, &name, json!(labels), spec) {
                tracing::debug!(error = %e, "creating a statefulset pod failed");
            }
            break;
        }
        // Scale down from the highest ordinal.
        for p in &owned {
            let ordinal = meta::name(p)
                .rsplit('-')
                .next()
                .and_then(|o| o.parse::<usize>().ok())
                .unwrap_or(0);
            if ordinal >= want && !meta::is_terminating(p) {
                let _ = state.store.delete(&PODS, ns, meta::name(p), true);
            }
        }
        set_status(state, &STATEFULSETS, s, &owned);
    }
}

/// Deletes pods whose controlling Deployment or StatefulSet no longer exists.
fn collect_orphans(state: &State, pods: &[Value]) {
    for pod in pods.iter().filter(|p| !meta::is_terminating(p)) {
        let Some(owner) = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller") == Some(&json!(true)))
            })
        else {
            continue;
        };
        let rt = match meta::str_at(owner, &["kind"]) {
            Some("Deployment") => &DEPLOYMENTS,
            Some("StatefulSet") => &STATEFULSETS,
            _ => continue,
        };
        let alive = state
            .store
            .get(
                rt,
                meta::namespace(pod),
                meta::str_at(owner, &["name"]).unwrap_or(""),
            )
            .is_some_and(|o| meta::uid(&o) == meta::str_at(owner, &["uid"]).unwrap_or(""));
        if !alive {
            let _ = state
                .store
                .delete(&PODS, meta::namespace(pod), meta::name(pod), true);
        }
    }
}
