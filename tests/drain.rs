//! drain-node end to end: the workflow runs on real workers, talks to the lab over real HTTP through
//! the kube-rs adapter, and the lab's audit says what actually happened in the "cluster".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::State;
use drover_workflows::ports::Ports;
use serde_json::{Value, json};

use crate::harness::*;

/// The parts are held for their lifetime: dropping them stops Redis and the workers.
#[allow(dead_code)]
pub struct Rig {
    pub redis: Redis,
    pub store: drover_store::Store,
    pub lab: LabHandle,
    pub workers: Vec<InProcessWorker>,
}

/// Redis, the lab (time-scaled so a migration takes tens of ms) and `n` in-process workers.
pub async fn rig(n: usize) -> Rig {
    rig_with(n, LabConfig::reference().with_time_scale(600.0)).await
}

/// [`rig`] with a lab of its own configuration.
pub async fn rig_with(n: usize, config: LabConfig) -> Rig {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(config).await.expect("lab starts");
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .expect("kube client");
    let workers = (0..n)
        .map(|i| {
            let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
                .with_kube(cluster.clone().port());
            InProcessWorker::start_with_ports(&store, worker_config(&format!("drain-{i}")), ports)
        })
        .collect();
    Rig {
        redis,
        store,
        lab,
        workers,
    }
}

/// Runs a rolling maintenance to its end and returns its report; it must succeed.
async fn rollout_report(rig: &Rig, input: Value) -> Value {
    let id = submit(&rig.store, "rolling-maintenance", input, 0).await;
    let v = wait_all_finished(&rig.store, &[id], Duration::from_secs(240)).await;
    assert_eq!(v[0].state, State::Succeeded, "{:?}", v[0].error);
    v[0].result.clone().expect("a report")
}

/// The rollout's state for an operator loop: `Some` once it ended (it must have succeeded), and a
/// failure once `deadline` passed.
async fn ended(rig: &Rig, id: &str, deadline: std::time::Instant) -> Option<()> {
    let v = rig.store.get(id).await.unwrap().unwrap();
    if v.state.is_terminal() {
        assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
        return Some(());
    }
    assert!(
        std::time::Instant::now() < deadline,
        "the rollout did not finish"
    );
    None
}

/// The rollout's drains now waiting in maintenance for their signal: (node, drain id).
async fn in_maintenance(rig: &Rig, id: &str) -> Vec<(String, String)> {
    let mut waiting = Vec::new();
    for child in rig.store.children(id).await.unwrap() {
        let c = rig.store.get(&child.id).await.unwrap().unwrap();
        if c.waiting_on.as_deref() == Some("signal:maintenance-done") {
            let node = child.input["node"].as_str().unwrap().to_string();
            waiting.push((node, child.id));
        }
    }
    waiting
}

pub fn drain_input(node: &str, policy: &str) -> Value {
    json!({"node": node, "non_migratable": policy, "poll_ms": 100})
}

