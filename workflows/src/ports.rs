//! Port traits: the only way a step reaches the world outside the engine. Adapters in `services/` and
//! `worker/` implement them over real protocols; the workflows crate only names them.

pub mod kube;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boxed future, so ports stay object-safe without tying this crate to an async runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time, as the runtime provides it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Where the synthetic workload reports when it holds permits, so tests can check that a semaphore's
/// capacity was never exceeded, even across killed workers.
pub trait Probe: Send + Sync {
    fn record(&self, event: ProbeEvent) -> BoxFuture<'_, ()>;
}

/// One observation made by a step that runs under the probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEvent {
    /// "enter" or "exit".
    pub what: String,
    pub workflow_id: String,
    pub step: usize,
    pub attempt: u32,
    pub token: u64,
    pub worker: String,
    pub permits: Vec<String>,
    pub at_ms: u64,
}

/// Everything a step may use, handed to it by the worker. Ports a process has not configured are
/// `None`; a step that needs one fails permanently with a message saying what to configure.
#[derive(Clone)]
pub struct Ports {
    pub clock: Arc<dyn Clock>,
    pub probe: Option<Arc<dyn Probe>>,
    pub kube: Option<Arc<dyn kube::Kube>>,
}
