//! Versioned steps across worker builds, with real worker processes. In version 1 the kind
//! `versioned` has the steps `a`, `c` and `retired` has `a`, `old`, `z`; version 2 inserts `b`
//! before `c` in `versioned` and removes `old` from `retired`. Workflows submitted under version 1
//! and parked on their second step (waiting on a signal) are taken over by version-2 workers, where
//! that index names another step (`b`, `z`): a `versioned` one finishes `c` by name and never runs
//! `b`; a `retired` one fails saying `old` is gone and never runs `z`. New ones run `a`, `b`, `c`.
//! Each step runs exactly once.
//!
//! The kinds (`versioning/kinds.rs`) are also the example of a kind written with the SDK. The worker
//! processes are `examples/versioned_worker.rs`, built with the tests, so each version is a real OS
//! process with its own registry.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_store::probe::RedisProbe;
use drover_store::{SignalLimits, Submission};
use drover_workflows::State;
use drover_workflows::ports::ProbeEvent;
use serde_json::{Value, json};

use crate::harness::*;
use kinds::registry;

mod kinds;

/// A worker process of `version`: the `versioned_worker` example, which cargo builds with the tests
/// (next to the test binary's `deps/` folder).
fn spawn_worker(redis_url: &str, version: &str) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("versioned_worker"))
        .expect("target directory");
    Command::new(&example)
        .arg(version)
        .env("DROVER_REDIS_URL", redis_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a worker process")
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn submit_under(
    store: &drover_store::Store,
    version: &str,
    kind: &str,
    park: &str,
) -> String {
    store
        .submit_new(
            &registry(version),
            uuid_like(),
            Submission::new(kind, json!({ "park": park })),
            None,
            now_ms(),
        )
        .await
        .expect("submit")
        .id
}

async fn waiting_on_go(store: &drover_store::Store, ids: &[String]) {
    wait_for(Duration::from_secs(20), "workflows to park", || async {
        for id in ids {
            let v = store.get(id).await.unwrap().unwrap();
            if v.waiting_on.as_deref() != Some("signal:go") {
                return false;
            }
        }
        true
    })
    .await;
}

/// Which steps ran for `id`, by name, in order.
async fn ran(store: &drover_store::Store, id: &str) -> Vec<String> {
    let mut conn = store.connection();
    let events: Vec<String> = redis::cmd("LRANGE")
        .arg(RedisProbe::key(store))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<ProbeEvent>(e).ok())
        .filter(|e| e.workflow_id == id)
        .map(|e| e.what)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_steps_continue_by_name_across_a_worker_upgrade() {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut v1 = [
        spawn_worker(&redis.url(), "v1"),
        spawn_worker(&redis.url(), "v1"),
    ];
    let mut at_c = Vec::new();
    let mut at_old = Vec::new();
    for _ in 0..3 {
        at_c.push(submit_under(&store, "v1", "versioned", "c").await);
        at_old.push(submit_under(&store, "v1", "retired", "old").await);
    }
    waiting_on_go(&store, &at_c).await;
    waiting_on_go(&store, &at_old).await;
    for id in at_c.iter().chain(&at_old) {
        assert_eq!(ran(&store, id).await, ["a"]);
    }

    // The upgrade: every version-1 worker stops; version-2 workers take over.
    for w in &mut v1 {
        terminate(w);
    }
    let mut v2 = [
        spawn_worker(&redis.url(), "v2"),
        spawn_worker(&redis.url(), "v2"),
    ];
    let fresh = submit_under(&store, "v2", "versioned", "none").await;
    let all: Vec<String> = at_c.iter().chain(&at_old).cloned().collect();
    for id in &all {
        let reply = store
            .signal(id, "go", &Value::Null, SignalLimits::default(), now_ms())
            .await
            .unwrap();
        assert!(
            matches!(reply, drover_store::ControlResult::Ok(_)),
            "{reply:?}"
        );
    }
    let mut ids = all.clone();
    ids.push(fresh.clone());
    let done = wait_all_finished(&store, &ids, Duration::from_secs(30)).await;
    for v in &done {
        let history = v.history.as_ref().unwrap();
        let runs = ran(&store, &v.id).await;
        if at_c.contains(&v.id) {
            assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
            // `c` ran by name under version 2 (index 2 there); `b`, at index 1 there, never ran:
            // this workflow was not submitted with it.
            assert_eq!(runs, ["a", "c"], "{}", v.id);
            for step in 0..2 {
                let commits = history
                    .iter()
                    .filter(|h| h["step"] == step && h["outcome"] == "done")
                    .count();
                assert_eq!(commits, 1, "{} step {step}", v.id);
            }
        } else if at_old.contains(&v.id) {
            assert_eq!(v.state, State::Failed, "{}", v.id);
            let error = v.error.as_ref().map(Value::to_string).unwrap_or_default();
            assert!(
                error.contains("\\\"old\\\"") && error.contains("no longer has"),
                "{error}"
            );
            // Nothing ran under the old step's index (`z` in version 2), and nothing after it.
            assert_eq!(runs, ["a"], "{}", v.id);
        } else {
            assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
            assert_eq!(runs, ["a", "b", "c"]);
        }
    }
    // The API shows each workflow's own steps.
    let view = store.get(&at_c[0]).await.unwrap().unwrap();
    assert_eq!(
        view.step_names.as_deref(),
        Some(&["a".to_string(), "c".into()][..])
    );
    for w in &mut v2 {
        terminate(w);
    }
}
