//! KubeVirt's VM and VMI controllers, simulated: a VirtualMachine that should run gets a VMI, the
//! VMI is scheduled and gets a virt-launcher pod on its node, its `LiveMigratable` condition follows
//! its disks and interfaces, and the VM's printable status follows the VMI. Also the builders for
//! the objects (VM, VMI, launcher pod) the scenario loader shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::kube::resources::keys;
use crate::sim::{migratable, placement, quantity};
use crate::state::Shared;
use crate::store::generate_name;

/// Seconds a node may stay NotReady before the VMIs on it are considered lost (the taint-based
/// eviction default, 300 s).
pub const NODE_LOST_SECS: f64 = 300.0;

/// Seconds from a VMI being scheduled to it running.
pub const VMI_START_SECS: f64 = 5.0;
/// virt-launcher image reported on pods.
pub const LAUNCHER_IMAGE: &str = "quay.io/kubevirt/virt-launcher:v1.5.0";
/// KubeVirt's default `cpuAllocationRatio`: a vCPU requests a tenth of a core.
pub const CPU_ALLOCATION_RATIO: f64 = 10.0;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The VM's effective run strategy (`spec.runStrategy`, or the deprecated `spec.running`).
pub fn run_strategy(vm: &Value) -> String {
    if let Some(rs) = vm.pointer("/spec/runStrategy").and_then(Value::as_str) {
        return rs.to_string();
    }
    match vm.pointer("/spec/running").and_then(Value::as_bool) {
        Some(true) => "Always".into(),
        _ => "Halted".into(),
    }
}

/// Set (or add) a condition on an object's status.
pub fn set_condition(obj: &mut Value, kind: &str, status: bool, reason: &str, message: &str) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conds = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let want = if status { "True" } else { "False" };
    let mut out: Vec<Value> = conds.into_iter().filter(|c| c["type"] != kind).collect();
    let mut c =
        json!({"type": kind, "status": want, "lastProbeTime": null, "lastTransitionTime": null});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    out.push(c);
    out.sort_by(|a, b| s(a, "/type").cmp(s(b, "/type")));
    obj["status"]["conditions"] = Value::Array(out);
}

/// Remove a condition from an object's status.
pub fn remove_condition(obj: &mut Value, kind: &str) {
    if let Some(conds) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        conds.retain(|c| c["type"] != kind);
    }
}

/// A condition, if present.
pub fn find_condition(obj: &Value, kind: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// The first Multus network of a VMI whose NetworkAttachmentDefinition does not exist, as
/// `<namespace>/<name>` (a `networkName` without a namespace is in the VMI's).
pub fn missing_network(shared: &Shared, vmi: &Value) -> Option<String> {
    let ns = s(vmi, "/metadata/namespace");
    vmi.pointer("/spec/networks")?
        .as_array()?
        .iter()
        .filter_map(|n| n.pointer("/multus/networkName").and_then(Value::as_str))
        .map(|n| n.split_once('/').unwrap_or((ns, n)))
        .find(|(nns, nname)| shared.store.get_shared(keys::NADS, nns, nname).is_none())
        .map(|(nns, nname)| format!("{nns}/{nname}"))
}

/// What keeps a VM that should run from starting, as its printable status, ranked as KubeVirt
/// ranks them: `Provisioning` (a DataVolume not yet Succeeded), `WaitingForVolumeBinding` (a claim
/// Pending), `ErrorPvcNotFound` (a claim or DataVolume that does not exist and no template makes),
/// `DataVolumeError` (a DataVolume Failed). `None` when every volume is ready.
pub fn volume_gate(shared: &Shared, vm: &Value, ns: &str) -> Option<&'static str> {
    let templates: Vec<&str> = vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    // (DataVolume name, claim name) of every volume, and of every template.
    let mut refs: Vec<(Option<&str>, &str)> = templates.iter().map(|t| (Some(*t), *t)).collect();
    if let Some(volumes) = vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
    {
        for v in volumes {
            if let Some(dv) = v.pointer("/dataVolume/name").and_then(Value::as_str) {
                refs.push((Some(dv), dv));
            } else if let Some(c) = v
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                refs.push((None, c));
            }
        }
    }
    let mut worst: Option<(u8, &'static str)> = None;
    let mut note = |rank: u8, status: &'static str| {
        if worst.is_none_or(|(r, _)| rank < r) {
            worst = Some((rank, status));
        }
    };
    for (dv_name, claim) in refs {
        let pvc_phase = shared
            .store
            .get_shared(keys::PVCS, ns, claim)
            .map(|p| s(&p, "/status/phase").to_string());
        if let Some(dv_name) = dv_name {
            if let Some(dv) = shared.store.get_shared(keys::DATAVOLUMES, ns, dv_name) {
                match s(&dv, "/status/phase") {
                    "Succeeded" => {}
                    "Failed" => note(4, "DataVolumeError"),
                    "Pending" if pvc_phase.as_deref() == Some("Pending") => {
                        note(2, "WaitingForVolumeBinding")
                    }
                    _ => note(1, "Provisioning"),
                }
                continue;
            }
            if templates.contains(&dv_name) {
                note(1, "Provisioning");
                continue;
            }
        }
        match pvc_phase.as_deref() {
            None => note(3, "ErrorPvcNotFound"),
            Some("Bound") => {}
            Some(_) => note(2, "WaitingForVolumeBinding"),
        }
    }
    worst.map(|(_, status)| status)
}

