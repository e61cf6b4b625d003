//! The simulator's memory between passes: the migrations the migration controller follows, the
//! evacuation back-offs, the nodes rebooting and what the last pass started from. Plain data, kept
//! in `Shared::sim` and changed only under that lock (by `tick`, `evacuation`,
//! `migration_controller`, and `admin` when a node reboots). It lives apart from the controllers so
//! `state.rs` can hold it without depending on them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::clock::SimTime;
use crate::sim::migration::Run;

/// The simulator's own memory: migrations in flight and evacuation back-offs.
#[derive(Debug, Default)]
pub struct SimState {
    /// Migrations the migration controller follows, by VMIM (namespace, name); finished ones are
    /// forgotten at the end of the pass that finished them.
    pub(crate) runs: BTreeMap<Key, Entry>,
    /// By VMI (namespace, name): no evacuation migration before this time. Evacuation sets it when
    /// it creates a migration; the migration controller sets it when `migration::advance` fails
    /// one, and clears it when it takes a migration of the VMI in or one finishes.
    pub(crate) evacuation_retry: HashMap<Key, SimTime>,
    /// The store's resourceVersion the last pass started from.
    pub(crate) last_rv: u64,
    /// Whether the last pass left work for the next one.
    pub(crate) busy: bool,
    /// The migration counters last recorded in the audit: cluster-wide and per source node.
    pub(crate) last_counts: Option<(usize, BTreeMap<String, usize>)>,
    /// Nodes rebooting: when each is Ready again and when virt-handler runs again.
    pub(crate) reboots: BTreeMap<String, (SimTime, SimTime)>,
}

impl SimState {
    /// Follow a node's reboot until virt-handler runs on it again.
    pub fn rebooting(&mut self, node: &str, times: (SimTime, SimTime)) {
        self.reboots.insert(node.to_string(), times);
    }
}

/// A namespace and a name.
pub(crate) type Key = (String, String);

/// A migration the controller follows: the pure `Run` and the objects it concerns.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) run: Run,
    pub(crate) vmi: String,
    pub(crate) uid: String,
    pub(crate) source_pod: String,
    pub(crate) target_pod: Option<String>,
    pub(crate) no_target: bool,
    pub(crate) cpu: f64,
    pub(crate) transitions: Vec<Value>,
}
