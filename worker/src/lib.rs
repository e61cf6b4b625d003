//! Drover's worker: apalis 1.0 is the runtime (WorkerBuilder, Monitor, tower layers for timeout,
//! concurrency, tracing and catch-panic, graceful shutdown); the task source is the Drover store,
//! plugged in through apalis-core's `Backend` trait ([`backend::StoreBackend`]).
//!
//! One attempt goes: the backend claims a task (lease + permits + fencing token) -> the layers run
//! [`service::StepService`] (the workflow's step) -> the backend's middleware
//! ([`service::CommitLayer`]) renews the lease meanwhile, feeds the result to the pure engine core and
//! commits the transition, fenced by the token.

pub mod backend;
pub mod commits;
pub mod outbox;
pub mod ports;
pub mod scheduler;
pub mod secrets;
pub mod service;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use apalis::prelude::*;
use drover_store::{Claim, Handback, Store};
use drover_workflows::Registry;
use drover_workflows::ports::Ports;
use serde::Deserialize;
use tracing::{debug, info, warn};

/// Worker settings (`[worker]` in the config file, `DROVER_WORKER_*` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Steps run at once by this process.
    pub concurrency: usize,
    /// Lease length in ms; a running step renews it every third of that. A step whose worker died
    /// resumes elsewhere within this plus one idle wait.
    pub lease_ms: u64,
    /// Longest a single step run may take before it is cut off and retried, in ms.
    pub step_timeout_ms: u64,
    /// Most delayed tasks promoted, and expired leases reclaimed, per claim.
    pub claim_batch: u32,
    /// Longest an idle worker blocks before claiming again, in ms.
    pub idle_wait_ms: u64,
    /// How long finished workflows are kept, in seconds.
    pub retention_secs: u64,
    /// How long a graceful shutdown waits for running steps, in ms; steps still running then are
    /// cut off and handed back to the queue (no attempt counted).
    pub shutdown_grace_ms: u64,
    /// Name of this worker in leases and history; defaults to host-pid-random.
    pub name: Option<String>,
    /// Whether this process also runs a scheduler (starts the workflows of cron schedules). Any
    /// number of processes may: each fire time starts one workflow however many race for it.
    pub scheduler: bool,
    /// Where this process serves Prometheus's `/metrics` (`127.0.0.1:9464`); unset (the default):
    /// nowhere, since workers have no other listener and several may share a host. Also
    /// DROVER_WORKER_METRICS_LISTEN.
    pub metrics_listen: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 16,
            lease_ms: 15_000,
            step_timeout_ms: 600_000,
            claim_batch: 100,
            idle_wait_ms: 1_000,
            retention_secs: 7 * 24 * 3600,
            shutdown_grace_ms: 30_000,
            name: None,
            scheduler: true,
            metrics_listen: None,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("worker.concurrency must be at least 1".into());
        }
        if self.lease_ms < 300 {
            return Err(format!(
                "worker.lease_ms must be at least 300, got {}",
                self.lease_ms
            ));
        }
        if self.claim_batch == 0 || self.claim_batch > 1000 {
            return Err(format!(
                "worker.claim_batch must be within 1..=1000, got {}",
                self.claim_batch
            ));
        }
        if self.idle_wait_ms == 0 {
            return Err("worker.idle_wait_ms must be at least 1".into());
        }
        if let Some(listen) = &self.metrics_listen {
            listen.parse::<std::net::SocketAddr>().map_err(|e| {
                format!("worker.metrics_listen {listen:?} is not an address (127.0.0.1:9464): {e}")
            })?;
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// Milliseconds since the Unix epoch (the one definition, in the store, which every process uses).
pub use drover_store::now_ms;

/// What every attempt of this process shares.
pub struct Runner {
    pub store: Store,
    pub registry: Registry,
    pub ports: Ports,
    pub config: Config,
    pub worker_id: String,
    /// Claims held by this process (by fencing token), from the claim until the attempt commits or
    /// is abandoned: their number is what the concurrency limit counts, and those still held when
    /// the process stops are handed back.
    pub held: Mutex<BTreeMap<u64, Held>>,
    /// Next steps our commits leased straight back to us, for the backend to hand out first (each
    /// with its workflow already loaded by the attempt before it).
    pub continuations: Mutex<VecDeque<service::Attempt>>,
    /// Wakes the backend when a continuation arrives.
    pub backend_waker: Mutex<Option<Waker>>,
    /// Set once shutdown began: commits no longer take the next step.
    pub stopping: AtomicBool,
    /// Sends the commits of attempts, batched per shard.
    pub commits: commits::Committer,
}

/// A claim held by this process: what its hand-back at shutdown needs.
#[derive(Debug, Clone)]
pub struct Held {
    pub id: String,
    pub step: usize,
}

impl Runner {
    /// Records a claim this process now holds.
    pub fn hold(&self, claim: &Claim) {
        lock(&self.held).insert(
            claim.token,
            Held {
                id: claim.id.clone(),
                step: claim.step,
            },
        );
    }

    /// Forgets a claim whose attempt committed or was abandoned.
    pub fn forget(&self, token: u64) {
        lock(&self.held).remove(&token);
    }

    /// Claims held and not yet committed or abandoned.
    pub fn in_flight(&self) -> usize {
        lock(&self.held).len()
    }
}

/// Locks a mutex, through poisoning (the data guarded here stays consistent whatever panicked).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors that stop a worker process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] drover_store::Error),
    #[error("worker runtime: {0}")]
    Runtime(String),
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!(
        "{}-{}-{:04x}",
        if host.is_empty() { "worker" } else { host },
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs a worker until `shutdown` resolves, then stops claiming and lets running steps finish, up to
/// the grace period (`shutdown_grace_ms`). A step still running when the grace ends is cut off and
/// handed back (its lease and step permits released, its task queued ready, no attempt counted), and
/// so are claims that never started (continuations leased back by a last commit): another worker
/// resumes them at once instead of waiting for their leases to expire. The hand-back is fenced by the
/// lease token, so the cut-off attempt can neither renew nor commit after it.
pub async fn run(
    store: Store,
    registry: Registry,
    ports: Ports,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate().map_err(Error::Runtime)?;
    let mut ports = ports;
    if ports.schedules.is_none() {
        ports.schedules = Some(Arc::new(ports::StoreSchedules(store.clone())));
    }
    let worker_id = config.name.clone().unwrap_or_else(default_name);
    let metrics_stop = Arc::new(tokio::sync::Notify::new());
    let metrics = match &config.metrics_listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                Error::Runtime(format!("cannot listen on {listen} for metrics: {e}"))
            })?;
            info!(listen = %listener.local_addr().map_or_else(|_| listen.clone(), |a| a.to_string()), "Serving /metrics.");
            let stop = metrics_stop.clone();
            Some(tokio::spawn(drover_telemetry::metrics::serve(
                listener,
                async move { stop.notified().await },
            )))
        }
        None => None,
    };
    let runner = Arc::new(Runner {
        commits: commits::Committer::start(&store),
        store,
        registry,
        ports,
        config,
        worker_id: worker_id.clone(),
        held: Mutex::new(BTreeMap::new()),
        continuations: Mutex::new(VecDeque::new()),
        backend_waker: Mutex::new(None),
        stopping: AtomicBool::new(false),
    });
    info!(worker = %worker_id, concurrency = runner.config.concurrency, "Worker started.");

    let housekeeping = tokio::spawn(service::housekeeping(runner.clone()));
    // The schedules and the outbox of each shard have their own loop.
    let mut loops = Vec::new();
    for shard in runner.store.shards() {
        if runner.config.scheduler {
            loops.push(tokio::spawn(scheduler::run(runner.clone(), shard.clone())));
        }
        loops.push(tokio::spawn(outbox::run(runner.clone(), shard)));
    }
    let factory_runner = runner.clone();
    // What the grace period's end found still running (see `grace_end`).
    let cut_off = Arc::new(Mutex::new(BTreeMap::new()));
    let monitor = Monitor::new()
        .register(move |_| {
            let runner = factory_runner.clone();
            WorkerBuilder::new(runner.worker_id.clone())
                .backend(backend::StoreBackend::new(runner.clone()))
                .concurrency(runner.config.concurrency)
                .timeout(Duration::from_millis(runner.config.step_timeout_ms))
                .catch_panic()
                .enable_tracing()
                .build(service::StepService::new(runner))
        })
        .with_terminator(grace_end(runner.clone(), cut_off.clone()));
    let stop_runner = runner.clone();
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            stop_runner.stopping.store(true, Ordering::Release);
            info!("Worker stopping: no new claims; running steps finish.");
            Ok(())
        })
        .await;
    housekeeping.abort();
    for l in loops {
        l.abort();
    }
    if let Some(m) = metrics {
        metrics_stop.notify_one();
        let _ = m.await;
    }
    // Cut-off attempts, and claims that never started (the backend dropped them unstarted).
    let mut left = std::mem::take(&mut *lock(&cut_off));
    left.append(&mut lock(&runner.held));
    hand_back(&runner, left).await;
    if let Err(e) = result {
        warn!(error = %e, "Worker monitor ended with an error.");
        return Err(Error::Runtime(e.to_string()));
    }
    info!(worker = %worker_id, "Worker stopped.");
    Ok(())
}