/// The condition's status, if present.
pub fn condition(obj: &Value, kind: &str) -> Option<bool> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"] == "True")
}

/// CPU (cores) and memory (bytes) a VMI's launcher pod requests.
pub fn vmi_demand(vmi: &Value) -> (f64, f64) {
    let spec = &vmi["spec"]["domain"];
    let memory = quantity::from_json(spec.pointer("/resources/requests/memory"))
        .or_else(|| quantity::from_json(spec.pointer("/memory/guest")))
        .unwrap_or(0.0);
    let cores = spec
        .pointer("/cpu/cores")
        .and_then(Value::as_f64)
        .unwrap_or(1.0)
        * spec
            .pointer("/cpu/sockets")
            .and_then(Value::as_f64)
            .unwrap_or(1.0)
        * spec
            .pointer("/cpu/threads")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
    let cpu = quantity::from_json(spec.pointer("/resources/requests/cpu"))
        .unwrap_or(cores / CPU_ALLOCATION_RATIO);
    (cpu, memory)
}

/// The scheduler's view of every node, with VMI requests (and reserved migration targets)
/// subtracted.
pub fn node_views(
    shared: &Shared,
    vmis: &[Arc<Value>],
    reserved: &[(String, f64, f64)],
) -> Vec<placement::NodeView> {
    let (nodes, _) = shared.store.list(keys::NODES, None, |_| true);
    let mut used: HashMap<String, (f64, f64)> = HashMap::new();
    for v in vmis {
        let node = s(v, "/status/nodeName");
        if node.is_empty() {
            continue;
        }
        let (c, m) = vmi_demand(v);
        let e = used.entry(node.to_string()).or_default();
        e.0 += c;
        e.1 += m;
    }
    for (node, c, m) in reserved {
        let e = used.entry(node.clone()).or_default();
        e.0 += c;
        e.1 += m;
    }
    nodes
        .iter()
        .map(|n| {
            let name = s(n, "/metadata/name").to_string();
            let labels: BTreeMap<String, String> = n
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let (uc, um) = used.get(&name).copied().unwrap_or_default();
            let cpu = quantity::from_json(n.pointer("/status/allocatable/cpu")).unwrap_or(0.0);
            let mem = quantity::from_json(n.pointer("/status/allocatable/memory")).unwrap_or(0.0);
            // VMs tolerate no taint that keeps pods off (the lab's carry no tolerations): a
            // drain's, a cordon's, or one the node registered with.
            let untolerated = n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "kubevirt.io/drain"
                        || t["key"] == "node.kubernetes.io/unschedulable"
                        || t["effect"] == "NoSchedule"
                        || t["effect"] == "NoExecute"
                })
            });
            placement::NodeView {
                ready: condition(n, "Ready") == Some(true),
                unschedulable: n.pointer("/spec/unschedulable") == Some(&json!(true))
                    || untolerated,
                kubevirt_schedulable: labels.get("kubevirt.io/schedulable").map(String::as_str)
                    == Some("true"),
                labels,
                free_cpu: cpu - uc,
                free_memory: mem - um,
                name,
            }
        })
        .collect()
}

/// Build a VMI from its VM.
pub fn vmi_from_vm(vm: &Value) -> Value {
    let name = s(vm, "/metadata/name");
    let ns = s(vm, "/metadata/namespace");
    let mut labels = vm
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["kubevirt.io/vm"] = json!(name);
    let annotations = vm
        .pointer("/spec/template/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"],
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name, "uid": s(vm, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": vm.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        "status": {"phase": "Pending", "phaseTransitionTimestamps": []}
    })
}

