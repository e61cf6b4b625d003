//! What every handler and the simulator share: the scenario, the clock, the object store, the MAAS
//! region, faults, the audit, the simulator's memory, CDI's data paths and the ticketing systems.
//! Built once by `Lab::start`.

use std::sync::{Arc, Mutex};

use crate::audit::Audit;
use crate::cdi::Cdi;
use crate::clock::Clock;
use crate::faults::Faults;
use crate::maas::model::Region;
use crate::scenario::Scenario;
use crate::sim::memory::SimState;
use crate::store::Store;
use crate::ticketing::Ticketing;

/// The lab's shared state.
pub struct Shared {
    pub scenario: Scenario,
    pub clock: Clock,
    pub store: Store,
    pub maas: Mutex<Region>,
    pub faults: Faults,
    pub audit: Audit,
    pub sim: Mutex<SimState>,
    /// CDI's upload proxy and importers: counters, uploads in progress, importer tasks.
    pub cdi: Cdi,
    /// Flips to true when the lab shuts down (open watches end then).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The Jira site and ServiceNow instance (their own listeners and locks; here so the admin
    /// endpoints can reach them).
    pub ticketing: Arc<Ticketing>,
    /// RBAC for ServiceAccount tokens (off unless switched on).
    pub rbac: crate::kube::rbac::Rbac,
}
