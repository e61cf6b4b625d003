//! Storage attachment end to end: `attach-volume` and `detach-volume` on real workers against the
//! lab over real HTTP (the kube-rs adapter, virt-api's addvolume/removevolume, CSI snapshots), with
//! real Redis. What happened is read back from the lab's objects.

use drover_workflows::State;
use serde_json::{Value, json};

use crate::drain::rig;
use crate::harness::*;
use crate::provision::ended;

const NS: &str = "vmo-prod";

fn pvc(rig: &crate::drain::Rig, name: &str) -> Option<Value> {
    rig.lab.get("persistentvolumeclaims", NS, name)
}

fn template_volumes(rig: &crate::drain::Rig, vm: &str) -> Vec<String> {
    rig.lab
        .get("virtualmachines.kubevirt.io", NS, vm)
        .and_then(|v| v["spec"]["template"]["spec"]["volumes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect()
}

fn snapshots(rig: &crate::drain::Rig) -> Vec<Value> {
    rig.lab
        .list("volumesnapshots.snapshot.storage.k8s.io", Some(NS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_hotplugged_into_a_running_vm_after_a_snapshot_then_detached() {
    let rig = rig(2).await;
    let input = json!({"namespace": NS, "vm": "vm-01-00", "volume": "data", "size": "20Gi",
                       "storage_class": "px-rwx", "snapshot_first": true, "poll_ms": 50});
    let id = submit(&rig.store, "attach-volume", input, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    assert_eq!(result["phase"], "Ready", "{result}");
    assert_eq!(result["claim"], "vm-01-00-data");
    // The claim, labelled as this workflow's; the VMI has it Ready; the template keeps it.
    let claim = pvc(&rig, "vm-01-00-data").expect("the claim");
    assert!(claim["metadata"]["labels"]["drover.io/created-by"].is_string());
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteMany"]));
    let vmi = rig
        .lab
        .get("virtualmachineinstances.kubevirt.io", NS, "vm-01-00")
        .unwrap();
    let status = vmi["status"]["volumeStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "data")
        .cloned()
        .expect("the volume in the VMI's status");
    assert_eq!(status["phase"], "Ready");
    assert!(template_volumes(&rig, "vm-01-00").contains(&"data".to_string()));
    // The snapshot of the VM's root disk, ready.
    let snaps = snapshots(&rig);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(
        snaps[0]["spec"]["source"]["persistentVolumeClaimName"],
        "vm-01-00-root"
    );
    assert_eq!(snaps[0]["status"]["readyToUse"], true);

    // Detach, deleting the claim Drover made.
    let id = submit(
        &rig.store,
        "detach-volume",
        json!({"namespace": NS, "vm": "vm-01-00", "volume": "data", "delete_claim": true, "poll_ms": 50}),
        0,
    )
    .await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(!template_volumes(&rig, "vm-01-00").contains(&"data".to_string()));
    let vmi = rig
        .lab
        .get("virtualmachineinstances.kubevirt.io", NS, "vm-01-00")
        .unwrap();
    assert!(
        !vmi["status"]["volumeStatus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "data")
    );
    wait_for(
        std::time::Duration::from_secs(10),
        "the claim to go",
        || async { pvc(&rig, "vm-01-00-data").is_none() },
    )
    .await;
    // The VM's own root claim is untouched.
    assert!(pvc(&rig, "vm-01-00-root").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vm_gets_the_volume_in_its_template_only() {
    let rig = rig(2).await;
    let stop = reqwest::Client::new()
        .put(format!(
            "{}/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/vm-02-00/stop",
            rig.lab.kube_url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(stop.status().is_success(), "{}", stop.status());
    wait_for(
        std::time::Duration::from_secs(20),
        "the VM to stop",
        || async {
            rig.lab
                .get("virtualmachineinstances.kubevirt.io", NS, "vm-02-00")
                .is_none()
        },
    )
    .await;
    let input = json!({"namespace": NS, "vm": "vm-02-00", "volume": "scratch", "size": "5Gi",
                       "storage_class": "px-rwx", "poll_ms": 50});
    let id = submit(&rig.store, "attach-volume", input, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    assert_eq!(result["phase"], "InTemplate", "{result}");
    assert_eq!(result["hotplugged"], false);
    assert!(template_volumes(&rig, "vm-02-00").contains(&"scratch".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rwo_volume_on_a_live_migratable_vm_is_refused_unless_accepted() {
    let rig = rig(2).await;
    let input = json!({"namespace": NS, "vm": "vm-03-00", "volume": "data", "size": "10Gi",
                       "storage_class": "px-rwo", "access_mode": "ReadWriteOnce", "poll_ms": 50});
    let id = submit(&rig.store, "attach-volume", input.clone(), 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Failed);
    let error = v.error.clone().unwrap().to_string();
    assert!(
        error.contains("non-migratable") && error.contains("accept_non_migratable"),
        "{error}"
    );
    assert!(pvc(&rig, "vm-03-00-data").is_none(), "nothing was created");

    let mut accepted = input;
    accepted["accept_non_migratable"] = json!(true);
    let id = submit(&rig.store, "attach-volume", accepted, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attach_deletes_what_it_created_and_nothing_else() {
    let rig = rig(2).await;
    rig.lab
        .inject(drover_lab::Fault::Http {
            api: drover_lab::Api::Kube,
            method: Some("PUT".into()),
            path_contains: Some("addvolume".into()),
            status: 400,
            retry_after: None,
            message: Some("injected: the hotplug is refused".into()),
            count: 100,
        })
        .unwrap();
    let input = json!({"namespace": NS, "vm": "vm-04-00", "volume": "data", "size": "20Gi",
                       "storage_class": "px-rwx", "snapshot_first": true, "poll_ms": 50});
    let id = submit(&rig.store, "attach-volume", input, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Failed);
    assert!(
        v.error
            .clone()
            .unwrap()
            .to_string()
            .contains("hotplug is refused"),
        "{:?}",
        v.error
    );
    wait_for(
        std::time::Duration::from_secs(10),
        "the claim and the snapshot to go",
        || async { pvc(&rig, "vm-04-00-data").is_none() && snapshots(&rig).is_empty() },
    )
    .await;
    assert!(
        pvc(&rig, "vm-04-00-root").is_some(),
        "the VM's own claim stays"
    );
    assert!(!template_volumes(&rig, "vm-04-00").contains(&"data".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_data_volume_is_hotplugged_then_detached_with_it() {
    let rig = rig(2).await;
    let input = json!({"namespace": NS, "vm": "vm-03-00", "volume": "logs", "size": "8Gi",
                       "storage_class": "px-rwx", "data_volume": true, "poll_ms": 50});
    let id = submit(&rig.store, "attach-volume", input, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert_eq!(v.result.clone().unwrap()["phase"], "Ready");
    let dv = rig
        .lab
        .get("datavolumes.cdi.kubevirt.io", NS, "vm-03-00-logs")
        .expect("the DataVolume");
    assert!(dv["spec"]["source"]["blank"].is_object(), "{dv}");
    assert_eq!(dv["status"]["phase"], "Succeeded");
    assert!(dv["metadata"]["labels"]["drover.io/created-by"].is_string());
    let id = submit(
        &rig.store,
        "detach-volume",
        json!({"namespace": NS, "vm": "vm-03-00", "volume": "logs", "delete_claim": true, "poll_ms": 50}),
        0,
    )
    .await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    assert!(
        rig.lab
            .get("datavolumes.cdi.kubevirt.io", NS, "vm-03-00-logs")
            .is_none()
    );
    assert!(!template_volumes(&rig, "vm-03-00").contains(&"logs".to_string()));
}
