//! The two tower services of an attempt. [`StepService`] (innermost, under apalis's timeout,
//! catch-panic, concurrency and tracing layers) runs the workflow's step and says what happened.
//! [`CommitLayer`] (the backend's middleware, outside every other layer) keeps the lease alive while
//! that runs, turns whatever came back (an outcome, a timeout, a panic) into the engine core's
//! transition and commits it, fenced by the lease's token.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use drover_store::{Claim, Commit, CommitChild, CommitRequest, CommitResult, Renewal};
use drover_telemetry::metrics::{AttemptLabels, KindLabels, StepLabels};
use drover_workflows::{
    Event, LiveProgress, Loaded, Outcome, Phase, Registry, StepContext, Submission, Versioned,
    decide,
};
use serde_json::Value;
use tower::{Layer, Service};
use tracing::{Instrument, debug, info, warn};

use crate::{Runner, lock, now_ms};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs one attempt of a step and returns the event for the engine core.
#[derive(Clone)]
pub struct StepService {
    runner: Arc<Runner>,
}

impl StepService {
    pub fn new(runner: Arc<Runner>) -> StepService {
        StepService { runner }
    }
}

impl Service<Task<Arc<Attempt>>> for StepService {
    type Response = Event;
    type Error = BoxDynError;
    type Future = BoxFut<Result<Event, BoxDynError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Arc<Attempt>>) -> Self::Future {
        let runner = self.runner.clone();
        Box::pin(async move { Ok(run_step(&runner, &task.args).await) })
    }
}

/// A claim being run, with its workflow loaded (the input parsed and checked) once for the whole
/// attempt: the step and the commit after it share it.
pub struct Attempt {
    pub claim: Claim,
    loaded: OnceLock<Result<Arc<dyn Loaded>, String>>,
    /// What the running step reports before it returns; stored with each lease renewal.
    pub live: LiveProgress,
}

impl Attempt {
    pub fn new(claim: Claim) -> Attempt {
        Attempt {
            claim,
            loaded: OnceLock::new(),
            live: LiveProgress::default(),
        }
    }

    /// The attempt at the step a commit of `before` leased straight back: the same workflow
    /// (kind, input, step names), so it keeps `before`'s loaded workflow instead of parsing the
    /// input again.
    pub fn continued(claim: Claim, before: &Attempt) -> Attempt {
        let next = Attempt::new(claim);
        if let Some(w) = before.loaded.get() {
            let _ = next.loaded.set(w.clone());
        }
        next
    }

