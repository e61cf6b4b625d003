//! Drover's workflow kinds, each one file written with the kind SDK (`drover_workflows::sdk`):
//! `synthetic` (the engine's demo, test and benchmark workload), `drain-node`, its per-VMI child
//! `migrate-vmi`, and `rolling-maintenance` with its pure planner (`plan.rs`) and health gate
//! (`gate.rs`); the MAAS provisioning kinds `provision-node` (one `deploy-machine` child per
//! deployment attempt), `decommission-node`, `replace-node` and `scale-out`. What several kinds
//! share lives in `cluster.rs` (the cluster-facing ones) and `machines.rs` (the MAAS-facing ones).
//! `window.rs` is the maintenance window a schedule gives the workflows it starts: the pure
//! decision whether new work (a wave of drains, a drain, its migrations) may start now, over the
//! schedule's windows and freezes. `ticket-update` (`ticket_update.rs`) is one write-back to a
//! ticket, posted exactly once. [`builtin`] is the registry every Drover process uses.
//!
//! A new kind on existing ports is one file with a `Kind` impl and one line in [`builtin`].

pub mod admission;
pub mod attach_volume;
pub mod cloud_init;
pub mod cluster;
pub mod decommission_node;
pub mod deploy_machine;
pub mod detach_volume;
pub mod drain_node;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod fake_maas;
pub mod gate;
pub mod import_vm;
pub mod machines;
pub mod migrate_vmi;
pub mod migration_plan;
pub mod ovf;
pub mod plan;
pub mod provision_node;
pub mod replace_node;
pub mod rolling_maintenance;
pub mod scale_out;
pub mod storage;
pub mod synthetic;
pub mod ticket_update;
pub mod window;

use drover_workflows::Registry;

/// Every kind Drover ships.
pub fn builtin() -> Registry {
    let mut registry = Registry::default();
    registry
        .register::<synthetic::Synthetic>()
        .register::<drain_node::DrainNode>()
        .register::<migrate_vmi::MigrateVmi>()
        .register::<rolling_maintenance::RollingMaintenance>()
        .register::<provision_node::ProvisionNode>()
        .register::<deploy_machine::DeployMachine>()
        .register::<decommission_node::DecommissionNode>()
        .register::<replace_node::ReplaceNode>()
        .register::<scale_out::ScaleOut>()
        .register::<attach_volume::AttachVolume>()
        .register::<detach_volume::DetachVolume>()
        .register::<import_vm::ImportVm>()
        .register::<migration_plan::MigrationPlan>()
        .register::<ticket_update::TicketUpdate>();
    registry
}
