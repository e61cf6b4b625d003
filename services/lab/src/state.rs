//! What every handler and the simulator share: the scenario, the clock, the object store, the MAAS
//! region, faults, the audit and the simulator's memory. Built once by `Lab::start`.

use std::sync::Mutex;

use crate::audit::Audit;
use crate::clock::Clock;
use crate::faults::Faults;
use crate::maas::model::Region;
use crate::scenario::Scenario;
use crate::sim::memory::SimState;
use crate::store::Store;

/// The lab's shared state.
pub struct Shared {
    pub scenario: Scenario,
    pub clock: Clock,
    pub store: Store,
    pub maas: Mutex<Region>,
    pub faults: Faults,
    pub audit: Audit,
    pub sim: Mutex<SimState>,
    /// Flips to true when the lab shuts down (open watches end then).
    pub stopping: tokio::sync::watch::Receiver<bool>,
}
