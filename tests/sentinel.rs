//! Redis high availability with Sentinel: a primary and a replica (both `appendfsync always`), three
//! real `redis-sentinel` processes (quorum 2), and worker processes of the real binary that find
//! the primary through Sentinel. The primary is SIGKILLed in the middle of a rolling maintenance
//! while submissions keep coming; Sentinel promotes the replica, the killed primary comes back and
//! is made a replica, and the rollout and every acknowledged submission finish with each step
//! committed once.

use std::time::{Duration, Instant};

use drover_lab::{Lab, LabConfig};
use drover_store::server::SentinelGroup;
use drover_workflows::State;
use serde_json::json;

use crate::crash::committed_once;
use crate::drain::{migrations_per_vmi, unschedulable, vmis_on};
use crate::harness::*;

/// The Sentinel group with a store on it: two replicas, so that after a failover one is left to
/// confirm writes while the killed primary is away.
async fn group() -> SentinelGroup {
    tokio::task::spawn_blocking(|| SentinelGroup::start("drover", 2, 3))
        .await
        .unwrap()
        .expect("the Sentinel group starts (apt-get install redis-sentinel)")
}

async fn store(group: &SentinelGroup, wait_replicas: u32) -> drover_store::Store {
    let mut config = drover_store::Config::new(group.url());
    config.wait_replicas = wait_replicas;
    drover_store::Store::connect(&config)
        .await
        .expect("connect through Sentinel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_mid_rollout_loses_no_acknowledged_workflow_and_commits_each_step_once() {
    let mut group = group().await;
    let store = store(&group, 1).await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(150.0))
        .await
        .expect("lab");
    let logs = std::env::temp_dir().join(format!("drover-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let url = group.url();
    let kube = lab.kube_url();
    let env = [
        ("DROVER_KUBE_URL", kube.as_str()),
        ("DROVER_REDIS_WAIT_REPLICAS", "1"),
    ];
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn_with(&url, &format!("s{i}"), &logs, &env))
        .collect();

    let nodes = ["worker-01", "worker-02", "worker-03", "worker-04"];
    let vms: Vec<String> = nodes.iter().flat_map(|n| vmis_on(&lab, n)).collect();
    let rollout = submit(
        &store,
        "rolling-maintenance",
        json!({"nodes": nodes, "max_in_maintenance": 2, "poll_ms": 100}),
        0,
    )
    .await;

    // Submissions keep coming through the failover; those acknowledged must all run.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submitter = {
        let (store, count) = (store.clone(), count.clone());
        tokio::spawn(async move {
            let registry = drover_kinds::builtin();
            let input = json!({"steps": 3, "min_ms": 10, "max_ms": 60});
            let (mut acked, mut refused) = (Vec::new(), 0);
            while !*stopped.borrow() {
                let submission = drover_store::Submission::new("synthetic", input.clone());
                match store
                    .submit_new(&registry, uuid_like(), submission, None, now_ms())
                    .await
                {
                    Ok(s) => {
                        acked.push(s.id);
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        assert!(
                            matches!(&e, drover_store::SubmitError::Store(s) if s.is_transient()),
                            "{e}"
                        );
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, refused)
        })
    };

    // Kill the primary once the rollout is moving VMs.
    wait_for(
        Duration::from_secs(60),
        "the rollout to move VMs",
        || async { migrations_per_vmi(&lab).len() >= 5 },
    )
    .await;
    let (killed, old_port, new_port, failover) = tokio::task::block_in_place(|| {
        let old = group.primary_port().unwrap();
        let killed = group.kill_primary().unwrap();
        let at = Instant::now();
        let new = group.wait_failover(old).unwrap();
        (killed, old, new, at.elapsed())
    });
    assert_ne!(new_port, old_port);
    // The old primary comes back from its AOF; Sentinel makes it a replica of the new one, so
    // writes can be confirmed again.
    group.servers[killed]
        .restart()
        .expect("old primary restarts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Enough acknowledged submissions to mean something, however loaded the machine is.
    wait_for(
        Duration::from_secs(60),
        "100 acknowledged submissions",
        || async { count.load(std::sync::atomic::Ordering::Relaxed) >= 100 },
    )
    .await;
    stop.send(true).unwrap();

    let (acked, refused) = submitter.await.unwrap();
    assert!(acked.len() > 100, "too few submissions: {}", acked.len());
    let moved = migrations_per_vmi(&lab).len();
    assert!(
        moved < vms.len(),
        "the failover came after the rollout had moved every VM"
    );

    let mut all = acked.clone();
    all.push(rollout.clone());
    let views = wait_all_finished(&store, &all, Duration::from_secs(180)).await;
    for v in &views {
        assert_eq!(v.state, State::Succeeded, "{}: {:?}", v.id, v.error);
        if v.kind == "synthetic" {
            committed_once(v, 3);
        }
    }
    // Every VM moved exactly once, and every node is back in service.
    let per = migrations_per_vmi(&lab);
    for vm in &vms {
        assert_eq!(per.get(vm), Some(&1), "{vm} moved {:?} times", per.get(vm));
    }
    for n in nodes {
        assert!(!unschedulable(&lab, n), "{n} returned to service");
    }
    let report = views.last().unwrap().result.clone().unwrap();
    assert_eq!(report["moved_more_than_once"], json!([]), "{report}");
    // The store still names its primary through Sentinel: the old primary is a replica now.
    let mut conn = store.connection();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
    eprintln!(
        "failover took {failover:?}; {} submissions acknowledged, {refused} refused while it ran; \
         {moved} of {} VMs had moved when the primary died",
        acked.len(),
        vms.len()
    );
    drop(workers);
}
