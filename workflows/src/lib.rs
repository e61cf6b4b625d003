//! Drover's workflow model: what a workflow is, what a step may return, and the pure engine core that
//! decides what happens next. Nothing in this crate performs I/O: time, ids and randomness are inputs,
//! and the steps reach the outside world only through the port traits in [`ports`].
//!
//! Layering: the store (`drover-store`) persists what [`decide`] returns; the worker (`drover-worker`)
//! runs steps and feeds their outcomes back into [`decide`].

pub mod decide;
pub mod drain_node;
pub mod kind;
pub mod migrate_vmi;
pub mod model;
pub mod plan;
pub mod ports;
pub mod registry;
pub mod rolling_maintenance;
pub mod synthetic;

pub use decide::{Event, decide, first_task, resume_task};
pub use kind::{StepContext, Workflow};
pub use model::*;
pub use registry::Registry;
