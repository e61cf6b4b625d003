//! New VirtualMachines (an import's), their instances, and the Multus networks they attach to.
//!
//! A create that meets its VM (409 AlreadyExists) reads and returns it with its labels, so the
//! caller can tell whether it is its own.

use std::collections::BTreeMap;

use drover_workflows::ports::kube::{KubeError, NewVm, VmInfo, VmiState};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::error::retrying;
use crate::resources::{VirtualMachine, VirtualMachineInstance, bytes_quantity};
use crate::storage::{create, delete, get_vm, vm_info};

pub async fn create_vm(client: &kube::Client, new: &NewVm) -> Result<VmInfo, KubeError> {
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), &new.namespace);
    let mut vm = VirtualMachine {
        spec: spec(new)?,
        ..VirtualMachine::default()
    };
    vm.metadata.name = Some(new.name.clone());
    vm.metadata.namespace = Some(new.namespace.clone());
    vm.metadata.labels = Some(new.labels.clone()).filter(|l| !l.is_empty());
    match create(&api, "create vm", &vm).await? {
        Some(made) => vm_info(client, &made).await,
        None => get_vm(client, &new.namespace, &new.name).await,
    }
}

/// Deletes the VM; KubeVirt's garbage collection takes its instance with it (its DataVolumes are
/// not its own and stay).
pub async fn delete_vm(client: &kube::Client, ns: &str, name: &str) -> Result<(), KubeError> {
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    delete(&api, "delete vm", name).await
}

/// The instance KubeVirt runs for VM `name` (named after it).
pub async fn get_vmi(client: &kube::Client, ns: &str, name: &str) -> Result<VmiState, KubeError> {
    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    let vmi = retrying("get vmi", || api.get(name)).await?;
    Ok(vmi_state(&vmi))
}

pub async fn network_exists(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<bool, KubeError> {
    let r = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r);
    match retrying("get network attachment definition", || api.get(name)).await {
        Ok(_) => Ok(true),
        Err(KubeError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn vmi_state(vmi: &VirtualMachineInstance) -> VmiState {
    let status = vmi.status.clone().unwrap_or_default();
    let live_migratable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "LiveMigratable")
        .map(|c| {
            if c.status == "True" {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("NotMigratable"),
                    c.message.as_deref().unwrap_or_default()
                )
                .trim_end_matches([':', ' '])
                .to_string())
            }
        });
    VmiState {
        phase: status.phase.unwrap_or_default(),
        node: status.node_name,
        live_migratable,
    }
}

