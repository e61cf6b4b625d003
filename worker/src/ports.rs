//! The worker's implementations of the workflow ports that need no external system: the clock, and
//! the probe the synthetic workload reports permit holding to (a Redis list the tests read).

use std::time::Duration;

use drover_store::Store;
use drover_workflows::ports::{BoxFuture, Clock, Probe, ProbeEvent};
use redis::AsyncCommands;
use tracing::warn;

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

/// Appends probe events to `<prefix>probe` in the store's Redis.
pub struct RedisProbe {
    store: Store,
}

impl RedisProbe {
    pub fn new(store: Store) -> RedisProbe {
        RedisProbe { store }
    }

    pub fn key(store: &Store) -> String {
        format!("{}probe", store.prefix())
    }
}

impl Probe for RedisProbe {
    fn record(&self, event: ProbeEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(line) = serde_json::to_string(&event) else {
                return;
            };
            let mut conn = self.store.connection();
            let pushed: redis::RedisResult<()> =
                conn.rpush(RedisProbe::key(&self.store), line).await;
            if let Err(e) = pushed {
                warn!(error = %e, "Probe event lost.");
            }
        })
    }
}
