//! Drover's engine core: what a workflow is, what a step may return, the pure engine core that
//! decides what happens next, the kind SDK, the registry and the port traits. It knows no workflow
//! kind (those live in `drover-kinds`). Nothing in this crate performs I/O: time, ids and randomness
//! are inputs, and steps reach the outside world only through the port traits in [`ports`].
//!
//! Layering: the store (`drover-store`) persists what [`decide`] returns; the worker (`drover-worker`)
//! runs steps and feeds their outcomes back into [`decide`].

pub mod decide;
pub mod kind;
pub mod model;
pub mod ports;
pub mod registry;
pub mod schedule;
pub mod sdk;

pub use decide::{Event, decide, first_task, resume_task};
pub use kind::{LiveProgress, Loaded, StepContext, StepDef, Versioned, Workflow};
pub use model::*;
pub use registry::{NewWorkflow, Registry, Submission};
pub use sdk::{Ctx, Kind, Step, StepError, StepResult};
