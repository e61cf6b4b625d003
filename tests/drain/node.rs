//! drain-node end to end: a node's VMs leave within the cluster and per-node migration limits and
//! each moves once, VMs that cannot live-migrate are handled by the policy, failed migrations are
//! retried under new names, cancelling uncordons, a worker killed mid-drain leaves no duplicate
//! migration, and maintenance waits for its signal before the node returns.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_lab::{Lab, LabConfig};
use drover_workflows::State;
use serde_json::json;

use super::{drain_input, maintenance_done, migrations_per_vmi, rig, unschedulable, vmis_on};
use crate::harness::*;

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
    // Six attempts per VM: at a 10% failure rate three in a row on one of 20 VMs happen in ~2% of
    // runs (the lab's dice are not seeded), six in a row practically never.
    let mut input = drain_input(node, "fail");
    input["max_migration_attempts"] = json!(6);
    let id = submit(&rig.store, "drain-node", input, 0).await;
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
    maintenance_done(&rig.store, &id).await;
    let v = &wait_all_finished(
        &rig.store,
        std::slice::from_ref(&id),
        Duration::from_secs(30),
    )
    .await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(!unschedulable(&rig.lab, node), "returned to service");
}
