//! Loading a scenario into the store: namespaces, storage classes, Multus networks, the KubeVirt CR,
//! nodes with their virt-handler pods, and VMs already running (DataVolume, bound PVC, VMI and
//! virt-launcher pod) so a 1,000-VM scenario is live at once instead of booting through the
//! simulator.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::kube::resources::keys;
use crate::scenario::{Scenario, VmSpec};
use crate::sim::{nodes, storage, vms};
use crate::state::Shared;

/// Populate the store from the scenario.
pub fn load(shared: &Shared, sc: &Scenario) -> Result<()> {
    let store = &shared.store;
    let put = |key: &str, obj: Value| -> Result<Value> {
        store
            .create(key, obj)
            .map_err(|e| Error::Scenario(format!("cannot load {key}: {e}")))
    };
    let mut namespaces: Vec<String> = sc.namespaces.clone();
    for vm in sc.all_vms() {
        namespaces.push(vm.namespace.clone());
    }
    for n in &sc.networks {
        namespaces.push(n.namespace.clone());
    }
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        put(
            keys::NAMESPACES,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        )?;
    }
    for c in &sc.storage_classes {
        let mut meta =
            json!({"name": c.name, "labels": {"lab.drover.dev/access-mode": c.access_mode}});
        if c.default {
            meta["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
        }
        put(
            keys::STORAGE_CLASSES,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": meta, "provisioner": c.provisioner, "parameters": c.parameters, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": true}),
        )?;
    }
    if !sc.storage_classes.is_empty() {
        put(
            keys::SNAPSHOT_CLASSES,
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "px-csi-snapclass", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}}, "driver": "pxd.portworx.com", "deletionPolicy": "Delete"}),
        )?;
    }
    for n in &sc.networks {
        let config = json!({"cniVersion": "0.3.1", "name": n.name, "type": "bridge", "bridge": n.bridge, "vlan": n.vlan, "ipam": {}}).to_string();
        put(
            keys::NADS,
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": n.name, "namespace": n.namespace}, "spec": {"config": config}}),
        )?;
    }
    let m = &sc.migrations;
    put(
        keys::KUBEVIRTS,
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
            "spec": {"configuration": {
                "evictionStrategy": sc.default_eviction_strategy,
                "developerConfiguration": {"featureGates": ["HotplugVolumes", "LiveMigration"]},
                "migrations": {
                    "parallelMigrationsPerCluster": m.parallel_per_cluster,
                    "parallelOutboundMigrationsPerNode": m.parallel_outbound_per_node,
                    "bandwidthPerMigration": format!("{}Mi", m.bandwidth_mib_per_s),
                    "completionTimeoutPerGiB": m.completion_timeout_per_gib,
                    "progressTimeout": 150
                }
            }},
            "status": {"phase": "Deployed", "observedKubeVirtVersion": "v1.5.0"}
        }),
    )?;
    let workers = sc.nodes.iter().filter(|n| n.role == "worker").count();
    put(
        keys::DAEMONSETS,
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "virt-handler", "namespace": "kubevirt", "uid": "00000000-0000-0000-0000-00000000d5e7", "labels": {"kubevirt.io": "virt-handler"}},
            "spec": {"selector": {"matchLabels": {"kubevirt.io": "virt-handler"}}, "template": {"metadata": {"labels": {"kubevirt.io": "virt-handler"}}, "spec": {"containers": [{"name": "virt-handler", "image": "quay.io/kubevirt/virt-handler:v1.5.0"}]}}},
            "status": {"currentNumberScheduled": workers, "desiredNumberScheduled": workers, "numberReady": workers, "numberAvailable": workers, "numberMisscheduled": 0, "updatedNumberScheduled": workers}
        }),
    )?;
    for n in &sc.nodes {
        let system_id = sc
            .maas
            .machines
            .iter()
            .find(|mm| mm.hostname == n.name)
            .map(|mm| mm.system_id.clone())
            .unwrap_or_default();
        let params = nodes::NodeParams {
            name: &n.name,
            cpu: n.cpu,
            memory_gib: n.memory_gib,
            role: &n.role,
            ip: &n.ip,
            labels: n
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            taints: Vec::new(),
            ready: true,
            provider_id: if system_id.is_empty() {
                String::new()
            } else {
                format!("maas:///{system_id}")
            },
        };
        put(
            keys::NODES,
            nodes::node_object(&params, &sc.kubernetes_version, &shared.clock.rfc3339()),
        )?;
        if n.role == "worker" {
            put(keys::PODS, nodes::virt_handler_pod(&n.name))?;
        }
    }
    for (i, vm) in sc.all_vms().iter().enumerate() {
        load_vm(shared, sc, vm, i as u64)?;
    }
    Ok(())
}

