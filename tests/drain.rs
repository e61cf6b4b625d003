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

pub struct Rig {
    pub redis: Redis,
    pub store: drover_store::Store,
    pub lab: LabHandle,
    pub workers: Vec<InProcessWorker>,
}

/// Redis, the lab (time-scaled so a migration takes tens of ms) and `n` in-process workers.
pub async fn rig(n: usize) -> Rig {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .expect("kube client");
    let workers = (0..n)
        .map(|i| {
            let ports = Ports {
                clock: Arc::new(drover_worker::ports::TokioClock),
                probe: None,
                kube: Some(cluster.clone().port()),
            };
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

/// Successful migration creations per VMI, from the lab's audit.
pub fn migrations_per_vmi(lab: &LabHandle) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for m in lab.list("virtualmachineinstancemigrations.kubevirt.io", None) {
        if m["status"]["phase"] == json!("Succeeded") {
            *per.entry(
                m["spec"]["vmiName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
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
