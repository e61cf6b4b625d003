//! Cron schedules end to end: the API over real HTTP, a private redis-server, schedulers inside
//! real worker processes (killed with SIGKILL) or in-process workers. Fire times are whole seconds
//! (6-field crons), so each test runs a few seconds of real time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use drover_store::schedule::{SCHEDULE_LABEL, fire_workflow_id};
use drover_store::{Filter, SignalLimits, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, OPERATOR, VIEWER, start_api};
use crate::harness::*;

fn log_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-sched-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn create(api: &Api, body: Value) -> Value {
    let (status, reply) = api
        .call(
            "POST",
            "/v1/schedules",
            Some(OPERATOR),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    reply
}

async fn post(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.call(
        "POST",
        path,
        Some(OPERATOR),
        Some(body.to_string().into_bytes()),
        &[],
    )
    .await
}

/// The schedule's log entries, oldest first.
async fn log(store: &Store, id: &str) -> Vec<Value> {
    let mut l = store.schedule_log(id, 1000).await.unwrap();
    l.reverse();
    l
}

fn with_action<'a>(log: &'a [Value], action: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["action"] == action).collect()
}

/// Every workflow carrying the schedule's label.
async fn scheduled_workflows(store: &Store, id: &str) -> Vec<drover_store::WorkflowView> {
    let filter = Filter {
        label: Some((SCHEDULE_LABEL.to_string(), id.to_string())),
        ..Filter::default()
    };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(&filter, 500, cursor.as_deref()).await.unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// A schedule firing every second for a minute, with three worker processes (each runs a
/// scheduler), one SIGKILLed twice, and Redis SIGKILLed and restarted half-way: every fire time in
/// the run started exactly one workflow, whose id derives from the schedule and the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_second_for_a_minute_each_fire_time_starts_exactly_once_through_kills() {
    let mut redis = Redis::start_with(true);
    let store = redis.store().await;
    let api = start_api(&store).await;
    let dir = log_dir("minute");
    let url = redis.url();
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&url, &format!("sched-{i}"), &dir))
        .collect();
    create(
        &api,
        json!({
            "id": "every-second", "cron": "* * * * * *", "kind": "synthetic",
            "input": {"steps": 1}, "catchup_window_secs": 60, "overlap": "allow-all",
        }),
    )
    .await;
    let started = Instant::now();
    let at = |s: u64| started + Duration::from_secs(s);
    tokio::time::sleep_until(at(12).into()).await;
    workers[0].kill9();
    workers[0] = WorkerProcess::spawn(&url, "sched-0b", &dir);
    tokio::time::sleep_until(at(25).into()).await;
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    tokio::time::sleep_until(at(40).into()).await;
    workers[0].kill9();
    workers[0] = WorkerProcess::spawn(&url, "sched-0c", &dir);
    tokio::time::sleep_until(at(60).into()).await;
    // The API may answer 503 once while its Redis connection comes back; a client retries.
    wait_for(
        Duration::from_secs(10),
        "the pause to be accepted",
        || async {
            let (status, _) = post(
                &api,
                "/v1/schedules/every-second/pause",
                json!({"note": "done"}),
            )
            .await;
            status == StatusCode::OK
        },
    )
    .await;

    let entries = log(&store, "every-second").await;
    assert!(
        with_action(&entries, "skipped").is_empty(),
        "no fire time may be skipped (all within the catch-up window): {entries:?}"
    );
    let starts = with_action(&entries, "started");
    let fires: Vec<i64> = starts
        .iter()
        .map(|e| e["fire_ms"].as_i64().unwrap())
        .collect();
    let unique: BTreeSet<i64> = fires.iter().copied().collect();
    assert_eq!(
        unique.len(),
        fires.len(),
        "a fire time started twice: {fires:?}"
    );
    let (first, last) = (*unique.first().unwrap(), *unique.last().unwrap());
    let expected: BTreeSet<i64> = (0..=(last - first) / 1000)
        .map(|k| first + k * 1000)
        .collect();
    assert_eq!(
        unique, expected,
        "every second between the first and last fire starts once"
    );
    assert!(
        unique.len() >= 55,
        "about a minute of fire times, got {}",
        unique.len()
    );
    let wfs = scheduled_workflows(&store, "every-second").await;
    let ids: BTreeSet<String> = wfs.iter().map(|w| w.id.clone()).collect();
    assert_eq!(ids.len(), wfs.len());
    let derived: BTreeSet<String> = unique
        .iter()
        .map(|f| fire_workflow_id("every-second", *f, ""))
        .collect();
    assert_eq!(
        ids, derived,
        "one workflow per fire time, with the derived id"
    );
    let done = wait_all_finished(
        &store,
        &ids.into_iter().collect::<Vec<_>>(),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        done.iter()
            .all(|w| w.state == drover_workflows::State::Succeeded)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fire times missed while no scheduler ran: the ones older than the catch-up window are skipped
/// in one entry that counts them, the ones inside it start at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_only_fire_times_within_the_catch_up_window_start() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let reply = create(
        &api,
        json!({
            "id": "catch-up", "cron": "* * * * * *", "kind": "synthetic",
            "input": {"steps": 1}, "catchup_window_secs": 3, "overlap": "allow-all",
        }),
    )
    .await;
    let first = reply["next_ms"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let worker = InProcessWorker::start(&store, worker_config("catch-up"));
    let resumed = now_ms() as i64;
    wait_for(Duration::from_secs(10), "the catch-up", || {
        let store = store.clone();
        async move {
            let l = log(&store, "catch-up").await;
            with_action(&l, "started")
                .iter()
                .any(|e| e["fire_ms"].as_i64().unwrap() > resumed)
        }
    })
    .await;
    worker.stop().await;
    let entries = log(&store, "catch-up").await;
    let skipped = with_action(&entries, "skipped");
    assert_eq!(
        skipped.len(),
        1,
        "one entry for the whole missed range: {entries:?}"
    );
    let skip = skipped[0];
    assert_eq!(skip["fire_ms"].as_i64().unwrap(), first);
    assert!(
        skip["reason"]
            .as_str()
            .unwrap()
            .contains("outside the catch-up window of 3 s"),
        "{skip}"
    );
    let count = skip["count"].as_i64().unwrap();
    let until = skip["until_ms"].as_i64().unwrap();
    assert_eq!(until, first + (count - 1) * 1000);
    assert!(
        until < resumed - 3000,
        "only times older than the window are skipped"
    );
    let starts: BTreeSet<i64> = with_action(&entries, "started")
        .iter()
        .map(|e| e["fire_ms"].as_i64().unwrap())
        .collect();
    let missed_started: Vec<i64> = starts.iter().copied().filter(|f| *f <= resumed).collect();
    assert!(
        !missed_started.is_empty(),
        "fire times inside the window start: {entries:?}"
    );
    assert!(missed_started.iter().all(|f| *f >= resumed - 3000 - 1000));
    // Nothing lost between the skipped range and what started.
    assert_eq!(*starts.first().unwrap(), until + 1000, "{entries:?}");
}

