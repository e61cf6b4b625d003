//! Crash tests with real processes and real signals: worker processes of the `drover` binary killed
//! with SIGKILL at random while they run steps, and redis-server itself killed with SIGKILL mid-run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use drover_workflows::State;
use rand::Rng;
use serde_json::{Value, json};

use crate::harness::*;

fn log_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills a random worker about every `every` and starts a replacement until `done` says stop;
/// returns (worker name, time of death) for each kill.
async fn chaos(
    url: &str,
    workers: &mut [WorkerProcess],
    every: Duration,
    logs: &std::path::Path,
    deadline: Instant,
    mut done: impl AsyncFnMut() -> bool,
) -> Vec<(String, u64)> {
    let mut kills = Vec::new();
    let mut generation = 1;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "workflows did not finish in time; {} kills so far",
            kills.len()
        );
        tokio::time::sleep(every).await;
        let i = rand::rng().random_range(0..workers.len());
        workers[i].kill9();
        kills.push((workers[i].name.clone(), now_ms()));
        workers[i] = WorkerProcess::spawn(url, &format!("w{i}-{generation}"), logs);
        generation += 1;
    }
    kills
}

async fn all_finished(store: &drover_store::Store, n: usize) -> bool {
    let mut conn = store.connection();
    let mut finished = 0u64;
    for s in ["succeeded", "failed", "cancelled"] {
        let c: u64 = redis::cmd("ZCARD")
            .arg(format!("{}idx:state:{s}", store.prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        finished += c;
    }
    finished as usize >= n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_commit_each_step_once() {
    let redis = Redis::start();
    let store = redis.store().await;
    let logs = log_dir("crash");
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&redis.url(), &format!("w{i}-0"), &logs))
        .collect();
    let input = json!({"steps": 5, "min_ms": 20, "max_ms": 400, "fail_rate": 0.15, "max_attempts": 12, "retry_ms": 50});
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(submit(&store, "synthetic", input.clone(), 0).await);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let kills = chaos(
        &redis.url(),
        &mut workers,
        Duration::from_secs(2),
        &logs,
        deadline,
        async || all_finished(&store, 200).await,
    )
    .await;
    assert!(
        kills.len() >= 3,
        "the run was too short to kill workers mid-flight ({} kills)",
        kills.len()
    );

    let views = wait_all_finished(&store, &ids, Duration::from_secs(30)).await;
    let mut expired = 0;
    for v in &views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
        let history = v.history.as_ref().unwrap();
        expired += history
            .iter()
            .filter(|h| h["outcome"] == "lease-expired")
            .count();
        let outputs = v.outputs.as_ref().unwrap();
        for step in 0..5u64 {
            let commit = the_commit(history, step, &v.id);
            let out = &outputs[&(step as usize)];
            assert_eq!(
                out["token"], commit["token"],
                "{} step {step}: output not from the lease holder",
                v.id
            );
            assert_eq!(out["worker"], commit["worker"], "{} step {step}", v.id);
        }
    }
    assert!(
        expired > 0,
        "no attempt died with its worker: the kills did not hit running steps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_never_exceed_capacity_and_never_leak_under_crashes() {
    let redis = Redis::start();
    let store = redis.store().await;
    let logs = log_dir("sem");
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&redis.url(), &format!("w{i}-0"), &logs))
        .collect();
    let cluster = json!({"name": "cluster", "capacity": 3});
    let node = json!({"name": "node-a", "capacity": 1, "scope": "workflow"});
    let mut ids = Vec::new();
    for i in 0..60 {
        let permits = if i % 3 == 0 {
            json!([cluster, node])
        } else {
            json!([cluster])
        };
        let input = json!({"steps": 3, "min_ms": 50, "max_ms": 300, "fail_rate": 0.1, "max_attempts": 12,
            "retry_ms": 50, "probe": true, "permits": permits});
        ids.push(submit(&store, "synthetic", input, 0).await);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let kills = chaos(
        &redis.url(),
        &mut workers,
        Duration::from_millis(1500),
        &logs,
        deadline,
        async || all_finished(&store, 60).await,
    )
    .await;
    for v in wait_all_finished(&store, &ids, Duration::from_secs(30)).await {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
    }
    drop(workers);

    // Rebuild who held what when, from the steps' own reports; a killed worker held until it died.
    let died: HashMap<String, u64> = kills.into_iter().collect();
    let mut conn = store.connection();
    let events: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}probe", store.prefix()))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut open: BTreeMap<(String, u64), Value> = BTreeMap::new();
    let mut intervals: Vec<(u64, u64, Vec<String>, String)> = Vec::new();
    for e in events
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
    {
        let key = (
            e["workflow_id"].as_str().unwrap().to_string(),
            e["token"].as_u64().unwrap(),
        );
        if e["what"] == "enter" {
            open.insert(key, e);
        } else if let Some(start) = open.remove(&key) {
            intervals.push((
                start["at_ms"].as_u64().unwrap(),
                e["at_ms"].as_u64().unwrap(),
                names(&start),
                key.0,
            ));
        }
    }
    for (_, start) in open {
        let worker = start["worker"].as_str().unwrap();
        let end = *died
            .get(worker)
            .unwrap_or_else(|| panic!("an attempt of live worker {worker} never ended"));
        intervals.push((
            start["at_ms"].as_u64().unwrap(),
            end,
            names(&start),
            start["workflow_id"].as_str().unwrap().into(),
        ));
    }
    assert_eq!(
        max_overlap(&intervals, "cluster"),
        3.min(max_overlap(&intervals, "cluster"))
    );
    assert!(
        max_overlap(&intervals, "cluster") <= 3,
        "cluster semaphore exceeded"
    );
    assert!(
        max_overlap(&intervals, "cluster") >= 2,
        "the test never ran steps concurrently"
    );
    // The node lock is held per workflow: no two workflows' spans on node-a overlap.
    let mut spans: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (s, e, permits, wf) in &intervals {
        if permits.iter().any(|p| p == "node-a") {
            let span = spans.entry(wf.clone()).or_insert((*s, *e));
            span.0 = span.0.min(*s);
            span.1 = span.1.max(*e);
        }
    }
    let spans: Vec<(u64, u64, Vec<String>, String)> = spans
        .into_iter()
        .map(|(wf, (s, e))| (s, e, vec!["node-a".to_string()], wf))
        .collect();
    assert!(
        max_overlap(&spans, "node-a") <= 1,
        "two workflows held the node lock at once"
    );

    // Nothing leaked: no holders, no waiters, no held sets.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}sem*", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "permits or waiters left behind: {keys:?}");
    let held: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}wf:*:held", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(held.is_empty(), "workflow locks left behind: {held:?}");
}

