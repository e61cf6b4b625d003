//! Engine behaviour against a real Redis: fencing, no forks, semaphores, timers and wake-up,
//! priorities, signals, pause/resume, cancellation with compensation, fan-out, bounded backlogs and
//! retention. Workers run in-process here; crash tests with processes are in `crash.rs`.

use std::time::{Duration, Instant};

use drover_store::{Commit, CommitResult, ControlResult};
use drover_workflows::{Event, Outcome, State, decide};
use serde_json::json;

use crate::harness::*;

fn lease() -> Duration {
    Duration::from_millis(1500)
}

async fn claim(store: &drover_store::Store, worker: &str) -> Option<drover_store::Claim> {
    store
        .claim(worker, now_ms(), lease(), 100, 1, Duration::ZERO)
        .await
        .expect("claim")
        .claims
        .pop()
}

/// What the engine decides for `c` on `outcome`, as the worker asks it.
fn transition(c: &drover_store::Claim, outcome: Outcome, now: u64) -> drover_workflows::Transition {
    let loaded = drover_kinds::builtin().load(&c.kind, &c.input).unwrap();
    let wf = drover_workflows::Versioned::new(loaded.as_ref(), c.steps.as_deref());
    decide(
        &c.snapshot(),
        wf.steps(),
        Event::Outcome(outcome),
        now,
        0.5,
        &|s, p| wf.permits(s, p),
    )
}

/// Commits `outcome` for `c` the way the worker does.
async fn commit(
    store: &drover_store::Store,
    c: &drover_store::Claim,
    outcome: Outcome,
) -> &'static str {
    commit_as(store, c, outcome, None).await.0
}

/// Commits `outcome` for `c` the way the worker does, optionally asking for the next step.
async fn commit_as(
    store: &drover_store::Store,
    c: &drover_store::Claim,
    outcome: Outcome,
    continue_as: Option<&str>,
) -> (&'static str, Option<drover_store::Claim>) {
    let t = transition(c, outcome, now_ms());
    let history =
        json!({"step": c.step, "attempt": c.attempt, "token": c.token, "outcome": t.outcome});
    let commit = Commit::new(&t, &history, Vec::new(), &c.id).unwrap();
    let continue_as = continue_as.map(|worker| drover_store::Continue {
        worker,
        lease: lease(),
        from: c,
        transition: &t,
    });
    match store
        .commit(&c.id, c.token, now_ms(), &commit, continue_as)
        .await
        .unwrap()
    {
        CommitResult::Applied => ("applied", None),
        CommitResult::Continued(next) => ("continued", Some(*next)),
        CommitResult::Duplicate => ("duplicate", None),
        CommitResult::Stale => ("stale", None),
        CommitResult::DescendantLimit { .. } => ("limit", None),
        CommitResult::Gone => ("gone", None),
    }
}

#[tokio::test]
async fn stale_token_is_refused_and_a_rerun_cannot_fork_the_next_step() {
    let redis = Redis::start();
    let store = redis.store().await;
    let id = submit(&store, "synthetic", json!({"steps": 3}), 0).await;

    let first = claim(&store, "a").await.expect("step 0 claimed");
    assert_eq!((first.id.as_str(), first.step), (id.as_str(), 0));
    // The lease expires without renewal; another worker reclaims the same step with a newer token.
    tokio::time::sleep(lease() + Duration::from_millis(100)).await;
    let second = claim(&store, "b")
        .await
        .expect("step 0 reclaimed after lease expiry");
    assert_eq!(second.step, 0);
    assert!(second.token > first.token, "fencing tokens must grow");
    assert_eq!(second.attempt, 2, "a lease expiry counts an attempt");

    // The old holder's commit is refused; the new holder's applies exactly once.
    assert_eq!(
        commit(&store, &first, Outcome::Done(json!("old"))).await,
        "stale"
    );
    assert_eq!(
        commit(&store, &second, Outcome::Done(json!("new"))).await,
        "applied"
    );
    assert_eq!(
        commit(&store, &second, Outcome::Done(json!("new"))).await,
        "duplicate"
    );

    // Exactly one task exists for step 1.
    let next = claim(&store, "c").await.expect("step 1");
    assert_eq!(next.step, 1);
    assert!(claim(&store, "d").await.is_none(), "step 1 must exist once");
    let view = store.get(&id).await.unwrap().unwrap();
    assert_eq!(view.outputs.unwrap().get(&0), Some(&json!("new")));
    let hist = view.history.unwrap();
    assert_eq!(
        hist.iter()
            .filter(|h| h["outcome"] == "lease-expired")
            .count(),
        1,
        "{hist:?}"
    );
}

