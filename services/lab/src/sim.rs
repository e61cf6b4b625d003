//! The simulator: KubeVirt's controllers (VMs to VMIs to virt-launcher pods, evacuation,
//! migrations), storage (PVC binding, DataVolume imports, snapshots) and MAAS-driven nodes. The
//! decisions are pure functions in `migration`, `placement`, `migratable`, `quantity` and
//! `kubelet` (what a joining machine's user data registers its Node with); the controllers (`vms`,
//! `volumes`, `storage`, `nodes`, `evacuation`, `migration_controller`, and `admission` and `load`
//! for creates and the initial inventory) read the store, call them with the simulated time, and
//! write the outcome back; `tick` runs the controllers in passes. `memory` is the simulator's
//! memory between passes, plain data that `state::Shared` holds.
//!
//! Dependencies point down: `tick` -> controllers -> `state` (with `memory`) -> pure decisions. No
//! module here imports `tick`, and none below the controllers imports a controller.

pub mod admission;
pub mod evacuation;
pub mod import;
pub mod kubelet;
pub mod load;
pub mod memory;
pub mod migratable;
pub mod migration;
pub mod migration_controller;
pub mod nodes;
pub mod placement;
pub mod quantity;
pub mod quota;
pub mod storage;
pub mod tick;
pub mod vms;
pub mod volumes;
