//! The worker's implementation of the one port that needs no external system: the clock. (The test
//! probe lives with the store, `drover_store::probe`; the adapters in `services/` implement the rest.)

use std::time::Duration;

use drover_workflows::ports::{BoxFuture, Clock};

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
