//! Sharding over a real local Redis Cluster: three primaries (AOF `always`), three shards, one per
//! target cluster (`[[clusters]] shard`). Worker processes of the real binary run synthetic
//! workflows on all three shards and two lab rollouts (east on shard 1, west on shard 2) while a
//! worker is SIGKILLed every 1.5 s and every shard's slot is moved to another primary with
//! `Store::move_shard` (what `drover shards move` runs). Nothing is lost: every workflow succeeds,
//! each step is committed once (its output's token is the committing attempt's), each VM moves
//! once in its lab, every per-cluster migration limit holds, and listing and counting see every
//! workflow across the shards.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_store::server::{Aof, RedisCluster};
use drover_store::{Filter, Store};
use drover_workflows::{State, Submission};
use rand::Rng;
use serde_json::json;

use crate::clusters::{NODES, each_vm_moved_once};
use crate::crash::committed_once;
use crate::drain::vmis_on;
use crate::harness::*;

/// Target clusters and the shard each is placed on.
const PLACED: [(&str, u16); 3] = [("south", 0), ("east", 1), ("west", 2)];

pub(crate) async fn sharded_store(url: &str) -> Store {
    let mut config = drover_store::Config::new(url);
    config.shards = 3;
    config.placement = PLACED.iter().map(|(c, s)| (c.to_string(), *s)).collect();
    Store::connect(&config)
        .await
        .expect("connect to the cluster")
}

async fn submit_on(store: &Store, kind: &str, input: serde_json::Value, cluster: &str) -> String {
    let registry = drover_kinds::builtin().with_clusters(PLACED.iter().map(|(c, _)| c.to_string()));
    let id = store.workflow_id(uuid::Uuid::now_v7(), Some(cluster));
    let sub = Submission::new(kind, input).cluster(Some(cluster.to_string()));
    let done = store
        .submit_new(&registry, id.clone(), sub, None, now_ms())
        .await
        .expect("submit");
    assert_eq!(done.id, id);
    id
}