/// Build a virt-launcher pod for a VMI on a node.
pub fn launcher_pod(
    vmi: &Value,
    node: &str,
    ip: &str,
    running: bool,
    migration_target: bool,
) -> Value {
    let name = s(vmi, "/metadata/name");
    let (cpu, mem) = vmi_demand(vmi);
    let mut labels = json!({
        "kubevirt.io": "virt-launcher",
        "kubevirt.io/created-by": s(vmi, "/metadata/uid"),
        "vm.kubevirt.io/name": name,
    });
    if migration_target {
        labels["kubevirt.io/migrationTarget"] = json!("true");
    }
    let phase = if running { "Running" } else { "Pending" };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": generate_name(&format!("virt-launcher-{name}-")),
            "namespace": s(vmi, "/metadata/namespace"),
            "labels": labels,
            "annotations": {"kubevirt.io/domain": name, "kubectl.kubernetes.io/default-container": "compute"},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": name, "uid": s(vmi, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "compute",
                "image": LAUNCHER_IMAGE,
                "resources": {"requests": {"cpu": format!("{}m", (cpu * 1000.0).round()), "memory": quantity::bytes_to_string(mem + 256.0 * 1048576.0)}}
            }],
            "volumes": [
                {"name": "private", "emptyDir": {}},
                {"name": "public", "emptyDir": {}},
                {"name": "sockets", "emptyDir": {}}
            ]
        },
        "status": {
            "phase": phase,
            "podIP": if running { json!(ip) } else { Value::Null },
            "hostIP": Value::Null,
            "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": if running { "True" } else { "False" }}],
            "containerStatuses": [{"name": "compute", "ready": running, "restartCount": 0, "image": LAUNCHER_IMAGE, "imageID": format!("{LAUNCHER_IMAGE}@sha256:0"), "started": running, "state": if running { json!({"running": {}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) }}]
        }
    })
}

/// A pod IP on the cluster's pod network, derived from a counter.
pub fn pod_ip(n: u64) -> String {
    format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2)
}

/// LiveMigratable for a VMI, with PVC access modes read from the store.
pub fn migratable_for(shared: &Shared, vmi: &Value) -> migratable::Migratable {
    let ns = s(vmi, "/metadata/namespace").to_string();
    migratable::live_migratable(vmi, |claim| {
        shared.store.get_shared(keys::PVCS, &ns, claim).map(|pvc| {
            pvc.pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        })
    })
}

/// Refresh conditions, volume status and labels of a running VMI on `node`.
pub fn running_status(shared: &Shared, vmi: &mut Value, node: &str, ip: &str) {
    let m = migratable_for(shared, vmi);
    set_condition(vmi, "Ready", true, "", "");
    set_condition(vmi, "AgentConnected", true, "", "");
    set_condition(vmi, "LiveMigratable", m.ok, m.reason, &m.message);
    vmi["status"]["phase"] = json!("Running");
    vmi["status"]["nodeName"] = json!(node);
    vmi["status"]["migrationMethod"] = json!("LiveMigration");
    vmi["status"]["qosClass"] = json!("Burstable");
    vmi["status"]["launcherContainerImageVersion"] = json!(LAUNCHER_IMAGE);
    vmi["metadata"]["labels"]["kubevirt.io/nodeName"] = json!(node);
    let ifaces: Vec<Value> = vmi["spec"]["networks"]
        .as_array()
        .map(|nets| {
            nets.iter()
                .map(|n| {
                    let mut i = json!({"name": n["name"], "infoSource": "domain, guest-agent", "queueCount": 1});
                    if n.get("pod").is_some() {
                        i["ipAddress"] = json!(ip);
                        i["ipAddresses"] = json!([ip]);
                        i["interfaceName"] = json!("eth0");
                    }
                    i
                })
                .collect()
        })
        .unwrap_or_default();
    vmi["status"]["interfaces"] = Value::Array(ifaces);
    let ns = s(vmi, "/metadata/namespace").to_string();
    let mut statuses = Vec::new();
    for vol in vmi["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = vol["name"].clone();
        let claim = vol
            .pointer("/persistentVolumeClaim/claimName")
            .or_else(|| vol.pointer("/dataVolume/name"))
            .and_then(Value::as_str);
        let mut st = json!({"name": name, "target": ""});
        if let Some(pvc) = claim.and_then(|c| shared.store.get_shared(keys::PVCS, &ns, c)) {
            st["persistentVolumeClaimInfo"] = json!({
                "claimName": claim,
                "accessModes": pvc["spec"]["accessModes"],
                "volumeMode": pvc["spec"]["volumeMode"],
                "capacity": pvc["status"]["capacity"],
                "requests": pvc["spec"]["resources"]["requests"]
            });
        }
        // Hotplugged volumes keep the phase the volume controller gave them.
        if let Some(old) = vmi["status"]["volumeStatus"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["name"] == name))
        {
            for k in ["phase", "reason", "message", "hotplugVolume"] {
                if let Some(x) = old.get(k) {
                    st[k] = x.clone();
                }
            }
        }
        statuses.push(st);
    }
    vmi["status"]["volumeStatus"] = Value::Array(statuses);
}

