//! The loop that advances the simulation: every `TICK` of real time one pass reads the simulated
//! clock and runs the controllers in a fixed order (MAAS machine lifecycle, node reboots, VMs,
//! storage, the http importers, evacuation, migrations). When no object changed since the last
//! pass started, that pass left no work and no migration is followed, a pass stops after the MAAS
//! lifecycle and reboots.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::sim::memory::Key;
use crate::sim::{evacuation, import, migration_controller, nodes, storage, vms};
use crate::state::Shared;

/// Real time between simulator passes.
pub const TICK: Duration = Duration::from_millis(50);

/// Run the simulator until `shutdown` fires.
pub async fn run(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        // A malformed object must not stop the simulation: log and carry on with the next pass.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tick(&shared))).is_err() {
            tracing::error!("A simulator pass panicked; continuing.");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One simulator pass.
pub fn tick(shared: &Arc<Shared>) {
    let now = shared.clock.now();
    crate::maas::sim::tick(shared, now);
    let mut st = shared.sim.lock().unwrap_or_else(|e| e.into_inner());
    let rv = shared.store.resource_version();
    st.reboots
        .retain(|node, times| !nodes::finish_reboot(shared, node, now, *times));
    if rv == st.last_rv && !st.busy && st.runs.is_empty() {
        return;
    }
    let active: HashSet<Key> = st
        .runs
        .iter()
        .filter(|(_, e)| !e.run.phase.is_final())
        .map(|((ns, _), e)| (ns.clone(), e.vmi.clone()))
        .collect();
    let mut busy = vms::reconcile(shared, now, &|ns, name| {
        active.contains(&(ns.to_string(), name.to_string()))
    });
    busy |= storage::reconcile(shared, now);
    import::reconcile(shared, now);
    evacuation::reconcile(shared, &mut st, now);
    migration_controller::reconcile(shared, &mut st, now);
    busy |= !st.runs.is_empty();
    st.busy = busy;
    // The resourceVersion this pass started from: a change made while it ran (an API write, or the
    // pass's own) makes the next pass run too, so no change is missed.
    st.last_rv = rv;
}