fn vmis_on(lab: &LabHandle, node: &str) -> Vec<String> {
    lab.list("virtualmachineinstances.kubevirt.io", None)
        .into_iter()
        .filter(|v| v["status"]["nodeName"] == json!(node))
        .map(|v| {
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn unschedulable(lab: &LabHandle, node: &str) -> bool {
    lab.get("nodes", "", node)
        .map(|n| n["spec"]["unschedulable"] == json!(true))
        .unwrap_or(false)
}

/// Live migrations each VMI went through, from the lab's audit: virt-handler's status update of a
/// VMI at the end of a successful migration (its new node and `migrationState.completed`). The
/// audit keeps what the cluster's migration objects may lose to KubeVirt's garbage collection, and
/// counts a move whoever asked for it (Drover or KubeVirt's evacuation controller).
pub fn migrations_per_vmi(lab: &LabHandle) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for e in lab.audit() {
        let completed = e
            .request_object
            .as_ref()
            .is_some_and(|o| o.pointer("/status/migrationState/completed") == Some(&json!(true)));
        if e.verb == "update" && e.object.starts_with("virtualmachineinstances") && completed {
            // virtualmachineinstances.kubevirt.io/<namespace>/<name>/status
            let vmi = e.object.split('/').nth(2).unwrap_or_default().to_string();
            *per.entry(vmi).or_insert(0) += 1;
        }
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_a_node_of_migratable_vms_within_the_limits() {
    let rig = rig(2).await;
    let node = "worker-01";
    let before = vmis_on(&rig.lab, node);
    assert_eq!(before.len(), 20);
    let id = submit(&rig.store, "drain-node", drain_input(node, "fail"), 0).await;
    let v = &wait_all_finished(&rig.store, &[id], Duration::from_secs(90)).await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(vmis_on(&rig.lab, node).is_empty(), "VMIs left on {node}");
    assert!(
        unschedulable(&rig.lab, node),
        "the node stays cordoned for maintenance"
    );
    let per = migrations_per_vmi(&rig.lab);
    for vmi in &before {
        assert_eq!(
            per.get(vmi),
            Some(&1),
            "{vmi} migrated {:?} times",
            per.get(vmi)
        );
    }
    let counters = rig.lab.counters();
    assert!(
        counters.max_cluster <= 5,
        "cluster limit exceeded: {}",
        counters.max_cluster
    );
    assert!(
        counters.max_per_node.get(node).copied().unwrap_or(0) <= 2,
        "per-node limit exceeded: {:?}",
        counters.max_per_node
    );
    assert!(
        counters.max_per_node.get(node).copied().unwrap_or(0) >= 2,
        "migrations never ran in parallel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwo_vms_are_handled_by_policy() {
    let rig = rig(2).await;
    // worker-05..08 each carry one VM on a ReadWriteOnce volume (vm-0N-19).
    let fail = submit(
        &rig.store,
        "drain-node",
        drain_input("worker-05", "fail"),
        0,
    )
    .await;
    let restart = submit(
        &rig.store,
        "drain-node",
        drain_input("worker-06", "shutdown-restart"),
        0,
    )
    .await;
    let skip = submit(
        &rig.store,
        "drain-node",
        drain_input("worker-07", "skip"),
        0,
    )
    .await;
    let views =
        wait_all_finished(&rig.store, &[fail, restart, skip], Duration::from_secs(120)).await;

    assert_eq!(views[0].state, State::Failed);
    let error = views[0].error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("vm-05-19") && error.contains("DisksNotLiveMigratable"),
        "{error}"
    );
    assert!(
        !unschedulable(&rig.lab, "worker-05"),
        "a refused drain changes nothing"
    );
    let still = vmis_on(&rig.lab, "worker-05");
    assert!(
        (0..20).all(|j| still.contains(&format!("vm-05-{j:02}"))),
        "a refused drain moved VMs: {still:?}"
    );

    assert_eq!(views[1].state, State::Succeeded, "{:?}", views[1].error);
    assert!(vmis_on(&rig.lab, "worker-06").is_empty());
    let restarted = rig
        .lab
        .get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "vm-06-19",
        )
        .expect("vm-06-19 runs again");
    assert_ne!(restarted["status"]["nodeName"], json!("worker-06"));

    assert_eq!(views[2].state, State::Succeeded, "{:?}", views[2].error);
    assert_eq!(vmis_on(&rig.lab, "worker-07"), vec!["vm-07-19".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migrations_are_retried_under_new_names() {
    let rig = rig(2).await;
    rig.lab.set_fault_rates(drover_lab::scenario::FaultRates {
        migration_failure: 0.1,
        ..Default::default()
    });
    // 10% of 20 migrations can still all succeed; make sure at least one fails, mid-transfer.
    rig.lab
        .inject(drover_lab::Fault::MigrationFailure {
            vmi: Some("vmo-prod/vm-02-03".into()),
            phase: Some("Running".into()),
            count: 1,
        })
        .unwrap();
    let node = "worker-02";
    let before = vmis_on(&rig.lab, node);
    let id = submit(&rig.store, "drain-node", drain_input(node, "fail"), 0).await;
    let v = &wait_all_finished(&rig.store, &[id], Duration::from_secs(120)).await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(vmis_on(&rig.lab, node).is_empty());
    let failed = rig
        .lab
        .list("virtualmachineinstancemigrations.kubevirt.io", None)
        .into_iter()
        .filter(|m| m["status"]["phase"] == json!("Failed"))
        .count();
    assert!(
        failed > 0,
        "no migration failed: the fault rate did not bite"
    );
    let per = migrations_per_vmi(&rig.lab);
    for vmi in &before {
        assert_eq!(per.get(vmi), Some(&1), "{vmi}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_drain_uncordons_and_leaves_no_migration_running() {
    let rig = rig(2).await;
    let node = "worker-03";
    let id = submit(&rig.store, "drain-node", drain_input(node, "fail"), 0).await;
    wait_for(
        Duration::from_secs(30),
        "migrations to be under way",
        || async { rig.lab.counters().current_cluster > 0 && unschedulable(&rig.lab, node) },
    )
    .await;
    rig.store.cancel(&id, now_ms()).await.unwrap();
    let v = &wait_all_finished(
        &rig.store,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
    )
    .await[0];
    assert_eq!(v.state, State::Cancelled, "{:?}", v.error);
    assert!(
        !unschedulable(&rig.lab, node),
        "the drain cordoned the node, so cancelling uncordons it"
    );
    for child in v.children.as_ref().unwrap() {
        wait_for(Duration::from_secs(30), "children to end", || async {
            rig.store
                .get(child)
                .await
                .unwrap()
                .unwrap()
                .state
                .is_terminal()
        })
        .await;
    }
    let running: Vec<String> = rig
        .lab
        .list("virtualmachineinstancemigrations.kubevirt.io", None)
        .into_iter()
        .filter(|m| {
            !matches!(
                m["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            )
        })
        .map(|m| {
            m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(running.is_empty(), "migrations left running: {running:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_drain_resumes_without_duplicate_migrations() {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(300.0))
        .await
        .unwrap();
    let logs = std::env::temp_dir().join(format!("drover-drain-kill-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let url = lab.kube_url();
    let env = [("DROVER_KUBE_URL", url.as_str())];
    let mut workers = vec![
        WorkerProcess::spawn_with(&redis.url(), "dk-0", &logs, &env),
        WorkerProcess::spawn_with(&redis.url(), "dk-1", &logs, &env),
    ];
    let node = "worker-04";
    let before = vmis_on(&lab, node);
    let id = submit(&store, "drain-node", drain_input(node, "fail"), 0).await;
    wait_for(
        Duration::from_secs(30),
        "migrations to be under way",
        || async { lab.counters().current_cluster > 0 },
    )
    .await;
    workers[0].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    workers[1].kill9();
    workers[1] = WorkerProcess::spawn_with(&redis.url(), "dk-2", &logs, &env);
    let v = &wait_all_finished(&store, &[id], Duration::from_secs(120)).await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(vmis_on(&lab, node).is_empty());
    // One migration object per attempt: the lab holds exactly the objects the drain's children name
    // (a re-run of a step finds its own object instead of making another).
    let mut expected = std::collections::BTreeSet::new();
    for child in v.children.as_ref().unwrap() {
        let c = store.get(child).await.unwrap().unwrap();
        expected.insert(drover_kinds::cluster::migration_name(
            &c.id,
            c.input["vmi"].as_str().unwrap(),
        ));
    }
    let actual: std::collections::BTreeSet<String> = lab
        .list("virtualmachineinstancemigrations.kubevirt.io", None)
        .into_iter()
        .map(|m| {
            m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(actual, expected);
    // And the audit agrees: every migration object was created once; re-runs met 409 AlreadyExists.
    let mut creates: BTreeMap<String, usize> = BTreeMap::new();
    for e in lab.audit() {
        if e.verb == "create"
            && e.object.starts_with("virtualmachineinstancemigrations")
            && e.outcome < 300
        {
            *creates.entry(e.object.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(creates.len(), expected.len(), "{creates:?}");
    assert!(creates.values().all(|n| *n == 1), "{creates:?}");
    let per = migrations_per_vmi(&lab);
    for vmi in &before {
        assert_eq!(per.get(vmi), Some(&1), "{vmi}");
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_maintenance_moves_each_vm_once_within_the_limits() {
    let rig = rig(2).await;
    let nodes = ["worker-01", "worker-02", "worker-03", "worker-04"];
    let before: Vec<String> = nodes.iter().flat_map(|n| vmis_on(&rig.lab, n)).collect();
    assert_eq!(before.len(), 80);
    let input = json!({"nodes": nodes, "max_in_maintenance": 2, "poll_ms": 100});
    let report = &rollout_report(&rig, input).await;
    assert_eq!(report["planned_second_moves"], json!([]), "{report}");
    assert_eq!(report["migrations"], json!(80), "{report}");
    assert_eq!(report["moved_more_than_once"], json!([]), "{report}");
    let per = migrations_per_vmi(&rig.lab);
    for vmi in &before {
        assert_eq!(
            per.get(vmi),
            Some(&1),
            "{vmi} moved {:?} times",
            per.get(vmi)
        );
    }
    for n in nodes {
        assert!(!unschedulable(&rig.lab, n), "{n} returned to service");
    }
    let counters = rig.lab.counters();
    assert!(
        counters.max_cluster <= 5,
        "cluster limit exceeded: {}",
        counters.max_cluster
    );
    assert!(
        counters.max_per_node.values().all(|m| *m <= 2),
        "per-node limit exceeded: {:?}",
        counters.max_per_node
    );
    assert!(
        counters.max_cluster > 2,
        "two nodes in maintenance at once should overlap migrations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_waits_for_its_signal_and_the_node_returns() {
    let rig = rig(2).await;
    let node = "worker-08";
    let input = json!({"node": node, "non_migratable": "skip", "maintenance": "wait-for-signal", "uncordon": true, "poll_ms": 100});
    let id = submit(&rig.store, "drain-node", input, 0).await;
    wait_for(
        Duration::from_secs(60),
        "the node to be in maintenance",
        || async {
            rig.store
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .waiting_on
                .as_deref()
                == Some("signal:maintenance-done")
        },
    )
    .await;
    assert!(
        unschedulable(&rig.lab, node),
        "cordoned while in maintenance"
    );
    assert_eq!(
        vmis_on(&rig.lab, node),
        vec!["vm-08-19".to_string()],
        "only the skipped RWO VM stays"
    );
    rig.store
        .signal(
            &id,
            "maintenance-done",
            &json!({"by": "test"}),
            drover_store::SignalLimits::default(),
            now_ms(),
        )
        .await
        .unwrap();
    let v = &wait_all_finished(
        &rig.store,
        std::slice::from_ref(&id),
        Duration::from_secs(30),
    )
    .await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(!unschedulable(&rig.lab, node), "returned to service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_failure_budget_pauses_the_rollout_until_resumed() {
    let rig = rig(2).await;
    // worker-05 holds an RWO VM and the policy is fail: its drain fails; the budget is 0.
    let input = json!({"nodes": ["worker-05", "worker-01"], "max_in_maintenance": 1, "failure_budget": 0, "poll_ms": 100});
    let id = submit(&rig.store, "rolling-maintenance", input, 0).await;
    wait_for(Duration::from_secs(120), "the rollout to pause", || async {
        let v = rig.store.get(&id).await.unwrap().unwrap();
        v.paused && v.waiting_on.as_deref() == Some("paused")
    })
    .await;
    let v = rig.store.get(&id).await.unwrap().unwrap();
    assert!(
        v.progress.as_ref().unwrap()["paused"]
            .as_str()
            .unwrap()
            .contains("worker-05"),
        "{:?}",
        v.progress
    );
    rig.store.resume(&id, now_ms()).await.unwrap();
    let v = &wait_all_finished(
        &rig.store,
        std::slice::from_ref(&id),
        Duration::from_secs(120),
    )
    .await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let nodes = &v.result.as_ref().unwrap()["nodes"];
    assert_eq!(nodes["worker-05"], json!("failed"), "{nodes}");
    assert_eq!(nodes["worker-01"], json!("succeeded"), "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_sees_kubevirt_refuse_an_eviction_at_once() {
    let lab = Lab::start(LabConfig::reference().with_time_scale(60.0))
        .await
        .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    let kube = cluster.port();
    let pods = kube.list_pods("worker-05").await.unwrap();
    let launcher = pods
        .iter()
        .find(|p| p.labels.get("kubevirt.io").map(String::as_str) == Some("virt-launcher"))
        .expect("a virt-launcher pod");
    let started = std::time::Instant::now();
    let eviction = kube
        .evict_pod(&launcher.namespace, &launcher.name)
        .await
        .unwrap();
    assert!(
        matches!(
            eviction,
            drover_workflows::ports::kube::Eviction::Refused { .. }
        ),
        "{eviction:?}"
    );
    // kube's default client would retry the 429 for minutes.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// The adapter watches a migration instead of polling it: each call returns when the phase
/// changes, long before its window ends, and a watch the server cuts short is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_watches_a_migration_through_its_phases() {
    let lab = Lab::start(LabConfig::reference().with_time_scale(30.0))
        .await
        .unwrap();
    lab.inject(drover_lab::Fault::WatchDisconnect {
        after_ms: 50,
        count: 2,
    })
    .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    let kube = cluster.port();
    let m = kube
        .create_migration("vmo-prod", "vm-03-04-watched", "vm-03-04", &BTreeMap::new())
        .await
        .unwrap();
    let window = Duration::from_secs(60);
    let started = std::time::Instant::now();
    let mut phases = vec![m.phase];
    let end = loop {
        let m = kube
            .watch_migration("vmo-prod", "vm-03-04-watched", window)
            .await
            .unwrap()
            .expect("the migration exists");
        if m.is_finished() {
            break m;
        }
        // Not a poll: a call returns because the phase moved on (the window is far away).
        assert_ne!(
            phases.last(),
            Some(&m.phase),
            "returned without a change: {phases:?}"
        );
        phases.push(m.phase);
        assert!(
            started.elapsed() < window,
            "each call should return at a phase change, not at the end of its window: {phases:?}"
        );
    };
    assert_eq!(end.phase, "Succeeded", "{end:?}");
    assert!(phases.len() >= 3, "saw the phases go by: {phases:?}");
    assert!(
        started.elapsed() < window,
        "took {:?}: {phases:?}",
        started.elapsed()
    );
}

/// Between nodes the rollout waits until the node just maintained takes VMs again. After a reboot a
/// node is Ready before virt-handler runs; the next drain must not start in that window (its VMs are
/// planned to land on the maintained node). The test plays the operator: reboot, wait for Ready,
/// signal `maintenance-done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_waits_for_a_rebooted_node_to_take_vms_again() {
    let mut config = LabConfig::reference().with_time_scale(600.0);
    config.scenario.reboot.boot_secs = 60.0;
    config.scenario.reboot.virt_handler_start_secs = 900.0;
    let rig = rig_with(2, config).await;
    let nodes = ["worker-01", "worker-02"];
    let input = json!({"nodes": nodes, "max_in_maintenance": 1, "maintenance": "wait-for-signal", "non_migratable": "skip", "poll_ms": 50});
    let id = submit(&rig.store, "rolling-maintenance", input, 0).await;
    let schedulable = |node: &str| {
        rig.lab
            .get("nodes", "", node)
            .is_some_and(|n| n["metadata"]["labels"]["kubevirt.io/schedulable"] == "true")
    };
    let ready = |node: &str| {
        rig.lab.get("nodes", "", node).is_some_and(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut rebooted: Vec<String> = Vec::new();
    let mut drains_seen = 0;
    while ended(&rig, &id, deadline).await.is_none() {
        let drains = rig.store.children(&id).await.unwrap().len();
        if drains > drains_seen {
            // A new drain started: every node maintained before it takes VMs again.
            for node in &rebooted {
                assert!(
                    schedulable(node),
                    "a drain started while {node} had no virt-handler yet"
                );
            }
            drains_seen = drains;
        }
        for (node, drain) in in_maintenance(&rig, &id).await {
            if rebooted.contains(&node) {
                continue;
            }
            rig.lab
                .inject(drover_lab::Fault::NodeReboot { node: node.clone() })
                .unwrap();
            wait_for(Duration::from_secs(30), "the node to be Ready", || async {
                ready(&node)
            })
            .await;
            assert!(!schedulable(&node), "virt-handler is still starting");
            rebooted.push(node);
            rig.store
                .signal(
                    &drain,
                    "maintenance-done",
                    &json!({"by": "test"}),
                    drover_store::SignalLimits::default(),
                    now_ms(),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rebooted.len(), 2);
    assert_eq!(drains_seen, 2);
    let per = migrations_per_vmi(&rig.lab);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
}

/// Driven through the REST API as an operator would: the rollout pauses when a drain fails past
/// the budget and is resumed through the API; a node in maintenance waits for the signal sent
/// through the API; the detail view shows each node's drain and each drain its VMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_maintenance_driven_through_the_api() {
    use crate::api::{OPERATOR, start_api};
    let rig = rig(2).await;
    let api = start_api(&rig.store).await;
    let get = |path: String| {
        let api = &api;
        async move { api.call("GET", &path, Some(OPERATOR), None, &[]).await.1 }
    };
    // worker-05 holds an RWO VM and the policy is fail: its drain fails, over a budget of 0.
    let (code, body) = api
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "rolling-maintenance", "input": {
                "nodes": ["worker-05", "worker-02"], "max_in_maintenance": 1, "failure_budget": 0,
                "non_migratable": "fail", "maintenance": "wait-for-signal", "poll_ms": 50,
            }}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let paused =
        crate::lab::support::wait_for("the rollout to pause", Duration::from_secs(60), || async {
            let v = get(format!("/v1/workflows/{id}")).await;
            (v["paused"] == json!(true)).then_some(v)
        })
        .await;
    let drain = &paused["children"][0];
    assert_eq!(drain["input"]["node"], "worker-05", "{paused}");
    assert_eq!(drain["state"], "failed", "{paused}");
    assert!(
        drain["error"].to_string().contains("vm-05-19"),
        "the report names the blocking VM: {drain}"
    );
    let (code, body) = api
        .post(&format!("/v1/workflows/{id}/resume"), OPERATOR, json!({}))
        .await;
    assert!(code.is_success(), "{code} {body}");

    // worker-02 drains, then waits in maintenance for the signal; the detail shows where it is.
    let in_maintenance = crate::lab::support::wait_for(
        "worker-02 in maintenance",
        Duration::from_secs(60),
        || async {
            let v = get(format!("/v1/workflows/{id}")).await;
            v["children"].as_array().and_then(|c| {
                c.iter()
                    .find(|c| {
                        c["input"]["node"] == "worker-02"
                            && c["waiting_on"] == "signal:maintenance-done"
                    })
                    .cloned()
            })
        },
    )
    .await;
    let drain_id = in_maintenance["id"].as_str().unwrap().to_string();
    let drain = get(format!("/v1/workflows/{drain_id}")).await;
    let vms = drain["children"]
        .as_array()
        .expect("the drain's migrations");
    assert_eq!(vms.len(), 20, "one migrate-vmi per VM: {drain}");
    assert!(
        vms.iter()
            .all(|m| m["kind"] == "migrate-vmi" && m["state"] == "succeeded"),
        "{drain}"
    );
    assert!(
        unschedulable(&rig.lab, "worker-02"),
        "cordoned in maintenance"
    );
    let (code, body) = api
        .post(
            &format!("/v1/workflows/{drain_id}/signals/maintenance-done"),
            OPERATOR,
            json!({"by": "api test"}),
        )
        .await;
    assert!(code.is_success(), "{code} {body}");

    let done =
        crate::lab::support::wait_for("the rollout to end", Duration::from_secs(60), || async {
            let v = get(format!("/v1/workflows/{id}")).await;
            matches!(
                v["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(v)
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let nodes = &done["result"]["nodes"];
    assert_eq!(nodes["worker-05"], "failed", "{done}");
    assert_eq!(nodes["worker-02"], "succeeded", "{done}");
    assert!(!unschedulable(&rig.lab, "worker-02"), "returned to service");
    assert!(
        migrations_per_vmi(&rig.lab).values().all(|n| *n == 1),
        "each VM moved once"
    );
}

/// With every worker in the plan the first node's VMs have no maintained node to go to: they move
/// twice, the plan says so beforehand, and the report's count agrees with the lab's audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_moves_forced_by_capacity_happen_and_are_reported() {
    let rig = rig(2).await;
    let nodes: Vec<String> = (1..=8).map(|i| format!("worker-{i:02}")).collect();
    let input =
        json!({"nodes": nodes, "max_in_maintenance": 1, "non_migratable": "skip", "poll_ms": 50});
    let report = &rollout_report(&rig, input).await;
    let per = migrations_per_vmi(&rig.lab);
    let twice: Vec<String> = per
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(vmi, _)| format!("vmo-prod/{vmi}"))
        .collect();
    assert!(per.values().all(|n| *n <= 2), "{per:?}");
    // The first node drained is one with an RWO VM (19 to move, not 20).
    assert_eq!(twice.len(), 19, "{per:?}");
    assert_eq!(report["moved_more_than_once"], json!(twice), "{report}");
    let mut planned: Vec<String> =
        serde_json::from_value(report["planned_second_moves"].clone()).unwrap();
    planned.sort();
    assert_eq!(planned, twice, "the plan foresaw exactly these");
    assert_eq!(
        report["migrations"],
        json!(per.values().sum::<usize>()),
        "{report}"
    );
}

/// A maintained node that does not come back (here virt-handler never marks it schedulable again)
/// pauses the rollout after `health_timeout_secs`, saying which node and why; once it is fixed, a
/// resume lets the rollout go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_the_health_gate_pauses_the_rollout() {
    let rig = rig(2).await;
    let http = reqwest::Client::new();
    let set_label = |node: &str, value: &str| {
        http.patch(format!("{}/api/v1/nodes/{node}", rig.lab.kube_url()))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"metadata": {"labels": {"kubevirt.io/schedulable": value}}}).to_string())
            .send()
    };
    let input = json!({"nodes": ["worker-01", "worker-02"], "max_in_maintenance": 1,
        "maintenance": "wait-for-signal", "health_timeout_secs": 1, "poll_ms": 50});
    let id = submit(&rig.store, "rolling-maintenance", input, 0).await;
    let mut signalled = Vec::new();
    let mut broken: Option<String> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while ended(&rig, &id, deadline).await.is_none() {
        let v = rig.store.get(&id).await.unwrap().unwrap();
        if v.paused {
            let node = broken.take().expect("paused only for the broken node");
            let reason = v.progress.as_ref().unwrap()["paused"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                reason.contains(&node) && reason.contains("takes VMs: false"),
                "{reason}"
            );
            assert!(
                set_label(&node, "true")
                    .await
                    .unwrap()
                    .status()
                    .is_success()
            );
            rig.store.resume(&id, now_ms()).await.unwrap();
        }
        for (node, drain) in in_maintenance(&rig, &id).await {
            if signalled.contains(&node) {
                continue;
            }
            if signalled.is_empty() {
                // The first node comes back without virt-handler.
                assert!(
                    set_label(&node, "false")
                        .await
                        .unwrap()
                        .status()
                        .is_success()
                );
                broken = Some(node.clone());
            }
            signalled.push(node);
            rig.store
                .signal(
                    &drain,
                    "maintenance-done",
                    &json!({}),
                    drover_store::SignalLimits::default(),
                    now_ms(),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(signalled.len(), 2);
    assert!(broken.is_none(), "the rollout paused for the broken node");
}