    /// The claim's workflow, loaded on first use.
    pub fn workflow(&self, registry: &Registry) -> Result<&Arc<dyn Loaded>, String> {
        self.loaded
            .get_or_init(|| {
                registry
                    .load(&self.claim.kind, &self.claim.input)
                    .map(Arc::from)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The workflow seen through the step names it was submitted with.
    fn versioned<'a>(&'a self, loaded: &'a Arc<dyn Loaded>) -> Versioned<'a> {
        Versioned::new(loaded.as_ref(), self.claim.steps.as_deref())
            .in_cluster(self.claim.cluster.as_deref())
    }
}

impl std::ops::Deref for Attempt {
    type Target = Claim;

    fn deref(&self) -> &Claim {
        &self.claim
    }
}

async fn run_step(runner: &Runner, attempt: &Attempt) -> Event {
    let claim = &attempt.claim;
    let loaded = match attempt.workflow(&runner.registry) {
        Ok(w) => w,
        Err(error) => return Event::Outcome(Outcome::Fail { error }),
    };
    if claim.cancel_requested && claim.phase == Phase::Forward {
        return Event::Cancel;
    }
    let workflow = attempt.versioned(loaded);
    let steps = workflow.steps();
    let Some(def) = steps.get(claim.step) else {
        return Event::Outcome(Outcome::Fail {
            error: format!(
                "step {} does not exist in this workflow of {}",
                claim.step, claim.kind
            ),
        });
    };
    if claim.attempt > def.retry.max_attempts {
        return Event::Exhausted {
            error: format!(
                "{} attempts used (the last ones died with their workers)",
                claim.attempt - 1
            ),
        };
    }
    let children = if claim.kids_step == Some(claim.step) {
        match runner.store.children(&claim.id).await {
            // This step's own: an earlier step's children (their ids name the step that started
            // them, `<id>.s<step>t<token>.<n>`) are not this step's to judge.
            Ok(c) => {
                let mine = format!("{}.s{}t", claim.id, claim.step);
                c.into_iter().filter(|c| c.id.starts_with(&mine)).collect()
            }
            Err(e) => {
                return Event::Outcome(Outcome::Retry {
                    error: format!("reading children: {e}"),
                    after: None,
                });
            }
        }
    } else {
        Vec::new()
    };
    let outputs: BTreeMap<String, Value> = claim
        .outputs
        .iter()
        .filter_map(|(i, v)| Some((steps.get(*i)?.name.clone(), Value::clone(v))))
        .collect();
    // A workflow that names a cluster acts on that cluster's Kubernetes API.
    let ports = match claim.cluster.as_deref() {
        Some(c) => std::borrow::Cow::Owned(runner.ports.for_cluster(c)),
        None => std::borrow::Cow::Borrowed(&runner.ports),
    };
    let ctx = StepContext {
        workflow_id: &claim.id,
        step: claim.step,
        attempt: claim.attempt,
        phase: claim.phase,
        token: claim.token,
        worker: &runner.worker_id,
        outputs: &outputs,
        signals: &claim.signals,
        children: &children,
        resumes: claim.resumes,
        ports: &ports,
        live: &attempt.live,
    };
    Event::Outcome(workflow.run(&ctx).await)
}

/// The backend's middleware: lease renewal and commit around everything else.
#[derive(Clone)]
pub struct CommitLayer {
    runner: Arc<Runner>,
}

impl CommitLayer {
    pub fn new(runner: Arc<Runner>) -> CommitLayer {
        CommitLayer { runner }
    }
}

impl<S> Layer<S> for CommitLayer {
    type Service = CommitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CommitService {
            inner,
            runner: self.runner.clone(),
        }
    }
}

/// See [`CommitLayer`].
#[derive(Clone)]
pub struct CommitService<S> {
    inner: S,
    runner: Arc<Runner>,
}

impl<S> Service<Task<Arc<Attempt>>> for CommitService<S>
where
    S: Service<Task<Arc<Attempt>>, Response = Event>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFut<Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Arc<Attempt>>) -> Self::Future {
        let claim = Arc::clone(&task.args);
        let runner = self.runner.clone();
        let span = step_span(&runner, &claim);
        // Spans the inner layers open (apalis's) nest in the attempt's, and so do the step's own.
        let attempt = span.in_scope(|| self.inner.call(task));
        let m = drover_telemetry::metrics();
        let started = std::time::Instant::now();
        m.dispatch_latency
            .get_or_create(&KindLabels {
                kind: claim.kind.clone(),
            })
            .observe(now_ms().saturating_sub(claim.task.due_ms) as f64 / 1000.0);
        Box::pin(async move {
            let _slot = InFlight(&runner, claim.token);
            let lease_ended = hold_lease(&runner, &claim, &claim.live);
            tokio::pin!(attempt);
            tokio::pin!(lease_ended);
            let event = tokio::select! {
                result = &mut attempt => match result {
                    Ok(event) => event,
                    Err(e) => {
                        let error: BoxDynError = e.into();
                        warn!(workflow_id = %claim.id, step = claim.step, error = %error, "Step attempt aborted.");
                        Event::Outcome(Outcome::Retry { error: format!("attempt aborted: {error}"), after: None })
                    }
                },
                end = &mut lease_ended => match end {
                    LeaseEnd::Lost => {
                        warn!(workflow_id = %claim.id, step = claim.step, token = claim.token, "Lease lost; abandoning the attempt.");
                        m.attempts.get_or_create(&AttemptLabels { kind: claim.kind.clone(), outcome: "lease-lost".into() }).inc();
                        return Ok(());
                    }
                    // A long step (an upload, a conversion) stops where it is, as if its worker
                    // had died; steps are reconcilers, and compensation undoes what it made.
                    LeaseEnd::Cancel => {
                        info!(workflow_id = %claim.id, step = claim.step, "Cancel requested; stopping the running step.");
                        Event::Cancel
                    }
                }
            };
            m.step_duration
                .get_or_create(&StepLabels {
                    kind: claim.kind.clone(),
                    step: step_name(&claim).to_string(),
                })
                .observe(started.elapsed().as_secs_f64());
            finish(&runner, &claim, event).await;
            Ok(())
        }.instrument(span))
    }
}

/// The span of one attempt: a child of the span that created the workflow (its stored trace
/// context), so every attempt, on any worker, is in the workflow's trace.
fn step_span(runner: &Runner, claim: &Claim) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "workflow.step",
        otel.name = %format_args!("{} {}", claim.kind, step_name(claim)),
        workflow_id = %claim.id,
        kind = %claim.kind,
        step = step_name(claim),
        attempt = claim.attempt,
        phase = ?claim.phase,
        worker = %runner.worker_id,
    );
    if let Some(tp) = &claim.trace {
        drover_telemetry::trace::set_parent(&span, tp);
    }
    span
}

/// The recorded name of the claim's step (its index for workflows from before names were kept).
fn step_name(claim: &Claim) -> &str {
    claim
        .steps
        .as_ref()
        .and_then(|s| s.get(claim.step))
        .map_or("?", String::as_str)
}

