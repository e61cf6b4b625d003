//! The lab: a simulated MAAS region and Kubernetes/KubeVirt cluster served over real HTTP on
//! 127.0.0.1, close enough to the real systems that unmodified clients (kubectl, the Python
//! `kubernetes` client, python-libmaas, kube-rs) work against it. Drover's adapters are developed,
//! tested, demonstrated and benchmarked against it instead of a datacenter.
//!
//! Start it in-process with [`Lab::start`]; the [`LabHandle`] gives the URLs, a kubeconfig, the MAAS
//! API key, fault injection and the audit, and shuts the lab down. A simulated Jira Cloud site and
//! ServiceNow instance ([`ticketing`]) run beside it on listeners of their own; their part of the
//! `LabHandle` (`jira_url`, `jira()`, `servicenow()`, ...) is in `ticketing.rs`.

#![recursion_limit = "256"]

pub mod admin;
pub mod audit;
pub mod cdi;
pub mod clock;
pub mod error;
pub mod faults;
pub mod fetch;
pub mod http;
pub mod image;
pub mod kube;
pub mod maas;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod state;
pub mod store;
pub mod ticketing;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{Error, Result};
pub use faults::{Api, Fault};
pub use scenario::Scenario;
pub use ticketing::{
    Delivery, DeliveryPolicy, DeliveryState, JiraWebhook, OutboundMessage, RateLimit,
    TicketCounters, TicketFaults, TicketRequest, TicketingConfig,
};

use state::Shared;

/// How to run a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The inventory, timings and fault rates.
    pub scenario: Scenario,
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Watch events kept for resumption (older resourceVersions get 410 Gone).
    pub watch_history: usize,
    /// The simulated Jira site and ServiceNow instance (credentials, rate limits, delivery).
    /// They listen on free ports of `bind`'s address.
    pub ticketing: TicketingConfig,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            scenario: scenario::reference_architecture(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 50_000,
            ticketing: TicketingConfig::default(),
        }
    }
}

impl LabConfig {
    /// The reference-architecture scenario.
    pub fn reference() -> Self {
        LabConfig::default()
    }

    /// A scenario file (`.json` or `.toml`).
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(LabConfig {
            scenario: Scenario::from_file(path)?,
            ..LabConfig::default()
        })
    }

    /// The same config with another time scale.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.scenario.time_scale = scale;
        self
    }
}

/// The lab's settings as a config file or the environment give them (a `[lab]` section of Drover's
/// config): what `LabConfig` is built from, by value. Validated by `into_config`, before any port
/// is bound.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabSettings {
    /// Scenario file (`.json` or `.toml`); the built-in reference architecture when unset.
    pub scenario: Option<std::path::PathBuf>,
    /// Overrides the scenario's time scale (simulated seconds per real second).
    pub time_scale: Option<f64>,
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Watch events kept for resumption (older resourceVersions get 410 Gone).
    pub watch_history: usize,
    /// The simulated Jira site and ServiceNow instance: credentials, per-ticket rate limits,
    /// webhook delivery (`[lab.ticketing.jira]`, `[lab.ticketing.servicenow]`,
    /// `[lab.ticketing.delivery]`).
    pub ticketing: TicketingConfig,
}

impl Default for LabSettings {
    fn default() -> Self {
        let c = LabConfig::default();
        LabSettings {
            scenario: None,
            time_scale: None,
            bind: c.bind,
            watch_history: c.watch_history,
            ticketing: c.ticketing,
        }
    }
}

impl LabSettings {
    /// Load the scenario and check everything.
    pub fn into_config(self) -> Result<LabConfig> {
        let mut config = match &self.scenario {
            Some(path) => LabConfig::from_file(path)?,
            None => LabConfig::default(),
        };
        if let Some(scale) = self.time_scale {
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(Error::Config("time_scale must be a positive number".into()));
            }
            config.scenario.time_scale = scale;
        }
        if self.watch_history == 0 {
            return Err(Error::Config("watch_history must be at least 1".into()));
        }
        config.bind = self.bind;
        config.watch_history = self.watch_history;
        self.ticketing.validate()?;
        config.ticketing = self.ticketing;
        config.scenario.validate()?;
        Ok(config)
    }
}

/// Entry point.
pub struct Lab;

