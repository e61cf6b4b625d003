//! `migration-plan` end to end: validation of the whole plan before anything starts, imports under
//! a concurrency limit, a failed import retried from where it stopped, and cutover on a signal.

use drover_workflows::State;
use serde_json::{Value, json};

use super::e2e::{NS, Scratch, disk, made_by_drover, ova, rig, s, vm};
use crate::harness::*;
use crate::provision::ended;

fn outputs(v: &drover_store::WorkflowView, step: usize) -> Value {
    v.outputs
        .as_ref()
        .and_then(|o| o.get(&step).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_vm_plan_with_two_bad_vms_is_stopped_by_validation_with_the_whole_report() {
    let rig = rig("plan-bad", 1).await;
    let data = Scratch::new("plan-bad-data");
    let image = disk(&data, "base.qcow2", "qcow2", 64, 1);
    let package = ova(&data, "legacy", "bios", 64, false);
    let mut vms: Vec<Value> = (0..8)
        .map(|k| json!({"name": format!("vm-{k}"), "source": {"disk": s(&image)}}))
        .collect();
    vms.push(json!({"name": "vm-8", "source": {"disk": s(&data.path("gone.vmdk"))}}));
    // Its NIC's network ("VM Network") is not in the mapping.
    vms.push(json!({"name": "vm-9", "source": {"ova": s(&package)}}));
    let input = json!({"namespace": NS, "storage_class": "px-rwx", "vms": vms,
                       "network_map": {"default": "pod"}, "poll_ms": 50});

    // A dry run reports and starts nothing.
    let mut dry = input.clone();
    dry["dry_run"] = json!(true);
    let id = submit(&rig.store, "migration-plan", dry, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Failed, "the report has problems");
    // Without the two bad VMs, the dry run's result is the report.
    let mut dry_good = input.clone();
    dry_good["dry_run"] = json!(true);
    dry_good["vms"] = json!(input["vms"].as_array().unwrap()[..8]);
    let id = submit(&rig.store, "migration-plan", dry_good, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let report = v.result.clone().unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["vms"].as_array().unwrap().len(), 8);
    assert_eq!(made_by_drover(&rig.lab), Vec::<String>::new());

    let id = submit(&rig.store, "migration-plan", input, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Failed);
    let error = v.error.clone().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("validation failed for 2 of 10 VMs"),
        "{error}"
    );
    assert!(
        error.contains("vm-8") && error.contains("does not exist"),
        "{error}"
    );
    assert!(
        error.contains("vm-9") && error.contains("\"VM Network\""),
        "{error}"
    );
    let v = rig.store.get(&id).await.unwrap().unwrap();
    let report = outputs(&v, 0);
    assert_eq!(report["ok"], false);
    let lines = report["vms"].as_array().unwrap();
    assert_eq!(lines.len(), 10);
    // Each good VM shows its resolved mapping: class and PVC size per disk, target per NIC.
    let good = &lines[0];
    assert_eq!(good["ok"], true);
    assert_eq!(good["plan"]["disks"][0]["storage_class"], "px-rwx");
    assert!(good["plan"]["disks"][0]["pvc_bytes"].as_u64().unwrap() > 64 * 1024 * 1024);
    assert_eq!(good["plan"]["nics"][0]["target"], "pod");
    assert_eq!(lines.iter().filter(|l| l["ok"] == false).count(), 2);
    // Nothing started: no children, nothing in the cluster.
    assert!(v.children.as_ref().is_none_or(|c| c.is_empty()));
    assert_eq!(made_by_drover(&rig.lab), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_retries_a_failed_import_and_cuts_over_on_a_signal() {
    let rig = rig("plan-cutover", 2).await;
    let data = Scratch::new("plan-cutover-data");
    let vmdk = disk(&data, "web.vmdk", "vmdk", 96, 8);
    let vms: Vec<Value> = (0..3)
        .map(|k| json!({"name": format!("web-{k}"), "source": {"disk": s(&vmdk)}}))
        .collect();
    // The first upload the proxy sees is refused: that import fails, and is retried.
    rig.lab
        .inject(drover_lab::Fault::Http {
            api: drover_lab::Api::Kube,
            method: Some("POST".into()),
            path_contains: Some("/v1beta1/upload".into()),
            status: 400,
            retry_after: None,
            message: Some("upload refused once by the test".into()),
            count: 1,
        })
        .unwrap();
    let input = json!({"namespace": NS, "storage_class": "px-rwx", "vms": vms, "concurrency": 2,
                       "cutover": true, "poll_ms": 50, "stall_secs": 20});
    let id = submit(&rig.store, "migration-plan", input, 0).await;
    wait_for(
        std::time::Duration::from_secs(90),
        "the plan waiting for cutover",
        || async {
            let v = rig.store.get(&id).await.unwrap().unwrap();
            v.waiting_on.as_deref() == Some("signal:cutover") || v.state.is_terminal()
        },
    )
    .await;
    let v = rig.store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        v.waiting_on.as_deref(),
        Some("signal:cutover"),
        "{:?}",
        v.error
    );
    // Created stopped; one of them needed a second import.
    let imported = outputs(&v, 2)["imported"].as_array().cloned().unwrap();
    let attempts: Vec<u64> = imported
        .iter()
        .map(|i| i["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts.iter().filter(|a| **a == 2).count(),
        1,
        "{imported:?}"
    );
    for k in 0..3 {
        let m = vm(&rig.lab, &format!("web-{k}")).expect("the VM");
        assert_eq!(m["spec"]["runStrategy"], "Halted", "{m}");
    }
    assert_eq!(rig.lab.cdi_counters().cdi_uploads, 3);
    let reply = rig
        .store
        .signal(
            &id,
            "cutover",
            &json!({"by": "test"}),
            drover_store::SignalLimits::default(),
            now_ms(),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, drover_store::ControlResult::Ok(_)),
        "{reply:?}"
    );
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let verified = v.result.clone().unwrap();
    let vms = verified["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 3, "{verified}");
    assert!(
        vms.iter().all(|v| v["live_migratable"] == true),
        "{verified}"
    );
}
