//! The probe port over this store's Redis: the synthetic workload appends what it observes (a step
//! entering or leaving while holding permits) to `<prefix>probe`, and the crash and semaphore tests
//! read the list back, across killed worker processes.

use drover_workflows::ports::{BoxFuture, Probe, ProbeEvent};
use redis::AsyncCommands;
use tracing::warn;

use crate::Store;

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
