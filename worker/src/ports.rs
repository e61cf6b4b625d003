//! The worker's implementations of the ports that need no external system: the clock, and the
//! schedules (read from the worker's own store). (The test probe lives with the store,
//! `drover_store::probe`; the adapters in `services/` implement the rest.)

use std::time::Duration;

use async_trait::async_trait;
use drover_store::Store;
use drover_workflows::ports::schedules::Schedules;
use drover_workflows::ports::{BoxFuture, Clock};
use drover_workflows::schedule::ScheduleSpec;

/// Wall-clock time and tokio timers.
pub struct TokioClock;

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        crate::now_ms()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Schedules as stored in Redis.
pub struct StoreSchedules(pub Store);

#[async_trait]
impl Schedules for StoreSchedules {
    async fn spec(&self, id: &str) -> Result<Option<ScheduleSpec>, String> {
        if !drover_store::schedule::is_schedule_id(id) {
            return Ok(None);
        }
        let rec = self.0.schedule_get(id).await.map_err(|e| e.to_string())?;
        rec.map(|r| serde_json::from_value(r.spec).map_err(|e| format!("schedule {id}: {e}")))
            .transpose()
    }
}