/// Forgets the claim, freeing its slot, when the attempt ends however it ends. An attempt cut off
/// at the end of the shutdown grace period is dropped too, but `run` took its claim beforehand, to
/// hand it back.
struct InFlight<'a>(&'a Runner, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// Why [`hold_lease`] stopped holding.
enum LeaseEnd {
    Lost,
    /// An operator asked to cancel the workflow while a forward step ran.
    Cancel,
}

/// Renews the lease once a third of its length has passed since it was last extended (a continued
/// step may start on a lease its predecessor's claim extended), and sooner (at most once a second)
/// when the step has reported progress since, which rides along; resolves when the lease is lost
/// or, for a forward step, when a cancel is requested.
async fn hold_lease(runner: &Runner, claim: &Claim, live: &LiveProgress) -> LeaseEnd {
    let lease = runner.config.lease();
    let lease_ms = lease.as_millis() as u64;
    let tick = (lease / 3).min(PROGRESS_EVERY);
    let mut deadline = claim.lease_until_ms;
    let mut seen = 0;
    loop {
        tokio::time::sleep(tick).await;
        let progress = live.newer_than(seen);
        if progress.is_none() && now_ms() + lease_ms * 2 / 3 < deadline {
            continue;
        }
        let now = now_ms();
        let json = progress.as_ref().map(|(_, v)| v.to_string());
        match runner
            .store
            .renew(&claim.id, claim.token, now, lease, json.as_deref())
            .await
        {
            Ok(Renewal::Held { cancel_requested }) => {
                if cancel_requested && claim.phase == Phase::Forward {
                    return LeaseEnd::Cancel;
                }
                deadline = now + lease_ms;
                if let Some((n, _)) = progress {
                    seen = n;
                }
            }
            Ok(Renewal::Lost) => return LeaseEnd::Lost,
            Err(e) => {
                warn!(workflow_id = %claim.id, error = %e, "Lease renewal failed; will retry.");
                if now_ms() >= deadline {
                    return LeaseEnd::Lost;
                }
            }
        }
    }
}

