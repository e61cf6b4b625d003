//! Fleet operations: a scale-out through 30% failed deployments, decommissioning a node, replacing
//! one.

use drover_workflows::State;
use drover_workflows::ports::maas::status;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_out_through_30_percent_failed_deployments_provisions_every_node() {
    let rig = rig(2, scenario(6)).await;
    rig.lab.set_fault_rates(drover_lab::scenario::FaultRates {
        maas_deploy_failure: 0.3,
        ..Default::default()
    });
    // At least one failure whatever the dice say.
    rig.lab
        .inject(drover_lab::Fault::MaasDeployFailure {
            machine: None,
            count: 1,
        })
        .unwrap();
    let mut node = provision_input();
    node["failure_budget"] = json!(8);
    node["maas_limit"] = json!(3);
    let id = submit(
        &rig.store,
        "scale-out",
        json!({"count": 4, "node": node}),
        0,
    )
    .await;
    let v = &ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    let nodes = result["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{result}");
    for n in nodes {
        let name = n["node"].as_str().unwrap();
        let node = rig.lab.get("nodes", "", name).expect("node registered");
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is not Ready");
    }
    let failed = result["failed_deployments"].as_u64().unwrap();
    assert!(failed >= 1, "{result}");
    // Every attempt allocated exactly one machine.
    assert_eq!(
        maas_calls(&rig.lab, "allocate") as u64,
        4 + failed,
        "allocations against attempts"
    );
    assert!(leaked(rig.maas.as_ref()).await.is_empty());
    // A machine is broken exactly when its last two deployments failed.
    for m in machines(rig.maas.as_ref()).await {
        let events = rig.maas.events(&m.system_id, 100).await.unwrap();
        let in_a_row = drover_kinds::machines::failures_in_a_row(&events);
        if m.status == status::BROKEN {
            assert!(in_a_row >= 2, "{} broken after {in_a_row}", m.hostname);
        } else if m.owner.is_none() {
            assert!(
                in_a_row < 2,
                "{} failed {in_a_row} times, not broken",
                m.hostname
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_moves_the_vms_deletes_the_node_and_erases_the_machine() {
    let rig = rig(2, scenario(0)).await;
    let before = vmis_per_node(&rig.lab);
    assert_eq!(before.get("worker-02"), Some(&20));
    let id = submit(
        &rig.store,
        "decommission-node",
        json!({"node": "worker-02", "erase": "quick", "poll_ms": 100}),
        0,
    )
    .await;
    let v = &ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(rig.lab.get("nodes", "", "worker-02").is_none());
    let after = vmis_per_node(&rig.lab);
    assert_eq!(after.get("worker-02"), None);
    assert_eq!(
        after.values().sum::<usize>(),
        before.values().sum::<usize>(),
        "every VM still runs"
    );
    let m = machine(rig.maas.as_ref(), "worker-02").await;
    assert_eq!(m.status, status::READY, "{m:?}");
    assert!(m.owner.is_none());
    assert_eq!(maas_calls(&rig.lab, "release"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_node_moves_its_vms_onto_the_new_one() {
    let rig = rig(2, scenario(0)).await;
    let mut with = provision_input();
    with["taints"] = json!([]);
    let id = submit(
        &rig.store,
        "replace-node",
        json!({"node": "worker-03", "with": with, "erase": "quick", "poll_ms": 100}),
        0,
    )
    .await;
    let v = &ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    let new = result["new"]["node"].as_str().unwrap().to_string();
    assert!(new.starts_with("spare-"), "{result}");
    assert!(rig.lab.get("nodes", "", "worker-03").is_none());
    let per = vmis_per_node(&rig.lab);
    assert_eq!(per.get(&new), Some(&20), "{per:?}");
    assert_eq!(
        machine(rig.maas.as_ref(), "worker-03").await.status,
        status::READY
    );
    assert_eq!(
        machine(rig.maas.as_ref(), &new).await.status,
        status::DEPLOYED
    );
}

/// Every worker of the reference lab maintained with one surge node: the first node's VMs go to the
/// surge node instead of to a node that is drained later, so during the rollout each VM moves
/// exactly once (without surge, 19 move twice: drain/rollout.rs). Afterwards the surge node is
/// decommissioned, which moves the VMs it took a second time, and the report counts those apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_one_surge_node_moves_each_vm_once() {
    let rig = rig(2, scenario(0)).await;
    let nodes: Vec<String> = (1..=8).map(|i| format!("worker-{i:02}")).collect();
    let mut surge_node = provision_input();
    surge_node["taints"] = json!([]);
    let input = json!({"nodes": nodes, "max_in_maintenance": 1, "non_migratable": "skip",
                       "poll_ms": 50, "surge": 1, "surge_node": surge_node});
    let id = submit(&rig.store, "rolling-maintenance", input, 0).await;
    let v = &ended(&rig.store, &id, 240).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let report = v.result.clone().unwrap();
    assert_eq!(report["planned_second_moves"], json!([]), "{report}");
    assert_eq!(report["moved_more_than_once"], json!([]), "{report}");
    // 8 workers x 20 VMs, less the 4 on ReadWriteOnce volumes (skipped).
    assert_eq!(report["migrations"], json!(156), "{report}");
    let surge = report["surge"][0].as_str().unwrap().to_string();
    let back = report["surge_return_migrations"].as_u64().unwrap();
    assert!(back > 0, "{report}");
    let per = crate::drain::migrations_per_vmi(&rig.lab);
    assert_eq!(per.values().sum::<usize>() as u64, 156 + back, "{per:?}");
    assert!(rig.lab.get("nodes", "", &surge).is_none());
    assert_eq!(
        wait_status(rig.maas.as_ref(), &surge, status::READY)
            .await
            .status,
        status::READY
    );
}
