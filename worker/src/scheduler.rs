//! The scheduler every worker process runs beside its steps: it sleeps until the earliest schedule
//! is due (or a schedule changes), takes the schedules due now from the `sched:due` index (a
//! bounded batch, so its cost follows the fire times due, not the number of schedules), decides
//! what each fire time becomes (start, or skip: a freeze, outside the catch-up window, a workflow
//! the registry refuses) and hands that to the store, which claims the fire time by compare-and-set
//! and creates the workflow in the same call. Replicas take different schedules (a taken one is
//! moved [`TAKE_LEASE`] ahead in the index until its fire call places it again); should two
//! still fire the same time, the second call writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_store::schedule::{
    self as store_schedule, Fire, FireMode, Fired, Verdict, fire_workflow, next_fire,
};
use drover_workflows::schedule::{Compiled, ScheduleSpec, rfc3339};
use futures::StreamExt;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{Runner, now_ms};

/// Schedules taken per look at the due index.
const BATCH: usize = 256;
/// How long a taken schedule is left to this scheduler before others may take it (a scheduler
/// that dies holding it delays its fire time by this much).
const TAKE_LEASE: Duration = Duration::from_secs(2);
/// Fire calls in flight at once.
const PARALLEL: usize = 64;
/// Longest sleep between looks (a schedule change wakes a sleeper sooner).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Fire times counted one by one when skipping a long outage; past this the count is a floor.
const MAX_COUNTED: u64 = 100_000;

/// Compiled specs by schedule id, with the version they were compiled from.
type Cache = Mutex<HashMap<String, (u64, Arc<Compiled>)>>;

/// Runs the schedules of `store`'s shard until the task is aborted (a worker runs one per shard).
/// Redis errors pause it (with backoff); they never end it.
pub async fn run(runner: Arc<Runner>, store: drover_store::Store) {
    let cache: Cache = Mutex::new(HashMap::new());
    // A schedule changed: a listener on `sched:wake` of its own, so the due instant itself is
    // timed by tokio (a blocking pop's timeout ends only at Redis's next timer tick, up to 100 ms
    // late at its default `hz 10`).
    let changed = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(store.clone(), changed.clone()));
    let mut backoff = Duration::from_millis(100);
    loop {
        match tick(&runner, &store, &cache, &changed).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                debug!(error = %e, "Scheduler: Redis unavailable; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if listener.is_finished() {
            break;
        }
    }
}