/// How often, at most, a running step's reported progress is written.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Decides the transition for `event` and commits it, retrying transient store errors while the
/// lease can still be valid (a commit is idempotent per token).
pub async fn finish(runner: &Runner, attempt: &Attempt, event: Event) {
    let started = std::time::Instant::now();
    let claim = &attempt.claim;
    let Ok(loaded) = attempt.workflow(&runner.registry) else {
        warn!(workflow_id = %claim.id, kind = %claim.kind, "Unknown kind or unreadable input at commit; leaving the lease to expire.");
        return;
    };
    let workflow = attempt.versioned(loaded);
    let steps = workflow.steps();
    let permits = |step: usize, phase: Phase| workflow.permits(step, phase);
    let mut event = event;
    // Children are checked and get their first task now, as any submission.
    let mut children = Vec::new();
    if let Event::Outcome(Outcome::Spawn {
        children: specs, ..
    }) = &event
    {
        let now = now_ms();
        let mut built = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            // Children join their parent's trace, under this attempt's span.
            let submission = Submission::new(spec.kind.clone(), spec.input.clone())
                .trace(drover_telemetry::trace::current())
                .priority(spec.priority)
                .cluster(claim.cluster.clone())
                .label("parent", claim.id.clone());
            let id = format!("{}.s{}t{}.{k}", claim.id, claim.step, claim.token);
            match runner.registry.prepare(id, submission, now) {
                Ok(child) => built.push(CommitChild(child)),
                Err(e) => {
                    built.clear();
                    event = Event::Outcome(Outcome::Fail {
                        error: format!("child {k}: {e}"),
                    });
                    break;
                }
            }
        }
        children = built;
    }
    let now = now_ms();
    let transition = decide(
        &claim.snapshot(),
        steps,
        event,
        now,
        rand::random::<f64>(),
        &permits,
    );
    let history = HistoryEntry {
        attempt: claim.attempt,
        end_ms: now,
        error: transition.attempt_error.as_deref(),
        name: steps
            .get(claim.step)
            .map(|s| s.name.as_str())
            .unwrap_or("?"),
        outcome: &transition.outcome,
        phase: claim.phase,
        start_ms: claim.lease_start_ms,
        step: claim.step,
        token: claim.token,
        worker: &runner.worker_id,
    };
    let commit = match Commit::new(&transition, &history, children, &claim.id) {
        Ok(c) => c.with_max_descendants(runner.registry.max_descendants()),
        Err(e) => {
            warn!(workflow_id = %claim.id, error = %e, "Cannot encode the commit; the lease will expire.");
            return;
        }
    };
    let give_up = started + Duration::from_millis(runner.config.lease_ms * 2);
    let stopping = runner.stopping.load(std::sync::atomic::Ordering::Acquire);
    let continue_as = || {
        (!stopping).then(|| drover_store::Continue {
            worker: runner.worker_id.as_str(),
            lease: runner.config.lease(),
            from: claim,
            transition: &transition,
        })
    };
    let mut backoff = Duration::from_millis(20);
    loop {
        let now = now_ms();
        let continuing = continue_as();
        let reply =
            match CommitRequest::new(&claim.id, claim.token, now, &commit, continuing.as_ref()) {
                Ok(request) => runner.commits.commit(request).await,
                Err(e) => Err(e),
            };
        match reply.and_then(|r| r.result(now, continuing)) {
            Ok(CommitResult::Continued(next)) => {
                count_attempt(claim, &transition.outcome);
                debug!(workflow_id = %claim.id, step = next.step, "Step committed; running the next one here.");
                runner.hold(&next);
                lock(&runner.continuations).push_back(Attempt::continued(*next, attempt));
                if let Some(waker) = lock(&runner.backend_waker).take() {
                    waker.wake();
                }
                return;
            }
            Ok(CommitResult::Applied | CommitResult::Duplicate) => {
                count_attempt(claim, &transition.outcome);
                debug!(workflow_id = %claim.id, step = claim.step, attempt = claim.attempt, outcome = %transition.outcome, state = transition.state.as_str(), "Step committed.");
                if transition.is_terminal() {
                    info!(workflow_id = %claim.id, kind = %claim.kind, state = transition.state.as_str(), "Workflow finished.");
                }
                if matches!(
                    transition.state,
                    drover_workflows::State::Compensating
                        | drover_workflows::State::Failed
                        | drover_workflows::State::Cancelled
                ) && claim.phase == Phase::Forward
                {
                    cancel_children(runner, &claim.id).await;
                }
                return;
            }
            Ok(CommitResult::Stale) => {
                warn!(workflow_id = %claim.id, step = claim.step, token = claim.token, "Commit refused: the lease moved on; result discarded.");
                return;
            }
            Ok(CommitResult::DescendantLimit { created, asked }) => {
                // Nothing was written; the step fails instead (a retry would ask again).
                let error = format!(
                    "starting {asked} children would take the top-level workflow past its limit of \
                     {} workflows created in all ({created} so far)",
                    runner.registry.max_descendants()
                );
                warn!(workflow_id = %claim.id, step = claim.step, asked, created, "Children refused: descendant limit reached.");
                return Box::pin(finish(
                    runner,
                    attempt,
                    Event::Outcome(Outcome::Fail { error }),
                ))
                .await;
            }
            Ok(CommitResult::Gone) => return,
            Err(e) if e.is_transient() && std::time::Instant::now() < give_up => {
                warn!(workflow_id = %claim.id, error = %e, "Commit failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                warn!(workflow_id = %claim.id, error = %e, "Commit failed; the lease will expire and the attempt rerun.");
                return;
            }
        }
    }
}

/// An attempt's entry in its workflow's history (`<id>:hist`), as the API and `drover` show it.
/// Serialized straight from here, fields in name order, as the JSON object of the release before
/// had them.
#[derive(serde::Serialize)]
struct HistoryEntry<'a> {
    attempt: u32,
    end_ms: u64,
    error: Option<&'a str>,
    name: &'a str,
    outcome: &'a str,
    phase: Phase,
    start_ms: u64,
    step: usize,
    token: u64,
    worker: &'a str,
}

/// Counts a committed attempt by its outcome.
fn count_attempt(claim: &Claim, outcome: &impl std::fmt::Display) {
    drover_telemetry::metrics()
        .attempts
        .get_or_create(&AttemptLabels {
            kind: claim.kind.clone(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Children outlive nothing: when their parent fails or is cancelled, they are cancelled too.
async fn cancel_children(runner: &Runner, id: &str) {
    let Ok(children) = runner.store.children(id).await else {
        return;
    };
    for child in children.iter().filter(|c| !c.state.is_terminal()) {
        if let Err(e) = runner.store.cancel(&child.id, now_ms()).await {
            warn!(workflow_id = %id, child = %child.id, error = %e, "Cannot cancel a child.");
        }
    }
}

/// Periodic upkeep: trims finished workflows past the retention.
pub async fn housekeeping(runner: Arc<Runner>) {
    let retention_ms = runner.config.retention_secs * 1000;
    loop {
        let cutoff = now_ms().saturating_sub(retention_ms);
        loop {
            match runner.store.trim(cutoff, 500).await {
                Ok(500) => continue,
                Ok(n) => {
                    if n > 0 {
                        info!(deleted = n, "Trimmed finished workflows past retention.");
                    }
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "Trim failed; will retry.");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}
