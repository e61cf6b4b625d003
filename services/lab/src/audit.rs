//! The audit: every mutating request (time, client, verb, object, outcome) and the migration
//! concurrency counters over time, so tests can assert "one migration per VM", "no machine deployed
//! twice" or "never more than two outbound migrations per node".

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// One mutating request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Simulated wall time (RFC 3339).
    pub time: String,
    /// Simulated seconds since the lab started.
    pub sim_time: f64,
    /// `user-agent@address`.
    pub client: String,
    /// `kube` or `maas`.
    pub api: String,
    /// Kubernetes: create, update, patch, delete, deletecollection, evict, or a KubeVirt subresource
    /// (start, stop, migrate...). MAAS: the op (allocate, deploy, release...) or create/update/delete.
    pub verb: String,
    /// Kubernetes: `resource[.group]/namespace/name`; MAAS: the path below `/MAAS/api/2.0/`.
    pub object: String,
    /// HTTP status of the answer.
    pub outcome: u16,
    /// What a controller wrote, for the writes the simulated KubeVirt controllers make (like the
    /// `requestObject` of an apiserver audit event at RequestResponse level): a finished migration
    /// records the VMI's new `status.nodeName` and its `migrationState`. None for API requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
}

/// A change in the number of migrations in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterSample {
    pub time: String,
    pub sim_time: f64,
    /// Migrations admitted and not finished, cluster-wide.
    pub cluster: usize,
    /// The same, by source node.
    pub per_node: BTreeMap<String, usize>,
}

/// Peaks of the migration counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub max_cluster: usize,
    pub max_per_node: BTreeMap<String, usize>,
    pub current_cluster: usize,
    pub current_per_node: BTreeMap<String, usize>,
    pub samples: Vec<CounterSample>,
}

/// The audit log.
#[derive(Debug, Default)]
pub struct Audit {
    entries: Mutex<Vec<Entry>>,
    counters: Mutex<Counters>,
    traced: Mutex<Vec<Traced>>,
}

/// A request that carried a W3C `traceparent` header (any method, reads too), kept so tests can
/// check that a client propagates its trace.
#[derive(Debug, Clone, Serialize)]
pub struct Traced {
    pub method: String,
    pub path: String,
    pub traceparent: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Audit {
    /// Append an entry (its `seq` is assigned here).
    pub fn record(&self, mut e: Entry) {
        let mut entries = lock(&self.entries);
        e.seq = entries.len() as u64 + 1;
        entries.push(e);
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.entries).clone()
    }

    /// Record a counter change.
    pub fn record_counters(
        &self,
        time: String,
        sim_time: f64,
        cluster: usize,
        per_node: BTreeMap<String, usize>,
    ) {
        let mut c = lock(&self.counters);
        c.max_cluster = c.max_cluster.max(cluster);
        for (node, n) in &per_node {
            let m = c.max_per_node.entry(node.clone()).or_default();
            *m = (*m).max(*n);
        }
        c.current_cluster = cluster;
        c.current_per_node = per_node.clone();
        if c.samples.len() < 100_000 {
            c.samples.push(CounterSample {
                time,
                sim_time,
                cluster,
                per_node,
            });
        }
    }

    /// Remembers a request's `traceparent` (at most 100,000 are kept).
    pub fn record_traceparent(&self, t: Traced) {
        let mut traced = lock(&self.traced);
        if traced.len() < 100_000 {
            traced.push(t);
        }
    }

    /// The requests that carried a `traceparent`, in arrival order.
    pub fn traced(&self) -> Vec<Traced> {
        lock(&self.traced).clone()
    }

    /// The migration counters.
    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }
}
