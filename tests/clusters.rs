//! One Drover, two clusters: two labs at once, named in `[[clusters]]` (one by URL, one by a
//! kubeconfig read from a secret), the real `drover api` and worker processes reading that config
//! file. Two rolling maintenances of nodes with the same names, one per cluster, run at once: each
//! lab sees only its own workflow's moves, each VM moves once in its cluster, the node locks and the
//! "5 migrations per cluster" semaphore are per cluster (both clusters' semaphores are held at the
//! same moment), listing filters by cluster, and an unknown cluster is refused with nothing written.

use std::time::Duration;

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::State;
use serde_json::{Value, json};

use crate::api::OPERATOR;
use crate::drain::{migrations_per_vmi, unschedulable, vmis_on};
use crate::harness::*;
use crate::metrics::ApiProcess;

pub(crate) const NODES: [&str; 4] = ["worker-01", "worker-02", "worker-03", "worker-04"];

async fn key_count(store: &drover_store::Store) -> u64 {
    let mut conn = store.connection();
    redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
}

/// Holders of semaphore `name` now.
async fn holders(store: &drover_store::Store, name: &str) -> u64 {
    let mut conn = store.connection();
    redis::cmd("ZCARD")
        .arg(format!("{}sem:{name}", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap()
}

pub(crate) fn each_vm_moved_once(lab: &LabHandle, vms: &[String], cluster: &str) {
    let per = migrations_per_vmi(lab);
    for vm in vms {
        assert_eq!(
            per.get(vm),
            Some(&1),
            "{cluster}: {vm} moved {:?} times",
            per.get(vm)
        );
    }
    assert_eq!(per.len(), vms.len(), "{cluster}: other VMs moved: {per:?}");
    for n in NODES {
        assert!(!unschedulable(lab, n), "{cluster}: {n} back in service");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_side_by_side_with_their_own_locks_and_limits() {
    let redis = Redis::start();
    let store = redis.store().await;
    let east = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let west = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("drover-clusters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let west_kubeconfig = dir.join("west.kubeconfig");
    west.write_kubeconfig(&west_kubeconfig).unwrap();
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "[[clusters]]\nname = \"east\"\nurl = \"{}\"\n\n\
             [[clusters]]\nname = \"west\"\nkubeconfig_secret = \"west-kubeconfig\"\n\n\
             [secrets]\nwest-kubeconfig = {{ file = \"{}\" }}\n",
            east.kube_url(),
            west_kubeconfig.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let env = [("DROVER_CONFIG", config)];
    let api = ApiProcess::spawn(&redis.url(), &dir.join("api.log"), &env).await;
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn_with(&redis.url(), &format!("c{i}"), &dir, &env))
        .collect();
    let http = reqwest::Client::new();
    let submit = |body: Value| {
        let http = http.clone();
        let url = format!("{}/v1/workflows", api.base);
        async move {
            let reply = http
                .post(url)
                .bearer_auth(OPERATOR)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.unwrap())
        }
    };

    // An unknown cluster is refused, naming the configured ones, and nothing is written.
    let before = key_count(&store).await;
    let (status, body) = submit(json!({
        "kind": "drain-node", "input": {"node": "worker-01"}, "cluster": "north"
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(r#""north""#) && detail.contains(r#""east", "west""#),
        "{detail}"
    );
    assert_eq!(key_count(&store).await, before, "a refusal wrote nothing");

    let vms =
        |lab: &LabHandle| -> Vec<String> { NODES.iter().flat_map(|n| vmis_on(lab, n)).collect() };
    let (east_vms, west_vms) = (vms(&east), vms(&west));
    assert_eq!(east_vms, west_vms, "the two labs hold the same names");
    let input = json!({"nodes": NODES, "max_in_maintenance": 2, "poll_ms": 100});
    let mut ids = Vec::new();
    for cluster in ["east", "west"] {
        let (status, body) = submit(json!({
            "kind": "rolling-maintenance", "input": input, "cluster": cluster
        }))
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }

    // Both clusters' migration semaphores held at one moment: they are two semaphores.
    let mut both = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let e = holders(&store, "east/migrations:cluster").await;
        let w = holders(&store, "west/migrations:cluster").await;
        assert!(e <= 5 && w <= 5, "a cluster's limit exceeded: {e} {w}");
        assert_eq!(holders(&store, "migrations:cluster").await, 0);
        both |= e > 0 && w > 0;
        let done = futures::future::join_all(ids.iter().map(|id| store.get(id))).await;
        if done
            .iter()
            .all(|v| v.as_ref().unwrap().as_ref().unwrap().state.is_terminal())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollouts did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(both, "the two clusters' migrations never overlapped");
    let views = wait_all_finished(&store, &ids, Duration::from_secs(5)).await;
    for v in &views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
    }
    assert_eq!(views[0].cluster.as_deref(), Some("east"));
    assert_eq!(views[1].cluster.as_deref(), Some("west"));
    // Children act on their parent's cluster.
    for (v, cluster) in views.iter().zip(["east", "west"]) {
        for child in store.children(&v.id).await.unwrap() {
            let c = store.get(&child.id).await.unwrap().unwrap();
            assert_eq!(c.cluster.as_deref(), Some(cluster), "{}", c.id);
        }
    }
    each_vm_moved_once(&east, &east_vms, "east");
    each_vm_moved_once(&west, &west_vms, "west");
    for (lab, name) in [(&east, "east"), (&west, "west")] {
        let c = lab.counters();
        assert!(c.max_cluster <= 5, "{name}: {}", c.max_cluster);
        assert!(c.max_cluster > 2, "{name}: migrations never overlapped");
    }

    // Listing by cluster.
    let page: Value = http
        .get(format!("{}/v1/workflows?cluster=west", api.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[1].as_str()], "{page}");
    assert_eq!(page["items"][0]["cluster"], "west");
    drop(workers);
}