/// The VirtualMachine object for a scenario VM.
pub fn vm_object(sc: &Scenario, vm: &VmSpec) -> Value {
    let class = sc
        .storage_classes
        .iter()
        .find(|c| c.name == vm.storage_class)
        .or_else(|| sc.storage_classes.iter().find(|c| c.default));
    let mut interfaces = vec![if vm.pod_binding == "bridge" {
        json!({"name": "default", "bridge": {}})
    } else {
        json!({"name": "default", "masquerade": {}})
    }];
    let mut networks = vec![json!({"name": "default", "pod": {}})];
    for n in &vm.networks {
        interfaces.push(json!({"name": n, "bridge": {}}));
        networks
            .push(json!({"name": n, "multus": {"networkName": format!("{}/{}", vm.namespace, n)}}));
    }
    let mem = format!("{}Mi", (vm.memory_gib * 1024.0).round());
    let mut template_spec = json!({
        "domain": {
            "cpu": {"cores": vm.cpu, "sockets": 1, "threads": 1},
            "memory": {"guest": mem},
            "resources": {"requests": {"memory": mem}},
            "devices": {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}, {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}], "interfaces": interfaces},
            "machine": {"type": "q35"}
        },
        "networks": networks,
        "volumes": [
            {"name": "rootdisk", "dataVolume": {"name": format!("{}-root", vm.name)}},
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}
        ],
        "terminationGracePeriodSeconds": 180
    });
    if !vm.eviction_strategy.is_empty() {
        template_spec["evictionStrategy"] = json!(vm.eviction_strategy);
    }
    if !vm.node_selector.is_empty() {
        template_spec["nodeSelector"] = json!(vm.node_selector);
    }
    let mut labels = json!({"kubevirt.io/vm": vm.name});
    for (k, v) in &vm.labels {
        labels[k] = json!(v);
    }
    let storage = class
        .map(|c| {
            json!({
                "storageClassName": c.name,
                "accessModes": [c.access_mode],
                "volumeMode": c.volume_mode,
                "resources": {"requests": {"storage": format!("{}Gi", vm.disk_gib)}}
            })
        })
        .unwrap_or_else(
            || json!({"resources": {"requests": {"storage": format!("{}Gi", vm.disk_gib)}}}),
        );
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": vm.name, "namespace": vm.namespace, "labels": vm.labels},
        "spec": {
            "runStrategy": if vm.running { "Always" } else { "Halted" },
            "dataVolumeTemplates": [{"metadata": {"name": format!("{}-root", vm.name)}, "spec": {"storage": storage, "source": {"blank": {}}}}],
            "template": {"metadata": {"labels": labels}, "spec": template_spec}
        }
    })
}

fn load_vm(shared: &Shared, sc: &Scenario, vm: &VmSpec, n: u64) -> Result<()> {
    let store = &shared.store;
    let err = |e: Error| Error::Scenario(format!("cannot load vm {}: {e}", vm.name));
    let mut vm_obj = vm_object(sc, vm);
    let dv_tpl = vm_obj["spec"]["dataVolumeTemplates"][0].clone();
    let dv = json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": dv_tpl["metadata"]["name"], "namespace": vm.namespace},
        "spec": dv_tpl["spec"],
        "status": {"phase": "Succeeded", "progress": "100.0%", "claimName": dv_tpl["metadata"]["name"]}
    });
    let dv = store.create(keys::DATAVOLUMES, dv).map_err(err)?;
    store
        .create(keys::PVCS, storage::pvc_for_dv(&dv))
        .map_err(err)?;
    let (ns, pvc_name) = (
        vm.namespace.clone(),
        dv["metadata"]["name"].as_str().unwrap_or("").to_string(),
    );
    store
        .modify(keys::PVCS, &ns, &pvc_name, |p| {
            storage::bind(p);
            Ok(())
        })
        .map_err(err)?;
    if vm.running {
        vm_obj["status"] = json!({"printableStatus": "Running", "ready": true, "created": true, "runStrategy": "Always"});
    } else {
        vm_obj["status"] = json!({"printableStatus": "Stopped", "ready": false, "created": false, "runStrategy": "Halted"});
    }
    let vm_obj = store.create(keys::VMS, vm_obj).map_err(err)?;
    if !vm.running || vm.node.is_empty() {
        return Ok(());
    }
    let vmi = store
        .create(keys::VMIS, vms::vmi_from_vm(&vm_obj))
        .map_err(err)?;
    let ip = vms::pod_ip(n);
    let pod = store
        .create(
            keys::PODS,
            vms::launcher_pod(&vmi, &vm.node, &ip, true, false),
        )
        .map_err(err)?;
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    vms::refresh_running(shared, &vm.namespace, &vm.name, &vm.node, &ip, |v| {
        v["status"]["activePods"] = json!({pod_uid: vm.node});
    });
    Ok(())
}