/// `drover_commit` of `c` as a worker of the release before calls it, asking to continue as worker
/// "old" with `continue` "1": `commit` is the commit's line or that release's JSON object; the
/// commit has an output and a next task, and no result, progress, error or permits.
fn old_commit(
    store: &drover_store::Store,
    c: &drover_store::Claim,
    now: u64,
    commit: &str,
    history: &serde_json::Value,
    output: &str,
    task: &str,
) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("drover_commit")
        .arg(1)
        .arg(format!("{}wf:{}", store.prefix(), c.id))
        .arg(store.prefix())
        .arg(&c.id)
        .arg(c.token)
        .arg(now)
        .arg(1000)
        .arg(commit)
        .arg("old")
        .arg(1500)
        .arg("1")
        .arg(history.to_string())
        .arg(output)
        .arg("")
        .arg(task)
        .arg("")
        .arg("")
        .arg("");
    cmd
}

/// A worker of the release before sends its commit's fields as one JSON object and reads a
/// continuation nested in the reply: the library takes that too, so the old workers of a rolling
/// upgrade carry on against the new library.
#[tokio::test]
async fn a_commit_of_the_release_before_still_applies_and_continues() {
    let redis = Redis::start();
    let store = redis.store().await;
    let id = submit(&store, "synthetic", json!({"steps": 3}), 0).await;
    let c = claim(&store, "old").await.unwrap();
    let now = now_ms();
    let t = transition(&c, Outcome::Done(json!(7)), now);
    let commit = json!({
        "state": t.state.as_str(), "step": t.step, "attempt": t.attempt, "phase": "forward",
        "output_step": 0, "due": now, "wait": "none", "children": [],
        "handles_cancel": t.handles_cancel,
    });
    let history = json!({"step": 0, "attempt": 1, "token": c.token, "outcome": "done"});
    let task = serde_json::to_string(t.next.as_ref().unwrap()).unwrap();
    let mut conn = store.connection();
    let reply: redis::Value =
        old_commit(&store, &c, now, &commit.to_string(), &history, "7", &task)
            .query_async(&mut conn)
            .await
            .unwrap();
    // {"ok", "continued", {id, token, signals, kids_step, lease_until}}
    let redis::Value::Array(items) = &reply else {
        panic!("{reply:?}")
    };
    let word = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap();
    assert_eq!(
        (word(&items[0]).as_str(), word(&items[1]).as_str()),
        ("ok", "continued")
    );
    let redis::Value::Array(claim) = &items[2] else {
        panic!("the continuation is not nested: {reply:?}")
    };
    assert_eq!(claim.len(), 5, "{reply:?}");
    assert_eq!(word(&claim[0]), id);
    assert!(word(&claim[1]).parse::<u64>().unwrap() > c.token);
    assert_eq!(claim[2], redis::Value::Array(Vec::new()));

    let view = store.get(&id).await.unwrap().unwrap();
    assert_eq!(view.step, 1);
    assert_eq!(view.state, State::Running);
    assert_eq!(view.outputs.unwrap().get(&0), Some(&json!(7)));
}