/// The monitor's terminator: polled once shutdown began, it ends the grace period. apalis then stops
/// waiting and drops the attempts still running (their lease renewals and commits with them), which
/// forgets their claims; so take those claims first, into `cut_off`, for `run` to hand back.
async fn grace_end(runner: Arc<Runner>, cut_off: Arc<Mutex<BTreeMap<u64, Held>>>) {
    tokio::time::sleep(Duration::from_millis(runner.config.shutdown_grace_ms)).await;
    let running = std::mem::take(&mut *lock(&runner.held));
    if !running.is_empty() {
        warn!(
            steps = running.len(),
            "Shutdown grace period over; cutting off the running steps."
        );
    }
    *lock(&cut_off) = running;
}

/// Gives each claim back to the queue, all at once (so a Redis outage delays the exit by one
/// timeout, not one per claim), fenced by its token: a claim whose attempt committed after all is left
/// alone by the store.
async fn hand_back(runner: &Runner, claims: BTreeMap<u64, Held>) {
    let now = now_ms();
    futures::future::join_all(claims.into_iter().map(|(token, Held { id, step })| async move {
        match runner.store.handback(&id, token, now).await {
            Ok(Handback::Released) => {
                info!(workflow_id = %id, step, "Step handed back at shutdown.");
            }
            Ok(Handback::Stale | Handback::Gone) => {
                debug!(workflow_id = %id, step, token, "Nothing to hand back: the lease had already moved on.");
            }
            Err(e) => {
                warn!(workflow_id = %id, step, error = %e, "Cannot hand the step back; it resumes elsewhere when its lease expires.");
            }
        }
    }))
    .await;
}