/// A fresh directory with a config of three shards and the [`PLACED`] clusters (their Kubernetes
/// never reached: the synthetic kind does not use it).
fn scratch_config(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("drover.toml");
    let mut text = String::from("redis_shards = 3\n");
    for (name, shard) in PLACED {
        text += &format!(
            "\n[[clusters]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:9\"\nshard = {shard}\n"
        );
    }
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// One task per [`PLACED`] cluster submitting 3-step synthetic workflows every 20 ms for `secs`;
/// each returns the ids it had acknowledged, with when.
fn submit_per_cluster(
    store: &Store,
    secs: Duration,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u64)>>> {
    PLACED
        .iter()
        .map(|(cluster, _)| {
            let store = store.clone();
            let cluster = cluster.to_string();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let registry = drover_kinds::builtin()
                    .with_clusters(PLACED.iter().map(|(c, _)| c.to_string()));
                let input = json!({"steps": 3, "min_ms": 10, "max_ms": 100});
                let end = Instant::now() + secs;
                while Instant::now() < end {
                    let id = store.workflow_id(uuid::Uuid::now_v7(), Some(&cluster));
                    let sub =
                        Submission::new("synthetic", input.clone()).cluster(Some(cluster.clone()));
                    if let Ok(s) = store.submit_new(&registry, id, sub, None, now_ms()).await {
                        acked.push((s.id, now_ms()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        })
        .collect()
}

/// [`crate::clusters::each_vm_moved_once`], and the cluster's limit of 5 migrations held.
fn moved_once_within_limit(lab: &LabHandle, vms: &[String], cluster: &str) {
    each_vm_moved_once(lab, vms, cluster);
    assert!(
        lab.counters().max_cluster <= 5,
        "{cluster}: the limit of 5 held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_a_redis_cluster_lose_nothing_through_worker_kills_and_slot_moves() {
    let cluster = RedisCluster::start(3, Aof::Always).expect("a local Redis Cluster");
    let url = cluster.url();
    let store = sharded_store(&url).await;
    let east = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let west = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("drover-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "redis_shards = 3\n\n\
             [[clusters]]\nname = \"south\"\nurl = \"{e}\"\nshard = 0\n\n\
             [[clusters]]\nname = \"east\"\nurl = \"{e}\"\nshard = 1\n\n\
             [[clusters]]\nname = \"west\"\nurl = \"{w}\"\nshard = 2\n",
            e = east.kube_url(),
            w = west.kube_url(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let env = [("DROVER_CONFIG", config.as_str())];
    let spawn = |name: &str| WorkerProcess::spawn_with(&url, name, &dir, &env);
    let mut workers: Vec<WorkerProcess> = (0..3).map(|i| spawn(&format!("s{i}-0"))).collect();

    // Each shard starts on its own primary? Not necessarily (hash tags land where they land);
    // what matters is that every shard has a node and none is frozen.
    let before = store.shard_places().await.unwrap();
    assert_eq!(before.len(), 3);
    for p in &before {
        assert!(!p.node.is_empty() && !p.frozen, "{p:?}");
    }
    let primaries: Vec<String> = store
        .cluster_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.addr)
        .collect();
    assert_eq!(primaries.len(), 3, "{primaries:?}");

    let synthetic = json!({"steps": 5, "min_ms": 20, "max_ms": 300, "fail_rate": 0.1,
        "max_attempts": 12, "retry_ms": 50});
    let mut ids = Vec::new();
    for i in 0..150 {
        let (cluster, _) = PLACED[i % 3];
        ids.push(submit_on(&store, "synthetic", synthetic.clone(), cluster).await);
    }
    for id in &ids {
        let s = store.shard_of(id);
        let c = PLACED[s as usize].0;
        assert!(
            store.get(id).await.unwrap().unwrap().cluster.as_deref() == Some(c),
            "{id} on shard {s}, the shard of {c}"
        );
    }
    let vms =
        |lab: &LabHandle| -> Vec<String> { NODES.iter().flat_map(|n| vmis_on(lab, n)).collect() };
    let (east_vms, west_vms) = (vms(&east), vms(&west));
    let rollout = json!({"nodes": NODES, "max_in_maintenance": 2, "poll_ms": 100});
    let rollouts = vec![
        submit_on(&store, "rolling-maintenance", rollout.clone(), "east").await,
        submit_on(&store, "rolling-maintenance", rollout, "west").await,
    ];
    let all: Vec<String> = ids.iter().chain(&rollouts).cloned().collect();

    // Kills and moves while the workers run.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    let mut moves = Vec::new();
    loop {
        let mut open = 0;
        for id in &all {
            if !store.get(id).await.unwrap().unwrap().state.is_terminal() {
                open += 1;
            }
        }
        if open == 0 && moves.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} workflows still open");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let i = rand::rng().random_range(0..workers.len());
        workers[i].kill9();
        kills += 1;
        workers[i] = spawn(&format!("s{i}-{kills}"));
        if moves.len() < 3 {
            let s = moves.len() as u16;
            let at = store.shard_places().await.unwrap()[s as usize].node.clone();
            let to = primaries.iter().find(|p| **p != at).unwrap().clone();
            if s == 1 {
                // The operator's way: the binary's `drover shards move`.
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
                    .args(["shards", "move", "1", "--to", &to])
                    .env("DROVER_CONFIG", &config)
                    .env("DROVER_REDIS_URL", &url)
                    .env("DROVER_LOG", "warn")
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(text.contains(&format!("moved from {at} to {to}")), "{text}");
            } else {
                let moved = store.move_shard(s, &to).await.expect("move a shard");
                assert_eq!(
                    (moved.from.as_str(), moved.to.as_str()),
                    (at.as_str(), to.as_str())
                );
                assert!(moved.keys > 1, "shard {s} held keys: {moved:?}");
            }
            moves.push(to);
        }
    }
    assert!(kills >= 3, "too short to kill workers mid-flight ({kills})");
    let after = store.shard_places().await.unwrap();
    for (p, to) in after.iter().zip(&moves) {
        assert_eq!(&p.node, to, "shard {} is where it was moved", p.shard);
        assert!(!p.frozen, "shard {} thawed", p.shard);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["shards", "list"])
        .env("DROVER_CONFIG", &config)
        .env("DROVER_REDIS_URL", &url)
        .env("DROVER_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for p in &after {
        assert!(
            text.lines().any(|l| l.starts_with(&p.shard.to_string())
                && l.contains(&p.node)
                && l.contains("serving")),
            "{text}"
        );
    }

    let views = wait_all_finished(&store, &all, Duration::from_secs(30)).await;
    let mut expired = 0;
    for v in &views[..ids.len()] {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
        let history = v.history.as_ref().unwrap();
        expired += history
            .iter()
            .filter(|h| h["outcome"] == "lease-expired")
            .count();
        committed_once(v, 5);
    }
    assert!(expired > 0, "no attempt died with its worker");
    for v in &views[ids.len()..] {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
        for child in store.children(&v.id).await.unwrap() {
            assert_eq!(
                store.shard_of(&child.id),
                store.shard_of(&v.id),
                "{}",
                child.id
            );
        }
    }
    moved_once_within_limit(&east, &east_vms, "east");
    moved_once_within_limit(&west, &west_vms, "west");

    // Listing pages through every shard: each top-level workflow once, newest first.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let filter = Filter {
        top_level: true,
        ..Filter::default()
    };
    loop {
        let page = store.list(&filter, 40, cursor.as_deref()).await.unwrap();
        listed.extend(page.items.iter().map(|v| (v.created_ms, v.id.clone())));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let unique: BTreeSet<&String> = listed.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), all.len(), "each workflow listed once");
    assert_eq!(listed.len(), all.len());
    assert!(listed.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let stats = store.stats(&[]).await.unwrap();
    let succeeded = stats
        .by_state
        .iter()
        .find(|(s, _)| *s == State::Succeeded)
        .unwrap()
        .1;
    assert!(succeeded >= all.len() as u64, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
    println!("moved to: {moves:?}; kills: {kills}");
}

/// Every key of `slot` on the nodes at `ports`, with its `DUMP`: the slot's whole content, wherever
/// each key is while the slot is split between two nodes.
async fn slot_content(ports: &[u16], slot: u16) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut all = std::collections::BTreeMap::new();
    for port in ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        for k in keys {
            // ASKING: the importing node answers for keys of the slot it does not own yet.
            let (dump,): (Vec<u8>,) = redis::pipe()
                .cmd("ASKING")
                .ignore()
                .cmd("DUMP")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            all.insert(k, dump);
        }
    }
    all
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The freeze, looked at while a shard's slot is half moved: submissions, claims and controls on
/// the shard all fail as transient and change nothing on either node; other shards run on; once the
/// move ends, the shard works again with everything in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_half_moved_refuses_every_call_and_writes_nothing() {
    let cluster = RedisCluster::start(3, Aof::Off).expect("a local Redis Cluster");
    let store = sharded_store(&cluster.url()).await;
    let input = json!({"steps": 2, "min_ms": 1, "max_ms": 2});
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(submit_on(&store, "synthetic", input.clone(), "east").await);
    }
    let east = store.on(1);
    let places = store.shard_places().await.unwrap();
    let from = places[1].node.clone();
    let slot = places[1].slot;
    let to = store
        .cluster_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.addr)
        .find(|a| *a != from)
        .unwrap();
    let ports = [port_of(&from), port_of(&to)];
    let mut looked = 0;
    let moved = store
        .move_shard_observed(1, &to, 25, async |so_far| {
            if looked > 0 {
                return;
            }
            looked += 1;
            assert!(so_far > 1, "some keys moved, the freeze key first");
            let before = slot_content(&ports, slot).await;
            let submitted = store
                .submit_new(
                    &drover_kinds::builtin().with_clusters(["east".to_string()]),
                    store.workflow_id(uuid::Uuid::now_v7(), Some("east")),
                    Submission::new("synthetic", input.clone()).cluster(Some("east".into())),
                    None,
                    now_ms(),
                )
                .await;
            match submitted {
                Err(drover_store::SubmitError::Store(e)) => assert!(e.is_transient(), "{e}"),
                other => panic!("a submission on a frozen shard: {other:?}"),
            }
            let claimed = east
                .claim(
                    "w",
                    now_ms(),
                    Duration::from_secs(5),
                    10,
                    10,
                    Duration::ZERO,
                )
                .await;
            assert!(
                claimed.as_ref().is_err_and(|e| e.is_transient()),
                "a claim on a frozen shard: {:?}",
                claimed.map(|c| c.claims.len())
            );
            for id in [&ids[0], &ids[39]] {
                let cancelled = store.cancel(id, now_ms()).await;
                assert!(
                    cancelled.as_ref().is_err_and(|e| e.is_transient()),
                    "a cancel on a frozen shard: {cancelled:?}"
                );
            }
            assert_eq!(slot_content(&ports, slot).await, before, "nothing written");
            // Another shard is not frozen.
            submit_on(&store, "synthetic", input.clone(), "west").await;
        })
        .await
        .unwrap();
    assert_eq!(looked, 1, "the move was looked at halfway: {moved:?}");
    assert_eq!(store.shard_places().await.unwrap()[1].node, to);
    // Thawed, with everything in it.
    let claimed = east
        .claim(
            "w",
            now_ms(),
            Duration::from_secs(5),
            10,
            40,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(claimed.claims.len(), 40);
    for id in &ids {
        assert_eq!(store.get(id).await.unwrap().unwrap().state, State::Running);
    }
    submit_on(&store, "synthetic", input, "east").await;
}

/// The crash test for Redis itself, on the cluster: the primary holding shard 1 is SIGKILLed while
/// submissions go to all three shards and restarts from its AOF (`always`) and `nodes.conf`. Every
/// acknowledged submission runs to success, the killed shard's included, and the other shards'
/// keep being accepted while it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_run_loses_no_acknowledged_submission() {
    let mut cluster = RedisCluster::start(3, Aof::Always).expect("a local Redis Cluster");
    let url = cluster.url();
    let store = sharded_store(&url).await;
    let (dir, config) = scratch_config("drover-shard-kill");
    let env = [("DROVER_CONFIG", config.to_str().unwrap())];
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn_with(&url, &format!("k{i}"), &dir, &env))
        .collect();
    // One submitter per shard, so a shard that is down holds up only its own.
    let submitters = submit_per_cluster(&store, Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = store.shard_places().await.unwrap()[1].node.clone();
    cluster.node_at(&node).unwrap().kill9();
    let down = now_ms();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.node_at(&node).unwrap().restart().unwrap();
    let up = now_ms();
    let mut acked = Vec::new();
    for s in submitters {
        acked.extend(s.await.unwrap());
    }
    let on = |s: u16| {
        acked
            .iter()
            .filter(|(id, _)| store.shard_of(id) == s)
            .count()
    };
    assert!(
        on(0) > 50 && on(1) > 50 && on(2) > 50,
        "too few submissions per shard to mean anything: {} {} {}",
        on(0),
        on(1),
        on(2)
    );
    let others_while_down = acked
        .iter()
        .filter(|(id, at)| store.shard_of(id) != 1 && (down + 100..up).contains(at))
        .count();
    assert!(
        others_while_down > 0,
        "the other shards took submissions while one was down"
    );
    let ids: Vec<String> = acked.into_iter().map(|(id, _)| id).collect();
    let views = wait_all_finished(&store, &ids, Duration::from_secs(120)).await;
    for v in views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
    }
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shard count a store accepts: a store made with one shard that holds workflows cannot be
/// spread (its ids name no shard), shards can be added to a sharded store but never removed, and a
/// placement past the last shard or a count of 0 is refused, each saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_count_can_grow_but_not_shrink_or_spread_an_unsharded_store() {
    let connect = async |url: &str, shards: u16, placement: &[(&str, u16)]| {
        let mut c = drover_store::Config::new(url);
        c.shards = shards;
        c.placement = placement.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        Store::connect(&c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let used = Redis::start();
    let store = used.store().await;
    submit(&store, "synthetic", json!({"steps": 1}), 0).await;
    let e = connect(&used.url(), 3, &[]).await.unwrap_err();
    assert!(e.contains("made with one shard"), "{e}");

    let fresh = Redis::start();
    connect(&fresh.url(), 3, &[]).await.unwrap();
    let e = connect(&fresh.url(), 2, &[]).await.unwrap_err();
    assert!(
        e.contains("has 3 shards") && e.contains("never removed"),
        "{e}"
    );
    connect(&fresh.url(), 4, &[]).await.unwrap();
    let e = connect(&fresh.url(), 3, &[]).await.unwrap_err();
    assert!(e.contains("has 4 shards"), "{e}");
    let e = connect(&fresh.url(), 4, &[("east", 4)]).await.unwrap_err();
    assert!(e.contains(r#"cluster "east" is placed on shard 4"#), "{e}");
    let e = connect(&fresh.url(), 0, &[]).await.unwrap_err();
    assert!(e.contains("shards must be 1 to 256"), "{e}");
}

/// The real `drover api` on three shards: a submission lands on its cluster's shard and is read,
/// cancelled and listed from there; listing pages across the shards; a schedule lives on its
/// cluster's shard, its trigger starts the workflow there, and a change of its cluster to one on
/// another shard is refused with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_places_reads_lists_and_schedules_by_shard() {
    let cluster = RedisCluster::start(3, Aof::Off).expect("a local Redis Cluster");
    let url = cluster.url();
    let store = sharded_store(&url).await;
    let (dir, config) = scratch_config("drover-shard-api");
    let env = [("DROVER_CONFIG", config.to_str().unwrap())];
    let api = crate::metrics::ApiProcess::spawn(&url, &dir.join("api.log"), &env).await;
    let _worker = WorkerProcess::spawn_with(&url, "api-w", &dir, &env);
    let http = reqwest::Client::new();
    let call = async |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(crate::api::OPERATOR);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let reply = req.send().await.unwrap();
        let status = reply.status().as_u16();
        (
            status,
            reply.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    };
    use reqwest::Method;

    let waiting = json!({"steps": 2, "min_ms": 60_000, "max_ms": 60_000});
    let mut ids = Vec::new();
    for (name, shard) in PLACED {
        for _ in 0..2 {
            let (status, body) = call(
                Method::POST,
                "/v1/workflows",
                Some(json!({"kind": "synthetic", "input": waiting, "cluster": name})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            let id = body["id"].as_str().unwrap().to_string();
            assert_eq!(store.shard_of(&id), shard, "{id} for {name}");
            let (status, got) = call(Method::GET, &format!("/v1/workflows/{id}"), None).await;
            assert_eq!(
                (status, got["cluster"].as_str()),
                (200, Some(name)),
                "{got}"
            );
            ids.push(id);
        }
    }
    // An Idempotency-Key used for one cluster's shard is refused for a cluster on another shard.
    let keyed = |cluster: &str| {
        http.post(format!("{}/v1/workflows", api.base))
            .bearer_auth(crate::api::OPERATOR)
            .header("Idempotency-Key", "shards-key-1")
            .json(&json!({"kind": "synthetic", "input": {"steps": 1}, "cluster": cluster}))
            .send()
    };
    let first = keyed("south").await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = keyed("east").await.unwrap();
    assert_eq!(again.status().as_u16(), 422);
    let again: serde_json::Value = again.json().await.unwrap();
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{again}"
    );
    let repeat: serde_json::Value = keyed("south").await.unwrap().json().await.unwrap();
    assert_eq!(
        repeat["id"], first["id"],
        "the same request gets its workflow back"
    );
    ids.push(first["id"].as_str().unwrap().to_string());

    let (status, body) = call(
        Method::POST,
        &format!("/v1/workflows/{}/cancel", ids[3]),
        None,
    )
    .await;
    assert!(status < 300, "{status} {body}");
    wait_for(Duration::from_secs(10), "the cancellation", || async {
        store.get(&ids[3]).await.unwrap().unwrap().state == State::Cancelled
    })
    .await;
    // Pages of two over six workflows on three shards: each once, newest first.
    let mut listed: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) =
            call(Method::GET, &format!("/v1/workflows?limit=2{cursor}"), None).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(listed, expected, "every workflow once, newest first");

    // A schedule on east lives on east's shard; its trigger starts the workflow there.
    let spec = json!({"id": "nightly", "cron": "0 3 * * *", "kind": "synthetic",
        "input": {"steps": 1}, "cluster": "east"});
    let (status, body) = call(Method::POST, "/v1/schedules", Some(spec.clone())).await;
    assert_eq!(status, 201, "{body}");
    let mut conn = store.connection();
    let on_east: bool = redis::cmd("EXISTS")
        .arg(format!("{}sched:nightly", store.on(1).prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(on_east, "the schedule is on shard 1");
    let (status, fired) = call(
        Method::POST,
        "/v1/schedules/nightly/trigger",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{fired}");
    let started = fired["workflow"].as_str().unwrap();
    assert_eq!(store.shard_of(started), 1, "{fired}");
    assert_eq!(
        store
            .get(started)
            .await
            .unwrap()
            .unwrap()
            .cluster
            .as_deref(),
        Some("east")
    );
    let (status, got) = call(Method::GET, "/v1/schedules/nightly", None).await;
    assert_eq!(
        (status, got["id"].as_str()),
        (200, Some("nightly")),
        "{got}"
    );
    let mut moved = spec.clone();
    moved["cluster"] = json!("west");
    let (status, body) = call(Method::PUT, "/v1/schedules/nightly", Some(moved)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("delete it and create it again"),
        "{body}"
    );
    let (_, got) = call(Method::GET, "/v1/schedules/nightly", None).await;
    assert_eq!(got["spec"]["cluster"], "east", "nothing written: {got}");
    let (status, list) = call(Method::GET, "/v1/schedules", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], "nightly", "{list}");
    let (status, _) = call(Method::DELETE, "/v1/schedules/nightly", None).await;
    assert_eq!(status, 204);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis Cluster failover under `redis_wait_replicas = 1`: three primaries with a replica each
/// (AOF always); the primary holding shard 1 is SIGKILLed while submissions go to every shard; the
/// cluster promotes its replica and the store follows (`MOVED`). Every acknowledged submission runs
/// to success with each step committed once by its lease holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_with_wait_loses_no_acknowledged_submission() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1, Aof::Always)
        .expect("a local Redis Cluster with replicas");
    let url = cluster.url();
    let mut config = drover_store::Config::new(&url);
    config.shards = 3;
    config.placement = PLACED.iter().map(|(c, s)| (c.to_string(), *s)).collect();
    config.wait_replicas = 1;
    let store = Store::connect(&config)
        .await
        .expect("connect to the cluster");
    let (dir, file) = scratch_config("drover-shard-failover");
    let env = [
        ("DROVER_CONFIG", file.to_str().unwrap()),
        ("DROVER_REDIS_WAIT_REPLICAS", "1"),
    ];
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn_with(&url, &format!("f{i}"), &dir, &env))
        .collect();
    let submitters = submit_per_cluster(&store, Duration::from_secs(9));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old = store.shard_places().await.unwrap()[1].node.clone();
    cluster.node_at(&old).unwrap().kill9();
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the cluster to promote a replica",
        || async {
            matches!(store.shard_places().await, Ok(p) if !p[1].node.is_empty() && p[1].node != old)
        },
    )
    .await;
    let failover = killed.elapsed();
    cluster.node_at(&old).unwrap().restart().unwrap();
    let mut acked = Vec::new();
    for s in submitters {
        acked.extend(s.await.unwrap().into_iter().map(|(id, _)| id));
    }
    for shard in 0..3 {
        let n = acked
            .iter()
            .filter(|id| store.shard_of(id) == shard)
            .count();
        assert!(n > 50, "too few submissions on shard {shard}: {n}");
    }
    let views = wait_all_finished(&store, &acked, Duration::from_secs(120)).await;
    for v in &views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
        committed_once(v, 3);
    }
    println!(
        "failover in {failover:?}; {} acknowledged submissions, none lost",
        acked.len()
    );
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}
