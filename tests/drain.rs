//! Drains and rollouts end to end: the workflows run on real workers, talk to the lab over real
//! HTTP through the kube-rs adapter, and the lab's audit says what actually happened in the
//! "cluster". This file holds the rig and what the tests ask the lab; the tests are in
//! `drain/node.rs` (drain-node), `drain/rollout.rs` (rolling-maintenance) and `drain/adapter.rs`
//! (the kube adapter against the lab, without workflows).

mod adapter;
mod node;
mod rollout;

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_lab::{Lab, LabConfig, LabHandle};
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

/// Sends `maintenance-done` to the drain `id`, as an operator whose node is back.
pub async fn maintenance_done(store: &drover_store::Store, id: &str) {
    let reply = store
        .signal(
            id,
            "maintenance-done",
            &serde_json::json!({"by": "test"}),
            drover_store::SignalLimits::default(),
            now_ms(),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, drover_store::ControlResult::Ok(_)),
        "{reply:?}"
    );
}

pub fn drain_input(node: &str, policy: &str) -> Value {
    json!({"node": node, "non_migratable": policy, "poll_ms": 100})
}

pub(crate) fn vmis_on(lab: &LabHandle, node: &str) -> Vec<String> {
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

pub(crate) fn unschedulable(lab: &LabHandle, node: &str) -> bool {
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