impl Lab {
    /// Load the scenario, bind, and start serving and simulating.
    pub async fn start(config: LabConfig) -> Result<LabHandle> {
        config.scenario.validate()?;
        let clock = clock::Clock::new(config.scenario.time_scale);
        let (tx, rx) = watch::channel(false);
        let (ticketing, ticketing_servers) =
            ticketing::start(config.ticketing.clone(), config.bind.ip(), rx.clone()).await?;
        let shared = Arc::new(Shared {
            stopping: rx.clone(),
            maas: Mutex::new(maas::Region::new(&config.scenario.maas).with_epoch(clock.epoch())),
            store: store::Store::new(clock.clone(), config.watch_history),
            faults: faults::Faults::new(config.scenario.faults.clone())
                .with_time_scale(config.scenario.time_scale),
            audit: audit::Audit::default(),
            sim: Mutex::new(sim::memory::SimState::default()),
            cdi: cdi::Cdi::default(),
            clock,
            scenario: config.scenario.clone(),
            ticketing,
            rbac: Default::default(),
        });
        shared.store.record_history(false);
        sim::load::load(&shared, &config.scenario)?;
        shared.store.record_history(true);
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let app = server::app(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let mut server_rx = rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_rx.changed().await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "Lab server stopped.");
            }
        });
        let sim = tokio::spawn(sim::tick::run(shared.clone(), rx));
        tracing::info!(%addr, scenario = %config.scenario.name, "Lab started.");
        Ok(LabHandle {
            shared,
            addr,
            shutdown: tx,
            server,
            sim,
            ticketing_servers,
        })
    }
}

/// A running lab.
pub struct LabHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    sim: JoinHandle<()>,
    ticketing_servers: ticketing::Servers,
}

impl LabHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Kubernetes API server URL (`http://127.0.0.1:PORT`).
    pub fn kube_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The MAAS URL as clients expect it (`http://127.0.0.1:PORT/MAAS/`).
    pub fn maas_url(&self) -> String {
        format!("http://{}/MAAS/", self.addr)
    }

    /// The MAAS API key (`consumer:token:secret`).
    pub fn maas_api_key(&self) -> String {
        self.shared.scenario.maas.api_key.clone()
    }

    /// A kubeconfig pointing at the lab.
    pub fn kubeconfig(&self) -> String {
        admin::kubeconfig(&self.kube_url())
    }

    /// Switches RBAC on or off for the Kubernetes API: on, a request needs the admin token (the
    /// kubeconfig's) or a ServiceAccount token from the TokenRequest API, authorized by the stored
    /// Roles, ClusterRoles and bindings.
    pub fn enforce_rbac(&self, on: bool) {
        self.shared.rbac.enforce(on);
    }

    /// What ServiceAccounts were allowed to do since the last call (which empties the record).
    pub fn rbac_granted(&self) -> Vec<kube::rbac::Attributes> {
        self.shared.rbac.take_granted()
    }

    /// Every request RBAC refused, oldest first.
    pub fn rbac_denials(&self) -> Vec<kube::rbac::Denial> {
        self.shared.rbac.denials()
    }

    /// What `drover lab` prints once the lab is up: one `key=value` per line (Kubernetes URL, MAAS
    /// URL, MAAS API key, kubeconfig path, scenario, time scale, Jira and ServiceNow URLs).
    pub fn summary(&self, kubeconfig: &Path) -> String {
        format!(
            "kube_url={}\nmaas_url={}\nmaas_api_key={}\nkubeconfig={}\nscenario={}\ntime_scale={}\njira_url={}\nservicenow_url={}\n",
            self.kube_url(),
            self.maas_url(),
            self.maas_api_key(),
            kubeconfig.display(),
            self.shared.scenario.name,
            self.shared.clock.scale(),
            self.jira_url(),
            self.servicenow_url(),
        )
    }

    /// Write the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig())?;
        Ok(())
    }

    /// Every audited mutating request so far.
    pub fn audit(&self) -> Vec<audit::Entry> {
        self.shared.audit.entries()
    }

    /// The requests (Kubernetes and MAAS) that carried a W3C `traceparent` header.
    pub fn traced(&self) -> Vec<audit::Traced> {
        self.shared.audit.traced()
    }

    /// Migration concurrency counters (peaks, current, history).
    pub fn counters(&self) -> audit::Counters {
        self.shared.audit.counters()
    }

    /// The CDI counters: bytes through the upload proxy and the importer, uploads and imports.
    pub fn cdi_counters(&self) -> cdi::CdiCounters {
        self.shared.cdi.counters()
    }

    /// Arm a targeted fault or apply an immediate one.
    pub fn inject(&self, fault: Fault) -> Result<()> {
        admin::inject(&self.shared, fault)
    }

    /// Replace the random fault rates.
    pub fn set_fault_rates(&self, rates: scenario::FaultRates) {
        self.shared.faults.set_rates(rates);
    }

    /// Disarm every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// One Kubernetes object by store key (`pods`, `virtualmachineinstances.kubevirt.io`, ...).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.get(resource, namespace, name)
    }

    /// Kubernetes objects by store key, optionally in one namespace.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.shared.store.list(resource, namespace, |_| true).0
    }

    /// Simulated seconds since start.
    pub fn sim_time(&self) -> f64 {
        self.shared.clock.now()
    }

    /// The scenario the lab runs.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// Stop serving and simulating. Open watches are cut after a short grace period.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.sim.await;
        self.shared.cdi.stop_all();
        self.ticketing_servers.stop(Duration::from_secs(2)).await;
        let abort = self.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