/// Wakes the scheduler whenever a schedule changes (`sched:wake`).
async fn listen(store: drover_store::Store, changed: Arc<Notify>) {
    const BLOCK: Duration = Duration::from_secs(5);
    let mut waiter = None;
    loop {
        if waiter.is_none() {
            match store.schedule_waiter(BLOCK).await {
                Ok(w) => waiter = Some(w),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if let Some(w) = waiter.as_mut() {
            match w.wait(BLOCK).await {
                Ok(true) => changed.notify_one(),
                Ok(false) => {}
                Err(_) => {
                    waiter = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

async fn tick(
    runner: &Arc<Runner>,
    store: &drover_store::Store,
    cache: &Cache,
    changed: &Notify,
) -> drover_store::Result<()> {
    let now = now_ms();
    let due = store.schedules_take(now, BATCH, TAKE_LEASE).await?;
    if due.is_empty() {
        let sleep = match store.schedules_next_due().await? {
            Some(at) => Duration::from_millis((at - now as i64).clamp(0, 1000) as u64),
            None => MAX_SLEEP,
        };
        if sleep.is_zero() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = changed.notified() => {}
        }
        return Ok(());
    }
    let results: Vec<drover_store::Result<()>> = futures::stream::iter(due)
        .map(|(sid, _)| fire_one(runner, store, cache, sid))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The compiled spec of a schedule, from the cache while its version holds (else read and
/// compiled); an error when the stored spec does not compile; none when the schedule is gone.
async fn compiled(
    store: &drover_store::Store,
    cache: &Cache,
    sid: &str,
    version: u64,
) -> drover_store::Result<Result<Arc<Compiled>, String>> {
    {
        let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, c)) = cache.get(sid)
            && *v == version
        {
            return Ok(Ok(c.clone()));
        }
    }
    let Some(rec) = store.schedule_get(sid).await? else {
        return Ok(Err("the schedule is gone".into()));
    };
    let spec: ScheduleSpec = match serde_json::from_value(rec.spec.clone()) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let c = match Compiled::compile(&spec) {
        Ok(c) => Arc::new(c),
        Err(e) => return Ok(Err(e.to_string())),
    };
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sid.to_string(), (rec.version, c.clone()));
    Ok(Ok(c))
}

async fn fire_one(
    runner: &Arc<Runner>,
    store: &drover_store::Store,
    cache: &Cache,
    sid: String,
) -> drover_store::Result<()> {
    let Some(head) = store.schedule_head(&sid).await? else {
        return Ok(());
    };
    let now = now_ms();
    if head.buffered
        && let Some(id) = store.schedule_buffer(&sid, now).await?
    {
        info!(schedule = %sid, workflow_id = %id, "Schedule started its buffered run.");
    }
    let (Some(fire_ms), Some(due_ms)) = (head.next_ms, head.due_ms) else {
        // Nothing to fire (a buffered run's recheck, or no fire time left): back where it belongs.
        return store.schedule_requeue(&sid, now).await;
    };
    if head.paused || due_ms > now as i64 {
        return store.schedule_requeue(&sid, now).await;
    }
    let compiled = match compiled(store, cache, &sid, head.version).await? {
        Ok(c) => c,
        Err(e) => {
            // A spec stored by an older build that this build refuses: say so once and stop it.
            let fire = Fire {
                mode: FireMode::Due,
                fire_ms,
                due_ms,
                next: None,
                verdict: Verdict::Skip {
                    reason: format!("the schedule no longer compiles ({e}); replace it"),
                    count: 1,
                    until_ms: fire_ms,
                },
                overlap: None,
                actor: None,
            };
            store.schedule_fire(&sid, &fire, now).await?;
            warn!(schedule = %sid, error = %e, "Schedule stopped: its spec does not compile.");
            return Ok(());
        }
    };
    let (next, decision) = decide(runner, store, &sid, &compiled, fire_ms, due_ms, now);
    let fire = Fire {
        mode: FireMode::Due,
        fire_ms,
        due_ms,
        next,
        verdict: match &decision {
            Decision::Start(wf) => Verdict::Start(wf),
            Decision::Skip {
                reason,
                count,
                until_ms,
            } => Verdict::Skip {
                reason: reason.clone(),
                count: *count,
                until_ms: *until_ms,
            },
        },
        overlap: None,
        actor: None,
    };
    match store.schedule_fire(&sid, &fire, now).await? {
        Fired::Started { id, cancelled } => info!(
            schedule = %sid, workflow_id = %id, fire = %rfc3339(fire_ms),
            late_ms = now as i64 - due_ms, cancelled = cancelled.as_deref().unwrap_or(""),
            "Schedule started a workflow."
        ),
        Fired::Skipped { reason } => {
            info!(schedule = %sid, fire = %rfc3339(fire_ms), %reason, "Schedule skipped a fire time.")
        }
        Fired::Buffered { id } => {
            info!(schedule = %sid, workflow_id = %id, "Schedule buffered a run behind the previous one.")
        }
        // Changed under it (replaced, paused): back where its new state says.
        Fired::Stale | Fired::Paused => store.schedule_requeue(&sid, now).await?,
        Fired::Existing { .. } | Fired::NotFound => {}
    }
    Ok(())
}

/// What a due fire time becomes.
enum Decision {
    Start(drover_workflows::NewWorkflow),
    Skip {
        reason: String,
        count: u64,
        until_ms: i64,
    },
}

/// Decides a due fire time; returns the schedule's next fire time with the decision.
fn decide(
    runner: &Runner,
    store: &drover_store::Store,
    sid: &str,
    compiled: &Compiled,
    fire_ms: i64,
    due_ms: i64,
    now: u64,
) -> (Option<store_schedule::Next>, Decision) {
    let spec = compiled.spec();
    let window_ms = spec.catchup_window_secs as i64 * 1000;
    let late = now as i64 - due_ms;
    let mut next = next_fire(sid, compiled, fire_ms);
    if late > window_ms {
        // Missed (everything was down): skip every fire time older than the catch-up window in
        // one entry; the first one inside it becomes next, and starts at once.
        let horizon = now as i64 - window_ms;
        let mut count = 1;
        let mut last = fire_ms;
        while let Some(n) = next {
            if n.due_ms >= horizon {
                break;
            }
            count += 1;
            last = n.fire_ms;
            if count >= MAX_COUNTED {
                next = next_fire(sid, compiled, horizon - 1);
                break;
            }
            next = next_fire(sid, compiled, n.fire_ms);
        }
        let reason = format!(
            "missed: {} late, outside the catch-up window of {} s",
            human(late),
            spec.catchup_window_secs
        );
        return (
            next,
            Decision::Skip {
                reason,
                count,
                until_ms: last,
            },
        );
    }
    if let Some(freeze) = compiled.freeze_at(fire_ms) {
        let reason = freeze.skip_reason();
        return (
            next,
            Decision::Skip {
                reason,
                count: 1,
                until_ms: fire_ms,
            },
        );
    }
    match fire_workflow(&runner.registry, store, sid, compiled, fire_ms, "", now) {
        Ok(mut wf) => {
            wf.trace = drover_telemetry::trace::start("schedule", &wf.kind, &wf.id);
            (next, Decision::Start(wf))
        }
        Err(e) => (
            next,
            Decision::Skip {
                reason: format!("the workflow was refused: {e}"),
                count: 1,
                until_ms: fire_ms,
            },
        ),
    }
}

fn human(ms: i64) -> String {
    if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 7_200_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}