/// The VirtualMachine's spec: `runStrategy`, and a template whose first disk boots, whose NICs
/// are masquerade on the pod network or bridges on Multus networks, labelled `kubevirt.io/vm`.
fn spec(new: &NewVm) -> Result<Value, KubeError> {
    let bootloader = match new.firmware.to_ascii_lowercase().as_str() {
        "efi" | "uefi" => json!({"efi": {"secureBoot": false}}),
        "bios" | "" => json!({"bios": {}}),
        other => {
            return Err(KubeError::Permanent(format!(
                "VM {}/{}: firmware {other:?} is neither bios nor efi",
                new.namespace, new.name
            )));
        }
    };
    let memory = bytes_quantity(new.memory_bytes);
    let disks: Vec<Value> = new
        .disks
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let mut disk = json!({"name": d.name, "disk": {}});
            if !d.bus.is_empty() {
                disk["disk"]["bus"] = json!(d.bus);
            }
            if k == 0 {
                disk["bootOrder"] = json!(1);
            }
            disk
        })
        .collect();
    let volumes: Vec<Value> = new
        .disks
        .iter()
        .map(|d| json!({"name": d.name, "dataVolume": {"name": d.data_volume}}))
        .collect();
    let interfaces: Vec<Value> = new
        .nics
        .iter()
        .map(|n| {
            let binding = if n.multus.is_some() {
                "bridge"
            } else {
                "masquerade"
            };
            let mut nic = json!({"name": n.name, binding: {}});
            if !n.model.is_empty() {
                nic["model"] = json!(n.model);
            }
            if let Some(mac) = &n.mac_address {
                nic["macAddress"] = json!(mac);
            }
            nic
        })
        .collect();
    let networks: Vec<Value> = new
        .nics
        .iter()
        .map(|n| match &n.multus {
            Some(nad) => json!({"name": n.name, "multus": {"networkName": nad}}),
            None => json!({"name": n.name, "pod": {}}),
        })
        .collect();
    let mut labels: BTreeMap<String, String> = new.labels.clone();
    labels.insert("kubevirt.io/vm".into(), new.name.clone());
    let mut template = json!({
        "domain": {
            "cpu": {"cores": new.cpu_cores.max(1)},
            "memory": {"guest": memory},
            "resources": {"requests": {"memory": memory}},
            "firmware": {"bootloader": bootloader},
            "devices": {"disks": disks, "interfaces": interfaces},
        },
        "networks": networks,
        "volumes": volumes,
    });
    if !new.eviction_strategy.is_empty() {
        template["evictionStrategy"] = json!(new.eviction_strategy);
    }
    Ok(json!({
        "runStrategy": if new.running { "Always" } else { "Halted" },
        "template": {"metadata": {"labels": labels}, "spec": template},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_workflows::ports::kube::{NewVmDisk, NewVmNic};

    #[test]
    fn the_spec_boots_the_first_disk_and_binds_each_nic() {
        let new = NewVm {
            namespace: "ns".into(),
            name: "web".into(),
            cpu_cores: 2,
            memory_bytes: 4 << 30,
            firmware: "efi".into(),
            running: true,
            eviction_strategy: "LiveMigrate".into(),
            disks: vec![
                NewVmDisk {
                    name: "disk-0".into(),
                    data_volume: "web-disk-0".into(),
                    bus: "virtio".into(),
                },
                NewVmDisk {
                    name: "disk-1".into(),
                    data_volume: "web-disk-1".into(),
                    bus: "sata".into(),
                },
            ],
            nics: vec![
                NewVmNic {
                    name: "nic-0".into(),
                    multus: None,
                    model: "virtio".into(),
                    mac_address: None,
                },
                NewVmNic {
                    name: "nic-1".into(),
                    multus: Some("ns/vlan-10".into()),
                    model: "e1000e".into(),
                    mac_address: Some("02:00:00:00:00:01".into()),
                },
            ],
            labels: BTreeMap::from([("drover.io/created-by".into(), "wf".into())]),
        };
        let s = spec(&new).unwrap();
        assert_eq!(s["runStrategy"], "Always");
        let t = &s["template"];
        assert_eq!(t["metadata"]["labels"]["kubevirt.io/vm"], "web");
        assert_eq!(t["metadata"]["labels"]["drover.io/created-by"], "wf");
        let d = &t["spec"]["domain"];
        assert_eq!(d["memory"]["guest"], "4Gi");
        assert_eq!(d["resources"]["requests"]["memory"], "4Gi");
        assert_eq!(d["cpu"]["cores"], 2);
        assert_eq!(
            d["firmware"]["bootloader"],
            json!({"efi": {"secureBoot": false}})
        );
        assert_eq!(
            d["devices"]["disks"],
            json!([
                {"name": "disk-0", "disk": {"bus": "virtio"}, "bootOrder": 1},
                {"name": "disk-1", "disk": {"bus": "sata"}},
            ])
        );
        assert_eq!(
            d["devices"]["interfaces"],
            json!([
                {"name": "nic-0", "masquerade": {}, "model": "virtio"},
                {"name": "nic-1", "bridge": {}, "model": "e1000e", "macAddress": "02:00:00:00:00:01"},
            ])
        );
        assert_eq!(
            t["spec"]["networks"],
            json!([
                {"name": "nic-0", "pod": {}},
                {"name": "nic-1", "multus": {"networkName": "ns/vlan-10"}},
            ])
        );
        assert_eq!(
            t["spec"]["volumes"][1],
            json!({"name": "disk-1", "dataVolume": {"name": "web-disk-1"}})
        );
        assert_eq!(t["spec"]["evictionStrategy"], "LiveMigrate");

        let halted = spec(&NewVm {
            firmware: "bios".into(),
            running: false,
            ..new.clone()
        })
        .unwrap();
        assert_eq!(halted["runStrategy"], "Halted");
        assert_eq!(
            halted["template"]["spec"]["domain"]["firmware"]["bootloader"],
            json!({"bios": {}})
        );
        assert!(
            spec(&NewVm {
                firmware: "coreboot".into(),
                ..new
            })
            .is_err()
        );
    }

    #[test]
    fn the_live_migratable_condition_is_read() {
        let vmi = |conditions: Value| -> VirtualMachineInstance {
            serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "status": {"phase": "Running", "nodeName": "n1", "conditions": conditions}
            }))
            .unwrap()
        };
        let s = vmi_state(&vmi(json!([])));
        assert_eq!(
            (s.phase.as_str(), s.node.as_deref(), s.live_migratable),
            ("Running", Some("n1"), None)
        );
        let s = vmi_state(&vmi(json!([{"type": "LiveMigratable", "status": "True"}])));
        assert_eq!(s.live_migratable, Some(Ok(())));
        let s = vmi_state(&vmi(json!([{"type": "LiveMigratable", "status": "False",
            "reason": "DisksNotLiveMigratable", "message": "PVC web-disk-0 is not shared"}])));
        assert_eq!(
            s.live_migratable,
            Some(Err(
                "DisksNotLiveMigratable: PVC web-disk-0 is not shared".into()
            ))
        );
    }
}