#[tokio::test]
async fn a_commit_can_hand_the_next_step_back_unless_more_urgent_work_waits() {
    let redis = Redis::start();
    let store = redis.store().await;
    submit(&store, "synthetic", json!({"steps": 3}), 0).await;
    let c = claim(&store, "w").await.unwrap();
    let (result, next) = commit_as(&store, &c, Outcome::Done(json!(0)), Some("w")).await;
    assert_eq!(result, "continued");
    let next = next.unwrap();
    assert_eq!(
        (next.id.as_str(), next.step, next.attempt),
        (c.id.as_str(), 1, 1)
    );
    assert!(next.token > c.token, "a fresh lease with a fresh token");
    assert!(
        claim(&store, "other").await.is_none(),
        "the continued step is leased, not queued"
    );
    // A more urgent workflow waiting in the queue gets the worker instead.
    submit(&store, "synthetic", json!({"steps": 1}), 90).await;
    let (result, next) = commit_as(&store, &next, Outcome::Done(json!(1)), Some("w")).await;
    assert_eq!((result, next.is_none()), ("applied", true));
    let urgent = claim(&store, "w").await.unwrap();
    assert_eq!(urgent.priority, 90);
}

/// A synthetic workflow of 3 steps whose step 1 waits for signal "go" (and whose step 2 fails, so
/// that step 1's compensation runs), claimed again by worker "w" once the signal woke it.
async fn woken_by_a_signal(store: &drover_store::Store) -> drover_store::Claim {
    let id = submit(
        store,
        "synthetic",
        json!({"steps": 3, "compensate": true, "fail_step": 2,
               "signal": {"step": 1, "name": "go"}}),
        0,
    )
    .await;
    let c0 = claim(store, "w").await.unwrap();
    let (_, c1) = commit_as(store, &c0, Outcome::Done(json!(0)), Some("w")).await;
    let c1 = c1.expect("step 1 continued");
    assert!(c1.signals.is_empty() && c1.delivered.is_empty());
    let wait = Outcome::WaitSignal { name: "go".into() };
    assert_eq!(commit_as(store, &c1, wait, Some("w")).await.0, "applied");
    let limits = drover_store::SignalLimits::default();
    let signalled = store
        .signal(&id, "go", &json!({"n": 1}), limits, now_ms())
        .await
        .unwrap();
    assert!(matches!(signalled, ControlResult::Ok(_)));
    let c1 = claim(store, "w").await.expect("step 1 woken by its signal");
    assert_eq!((c1.id.as_str(), c1.step), (id.as_str(), 1));
    assert_eq!(c1.signals.get("go"), Some(&json!({"n": 1})));
    c1
}

