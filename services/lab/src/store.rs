//! The in-memory object store behind the lab's apiserver: objects as JSON by `(resource, namespace,
//! name)`, one global resourceVersion counter, and a bounded event history so watches can resume
//! from a resourceVersion (410 Gone once it has been compacted away).
//!
//! **Invariant:** every change bumps the global resourceVersion exactly once, is stamped on the object
//! and is appended to the history and broadcast under the same lock, so a watcher that replays the
//! history and then follows the broadcast sees every change once and in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers receive it.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Store key of the resource type (`plural[.group]`).
    pub resource: String,
    /// Namespace (empty for cluster-scoped).
    pub namespace: String,
    /// Change type.
    pub kind: EventType,
    /// The object after the change (its last state, for deletes).
    pub object: Arc<Value>,
    /// The object before a MODIFIED change, so watches with selectors can tell an object that
    /// entered or left their selection.
    pub prev: Option<Arc<Value>>,
}

/// The object store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    clock: Clock,
}

struct Inner {
    rv: u64,
    tables: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    compacted: u64,
    recording: bool,
}

/// What a new watch starts with: the events to replay, then the live feed.
pub struct WatchStart {
    /// Events after the requested resourceVersion (or synthetic ADDED events for a fresh watch).
    pub replay: Vec<Arc<Event>>,
    /// Live changes after the replay.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

impl Store {
    /// An empty store keeping the last `history_cap` events for watch resumption.
    pub fn new(clock: Clock, history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: HashMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(16),
                compacted: 0,
                recording: true,
            }),
            tx,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .tables
            .get(resource)
            .and_then(|t| t.get(&(namespace.to_string(), name.to_string())))
            .map(|v| (**v).clone())
    }

    /// All objects of a type (in one namespace when given) that pass `keep`, with the list's
    /// resourceVersion.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = match inner.tables.get(resource) {
            None => Vec::new(),
            Some(table) => match namespace {
                Some(ns) => table
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v)
                    .filter(|v| keep(v))
                    .map(|v| (**v).clone())
                    .collect(),
                None => table
                    .values()
                    .filter(|v| keep(v))
                    .map(|v| (**v).clone())
                    .collect(),
            },
        };
        (items, inner.rv)
    }

    /// One object, shared (no deep copy): for read-only use.
    pub fn get_shared(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .tables
            .get(resource)
            .and_then(|t| t.get(&(namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// Like `list`, but shares the objects instead of copying them (the simulator's and the list
    /// handler's path: a pass over a thousand VMIs must not copy a thousand VMIs).
    pub fn list_shared(
        &self,
        resource: &str,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = match inner.tables.get(resource) {
            None => Vec::new(),
            Some(table) => match namespace {
                Some(ns) => table
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v)
                    .filter(|v| keep(v))
                    .cloned()
                    .collect(),
                None => table.values().filter(|v| keep(v)).cloned().collect(),
            },
        };
        (items, inner.rv)
    }

    /// Count objects of a type without cloning them.
    pub fn count(&self, resource: &str) -> usize {
        self.lock().tables.get(resource).map_or(0, |t| t.len())
    }

    /// Create an object; fills uid, creationTimestamp, resourceVersion, generation and a name from
    /// `generateName`.
    pub fn create(&self, resource: &str, mut obj: Value) -> Result<Value> {
        let mut inner = self.lock();
        let meta = meta_mut(&mut obj)?;
        let namespace = str_field(meta, "namespace");
        let mut name = str_field(meta, "name");
        if name.is_empty() {
            let prefix = str_field(meta, "generateName");
            name = generate_name(&prefix);
            meta.insert("name".into(), json!(name));
        }
        let key = (namespace.clone(), name.clone());
        if inner
            .tables
            .get(resource)
            .is_some_and(|t| t.contains_key(&key))
        {
            return Err(Error::AlreadyExists {
                resource: resource.to_string(),
                name,
            });
        }
        meta.insert("uid".into(), json!(uuid::Uuid::now_v7().to_string()));
        meta.insert("creationTimestamp".into(), json!(self.clock.rfc3339()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        Ok(inner.commit(&self.tx, resource, key, obj, EventType::Added))
    }

    /// Replace an object. With `check_rv`, a resourceVersion in the new object that differs from the
    /// stored one is a 409 Conflict. uid and creationTimestamp are kept; generation moves when the
    /// spec changes. Unchanged objects are not rewritten.
    pub fn update(&self, resource: &str, obj: Value, check_rv: bool) -> Result<Value> {
        let mut inner = self.lock();
        inner.update(&self.tx, resource, obj, check_rv)
    }

    /// Read-modify-write one object atomically under the store lock (the simulator's path).
    pub fn modify(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<()>,
    ) -> Result<Value> {
        let mut inner = self.lock();
        let Some(mut obj) = inner
            .tables
            .get(resource)
            .and_then(|t| t.get(&(namespace.to_string(), name.to_string())))
            .map(|v| (**v).clone())
        else {
            return Err(Error::NotFound {
                resource: resource.to_string(),
                name: name.to_string(),
            });
        };
        f(&mut obj)?;
        inner.update(&self.tx, resource, obj, false)
    }

    /// Delete an object and return its last state.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<Value> {
        let mut inner = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let Some(obj) = inner.tables.get_mut(resource).and_then(|t| t.remove(&key)) else {
            return Err(Error::NotFound {
                resource: resource.to_string(),
                name: name.to_string(),
            });
        };
        Ok(inner.commit(&self.tx, resource, key, (*obj).clone(), EventType::Deleted))
    }

    /// Start a watch on a resource type (optionally one namespace). `from` is the resourceVersion
    /// to resume after; `None` (or 0) starts with synthetic ADDED events for the current objects.
    pub fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart> {
        let inner = self.lock();
        let live = self.tx.subscribe();
        let in_scope =
            |e: &Event| e.resource == resource && namespace.is_none_or(|ns| e.namespace == ns);
        let replay = match from.filter(|rv| *rv > 0) {
            Some(rv) => {
                if rv < inner.compacted {
                    return Err(Error::Gone {
                        requested: rv,
                        oldest: inner.compacted + 1,
                    });
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && in_scope(e))
                    .cloned()
                    .collect()
            }
            None => match inner.tables.get(resource) {
                None => Vec::new(),
                Some(table) => table
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
                    .map(|((ns, _), obj)| {
                        Arc::new(Event {
                            rv: obj_rv(obj),
                            resource: resource.to_string(),
                            namespace: ns.clone(),
                            kind: EventType::Added,
                            object: obj.clone(),
                            prev: None,
                        })
                    })
                    .collect(),
            },
        };
        Ok(WatchStart {
            replay,
            live,
            rv: inner.rv,
        })
    }

    /// Turn event recording off or on. Off while a scenario loads: nobody watches the load, and its
    /// events would double the memory it takes; watches from before get 410 Gone.
    pub fn record_history(&self, on: bool) {
        let mut inner = self.lock();
        inner.recording = on;
        inner.history.clear();
        inner.compacted = inner.rv;
    }

    /// The clock the store stamps objects with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Inner {
    fn update(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        resource: &str,
        mut obj: Value,
        check_rv: bool,
    ) -> Result<Value> {
        let meta = meta_mut(&mut obj)?;
        let key = (str_field(meta, "namespace"), str_field(meta, "name"));
        let sent_rv = str_field(meta, "resourceVersion");
        let Some(old) = self.tables.get(resource).and_then(|t| t.get(&key)) else {
            return Err(Error::NotFound {
                resource: resource.to_string(),
                name: key.1,
            });
        };
        let old_meta = old.get("metadata").cloned().unwrap_or(Value::Null);
        if check_rv
            && !sent_rv.is_empty()
            && old_meta.get("resourceVersion") != Some(&json!(sent_rv))
        {
            return Err(Error::Conflict {
                resource: resource.to_string(),
                name: key.1,
            });
        }
        let mut generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if old.get("spec") != obj.get("spec") {
            generation += 1;
        }
        let meta = meta_mut(&mut obj)?;
        for field in ["uid", "creationTimestamp", "resourceVersion"] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.insert("generation".into(), json!(generation));
        meta.remove("managedFields");
        if self
            .tables
            .get(resource)
            .and_then(|t| t.get(&key))
            .is_some_and(|o| **o == obj)
        {
            return Ok(obj);
        }
        Ok(self.commit(tx, resource, key, obj, EventType::Modified))
    }

    fn commit(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        resource: &str,
        key: (String, String),
        mut obj: Value,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        let shared = Arc::new(obj);
        let prev = if kind != EventType::Deleted {
            self.tables
                .entry(resource.to_string())
                .or_default()
                .insert(key.clone(), shared.clone())
        } else {
            None
        };
        if !self.recording {
            self.compacted = self.rv;
            return (*shared).clone();
        }
        let event = Arc::new(Event {
            rv: self.rv,
            resource: resource.to_string(),
            namespace: key.0,
            kind,
            object: shared.clone(),
            prev: if kind == EventType::Modified {
                prev
            } else {
                None
            },
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = tx.send(event);
        (*shared).clone()
    }
}

/// The resourceVersion stamped on an object, 0 when missing.
pub fn obj_rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn meta_mut(obj: &mut Value) -> Result<&mut serde_json::Map<String, Value>> {
    let Some(map) = obj.as_object_mut() else {
        return Err(Error::BadRequest("the object is not a JSON object".into()));
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| Error::BadRequest("metadata is not an object".into()))
}

fn str_field(map: &serde_json::Map<String, Value>, field: &str) -> String {
    map.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `prefix` plus five characters from the apiserver's alphabet (no vowels, no confusables).
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Clock::new(1.0), 4)
    }

    #[test]
    fn create_conflict_and_resume() {
        let s = store();
        let a = s
            .create("pods", json!({"metadata": {"name": "a", "namespace": "x"}}))
            .unwrap();
        assert_eq!(obj_rv(&a), 2);
        assert!(matches!(
            s.create("pods", json!({"metadata": {"name": "a", "namespace": "x"}})),
            Err(Error::AlreadyExists { .. })
        ));
        let mut stale = a.clone();
        stale["spec"] = json!({"x": 1});
        s.update("pods", stale.clone(), true).unwrap();
        assert!(matches!(
            s.update("pods", stale, true),
            Err(Error::Conflict { .. })
        ));
        let w = s.watch("pods", Some("x"), Some(2)).unwrap();
        assert_eq!(w.replay.len(), 1);
        for i in 0..20 {
            s.create(
                "pods",
                json!({"metadata": {"name": format!("p{i}"), "namespace": "x"}}),
            )
            .unwrap();
        }
        assert!(matches!(
            s.watch("pods", None, Some(2)),
            Err(Error::Gone { .. })
        ));
        assert_eq!(s.watch("pods", Some("x"), None).unwrap().replay.len(), 21);
    }

    #[test]
    fn generate_name_uses_prefix() {
        let s = store();
        let o = s
            .create(
                "pods",
                json!({"metadata": {"generateName": "kubevirt-evacuation-", "namespace": "x"}}),
            )
            .unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("kubevirt-evacuation-") && name.len() == 25);
    }
}