fn names(e: &Value) -> Vec<String> {
    e["permits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// Most intervals holding `name` at one instant (an interval ending at t frees before one starting at t).
fn max_overlap(intervals: &[(u64, u64, Vec<String>, String)], name: &str) -> usize {
    let mut points: Vec<(u64, i32)> = Vec::new();
    for (s, e, _, _) in intervals.iter().filter(|i| i.2.iter().any(|p| p == name)) {
        points.push((*s, 1));
        points.push((*e, -1));
    }
    points.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_no_acknowledged_submission() {
    let mut redis = Redis::start_with(true);
    let store = redis.store().await;
    let logs = log_dir("redis-restart");
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn(&redis.url(), &format!("r{i}"), &logs))
        .collect();
    let submitter = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let registry = drover_kinds::builtin();
            let input = json!({"steps": 3, "min_ms": 10, "max_ms": 100});
            let end = Instant::now() + Duration::from_secs(6);
            while Instant::now() < end {
                let submission = drover_store::Submission::new("synthetic", input.clone());
                let submitted = store
                    .submit_new(&registry, uuid_like(), submission, None, now_ms())
                    .await;
                if let Ok(s) = submitted {
                    acked.push(s.id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    let acked = submitter.await.unwrap();
    assert!(
        acked.len() > 100,
        "too few submissions to mean anything: {}",
        acked.len()
    );
    let views = wait_all_finished(&store, &acked, Duration::from_secs(120)).await;
    for v in views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
    }
    drop(workers);
}

async fn wait_leased(store: &drover_store::Store, id: &str) -> String {
    wait_for(Duration::from_secs(10), "the step to be leased", || async {
        store.get(id).await.unwrap().unwrap().waiting_on.as_deref() == Some("leased")
    })
    .await;
    store
        .get(id)
        .await
        .unwrap()
        .unwrap()
        .lease_worker
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_claiming_and_lets_the_running_step_finish() {
    let redis = Redis::start();
    let store = redis.store().await;
    let logs = log_dir("sigterm");
    let mut worker = WorkerProcess::spawn(&redis.url(), "graceful", &logs);
    let id = submit(
        &store,
        "synthetic",
        json!({"steps": 2, "min_ms": 1500, "max_ms": 1500}),
        0,
    )
    .await;
    wait_leased(&store, &id).await;
    worker.terminate();
    assert!(
        worker.wait_exit(Duration::from_secs(15)).await,
        "graceful stop must exit 0"
    );
    let v = store.get(&id).await.unwrap().unwrap();
    let history = v.history.unwrap();
    assert_eq!(
        history.len(),
        1,
        "the running step finished and nothing new started: {history:?}"
    );
    assert_eq!(history[0]["outcome"], "done");
    assert_eq!(history[0]["worker"], "graceful");
    assert_eq!(v.step, 1, "the next step is queued for another worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_step_resumes_within_the_lease_plus_one_idle_wait() {
    let redis = Redis::start();
    let store = redis.store().await;
    let logs = log_dir("recovery");
    let mut workers = [
        WorkerProcess::spawn(&redis.url(), "rec-a", &logs),
        WorkerProcess::spawn(&redis.url(), "rec-b", &logs),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = submit(
        &store,
        "synthetic",
        json!({"steps": 1, "min_ms": 5000, "max_ms": 5000}),
        0,
    )
    .await;
    let holder = wait_leased(&store, &id).await;
    let victim = workers
        .iter_mut()
        .find(|w| w.name == holder)
        .expect("holder is one of ours");
    victim.kill9();
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "another worker to take the step over",
        || async {
            let v = store.get(&id).await.unwrap().unwrap();
            v.waiting_on.as_deref() == Some("leased")
                && v.lease_worker.as_deref().is_some_and(|w| w != holder)
        },
    )
    .await;
    let took = killed.elapsed();
    // Lease 1500 ms + idle wait 300 ms, with room for a loaded 2-core machine.
    assert!(
        took < Duration::from_millis(1500 + 300 + 1500),
        "resumed after {took:?}"
    );
}

/// The one history entry that committed `step` (it fails if there are none or several).
/// Asserts that each of the first `steps` steps of `v` kept the output of the attempt whose commit
/// its history records (the lease holder's, by fencing token).
pub(crate) fn committed_once(v: &drover_store::WorkflowView, steps: u64) {
    let history = v.history.as_ref().unwrap();
    let outputs = v.outputs.as_ref().unwrap();
    for step in 0..steps {
        let commit = the_commit(history, step, &v.id);
        assert_eq!(
            outputs[&(step as usize)]["token"],
            commit["token"],
            "{} step {step}: output not from the lease holder",
            v.id
        );
    }
}

pub(crate) fn the_commit<'a>(history: &'a [Value], step: u64, id: &str) -> &'a Value {
    let commits: Vec<&Value> = history
        .iter()
        .filter(|h| h["step"] == step && h["outcome"] == "done")
        .collect();
    assert_eq!(
        commits.len(),
        1,
        "{id} step {step} committed {} times",
        commits.len()
    );
    commits[0]
}

/// A worker with a long lease (so a hand-back and a lease expiry differ by seconds) and a short
/// shutdown grace, logging at info.
fn long_lease_worker(
    redis_url: &str,
    name: &str,
    logs: &Path,
    lease_ms: u64,
    grace_ms: u64,
) -> WorkerProcess {
    WorkerProcess::spawn_with(
        redis_url,
        name,
        logs,
        &[
            ("DROVER_WORKER_LEASE_MS", &lease_ms.to_string()),
            ("DROVER_WORKER_SHUTDOWN_GRACE_MS", &grace_ms.to_string()),
            ("DROVER_WORKER_CONCURRENCY", "4"),
            ("DROVER_LOG", "info"),
        ],
    )
}

/// Waits until `worker` blocks on the wake list, idle (so an enqueue wakes it at once).
async fn wait_idle(store: &drover_store::Store, worker: &str) {
    wait_for(Duration::from_secs(15), "the worker to idle", || async {
        let mut conn = store.connection();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{}sleepers", store.prefix()))
            .arg(worker)
            .query_async(&mut conn)
            .await
            .unwrap();
        score.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_cut_off_step_back_and_another_worker_resumes_it_at_once() {
    const LEASE_MS: u64 = 15_000;
    const GRACE_MS: u64 = 500;
    const STEP_MS: u64 = 8_000;
    let redis = Redis::start();
    let store = redis.store().await;
    let logs = log_dir("handback");
    let mut first = long_lease_worker(&redis.url(), "hb-first", &logs, LEASE_MS, GRACE_MS);
    let id = submit(
        &store,
        "synthetic",
        json!({"steps": 2, "min_ms": STEP_MS, "max_ms": STEP_MS}),
        0,
    )
    .await;
    assert_eq!(wait_leased(&store, &id).await, "hb-first");
    let _second = long_lease_worker(&redis.url(), "hb-second", &logs, LEASE_MS, GRACE_MS);
    wait_idle(&store, "hb-second").await;

    // The grace period ends long before the step does: the step is cut off.
    first.terminate();
    assert!(
        first.wait_exit(Duration::from_secs(10)).await,
        "graceful stop must exit 0"
    );
    wait_for(
        Duration::from_millis(LEASE_MS + 10_000),
        "the second worker to take the step over",
        || async {
            let v = store.get(&id).await.unwrap().unwrap();
            v.lease_worker.as_deref() == Some("hb-second")
        },
    )
    .await;

    // The handed-back attempt can neither renew nor commit any more.
    let history = store.get(&id).await.unwrap().unwrap().history.unwrap();
    let cut = history
        .iter()
        .find(|h| h["outcome"] == "handed-back")
        .unwrap_or_else(|| panic!("the cut-off attempt was not handed back: {history:#?}"))
        .clone();
    let old_token = cut["token"].as_u64().unwrap();
    assert_eq!(
        store
            .renew(
                &id,
                old_token,
                now_ms(),
                Duration::from_millis(LEASE_MS),
                None
            )
            .await
            .unwrap(),
        drover_store::Renewal::Lost
    );
    let mut conn = store.connection();
    let late_commit: Vec<String> = redis::cmd("FCALL")
        .arg("drover_commit")
        .arg(1)
        .arg(format!("{}wf:{id}", store.prefix()))
        .arg(store.prefix())
        .arg(&id)
        .arg(old_token)
        .arg(now_ms())
        .arg(1000)
        .arg("{}")
        .arg("")
        .arg(0)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        late_commit,
        ["stale"],
        "a late commit of the cut-off attempt"
    );

    let v = wait_all_finished(&store, std::slice::from_ref(&id), Duration::from_secs(40))
        .await
        .remove(0);
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let history = v.history.unwrap();
    assert!(
        history.iter().all(|h| h["outcome"] != "lease-expired"),
        "a lease expired: {history:#?}"
    );
    let handed: Vec<&Value> = history
        .iter()
        .filter(|h| h["outcome"] == "handed-back")
        .collect();
    assert_eq!(handed.len(), 1, "{history:#?}");
    assert_eq!(handed[0]["step"], 0);
    assert_eq!(handed[0]["worker"], "hb-first");
    assert_eq!(handed[0]["attempt"], 1);
    let cut_after = handed[0]["end_ms"].as_u64().unwrap() - handed[0]["start_ms"].as_u64().unwrap();
    assert!(
        cut_after < STEP_MS,
        "the step was not cut off: ran {cut_after} ms"
    );
    for step in 0..2u64 {
        let commit = the_commit(&history, step, &id);
        assert_eq!(commit["worker"], "hb-second", "step {step}");
        // The hand-back cost no attempt: the resumed run is the step's first attempt again.
        assert_eq!(commit["attempt"], 1, "step {step}: {history:#?}");
    }

    // Handover: from the hand-back, as the first worker exits, to the second worker's lease.
    let resumed = history
        .iter()
        .find(|h| h["step"] == 0 && h["outcome"] == "done")
        .unwrap();
    let handover = resumed["start_ms"]
        .as_u64()
        .unwrap()
        .checked_sub(handed[0]["end_ms"].as_u64().unwrap())
        .expect("the step resumed before it was handed back");
    eprintln!("handover after SIGTERM + {GRACE_MS} ms grace: {handover} ms (lease {LEASE_MS} ms)");
    assert!(
        handover < 3_000,
        "the second worker resumed the step {handover} ms after the hand-back"
    );
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(
        log.contains("Step handed back at shutdown."),
        "the first worker's log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_back_frees_lease_and_permits_costs_no_attempt_and_keeps_a_pause() {
    let redis = Redis::start();
    let store = redis.store().await;
    let lease = Duration::from_secs(15);
    let id = submit(
        &store,
        "synthetic",
        json!({"steps": 2, "permits": [{"name": "cluster", "capacity": 1}]}),
        0,
    )
    .await;
    let claim = store
        .claim("w1", now_ms(), lease, 10, 1, Duration::ZERO)
        .await
        .unwrap()
        .claims
        .remove(0);
    let mut conn = store.connection();
    let holders = async |conn: &mut drover_store::Conn| -> u64 {
        redis::cmd("ZCARD")
            .arg(format!("{}sem:cluster", store.prefix()))
            .query_async(conn)
            .await
            .unwrap()
    };
    assert_eq!(holders(&mut conn).await, 1);
    store.pause(&id, now_ms()).await.unwrap();

    assert_eq!(
        store.handback(&id, claim.token, now_ms()).await.unwrap(),
        drover_store::Handback::Released
    );
    assert_eq!(holders(&mut conn).await, 0, "the step's permit is released");
    let lease_deadline: Option<u64> = redis::cmd("ZSCORE")
        .arg(format!("{}leases", store.prefix()))
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lease_deadline, None, "the lease is released");
    let v = store.get(&id).await.unwrap().unwrap();
    assert_eq!(v.attempt, 1, "a hand-back costs no attempt");
    assert_eq!(v.lease_worker, None);
    let last = v.history.unwrap().pop().unwrap();
    assert_eq!(last["outcome"], "handed-back");
    assert_eq!(last["token"], claim.token);
    assert_eq!(last["worker"], "w1");

    // Only the lease holder hands back, once; an unknown workflow is gone.
    assert_eq!(
        store.handback(&id, claim.token, now_ms()).await.unwrap(),
        drover_store::Handback::Stale
    );
    assert_eq!(
        store
            .handback("no-such-workflow", 1, now_ms())
            .await
            .unwrap(),
        drover_store::Handback::Gone
    );

    // The paused workflow's task is parked by the next claim, and runs once resumed.
    let claimed = store
        .claim("w2", now_ms(), lease, 10, 1, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        claimed.claims.is_empty(),
        "a paused workflow's step started"
    );
    let v = store.get(&id).await.unwrap().unwrap();
    assert_eq!(v.waiting_on.as_deref(), Some("paused"));
    store.resume(&id, now_ms()).await.unwrap();
    let again = store
        .claim("w2", now_ms(), lease, 10, 1, Duration::ZERO)
        .await
        .unwrap()
        .claims
        .remove(0);
    assert_eq!((again.step, again.attempt), (0, 1));
    assert!(again.token > claim.token);
    assert_eq!(holders(&mut conn).await, 1);
}
