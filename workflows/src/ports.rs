//! Port traits: the only way a step reaches the world outside the engine. Adapters in `services/` and
//! `worker/` implement them over real protocols; the workflows crate only names them.

pub mod images;
pub mod kube;
pub mod maas;
pub mod schedules;
pub mod secrets;
pub mod tickets;

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
/// `None`; a step that needs one fails permanently with a message saying what to configure. Built
/// with [`Ports::new`] and the `with_*` methods, so adding a port touches no construction site.
#[derive(Clone)]
#[non_exhaustive]
pub struct Ports {
    pub clock: Arc<dyn Clock>,
    pub probe: Option<Arc<dyn Probe>>,
    pub kube: Option<Arc<dyn kube::Kube>>,
    pub maas: Option<Arc<dyn maas::Maas>>,
    pub secrets: Option<Arc<dyn secrets::Secrets>>,
    pub images: Option<Arc<dyn images::Images>>,
    pub schedules: Option<Arc<dyn schedules::Schedules>>,
    pub tickets: Option<Arc<dyn tickets::Tickets>>,
    /// The named clusters (`[[clusters]]`) a workflow that names one acts on; `kube` is the
    /// unnamed `[kube]` cluster.
    pub clusters: std::collections::BTreeMap<String, Arc<dyn kube::Kube>>,
    /// Set on the ports of one workflow that names a cluster: that name (`kube` is its port, or
    /// `None` when this worker has no such cluster).
    pub cluster: Option<String>,
}

impl Ports {
    /// Only a clock: every other port is unconfigured.
    pub fn new(clock: Arc<dyn Clock>) -> Ports {
        Ports {
            clock,
            probe: None,
            kube: None,
            maas: None,
            secrets: None,
            images: None,
            schedules: None,
            tickets: None,
            clusters: Default::default(),
            cluster: None,
        }
    }

    /// Adds the named cluster `name`.
    pub fn with_cluster(mut self, name: impl Into<String>, kube: Arc<dyn kube::Kube>) -> Ports {
        self.clusters.insert(name.into(), kube);
        self
    }

    /// The ports of a workflow that names `cluster`: its Kubernetes port is that cluster's.
    pub fn for_cluster(&self, cluster: &str) -> Ports {
        Ports {
            kube: self.clusters.get(cluster).cloned(),
            cluster: Some(cluster.to_string()),
            ..self.clone()
        }
    }

    pub fn with_probe(mut self, probe: Arc<dyn Probe>) -> Ports {
        self.probe = Some(probe);
        self
    }

    pub fn with_images(mut self, images: Arc<dyn images::Images>) -> Ports {
        self.images = Some(images);
        self
    }

    pub fn with_kube(mut self, kube: Arc<dyn kube::Kube>) -> Ports {
        self.kube = Some(kube);
        self
    }

    pub fn with_maas(mut self, maas: Arc<dyn maas::Maas>) -> Ports {
        self.maas = Some(maas);
        self
    }

    pub fn with_schedules(mut self, schedules: Arc<dyn schedules::Schedules>) -> Ports {
        self.schedules = Some(schedules);
        self
    }

    pub fn with_tickets(mut self, tickets: Arc<dyn tickets::Tickets>) -> Ports {
        self.tickets = Some(tickets);
        self
    }

    pub fn with_secrets(mut self, secrets: Arc<dyn secrets::Secrets>) -> Ports {
        self.secrets = Some(secrets);
        self
    }
}
