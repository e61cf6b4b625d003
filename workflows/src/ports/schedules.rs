//! Schedules as a running workflow sees them: a workflow started by a schedule with a
//! maintenance window reads the schedule's current spec (its freezes and next windows) before it
//! starts new work, so a freeze added while a rollout runs holds it.

use async_trait::async_trait;

use crate::schedule::ScheduleSpec;

/// Read access to the stored schedules.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// The spec of schedule `id` as stored now; `None` when there is no such schedule. An error
    /// (the store did not answer) is transient.
    async fn spec(&self, id: &str) -> Result<Option<ScheduleSpec>, String>;
}