/// A synthetic workflow that runs until it gets the signal `go`.
fn waiting_input() -> Value {
    json!({"steps": 1, "signal": {"step": 0, "name": "go"}})
}

async fn go(store: &Store, id: &str) {
    store
        .signal(id, "go", &json!({}), SignalLimits::default(), now_ms())
        .await
        .unwrap();
}

/// Runs a schedule every second whose workflows wait for a signal, with `overlap`, until its log
/// has `decided` fire times; returns the store and the log.
async fn overlap_run(overlap: &str, decided: usize) -> (Redis, Store, Api, InProcessWorker) {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let worker = InProcessWorker::start(&store, worker_config(&format!("overlap-{overlap}")));
    create(
        &api,
        json!({"id": "o", "cron": "* * * * * *", "kind": "synthetic", "input": waiting_input(),
               "overlap": overlap}),
    )
    .await;
    wait_for(Duration::from_secs(15), "fire times decided", || {
        let store = store.clone();
        async move {
            log(&store, "o")
                .await
                .iter()
                .filter(|e| e["fire_ms"].is_i64())
                .count()
                >= decided
        }
    })
    .await;
    (redis, store, api, worker)
}

fn fire_entries(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["fire_ms"].is_i64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_records_each_skipped_fire_time_with_its_reason() {
    let (_redis, store, api, _worker) = overlap_run("skip", 3).await;
    let (_, _) = post(&api, "/v1/schedules/o/pause", json!({})).await;
    let entries = log(&store, "o").await;
    let fires = fire_entries(&entries);
    assert_eq!(fires[0]["action"], "started", "{entries:?}");
    let first = fires[0]["workflow"].as_str().unwrap().to_string();
    for e in &fires[1..] {
        assert_eq!(e["action"], "skipped", "{e}");
        assert_eq!(
            e["reason"],
            format!("overlap: the previous run {first} is still running")
        );
    }
    // The API shows them.
    let (status, view) = api
        .call("GET", "/v1/schedules/o", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(view["skipped"].as_array().unwrap().len() >= 2, "{view}");
    assert_eq!(view["paused"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_buffer_one_starts_one_buffered_run_when_the_previous_ends() {
    let (_redis, store, _api, _worker) = overlap_run("buffer-one", 3).await;
    let entries = log(&store, "o").await;
    let fires = fire_entries(&entries);
    assert_eq!(fires[0]["action"], "started", "{entries:?}");
    assert_eq!(fires[1]["action"], "buffered", "{entries:?}");
    assert!(
        fires[2]["reason"]
            .as_str()
            .unwrap()
            .contains("a run is already buffered"),
        "{entries:?}"
    );
    let first = fires[0]["workflow"].as_str().unwrap().to_string();
    let buffered = fires[1]["workflow"].as_str().unwrap().to_string();
    assert!(
        store.get(&buffered).await.unwrap().is_none(),
        "not started yet"
    );
    go(&store, &first).await;
    wait_for(Duration::from_secs(10), "the buffered run", || {
        let store = store.clone();
        let id = buffered.clone();
        async move { store.get(&id).await.unwrap().is_some() }
    })
    .await;
    let entries = log(&store, "o").await;
    let started = entries
        .iter()
        .find(|e| e["mode"] == "buffered" && e["action"] == "started")
        .expect("the buffered run's entry");
    assert_eq!(started["workflow"], json!(buffered));
    assert_eq!(
        started["fire_ms"], fires[1]["fire_ms"],
        "it keeps its fire time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_cancel_other_cancels_the_running_one() {
    let (_redis, store, api, _worker) = overlap_run("cancel-other", 2).await;
    post(&api, "/v1/schedules/o/pause", json!({})).await;
    let entries = log(&store, "o").await;
    let fires = fire_entries(&entries);
    let first = fires[0]["workflow"].as_str().unwrap().to_string();
    assert_eq!(fires[1]["action"], "started");
    assert_eq!(fires[1]["cancelled"], json!(first));
    let done = wait_all_finished(&store, &[first], Duration::from_secs(10)).await;
    assert_eq!(done[0].state, drover_workflows::State::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_allow_all_runs_them_side_by_side() {
    let (_redis, store, api, _worker) = overlap_run("allow-all", 3).await;
    post(&api, "/v1/schedules/o/pause", json!({})).await;
    let entries = log(&store, "o").await;
    let fires = fire_entries(&entries);
    assert!(
        fires.iter().all(|e| e["action"] == "started"),
        "{entries:?}"
    );
    let running = scheduled_workflows(&store, "o")
        .await
        .iter()
        .filter(|w| !w.state.is_terminal())
        .count();
    assert!(running >= 3, "{running} running");
}

/// What operators do with a schedule: refusals that write nothing, pause and unpause with a note,
/// trigger now, backfill, and a preview showing how a daylight-saving gap is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_api_refuses_bad_specs_and_runs_the_controls() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let mut conn = store.connection();
    let keys = |conn: &mut drover_store::Conn| {
        let mut c = conn.clone();
        async move {
            let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
            n
        }
    };
    let before = keys(&mut conn).await;
    let base = json!({"id": "s", "cron": "0 3 * * *", "kind": "synthetic", "input": {"steps": 1}});
    let bad: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"cron": "0 3 * *"}),
            StatusCode::BAD_REQUEST,
            "expected 5 fields",
        ),
        (
            json!({"cron": "0 61 * * *"}),
            StatusCode::BAD_REQUEST,
            "cron",
        ),
        (
            json!({"timezone": "Mars/Base"}),
            StatusCode::BAD_REQUEST,
            "unknown IANA time zone",
        ),
        (
            json!({"window_secs": 0}),
            StatusCode::BAD_REQUEST,
            "empty window",
        ),
        (
            json!({"overlap": "sometimes"}),
            StatusCode::BAD_REQUEST,
            "overlap",
        ),
        (
            json!({"kind": "no-such-kind"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no-such-kind",
        ),
        (
            json!({"input": {"steps": 0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "steps",
        ),
        (
            json!({"id": "../x"}),
            StatusCode::BAD_REQUEST,
            "schedule id",
        ),
        (json!({"unknown": 1}), StatusCode::BAD_REQUEST, "unknown"),
    ];
    for (patch, status, phrase) in bad {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (got, reply) = post(&api, "/v1/schedules", body.clone()).await;
        assert_eq!(got, status, "{body} -> {reply}");
        assert!(
            reply.to_string().contains(phrase),
            "{body} -> {reply} lacks {phrase:?}"
        );
    }
    let (got, _) = api
        .call(
            "POST",
            "/v1/schedules",
            Some(VIEWER),
            Some(base.to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    assert_eq!(keys(&mut conn).await, before, "refusals write nothing");

    // A preview across New York's spring-forward gap (2027-03-14, 02:00 -> 03:00).
    create(
        &api,
        json!({"id": "ny", "cron": "30 2 * * *", "timezone": "America/New_York",
               "kind": "synthetic", "input": {"steps": 1}, "start_at": "2027-03-13T00:00:00Z"}),
    )
    .await;
    let (_, view) = api
        .call("GET", "/v1/schedules/ny?preview=3", Some(VIEWER), None, &[])
        .await;
    let next = view["next"].as_array().unwrap();
    assert_eq!(next[0]["local"], "2027-03-13T02:30:00-05:00", "{view}");
    assert_eq!(next[1]["local"], "2027-03-14T03:00:00-04:00", "{view}");
    assert!(
        next[1]["dst"].as_str().unwrap().contains("does not exist"),
        "{view}"
    );
    assert_eq!(next[2]["local"], "2027-03-15T02:30:00-04:00", "{view}");
    let (got, _) = post(
        &api,
        "/v1/schedules",
        json!({"id": "ny", "cron": "* * * * *", "kind": "synthetic", "input": {"steps": 1}}),
    )
    .await;
    assert_eq!(got, StatusCode::CONFLICT);

    // Pause with a note, unpause.
    create(&api, base.clone()).await;
    let (got, view) = post(
        &api,
        "/v1/schedules/s/pause",
        json!({"note": "change freeze"}),
    )
    .await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(view["paused"], true);
    assert_eq!(view["note"], "change freeze");
    assert_eq!(view["next"], json!([]));
    let (_, view) = post(&api, "/v1/schedules/s/unpause", json!({"note": "back"})).await;
    assert_eq!(view["paused"], false);
    assert!(view["next_ms"].as_i64().unwrap() > now_ms() as i64);
    assert!(
        view["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "paused" && e["note"] == "change freeze")
    );

    // Trigger now, twice (allowed: the schedule's overlap policy skips the second while the
    // first runs, and no worker runs here).
    let (got, fired) = post(&api, "/v1/schedules/s/trigger", json!({})).await;
    assert_eq!(got, StatusCode::CREATED, "{fired}");
    let wf = fired["workflow"].as_str().unwrap().to_string();
    assert!(store.get(&wf).await.unwrap().is_some());
    let (got, fired) = post(&api, "/v1/schedules/s/trigger", json!({})).await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(fired["action"], "skipped", "{fired}");

    // Backfill three past days (allow-all by default), then again: existing.
    let day = 86_400_000;
    let today = now_ms() as i64 / day * day;
    let from = drover_workflows::schedule::rfc3339(today - 3 * day);
    let to = drover_workflows::schedule::rfc3339(today - 1);
    let (got, reply) = post(
        &api,
        "/v1/schedules/s/backfill",
        json!({"from": from, "to": to}),
    )
    .await;
    assert_eq!(got, StatusCode::OK, "{reply}");
    assert_eq!(reply["fire_times"], 3, "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["action"] == "started"), "{reply}");
    let (_, again) = post(
        &api,
        "/v1/schedules/s/backfill",
        json!({"from": from, "to": to}),
    )
    .await;
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "existing"),
        "{again}"
    );
    let (got, reply) = post(
        &api,
        "/v1/schedules/s/backfill",
        json!({"from": to, "to": from}),
    )
    .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{reply}");
    let (got, _) = post(
        &api,
        "/v1/schedules/s/backfill",
        json!({"from": "yesterday", "to": to}),
    )
    .await;
    assert_eq!(got, StatusCode::BAD_REQUEST);

    // Replace, list, delete.
    let mut replaced = base.clone();
    replaced["cron"] = json!("0 4 * * *");
    let (got, view) = api
        .call(
            "PUT",
            "/v1/schedules/s",
            Some(OPERATOR),
            Some(replaced.to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(got, StatusCode::OK, "{view}");
    assert_eq!(view["spec"]["cron"], "0 4 * * *");
    let (_, list) = api
        .call("GET", "/v1/schedules", Some(VIEWER), None, &[])
        .await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ny", "s"]);
    let (got, _) = api
        .call("DELETE", "/v1/schedules/s", Some(OPERATOR), None, &[])
        .await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    let (got, _) = api
        .call("GET", "/v1/schedules/s", Some(VIEWER), None, &[])
        .await;
    assert_eq!(got, StatusCode::NOT_FOUND);
}

/// A scheduled rollout whose window closes while a node is in maintenance: once that node is
/// back, no new drain starts; the rollout says why and when it goes on, and drains the next node
/// in the schedule's next window. The schedule's own fire time meanwhile is skipped (overlap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_closing_mid_rollout_holds_it_until_the_next_window() {
    let rig = crate::drain::rig(2).await;
    let store = rig.store.clone();
    let api = start_api(&store).await;
    create(
        &api,
        json!({
            "id": "nightly", "cron": "0/30 * * * * *", "window_secs": 12, "paused": true,
            "kind": "rolling-maintenance",
            "input": {"nodes": ["worker-02", "worker-03"], "max_in_maintenance": 1,
                      "maintenance": "wait-for-signal", "non_migratable": "shutdown-restart",
                      "poll_ms": 100},
        }),
    )
    .await;
    // Trigger just after a fire time, so the triggered run's window (12 s from now) outlasts
    // the schedule's own window of that fire time, and the next window opens at the next one.
    let phase = now_ms() % 30_000;
    if !(500..2_000).contains(&phase) {
        tokio::time::sleep(Duration::from_millis((30_000 + 500 - phase) % 30_000)).await;
    }
    let (status, fired) = post(&api, "/v1/schedules/nightly/trigger", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{fired}");
    let (status, _) = post(&api, "/v1/schedules/nightly/unpause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let rollout = fired["workflow"].as_str().unwrap().to_string();
    let end_ms = store.get(&rollout).await.unwrap().unwrap().input["window"]["end_ms"]
        .as_i64()
        .unwrap();

    // The first node drains and waits in maintenance past the window's end.
    let in_maintenance = |store: Store, rollout: String| async move {
        let v = store.get(&rollout).await.unwrap().unwrap();
        let kids = store
            .summaries(&v.children.unwrap_or_default())
            .await
            .unwrap();
        kids.into_iter()
            .filter(|c| c.waiting_on.as_deref() == Some("signal:maintenance-done"))
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let first = crate::lab::support::wait_for(
        "the first drain in maintenance (within its 12 s window)",
        Duration::from_secs(12),
        || {
            let f = in_maintenance(store.clone(), rollout.clone());
            async move { Some(f.await).filter(|v| !v.is_empty()) }
        },
    )
    .await;
    let wait = (end_ms + 300 - now_ms() as i64).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    crate::drain::maintenance_done(&store, &first[0]).await;

    // Held: the reason and when it goes on, no second drain, the other node untouched.
    let held =
        crate::lab::support::wait_for("the rollout to hold", Duration::from_secs(30), || {
            let store = store.clone();
            let rollout = rollout.clone();
            async move {
                let v = store.get(&rollout).await.unwrap().unwrap();
                v.progress.filter(|p| p["held"].is_string())
            }
        })
        .await;
    let reason = held["held"].as_str().unwrap();
    assert!(
        reason.contains("window closed; continues in the next window"),
        "{held}"
    );
    let next_start =
        drover_workflows::schedule::parse_instant(held["until"].as_str().unwrap()).unwrap();
    assert!(next_start > end_ms, "{held}");
    let v = store.get(&rollout).await.unwrap().unwrap();
    assert_eq!(
        v.children.as_ref().map(Vec::len),
        Some(1),
        "no new drain after the window"
    );
    let drained = store.get(&first[0]).await.unwrap().unwrap().input["node"].clone();
    let other = if drained == "worker-02" {
        "worker-03"
    } else {
        "worker-02"
    };
    assert!(
        !rig.lab.get("nodes", "", other).unwrap()["spec"]["unschedulable"]
            .as_bool()
            .unwrap_or(false),
        "{other} not cordoned while the window is closed"
    );

    // The next window: the second node drains.
    let second = crate::lab::support::wait_for(
        "the second drain in maintenance",
        Duration::from_secs(60),
        || {
            let f = in_maintenance(store.clone(), rollout.clone());
            async move { Some(f.await).filter(|v| !v.is_empty()) }
        },
    )
    .await;
    let d2 = store.get(&second[0]).await.unwrap().unwrap();
    assert_eq!(d2.input["node"], json!(other));
    assert!(
        d2.created_ms as i64 >= next_start,
        "started in the next window"
    );
    crate::drain::maintenance_done(&store, &second[0]).await;
    let done = wait_all_finished(
        &store,
        std::slice::from_ref(&rollout),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        done[0].state,
        drover_workflows::State::Succeeded,
        "{:?}",
        done[0].error
    );
    // The schedule's own fire time at the next window found the rollout still running.
    let entries = log(&store, "nightly").await;
    assert!(
        entries.iter().any(|e| e["mode"] == "due"
            && e["action"] == "skipped"
            && e["reason"].as_str().unwrap().contains(&rollout)),
        "{entries:?}"
    );
}

/// Fire times inside a freeze are skipped, each with the freeze's name; after it, they start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_times_inside_a_freeze_are_skipped_with_its_name() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let _worker = InProcessWorker::start(&store, worker_config("freeze"));
    let now = now_ms() as i64;
    let from = drover_workflows::schedule::rfc3339(now - 60_000);
    let to = drover_workflows::schedule::rfc3339((now / 1000 + 3) * 1000);
    create(
        &api,
        json!({"id": "f", "cron": "* * * * * *", "kind": "synthetic", "input": {"steps": 1},
               "overlap": "allow-all",
               "freezes": [{"name": "year-end change freeze", "from": from, "to": to}]}),
    )
    .await;
    wait_for(Duration::from_secs(15), "a start after the freeze", || {
        let store = store.clone();
        async move { !with_action(&log(&store, "f").await, "started").is_empty() }
    })
    .await;
    let entries = log(&store, "f").await;
    let skipped = with_action(&entries, "skipped");
    assert!(skipped.len() >= 2, "{entries:?}");
    for e in &skipped {
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .starts_with("freeze \"year-end change freeze\""),
            "{e}"
        );
    }
    let to_ms = drover_workflows::schedule::parse_instant(&to).unwrap();
    assert!(
        with_action(&entries, "started")
            .iter()
            .all(|e| e["fire_ms"].as_i64().unwrap() >= to_ms)
    );
}
