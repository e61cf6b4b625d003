//! [`StoreBackend`]: the Drover store as an apalis `Backend`. apalis asks for a task only when its
//! concurrency layer has room, so a claim (which starts a lease) is made only when a step can start
//! right away. An idle backend blocks on the store's wake list, so new work is noticed at once and a
//! delayed task is picked up when it falls due, without polling.
//!
//! Redis errors never reach apalis (which would stop the worker): the backend logs them and retries
//! with backoff, so a Redis restart only pauses claiming.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::{RandomId, TaskId};
use apalis_core::worker::context::WorkerContext;
use drover_store::Claim;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::service::{Attempt, CommitLayer};
use crate::{Runner, lock, now_ms};

type Fetch = Pin<Box<dyn Future<Output = (Vec<Claim>, Wake)> + Send>>;

/// A blocking pop on one shard's wake list: the shard, its connection (given back) and the outcome.
type Pop = tokio::task::JoinHandle<(usize, drover_store::Waiter, drover_store::Result<bool>)>;

/// The backend's wake connections, one per shard, kept from one fetch to the next (so an idle
/// backend does not open new connections each time it goes idle), and which shard the next claim
/// asks first (it turns with every round, so no shard waits behind another).
struct Wake {
    slots: Vec<Slot>,
    waiting: futures::stream::FuturesUnordered<Pop>,
    round: usize,
}

/// One shard's wake connection.
enum Slot {
    /// None open (not yet, or its last pop failed).
    Closed,
    Idle(drover_store::Waiter),
    /// In a blocking pop (in `Wake::waiting`).
    Popping,
}

impl Wake {
    fn new(shards: usize) -> Wake {
        Wake {
            slots: (0..shards).map(|_| Slot::Closed).collect(),
            waiting: futures::stream::FuturesUnordered::new(),
            round: 0,
        }
    }

    /// Ends the pops still running (their connections close) once the backend has work: a pop
    /// left running would take wake markers meant for workers that are idle. Finished pops give
    /// their connections back first.
    fn stop_pops(&mut self) {
        self.collect_finished();
        for pop in self.waiting.iter() {
            pop.abort();
        }
        self.waiting.clear();
        for slot in &mut self.slots {
            if matches!(slot, Slot::Popping) {
                *slot = Slot::Closed;
            }
        }
    }

    /// Takes back the connections of the pops that finished.
    fn collect_finished(&mut self) {
        while let Some(Some(Ok(done))) = futures::FutureExt::now_or_never(self.waiting.next()) {
            self.finished(done);
        }
    }

    /// Takes back a finished pop's connection (dropped if it failed).
    fn finished(&mut self, done: (usize, drover_store::Waiter, drover_store::Result<bool>)) {
        let (i, w, r) = done;
        self.slots[i] = match r {
            Ok(_) => Slot::Idle(w),
            Err(e) => {
                debug!(error = %e, shard = i, "Wake wait failed; claiming again.");
                Slot::Closed
            }
        };
    }
}

/// The apalis backend over the Drover store.
pub struct StoreBackend {
    runner: Arc<Runner>,
    fetch: Option<Fetch>,
    /// The wake connections while no fetch runs (a running fetch holds them).
    wake: Option<Wake>,
    /// Claimed tasks not yet handed to apalis; never more than the free concurrency slots, so every
    /// claimed task starts at once.
    buffer: VecDeque<Attempt>,
}

/// The backend never fails towards apalis; this type only satisfies the trait.
#[derive(Debug, thiserror::Error)]
#[error("store backend: {0}")]
pub struct BackendError(String);

impl StoreBackend {
    pub fn new(runner: Arc<Runner>) -> StoreBackend {
        StoreBackend {
            runner,
            fetch: None,
            wake: None,
            buffer: VecDeque::new(),
        }
    }
}

