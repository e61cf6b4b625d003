//! rolling-maintenance end to end: each VM moves once within the limits, a spent failure budget or
//! a node failing the health gate pauses the rollout until it is resumed, the rollout waits for a
//! rebooted node to take VMs again, second moves forced by capacity are planned and reported, and
//! an operator drives a whole rollout through the REST API.

use std::time::Duration;

use drover_lab::LabConfig;
use drover_workflows::State;
use serde_json::{Value, json};

use super::{Rig, maintenance_done, migrations_per_vmi, rig, rig_with, unschedulable, vmis_on};
use crate::harness::*;

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
            maintenance_done(&rig.store, &drain).await;
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
            maintenance_done(&rig.store, &drain).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(signalled.len(), 2);
    assert!(broken.is_none(), "the rollout paused for the broken node");
}