/// Recompute a running VMI's status outside the store lock (it reads PVCs), then write it back if
/// nobody changed the VMI meanwhile (a conflict is retried on the next pass).
pub fn refresh_running(
    shared: &Shared,
    ns: &str,
    name: &str,
    node: &str,
    ip: &str,
    extra: impl FnOnce(&mut Value),
) {
    let Some(mut vmi) = shared.store.get(keys::VMIS, ns, name) else {
        return;
    };
    running_status(shared, &mut vmi, node, ip);
    extra(&mut vmi);
    let _ = shared.store.update(keys::VMIS, vmi, true);
}

/// Create the DataVolumes of a VM's `dataVolumeTemplates` that do not exist yet, and report whether
/// any is still provisioning.
fn data_volumes(shared: &Shared, vm: &Value, ns: &str) -> bool {
    let mut provisioning = false;
    let Some(templates) = vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
    else {
        return false;
    };
    for tpl in templates {
        let Some(name) = tpl
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        match shared.store.get_shared(keys::DATAVOLUMES, ns, name) {
            None => {
                let labels = tpl
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                let _ = shared.store.create(
                    keys::DATAVOLUMES,
                    json!({
                        "apiVersion": "cdi.kubevirt.io/v1beta1",
                        "kind": "DataVolume",
                        "metadata": {
                            "name": name,
                            "namespace": ns,
                            "labels": labels,
                            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": s(vm, "/metadata/name"), "uid": s(vm, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]
                        },
                        "spec": tpl.get("spec").cloned().unwrap_or_else(|| json!({}))
                    }),
                );
                provisioning = true;
            }
            Some(dv) => provisioning |= !matches!(s(&dv, "/status/phase"), "Succeeded" | "Failed"),
        }
    }
    provisioning
}