/// A continued lease's reply no longer carries the signals delivered so far (the worker keeps
/// them from its claim, as nothing writes them while it holds the lease): a step the chain comes
/// back to, here step 1's compensation, still sees the signal its forward run received. A worker of
/// the release before (`continue` "1") still gets them in the reply.
#[tokio::test]
async fn a_continued_step_sees_the_signals_its_claim_read() {
    let redis = Redis::start();
    let store = redis.store().await;
    let c1 = woken_by_a_signal(&store).await;
    let (_, c2) = commit_as(&store, &c1, Outcome::Done(json!(1)), Some("w")).await;
    let c2 = c2.expect("step 2 continued");
    assert_eq!(c2.step, 2);
    assert!(
        c2.signals.is_empty(),
        "step 2 got step 1's signal: {:?}",
        c2.signals
    );
    let fail = Outcome::Fail { error: "no".into() };
    let (result, back) = commit_as(&store, &c2, fail, Some("w")).await;
    assert_eq!(result, "continued");
    let back = back.unwrap();
    assert_eq!(
        (back.step, back.phase),
        (1, drover_workflows::Phase::Compensate)
    );
    assert_eq!(back.signals.get("go"), Some(&json!({"n": 1})));

    // Step 1 of another such workflow, committed as a worker of the release before commits (with
    // `continue` "1"): the reply ends with the flat pairs of every delivered signal.
    let c1 = woken_by_a_signal(&store).await;
    let now = now_ms();
    let t = transition(&c1, Outcome::Done(json!(1)), now);
    let next = t.next.as_ref().unwrap();
    // state step attempt phase due wait handles_cancel cause(none) output_step resume_from(none)
    // max_descendants
    let line = format!(
        "{} {} {} forward {} none {}  1  0",
        t.state.as_str(),
        t.step,
        t.attempt,
        next.due_ms,
        u8::from(t.handles_cancel),
    );
    let history = json!({"step": 1, "attempt": 1, "token": c1.token, "outcome": "done"});
    let task = serde_json::to_string(next).unwrap();
    let mut conn = store.connection();
    let reply: Vec<String> = old_commit(&store, &c1, now, &line, &history, "1", &task)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(&reply[..2], ["ok", "continued"], "{reply:?}");
    assert_eq!(&reply[6..], ["1:go", r#"{"n":1}"#], "{reply:?}");
}

/// The record's `lease_until` and the workflow's score in `leases`.
async fn lease_until(store: &drover_store::Store, id: &str) -> (Option<u64>, Option<u64>) {
    let mut conn = store.connection();
    let field: Option<u64> = redis::cmd("HGET")
        .arg(format!("{}wf:{id}", store.prefix()))
        .arg("lease_until")
        .query_async(&mut conn)
        .await
        .unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{}leases", store.prefix()))
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    (field, score.map(|s| s as u64))
}

#[tokio::test]
async fn a_continued_step_keeps_a_fresh_lease_and_extends_an_aging_one() {
    let redis = Redis::start();
    let store = redis.store().await;
    let id = submit(&store, "synthetic", json!({"steps": 4}), 0).await;
    let c = claim(&store, "w").await.unwrap();
    let first = lease_until(&store, &id).await;
    assert_eq!(first, (Some(c.lease_until_ms), Some(c.lease_until_ms)));
    assert!(c.lease_until_ms >= c.lease_start_ms + lease().as_millis() as u64);

    // Continued at once: the same deadline, nothing written to `leases`.
    let (result, next) = commit_as(&store, &c, Outcome::Done(json!(0)), Some("w")).await;
    assert_eq!(result, "continued");
    let next = next.unwrap();
    assert_eq!(next.lease_until_ms, c.lease_until_ms);
    assert_eq!(lease_until(&store, &id).await, first);

    // Continued after more than a sixth of the lease: extended, record and index alike.
    tokio::time::sleep(lease() / 6 + Duration::from_millis(100)).await;
    let (result, third) = commit_as(&store, &next, Outcome::Done(json!(1)), Some("w")).await;
    assert_eq!(result, "continued");
    let third = third.unwrap();
    assert!(third.lease_until_ms > c.lease_until_ms);
    assert!(third.lease_until_ms >= third.lease_start_ms + lease().as_millis() as u64);
    assert_eq!(
        lease_until(&store, &id).await,
        (Some(third.lease_until_ms), Some(third.lease_until_ms))
    );

    // A renewal moves both; a commit that does not continue removes both.
    let renewed_at = now_ms();
    store
        .renew(&id, third.token, renewed_at, lease(), None)
        .await
        .unwrap();
    let until = renewed_at + lease().as_millis() as u64;
    assert_eq!(lease_until(&store, &id).await, (Some(until), Some(until)));
    assert_eq!(
        commit(&store, &third, Outcome::Done(json!(2))).await,
        "applied"
    );
    assert_eq!(lease_until(&store, &id).await, (None, None));
}

#[tokio::test]
async fn a_batch_of_commits_applies_each_on_its_own() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&store, "synthetic", json!({"steps": 2}), 0).await);
    }
    let claims = store
        .claim("w", now_ms(), lease(), 100, 4, Duration::ZERO)
        .await
        .unwrap()
        .claims;
    assert_eq!(claims.len(), 4);
    let requests: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let loaded = drover_kinds::builtin().load(&c.kind, &c.input).unwrap();
            let wf = drover_workflows::Versioned::new(loaded.as_ref(), c.steps.as_deref());
            let t = decide(
                &c.snapshot(),
                wf.steps(),
                Event::Outcome(Outcome::Done(json!(k))),
                now_ms(),
                0.5,
                &|s, p| wf.permits(s, p),
            );
            let commit = Commit::new(&t, &json!({"step": 0}), Vec::new(), &c.id).unwrap();
            // The second carries a token that does not hold the lease.
            let token = if k == 1 { c.token + 1000 } else { c.token };
            drover_store::CommitRequest::new(&c.id, token, now_ms(), &commit, None).unwrap()
        })
        .collect();
    // The third's history key is not a list: its commit fails at its first write.
    let mut conn = store.connection();
    let broken = format!("{}wf:{}:hist", store.prefix(), claims[2].id);
    let _: () = redis::cmd("SET")
        .arg(&broken)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();

    let replies = store.commit_batch(&requests).await.unwrap();
    let results: Vec<String> = replies
        .into_iter()
        .map(|r| match r.and_then(|r| r.result(now_ms(), None)) {
            Ok(CommitResult::Applied) => "applied".to_string(),
            Ok(CommitResult::Stale) => "stale".to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    assert_eq!(results[0], "applied");
    assert_eq!(results[1], "stale");
    assert!(results[2].contains("WRONGTYPE"), "{results:?}");
    assert_eq!(results[3], "applied", "commits after a failed one apply");

    // The failed commit wrote nothing (its step is still the first, as is the stale one's), and
    // it applies once the key is fixed.
    let _: () = redis::cmd("DEL")
        .arg(&broken)
        .query_async(&mut conn)
        .await
        .unwrap();
    for (k, c) in claims.iter().enumerate() {
        let view = store.get(&c.id).await.unwrap().unwrap();
        assert_eq!(view.step, if k == 1 || k == 2 { 0 } else { 1 }, "{k}");
    }
    let again = store.commit_batch(&requests[2..3]).await.unwrap();
    assert!(matches!(
        again
            .into_iter()
            .next()
            .unwrap()
            .unwrap()
            .result(now_ms(), None),
        Ok(CommitResult::Applied)
    ));

    assert!(store.commit_batch(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn only_sleeping_workers_are_woken_and_dead_sleepers_expire() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut conn = store.connection();
    let key = |k: &str| format!("{}{k}", store.prefix());
    let idle = store
        .claim("w1", now_ms(), lease(), 100, 1, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(idle.claims.is_empty());
    let sleepers: u64 = redis::cmd("ZCARD")
        .arg(key("sleepers"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sleepers, 1);
    submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    let wakes: u64 = redis::cmd("LLEN")
        .arg(key("wake"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(wakes, 1, "a sleeper is woken");
    // w1 dies asleep; once its block has ended, any claim forgets it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .claim("w2", now_ms(), lease(), 100, 1, Duration::ZERO)
        .await
        .unwrap();
    let sleepers: u64 = redis::cmd("ZCARD")
        .arg(key("sleepers"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sleepers, 0);
    submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    let wakes: u64 = redis::cmd("LLEN")
        .arg(key("wake"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(wakes, 1, "nobody sleeps: no wake-up pushed");
}

#[tokio::test]
async fn a_full_semaphore_makes_steps_wait_not_fail_and_release_wakes_them() {
    let redis = Redis::start();
    let store = redis.store().await;
    let input = json!({"steps": 1, "permits": [{"name": "migrations", "capacity": 2}]});
    let ids: Vec<String> = futures_ids(&store, &input, 3).await;
    let a = claim(&store, "w").await.expect("first permit");
    let b = claim(&store, "w").await.expect("second permit");
    assert!(
        claim(&store, "w").await.is_none(),
        "the third must wait for a permit"
    );
    let waiting: Vec<_> = futures_views(&store, &ids)
        .await
        .into_iter()
        .filter(|v| v.waiting_on.as_deref() == Some("sem:migrations"))
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].state, State::Waiting);
    assert_eq!(commit(&store, &a, Outcome::Done(json!(1))).await, "applied");
    let c = claim(&store, "w")
        .await
        .expect("released permit goes to the waiter");
    assert_eq!(c.id, waiting[0].id);
    // A crashed holder's permit comes back with its lease.
    drop(b);
    assert!(claim(&store, "w").await.is_none());
    tokio::time::sleep(lease() + Duration::from_millis(100)).await;
    let again = claim(&store, "w")
        .await
        .expect("expired lease frees its permit for reclaim");
    assert_eq!(again.attempt, 2);
}

async fn futures_ids(
    store: &drover_store::Store,
    input: &serde_json::Value,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(submit(store, "synthetic", input.clone(), 0).await);
    }
    ids
}

async fn futures_views(
    store: &drover_store::Store,
    ids: &[String],
) -> Vec<drover_store::WorkflowView> {
    let mut v = Vec::new();
    for id in ids {
        v.push(store.get(id).await.unwrap().unwrap());
    }
    v
}

#[tokio::test]
async fn higher_priority_first_then_due_order() {
    let redis = Redis::start();
    let store = redis.store().await;
    let low1 = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    // Due times have millisecond resolution; ties are broken by id.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let low2 = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    let high = submit(&store, "synthetic", json!({"steps": 1}), 50).await;
    let order: Vec<String> = [
        claim(&store, "w").await,
        claim(&store, "w").await,
        claim(&store, "w").await,
    ]
    .into_iter()
    .map(|c| c.unwrap().id)
    .collect();
    assert_eq!(order, vec![high, low1, low2]);
}

#[tokio::test]
async fn idle_workers_wake_on_new_work_and_timers_without_polling() {
    let redis = Redis::start();
    let store = redis.store().await;
    // Idle wait of 10 s: only the wake list can make pickup fast.
    let mut config = worker_config("waker");
    config.idle_wait_ms = 10_000;
    let worker = InProcessWorker::start(&store, config);
    tokio::time::sleep(Duration::from_millis(300)).await; // let it go idle (blocked on the wake list)
    let submitted = Instant::now();
    let id = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    wait_for(Duration::from_secs(5), "the step to run", || async {
        store.get(&id).await.unwrap().unwrap().state == State::Succeeded
    })
    .await;
    let new_work = submitted.elapsed();
    // A retry scheduled 300 ms ahead is picked up when due, not at the next 10 s poll.
    let id = submit(
        &store,
        "synthetic",
        json!({"steps": 1, "fail_rate": 1.0, "max_attempts": 2, "retry_ms": 300}),
        0,
    )
    .await;
    let started = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "the delayed retry to run",
        || async { store.get(&id).await.unwrap().unwrap().state == State::Failed },
    )
    .await;
    let timer = started.elapsed();
    worker.stop().await;
    assert!(
        new_work < Duration::from_secs(2),
        "new work noticed after {new_work:?}"
    );
    assert!(
        timer < Duration::from_secs(3),
        "delayed retry (due at ~300 ms) ran after {timer:?}"
    );
}

#[tokio::test]
async fn retries_compensation_cancel_signal_pause_and_fan_out() {
    let redis = Redis::start();
    let store = redis.store().await;
    let worker = InProcessWorker::start(&store, worker_config("w1"));

    // Permanent failure at step 2 compensates steps 1 and 0, in that order.
    let failing = submit(
        &store,
        "synthetic",
        json!({"steps": 4, "fail_step": 2, "compensate": true}),
        0,
    )
    .await;
    // A signal sent before the wait begins is delivered exactly once.
    let signalled = submit(
        &store,
        "synthetic",
        json!({"steps": 2, "min_ms": 300, "max_ms": 300, "signal": {"step": 1, "name": "go"}}),
        0,
    )
    .await;
    assert!(matches!(
        store
            .signal(
                &signalled,
                "go",
                &json!({"n": 1}),
                drover_store::SignalLimits::default(),
                now_ms()
            )
            .await
            .unwrap(),
        ControlResult::Ok(_)
    ));
    // Fan-out that fails fast.
    let fan = submit(
        &store,
        "synthetic",
        json!({"steps": 2, "fan_out": {"step": 0, "children": 4, "fail_fast": true,
        "child": {"steps": 1, "fail_step": 0}}}),
        0,
    )
    .await;
    let views = wait_all_finished(
        &store,
        &[failing.clone(), signalled.clone(), fan.clone()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(views[0].state, State::Failed);
    let comp: Vec<u64> = views[0]
        .history
        .as_ref()
        .unwrap()
        .iter()
        .filter(|h| h["phase"] == "compensate")
        .map(|h| h["step"].as_u64().unwrap())
        .collect();
    assert_eq!(comp, vec![1, 0], "compensations run in reverse order");
    assert_eq!(
        views[0].error.as_ref().unwrap()["message"],
        "step 2 fails on purpose"
    );
    assert_eq!(views[1].state, State::Succeeded);
    assert_eq!(
        views[1].outputs.as_ref().unwrap()[&1],
        json!({"signal": {"n": 1}})
    );
    assert_eq!(views[2].state, State::Failed);
    assert!(
        views[2].error.as_ref().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("children failed")
    );

    // Retry resumes the failed workflow; it fails again the same way, with a fresh attempt budget.
    let task = drover_workflows::resume_task(views[0].resume_from.unwrap(), now_ms(), vec![]);
    assert_eq!(
        store.retry(&failing, &task, now_ms()).await.unwrap(),
        ControlResult::Ok(None)
    );
    assert_eq!(
        wait_all_finished(
            &store,
            std::slice::from_ref(&failing),
            Duration::from_secs(20)
        )
        .await[0]
            .state,
        State::Failed
    );

    // Waiting for a signal, then cancelled: compensation runs and the workflow ends cancelled.
    let waiting = submit(
        &store,
        "synthetic",
        json!({"steps": 3, "compensate": true, "signal": {"step": 1, "name": "never"}}),
        0,
    )
    .await;
    wait_for(Duration::from_secs(10), "the signal wait", || async {
        store
            .get(&waiting)
            .await
            .unwrap()
            .unwrap()
            .waiting_on
            .as_deref()
            == Some("signal:never")
    })
    .await;
    store.cancel(&waiting, now_ms()).await.unwrap();
    let v = &wait_all_finished(
        &store,
        std::slice::from_ref(&waiting),
        Duration::from_secs(10),
    )
    .await[0];
    assert_eq!(v.state, State::Cancelled);
    assert!(
        v.history
            .as_ref()
            .unwrap()
            .iter()
            .any(|h| h["phase"] == "compensate" && h["step"] == 0)
    );

    // Pause holds the next step back; resume lets it go on.
    let paused = submit(
        &store,
        "synthetic",
        json!({"steps": 3, "min_ms": 200, "max_ms": 200}),
        0,
    )
    .await;
    store.pause(&paused, now_ms()).await.unwrap();
    wait_for(Duration::from_secs(10), "the workflow to park", || async {
        store
            .get(&paused)
            .await
            .unwrap()
            .unwrap()
            .waiting_on
            .as_deref()
            == Some("paused")
    })
    .await;
    let step_when_parked = store.get(&paused).await.unwrap().unwrap().step;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.get(&paused).await.unwrap().unwrap().step,
        step_when_parked,
        "no step starts while paused"
    );
    store.resume(&paused, now_ms()).await.unwrap();
    assert_eq!(
        wait_all_finished(&store, &[paused], Duration::from_secs(10)).await[0].state,
        State::Succeeded
    );

    // A step can pause its own workflow; resuming runs the step again, knowing it was resumed.
    let self_paused = submit(&store, "synthetic", json!({"steps": 3, "pause_step": 1}), 0).await;
    wait_for(
        Duration::from_secs(10),
        "the workflow to pause itself",
        || async {
            let v = store.get(&self_paused).await.unwrap().unwrap();
            v.paused && v.waiting_on.as_deref() == Some("paused") && v.step == 1
        },
    )
    .await;
    let filter = drover_store::Filter {
        paused: Some(true),
        ..Default::default()
    };
    let listed = store.list(&filter, 10, None).await.unwrap();
    assert!(listed.items.iter().any(|v| v.id == self_paused));
    store.resume(&self_paused, now_ms()).await.unwrap();
    let done = wait_all_finished(
        &store,
        std::slice::from_ref(&self_paused),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done[0].state, State::Succeeded);
    worker.stop().await;
}

#[tokio::test]
async fn a_backlog_of_20000_steps_all_run_with_bounded_scripts() {
    let redis = Redis::start();
    let store = redis.store().await;
    let n = 20_000;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(submit(&store, "synthetic", json!({"steps": 1}), 0).await);
    }
    let mut conn = store.connection();
    let queued: u64 = redis::cmd("ZCARD")
        .arg(format!("{}ready", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queued, n as u64);
    let mut config = worker_config("bulk");
    config.concurrency = 64;
    let w1 = InProcessWorker::start(&store, config.clone());
    config.name = Some("bulk2".into());
    let w2 = InProcessWorker::start(&store, config);
    wait_for(
        Duration::from_secs(240),
        "20,000 workflows to succeed",
        || async {
            let mut conn = store.connection();
            let done: u64 = redis::cmd("ZCARD")
                .arg(format!("{}idx:state:succeeded", store.prefix()))
                .query_async(&mut conn)
                .await
                .unwrap();
            done == n as u64
        },
    )
    .await;
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test]
async fn due_timers_past_8000_are_promoted_in_bounded_batches() {
    let redis = Redis::start();
    let store = redis.store().await;
    let n = 10_000;
    let due = now_ms() + 500;
    let registry = drover_kinds::builtin();
    for _ in 0..n {
        // Prepared as due later: a submission whose first task waits in the timer set.
        let submission = drover_store::Submission::new("synthetic", json!({"steps": 1}));
        let wf = registry.prepare(uuid_like(), submission, due).unwrap();
        store.submit(&wf, None, now_ms()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // All 10,000 are due at once; each claim promotes at most `batch` and still hands out work.
    let mut claimed = 0;
    for _ in 0..300 {
        claimed += store
            .claim(
                "w",
                now_ms(),
                Duration::from_secs(60),
                100,
                1,
                Duration::ZERO,
            )
            .await
            .unwrap()
            .claims
            .len();
    }
    assert_eq!(claimed, 300);
    // A batch claim hands out several at once.
    let batch = store
        .claim(
            "w",
            now_ms(),
            Duration::from_secs(60),
            100,
            50,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(batch.claims.len(), 50);
}

#[tokio::test]
async fn finished_workflows_are_trimmed_after_retention() {
    let redis = Redis::start();
    let store = redis.store().await;
    let id = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    let c = claim(&store, "w").await.unwrap();
    assert_eq!(commit(&store, &c, Outcome::Done(json!(1))).await, "applied");
    assert_eq!(
        store.trim(now_ms() - 60_000, 100).await.unwrap(),
        0,
        "younger than retention: kept"
    );
    assert_eq!(store.trim(now_ms() + 1, 100).await.unwrap(), 1);
    assert!(store.get(&id).await.unwrap().is_none());
    let mut conn = store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{id}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "keys left behind: {keys:?}");
    let members: u64 = redis::cmd("ZCARD")
        .arg(format!("{}idx:all", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 0);
}

/// How many times Redis ran `FUNCTION LOAD` since it started.
async fn function_loads(conn: &mut impl redis::aio::ConnectionLike) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_function|load:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn the_function_library_is_loaded_once_and_again_when_it_differs() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut conn = store.connection();
    assert_eq!(function_loads(&mut conn).await, 1);
    // More processes of the same build connect: Redis holds their library already.
    for _ in 0..3 {
        redis.store().await;
    }
    assert_eq!(function_loads(&mut conn).await, 1);
    // A library of another version (an older build's, here a stand-in) is replaced.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(
            "#!lua name=drover\nredis.register_function{function_name = 'drover_library', \
             flags = {'no-writes'}, callback = function() return 'older' end}",
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    redis.store().await;
    assert_eq!(function_loads(&mut conn).await, 3);
    let id = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    assert_eq!(claim(&store, "w").await.map(|c| c.id), Some(id));
}

#[tokio::test]
async fn a_redis_that_lost_the_function_library_gets_it_back() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut conn = store.connection();
    let _: String = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    assert_eq!(claim(&store, "w").await.map(|c| c.id), Some(id));
}