/// Claims until at least one task is found (as many as there are free slots), blocking on the wake
/// lists in between. Claimed tasks are held (count as in flight) from here until their commit.
///
/// With several shards, each is asked in turn (see [`Wake::round`]), and an idle backend waits on every shard's wake list at once: one
/// blocking pop per shard, each on its own connection in its own task, so a pop still running
/// when another shard woke the backend is not cut off (its marker is not lost) and is picked up
/// by the next wait. Once claims are found, pops still running end (see [`Wake::stop_pops`]);
/// the idle connections outlive the fetch (see [`Wake`]).
async fn next_claims(runner: Arc<Runner>, mut wake: Wake) -> (Vec<Claim>, Wake) {
    let config = &runner.config;
    let idle_max = Duration::from_millis(config.idle_wait_ms);
    let shards = runner.store.shards();
    let n = shards.len();
    let mut backoff = Duration::from_millis(50);
    loop {
        let now = now_ms();
        let free = config.concurrency.saturating_sub(runner.in_flight()).max(1);
        let mut next_due: Option<u64> = None;
        let mut failed = None;
        for k in 0..n {
            let shard = &shards[(wake.round + k) % n];
            match shard
                .claim(
                    &runner.worker_id,
                    now,
                    config.lease(),
                    config.claim_batch,
                    free as u32,
                    idle_max + Duration::from_secs(2),
                )
                .await
            {
                Ok(claimed) => {
                    if claimed.expired > 0 {
                        drover_telemetry::metrics()
                            .lease_expirations
                            .inc_by(claimed.expired);
                        info!(
                            expired = claimed.expired,
                            shard = shard.shard(),
                            "Reclaimed expired leases."
                        );
                    }
                    if !claimed.claims.is_empty() {
                        for claim in &claimed.claims {
                            runner.hold(claim);
                        }
                        wake.stop_pops();
                        return (claimed.claims, wake);
                    }
                    next_due = match (next_due, claimed.next_due_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => failed = Some((shard.shard(), e)),
            }
        }
        wake.round = wake.round.wrapping_add(1);
        if let Some((shard, e)) = failed {
            warn!(error = %e, shard, retry_in_ms = backoff.as_millis() as u64, "Claim failed; retrying.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(50);
        let wait = next_due
            .map(|due| Duration::from_millis(due.saturating_sub(now)))
            .map_or(idle_max, |d| d.min(idle_max))
            .max(Duration::from_millis(1));
        // A blocking pop on every shard without one running.
        for (i, shard) in shards.iter().enumerate() {
            let mut w = match std::mem::replace(&mut wake.slots[i], Slot::Popping) {
                Slot::Idle(w) => w,
                Slot::Popping => continue,
                Slot::Closed => match shard.waiter(idle_max).await {
                    Ok(w) => w,
                    Err(e) => {
                        wake.slots[i] = Slot::Closed;
                        warn!(error = %e, shard = i, "Cannot open the wake connection; retrying.");
                        continue;
                    }
                },
            };
            wake.waiting.push(tokio::spawn(async move {
                let r = w.wait(wait).await;
                (i, w, r)
            }));
        }
        if wake.waiting.is_empty() {
            tokio::time::sleep(backoff).await;
            continue;
        }
        // Until one shard's pop returns (woken, timed out or failed), or the next task falls due.
        match tokio::time::timeout(wait + Duration::from_millis(50), wake.waiting.next()).await {
            Ok(Some(Ok(done))) => {
                let failed = done.2.is_err();
                wake.finished(done);
                if failed {
                    tokio::time::sleep(backoff).await;
                }
            }
            // A pop task that panicked: every shard's pops start afresh.
            Ok(Some(Err(_))) => wake.stop_pops(),
            Ok(None) | Err(_) => {}
        }
        // Pops that finished meanwhile give their connections back.
        wake.collect_finished();
    }
}

impl Backend for StoreBackend {
    type Task = Task<Arc<Attempt>>;
    type Error = BackendError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // Next steps leased straight back by our own commits come first.
        *lock(&self.runner.backend_waker) = Some(cx.waker().clone());
        if let Some(attempt) = lock(&self.runner.continuations).pop_front() {
            self.buffer.push_front(attempt);
        }
        if self.buffer.is_empty() {
            let runner = self.runner.clone();
            if self.fetch.is_none() {
                let wake = self
                    .wake
                    .take()
                    .unwrap_or_else(|| Wake::new(usize::from(runner.store.shard_count())));
                self.fetch = Some(Box::pin(next_claims(runner, wake)));
            }
            let fetch = self.fetch.as_mut().expect("set above");
            match fetch.as_mut().poll(cx) {
                Poll::Ready((claims, wake)) => {
                    self.fetch = None;
                    self.wake = Some(wake);
                    self.buffer.extend(claims.into_iter().map(Attempt::new));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.buffer.pop_front() {
            Some(attempt) => {
                // The task id names the attempt: workflow, step, fencing token.
                let id =
                    TaskId::String(format!("{}/{}#{}", attempt.id, attempt.step, attempt.token));
                Poll::Ready(Some(Ok(TaskBuilder::new(Arc::new(attempt))
                    .task_id(id)
                    .build())))
            }
            None => Poll::Pending,
        }
    }

    fn poll_close(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Claimed but never started: they stay held, and `run` hands them back once apalis stops.
        self.fetch = None;
        self.buffer.clear();
        lock(&self.runner.continuations).clear();
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for StoreBackend {
    type Args = Arc<Attempt>;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = CommitLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        CommitLayer::new(self.runner.clone())
    }
}