/// One reconcile pass over VMs, VMIs and launcher pods. Returns whether timed work is pending.
pub fn reconcile(shared: &Shared, now: SimTime, migrating: &dyn Fn(&str, &str) -> bool) -> bool {
    let mut busy = false;
    let (vms, _) = shared.store.list_shared(keys::VMS, None, |_| true);
    let (vmis, _) = shared.store.list_shared(keys::VMIS, None, |_| true);
    let (pods, _) = shared.store.list_shared(keys::PODS, None, |p| {
        s(p, "/metadata/labels/kubevirt.io") == "virt-launcher"
    });
    let vmi_by: HashMap<(String, String), &Value> = vmis
        .iter()
        .map(|v| {
            (
                (
                    s(v, "/metadata/namespace").to_string(),
                    s(v, "/metadata/name").to_string(),
                ),
                &**v,
            )
        })
        .collect();
    // Launcher pods by the uid of the VMI that created them (one pass, not one per VMI).
    let mut pods_by_uid: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in &pods {
        pods_by_uid
            .entry(s(p, "/metadata/labels/kubevirt.io~1created-by"))
            .or_default()
            .push(p);
    }
    let vm_keys: std::collections::HashSet<(String, String)> = vms
        .iter()
        .map(|v| {
            (
                s(v, "/metadata/namespace").to_string(),
                s(v, "/metadata/name").to_string(),
            )
        })
        .collect();

    // VMs: start and stop VMIs, mirror their state.
    for vm in &vms {
        let ns = s(vm, "/metadata/namespace");
        let name = s(vm, "/metadata/name");
        let strategy = run_strategy(vm);
        let vmi = vmi_by.get(&(ns.to_string(), name.to_string()));
        let want = matches!(strategy.as_str(), "Always" | "RerunOnFailure");
        let provisioning = data_volumes(shared, vm, ns);
        busy |= provisioning;
        // KubeVirt starts the VMI only once its volumes are ready.
        let gate = if want && vmi.is_none() {
            volume_gate(shared, vm, ns)
        } else {
            None
        };
        if want && vmi.is_none() && gate.is_none() {
            let _ = shared.store.create(keys::VMIS, vmi_from_vm(vm));
            busy = true;
        } else if strategy == "Halted" && vmi.is_some() {
            let _ = shared.store.delete(keys::VMIS, ns, name);
            busy = true;
        }
        let (printable, ready) = match vmi {
            None if want => (gate.unwrap_or("Starting"), false),
            None => ("Stopped", false),
            Some(v) => match s(v, "/status/phase") {
                "Running" if migrating(ns, name) => ("Migrating", true),
                "Running" if condition(v, "Paused") == Some(true) => ("Paused", true),
                "Running" => ("Running", true),
                "Scheduling" if condition(v, "PodScheduled") == Some(false) => {
                    ("ErrorUnschedulable", false)
                }
                _ => ("Starting", false),
            },
        };
        // virt-controller copies the VMI's conditions to the VM; the lab copies `Synchronized`
        // (a VMI that cannot be rendered says why there).
        let synchronized = vmi.and_then(|v| find_condition(v, "Synchronized"));
        if s(vm, "/status/printableStatus") != printable
            || vm.pointer("/status/ready") != Some(&json!(ready))
            || find_condition(vm, "Synchronized") != synchronized
        {
            let _ = shared.store.modify(keys::VMS, ns, name, |v| {
                v["status"]["printableStatus"] = json!(printable);
                v["status"]["ready"] = json!(ready);
                v["status"]["created"] = json!(vmi.is_some());
                v["status"]["runStrategy"] = json!(strategy);
                set_condition(v, "Ready", ready, "", "");
                remove_condition(v, "Synchronized");
                if let Some(c) = &synchronized
                    && let Some(conds) = v["status"]["conditions"].as_array_mut()
                {
                    conds.push(c.clone());
                    conds.sort_by(|a, b| s(a, "/type").cmp(s(b, "/type")));
                }
                Ok(())
            });
        }
    }

    // Nodes whose kubelet stopped reporting, and since when (wall seconds).
    let now_wall = crate::clock::unix(shared.clock.wall());
    let (nodes, _) = shared
        .store
        .list_shared(keys::NODES, None, |n| condition(n, "Ready") != Some(true));
    let lost_nodes: HashMap<String, u64> = nodes
        .iter()
        .map(|n| {
            let since = n["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["lastTransitionTime"].as_str())
                .and_then(crate::clock::parse_rfc3339)
                .unwrap_or(now_wall);
            (s(n, "/metadata/name").to_string(), since)
        })
        .collect();

    // VMIs: garbage-collect orphans, schedule, start, keep conditions current.
    let mut placed: Vec<Arc<Value>> = vmis.clone();
    let mut ip_counter = shared.store.resource_version();
    for vmi in &vmis {
        let ns = s(vmi, "/metadata/namespace").to_string();
        let name = s(vmi, "/metadata/name").to_string();
        let owned_by_vm = vmi
            .pointer("/metadata/ownerReferences/0/kind")
            .and_then(Value::as_str)
            == Some("VirtualMachine");
        if owned_by_vm && !vm_keys.contains(&(ns.clone(), name.clone())) {
            let _ = shared.store.delete(keys::VMIS, &ns, &name);
            continue;
        }
        let phase = s(vmi, "/status/phase");
        let uid = s(vmi, "/metadata/uid");
        let my_pods: &[&Value] = pods_by_uid.get(uid).map_or(&[], Vec::as_slice);
        match phase {
            "" | "Pending" | "Scheduling" => {
                if let Some(net) = missing_network(shared, vmi) {
                    // virt-controller cannot render the launcher pod: the VMI stays Pending until
                    // the NetworkAttachmentDefinition appears (its creation wakes the next pass).
                    let msg = format!(
                        "failed to render launch manifest: failed to locate network attachment definition {net}"
                    );
                    let cur = find_condition(vmi, "Synchronized");
                    if cur.as_ref().and_then(|c| c["message"].as_str()) != Some(msg.as_str()) {
                        let _ = shared.store.modify(keys::VMIS, &ns, &name, |v| {
                            v["status"]["phase"] = json!("Pending");
                            set_condition(v, "Synchronized", false, "FailedCreate", &msg);
                            Ok(())
                        });
                    }
                    continue;
                }
                busy = true;
                let (cpu, memory) = vmi_demand(vmi);
                let selector: BTreeMap<String, String> = vmi
                    .pointer("/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let demand = placement::Demand {
                    cpu,
                    memory,
                    node_selector: selector,
                    exclude: None,
                };
                let views = node_views(shared, &placed, &[]);
                match placement::choose(&views, &demand) {
                    Some(node) => {
                        ip_counter += 1;
                        let ip = pod_ip(ip_counter);
                        let _ = shared
                            .store
                            .create(keys::PODS, launcher_pod(vmi, &node, &ip, true, false));
                        if let Ok(updated) = shared.store.modify(keys::VMIS, &ns, &name, |v| {
                            v["status"]["phase"] = json!("Scheduled");
                            v["status"]["nodeName"] = json!(node);
                            v["metadata"]["annotations"]["lab.drover.dev/scheduled-at"] =
                                json!(now.to_string());
                            v["metadata"]["annotations"]["lab.drover.dev/ip"] = json!(ip);
                            set_condition(v, "PodScheduled", true, "", "");
                            remove_condition(v, "Synchronized");
                            Ok(())
                        }) {
                            placed.push(Arc::new(updated));
                        }
                    }
                    None => {
                        let msg = placement::unschedulable_message(&views, &demand);
                        let _ = shared.store.modify(keys::VMIS, &ns, &name, |v| {
                            v["status"]["phase"] = json!("Scheduling");
                            set_condition(v, "PodScheduled", false, "Unschedulable", &msg);
                            Ok(())
                        });
                    }
                }
            }
            "Scheduled" => {
                busy = true;
                let since: f64 = s(vmi, "/metadata/annotations/lab.drover.dev~1scheduled-at")
                    .parse()
                    .unwrap_or(0.0);
                if now - since >= VMI_START_SECS {
                    let node = s(vmi, "/status/nodeName").to_string();
                    let ip = s(vmi, "/metadata/annotations/lab.drover.dev~1ip").to_string();
                    refresh_running(shared, &ns, &name, &node, &ip, |_| {});
                }
            }
            "Running" => {
                let node = s(vmi, "/status/nodeName");
                let has_pod = my_pods
                    .iter()
                    .any(|p| s(p, "/spec/nodeName") == node && s(p, "/status/phase") == "Running");
                if !has_pod && !migrating(&ns, &name) {
                    // The launcher pod was deleted or evicted: the guest is gone.
                    let _ = shared.store.delete(keys::VMIS, &ns, &name);
                    continue;
                }
                if let Some(since) = lost_nodes.get(node) {
                    if now_wall.saturating_sub(*since) as f64 >= NODE_LOST_SECS {
                        // virt-handler on the node stopped reporting: the VMI fails, and a VM that
                        // should run starts a new one on a healthy node.
                        let _ = shared.store.delete(keys::VMIS, &ns, &name);
                        continue;
                    }
                    busy = true;
                }
                let m = migratable_for(shared, vmi);
                let cur = condition(vmi, "LiveMigratable");
                let stale_hotplug = vmi["status"]["volumeStatus"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|v| v.get("hotplugVolume").is_some() && v["phase"] != "Ready")
                });
                let vol_names: Vec<&Value> = vmi["spec"]["volumes"]
                    .as_array()
                    .map(|a| a.iter().map(|v| &v["name"]).collect())
                    .unwrap_or_default();
                let status_names: Vec<&Value> = vmi["status"]["volumeStatus"]
                    .as_array()
                    .map(|a| a.iter().map(|v| &v["name"]).collect())
                    .unwrap_or_default();
                if cur != Some(m.ok) || stale_hotplug || vol_names != status_names {
                    busy |= stale_hotplug;
                    let node = node.to_string();
                    let ip = s(vmi, "/status/interfaces/0/ipAddress").to_string();
                    refresh_running(
                        shared,
                        &ns,
                        &name,
                        &node,
                        &ip,
                        crate::sim::volumes::advance_hotplug,
                    );
                }
            }
            _ => {}
        }
    }

    // Launcher pods of VMIs that no longer exist terminate.
    let live_uids: std::collections::HashSet<&str> =
        vmis.iter().map(|v| s(v, "/metadata/uid")).collect();
    for p in &pods {
        if !live_uids.contains(s(p, "/metadata/labels/kubevirt.io~1created-by")) {
            let _ = shared.store.delete(
                keys::PODS,
                s(p, "/metadata/namespace"),
                s(p, "/metadata/name"),
            );
        }
    }
    busy
}
