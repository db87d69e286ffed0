//! The object store: every object as JSON, one global resourceVersion counter, and the event
//! history that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResourceType;

/// How many events watches can replay. Older resourceVersions get 410 Gone, as after an etcd
/// compaction. The number is a guess; the real window is about five minutes of history.
const HISTORY: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object, at the resourceVersion it produced.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub resource: &'static ResourceType,
    pub object: Value,
    /// The object before a modification, for watches whose selectors it may have left.
    pub old: Option<Value>,
}

/// A watch's starting point: the events after its resourceVersion, then the live feed.
pub(crate) struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Value>>,
    history: VecDeque<Arc<Event>>,
    /// Watches must start at or after this resourceVersion.
    oldest_rv: u64,
}

pub(crate) struct Store {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Arc<Event>>,
}

fn key_of(obj: &Value) -> Key {
    (
        meta::namespace(obj).to_string(),
        meta::name(obj).to_string(),
    )
}

fn list_locked(inner: &Inner, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
    inner
        .objects
        .get(rt.plural)
        .map(|m| {
            m.iter()
                .filter(|((ons, _), _)| ns.is_none_or(|ns| ns == ons))
                .map(|(_, v)| v.clone())
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    pub fn new() -> Store {
        let (feed, _) = broadcast::channel(8192);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                oldest_rv: 1,
            }),
            feed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written object: every write
        // replaces a whole value, so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(rt.plural)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of a type, in one namespace or all (`None`), ordered by namespace and name, with the
    /// resourceVersion of the list.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        (list_locked(&inner, rt, ns), inner.rv)
    }

    /// Stores a new object, stamping uid, creationTimestamp and resourceVersion.
    pub fn create(&self, rt: &'static ResourceType, mut obj: Value) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = key_of(&obj);
        if inner
            .objects
            .get(rt.plural)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(rt, &key.1));
        }
        inner.rv += 1;
        let rv = inner.rv;
        let m = meta::metadata_mut(&mut obj);
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.remove("deletionTimestamp");
        inner
            .objects
            .entry(rt.plural)
            .or_default()
            .insert(key, obj.clone());
        self.record(&mut inner, rv, EventType::Added, rt, obj.clone(), None);
        Ok(obj)
    }

    /// Reads, changes and writes one object atomically. `change` sees the stored object; when it
    /// leaves it equal, nothing is written. A terminating object whose last finalizer this change
    /// removed is removed.
    pub fn modify<F>(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnOnce(&mut Value) -> Result<(), ApiError>,
    {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(old) = inner.objects.get(rt.plural).and_then(|m| m.get(&key)) else {
            return Err(ApiError::not_found(rt, name));
        };
        let old = old.clone();
        let mut new = old.clone();
        change(&mut new)?;
        if new == old {
            return Ok(new);
        }
        // Identity fields are the server's, whatever the change did.
        let (uid, created) = (
            old.pointer("/metadata/uid").cloned(),
            old.pointer("/metadata/creationTimestamp").cloned(),
        );
        let was_terminating = meta::is_terminating(&old);
        let old_deletion = old.pointer("/metadata/deletionTimestamp").cloned();
        inner.rv += 1;
        let rv = inner.rv;
        let m = meta::metadata_mut(&mut new);
        m.insert("name".into(), json!(key.1));
        if !key.0.is_empty() {
            m.insert("namespace".into(), json!(key.0));
        }
        if let Some(uid) = uid {
            m.insert("uid".into(), uid);
        }
        if let Some(created) = created {
            m.insert("creationTimestamp".into(), created);
        }
        if was_terminating {
            if let Some(ts) = old_deletion {
                m.insert("deletionTimestamp".into(), ts);
            }
        } else {
            // Only deletion sets deletionTimestamp.
            m.remove("deletionTimestamp");
        }
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        // Removing the last finalizer of a terminating object completes its deletion. Objects
        // ending gracefully without finalizers (pods, namespaces) are removed by their controller.
        let done = meta::is_terminating(&new)
            && !meta::finalizers(&old).is_empty()
            && meta::finalizers(&new).is_empty();
        let objects = inner.objects.entry(rt.plural).or_default();
        if done {
            objects.remove(&key);
            self.record(
                &mut inner,
                rv,
                EventType::Deleted,
                rt,
                new.clone(),
                Some(old),
            );
        } else {
            objects.insert(key, new.clone());
            self.record(
                &mut inner,
                rv,
                EventType::Modified,
                rt,
                new.clone(),
                Some(old),
            );
        }
        Ok(new)
    }

    /// Deletes an object: marks it terminating when it has finalizers or `graceful` is set (a
    /// controller finishes the job), removes it otherwise. Returns the object as it is after the
    /// call and whether it is gone.
    pub fn delete(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        graceful: bool,
    ) -> Result<(Value, bool), ApiError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(old) = inner.objects.get(rt.plural).and_then(|m| m.get(&key)) else {
            return Err(ApiError::not_found(rt, name));
        };
        let old = old.clone();
        let mut obj = old.clone();
        let keep = graceful || !meta::finalizers(&obj).is_empty();
        if keep && meta::is_terminating(&obj) {
            return Ok((obj, false));
        }
        inner.rv += 1;
        let rv = inner.rv;
        let m = meta::metadata_mut(&mut obj);
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        if keep {
            m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            inner
                .objects
                .entry(rt.plural)
                .or_default()
                .insert(key, obj.clone());
            self.record(
                &mut inner,
                rv,
                EventType::Modified,
                rt,
                obj.clone(),
                Some(old),
            );
            Ok((obj, false))
        } else {
            inner.objects.entry(rt.plural).or_default().remove(&key);
            self.record(
                &mut inner,
                rv,
                EventType::Deleted,
                rt,
                obj.clone(),
                Some(old),
            );
            Ok((obj, true))
        }
    }

    /// Removes a terminating object for good (a controller finished its deletion).
    pub fn remove(&self, rt: &'static ResourceType, ns: &str, name: &str) {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(mut obj) = inner
            .objects
            .get_mut(rt.plural)
            .and_then(|m| m.remove(&key))
        else {
            return;
        };
        inner.rv += 1;
        let rv = inner.rv;
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(&mut inner, rv, EventType::Deleted, rt, obj, None);
    }

    fn record(
        &self,
        inner: &mut Inner,
        rv: u64,
        kind: EventType,
        resource: &'static ResourceType,
        object: Value,
        old: Option<Value>,
    ) {
        let event = Arc::new(Event {
            rv,
            kind,
            resource,
            object,
            old,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            if let Some(dropped) = inner.history.pop_front() {
                inner.oldest_rv = dropped.rv;
            }
        }
        // No receiver is fine: nobody is watching.
        let _ = self.feed.send(event);
    }

    /// Events after `rv` and the live feed from there on, or the oldest resourceVersion still
    /// available when `rv` is older.
    pub fn subscribe(&self, rv: u64) -> Result<Subscription, u64> {
        let inner = self.lock();
        if rv < inner.oldest_rv {
            return Err(inner.oldest_rv);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: self.feed.subscribe(),
        })
    }

    /// The current objects of a type and the live feed from exactly their resourceVersion.
    pub fn list_and_subscribe(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Event>>) {
        // Writers send to the feed while holding the lock, so under it the list and the start of
        // the feed are at the same resourceVersion.
        let inner = self.lock();
        let live = self.feed.subscribe();
        (list_locked(&inner, rt, ns), inner.rv, live)
    }

    /// The live feed only, for controllers.
    pub fn feed(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.subscribe()
    }

    /// Forgets the event history, as an etcd compaction does: watches from any earlier
    /// resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest_rv = inner.rv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{NAMESPACES, PODS};

    #[test]
    fn versions_grow_and_finalizers_hold_deletion() {
        let store = Store::new();
        let a = store
            .create(
                &NAMESPACES,
                json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
            )
            .unwrap();
        let rv_a: u64 = meta::resource_version(&a).unwrap().parse().unwrap();
        let (obj, gone) = store.delete(&NAMESPACES, "", "a", false).unwrap();
        assert!(!gone && meta::is_terminating(&obj));
        let sub = store.subscribe(rv_a).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        store
            .modify(&NAMESPACES, "", "a", |o| {
                o["metadata"]["finalizers"] = json!([]);
                Ok(())
            })
            .unwrap();
        assert!(store.get(&NAMESPACES, "", "a").is_none());
        store.compact();
        assert!(store.subscribe(rv_a).is_err());
        assert!(store.get(&PODS, "a", "x").is_none());
    }
}
