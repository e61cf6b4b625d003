//! The simulator: KubeVirt's controllers (VMs to VMIs to virt-launcher pods, evacuation,
//! migrations), storage (PVC binding, DataVolume imports, snapshots) and MAAS-driven nodes. The
//! decisions are pure functions in `migration`, `placement`, `migratable` and `quantity`; the other
//! modules read the store, call them with the simulated time, and write the outcome back.

pub mod admission;
pub mod engine;
pub mod load;
pub mod migratable;
pub mod migration;
pub mod nodes;
pub mod placement;
pub mod quantity;
pub mod storage;
pub mod vms;
pub mod volumes;
