//! Kubernetes nodes: the Node objects the scenario and MAAS deployments create, their Ready
//! condition (kubelet heartbeats, NotReady faults), the virt-handler DaemonSet pod each worker
//! runs, and what goes with a deleted Node.

use serde_json::{Value, json};

use crate::error::Result;
use crate::kube::resources::keys;
use crate::sim::kubelet::Taint;
use crate::state::Shared;
use crate::store::generate_name;

/// What a node is built from.
#[derive(Debug, Clone)]
pub struct NodeParams<'a> {
    pub name: &'a str,
    pub cpu: u32,
    pub memory_gib: u64,
    pub role: &'a str,
    pub ip: &'a str,
    /// Labels on top of the defaults (they win over them, as kubelet's `--node-labels` do).
    pub labels: Vec<(String, String)>,
    /// Taints besides the control plane's (kubelet's `--register-with-taints`).
    pub taints: Vec<Taint>,
    /// Registered Ready, with virt-handler already running on a worker (a scenario node), which
    /// then carries `kubevirt.io/schedulable=true`. A joining node registers NotReady and gets the
    /// label when virt-handler runs ([`set_joined`]).
    pub ready: bool,
    pub provider_id: String,
}

/// Build a Node object.
pub fn node_object(p: &NodeParams<'_>, kubelet_version: &str, now: &str) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": p.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    labels[format!("node-role.kubernetes.io/{}", p.role)] = json!("");
    if p.role == "worker" && p.ready {
        labels["kubevirt.io/schedulable"] = json!("true");
    }
    for (k, v) in &p.labels {
        labels[k] = json!(v);
    }
    let mem = format!("{}Ki", p.memory_gib * 1024 * 1024);
    let mut spec = json!({"podCIDR": "10.244.0.0/24", "providerID": p.provider_id});
    let mut taints = Vec::new();
    if p.role == "control-plane" {
        taints
            .push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
    }
    taints.extend(p.taints.iter().map(Taint::to_json));
    if !taints.is_empty() {
        spec["taints"] = Value::Array(taints);
    }
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": p.name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": spec,
        "status": {
            "capacity": {"cpu": p.cpu.to_string(), "memory": mem, "pods": "250", "ephemeral-storage": "467345856Ki"},
            "allocatable": {"cpu": p.cpu.to_string(), "memory": mem, "pods": "250", "ephemeral-storage": "430708704Ki"},
            "addresses": [{"type": "InternalIP", "address": p.ip}, {"type": "Hostname", "address": p.name}],
            "nodeInfo": {
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "osImage": "Ubuntu 22.04.4 LTS",
                "kernelVersion": "5.15.0-105-generic",
                "containerRuntimeVersion": "containerd://1.7.13",
                "architecture": "amd64",
                "operatingSystem": "linux",
                "machineID": "", "systemUUID": "", "bootID": ""
            },
            "conditions": []
        }
    });
    set_ready_condition(&mut node, p.ready, now);
    node
}

/// Set the kubelet conditions for a Ready or NotReady node.
pub fn set_ready_condition(node: &mut Value, ready: bool, now: &str) {
    let conds = if ready {
        json!([
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
        ])
    } else {
        json!([
            {"type": "MemoryPressure", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."},
            {"type": "DiskPressure", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."},
            {"type": "PIDPressure", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."},
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}
        ])
    };
    let mut conds = conds;
    if let Some(list) = conds.as_array_mut() {
        for c in list {
            c["lastHeartbeatTime"] = json!(now);
            c["lastTransitionTime"] = json!(now);
        }
    }
    node["status"]["conditions"] = conds;
    let taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["key"] != "node.kubernetes.io/unreachable")
        .chain(
            (!ready)
                .then(|| json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})),
        )
        .collect();
    if taints.is_empty() {
        if let Some(spec) = node["spec"].as_object_mut() {
            spec.remove("taints");
        }
    } else {
        node["spec"]["taints"] = Value::Array(taints);
    }
}

/// Mark a node Ready or NotReady.
pub fn set_ready(shared: &Shared, name: &str, ready: bool) -> Result<Value> {
    let now = shared.clock.rfc3339();
    shared.store.modify(keys::NODES, "", name, |n| {
        set_ready_condition(n, ready, &now);
        Ok(())
    })
}

/// A joining worker turns Ready and virt-handler, starting there, labels it schedulable for VMs:
/// one write, so no client sees the joined node Ready without the label.
pub fn set_joined(shared: &Shared, name: &str) -> Result<Value> {
    let now = shared.clock.rfc3339();
    shared.store.modify(keys::NODES, "", name, |n| {
        set_ready_condition(n, true, &now);
        n["metadata"]["labels"]["kubevirt.io/schedulable"] = json!("true");
        Ok(())
    })
}

/// Set virt-handler's `kubevirt.io/schedulable` label on a node.
pub fn set_kubevirt_schedulable(shared: &Shared, name: &str, schedulable: bool) -> Result<Value> {
    shared.store.modify(keys::NODES, "", name, |n| {
        n["metadata"]["labels"]["kubevirt.io/schedulable"] = json!(schedulable.to_string());
        Ok(())
    })
}

/// Start a reboot: the node goes NotReady, virt-handler, stopping, marks it unschedulable for
/// VMs, and the VMs still running there stop with it. Returns when it is Ready again and when virt-handler runs again, in simulated seconds; the
/// simulator finishes the reboot at those times ([`finish_reboot`]).
pub fn start_reboot(shared: &Shared, name: &str) -> Result<(f64, f64)> {
    set_ready(shared, name, false)?;
    set_kubevirt_schedulable(shared, name, false)?;
    // The guests still there go down with the node: their virt-launcher pods fail as the kubelet's
    // graceful node shutdown leaves them, and the VMs controller starts them again per run strategy.
    let (pods, _) = shared.store.list(keys::PODS, None, |p| {
        p.pointer("/spec/nodeName") == Some(&json!(name))
            && p.pointer("/metadata/labels/kubevirt.io") == Some(&json!("virt-launcher"))
            && p.pointer("/status/phase") == Some(&json!("Running"))
    });
    for p in pods {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
        let pod = p["metadata"]["name"].as_str().unwrap_or_default();
        let _ = shared.store.modify(keys::PODS, ns, pod, |p| {
            p["status"]["phase"] = json!("Failed");
            p["status"]["reason"] = json!("Terminated");
            p["status"]["message"] =
                json!("Pod was terminated in response to imminent node shutdown.");
            Ok(())
        });
    }
    let r = &shared.scenario.reboot;
    let ready_at = shared.clock.now() + r.boot_secs;
    Ok((ready_at, ready_at + r.virt_handler_start_secs))
}

/// Move a rebooting node on: Ready (with a new bootID) once `now` passed `ready_at`, schedulable
/// for VMs once it passed `schedulable_at`. Returns whether the reboot is over.
pub fn finish_reboot(
    shared: &Shared,
    name: &str,
    now: f64,
    (ready_at, schedulable_at): (f64, f64),
) -> bool {
    let Some(node) = shared.store.get(keys::NODES, "", name) else {
        return true; // Deleted while rebooting: nothing left to do.
    };
    let ready = crate::sim::vms::condition(&node, "Ready") == Some(true);
    if now >= ready_at && !ready {
        let stamp = shared.clock.rfc3339();
        let _ = shared.store.modify(keys::NODES, "", name, |n| {
            set_ready_condition(n, true, &stamp);
            n["status"]["nodeInfo"]["bootID"] = json!(uuid::Uuid::now_v7().to_string());
            Ok(())
        });
    }
    if now >= schedulable_at {
        let _ = set_kubevirt_schedulable(shared, name, true);
        return true;
    }
    false
}

/// What the pod garbage collector does once Node `name` is gone: the DaemonSet pods bound to it
/// (virt-handler, in `kubevirt`) go too.
pub fn delete_daemon_pods(shared: &Shared, name: &str) {
    let (pods, _) = shared.store.list(keys::PODS, Some("kubevirt"), |p| {
        p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name)
    });
    for p in pods {
        if let Some(n) = p.pointer("/metadata/name").and_then(Value::as_str) {
            let _ = shared.store.delete(keys::PODS, "kubevirt", n);
        }
    }
}

/// The virt-handler DaemonSet pod of a worker.
pub fn virt_handler_pod(node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": generate_name("virt-handler-"),
            "namespace": "kubevirt",
            "labels": {"kubevirt.io": "virt-handler", "app.kubernetes.io/component": "kubevirt"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "virt-handler", "uid": "00000000-0000-0000-0000-00000000d5e7", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "virt-handler", "image": "quay.io/kubevirt/virt-handler:v1.5.0"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "virt-handler", "image": "quay.io/kubevirt/virt-handler:v1.5.0", "imageID": "quay.io/kubevirt/virt-handler@sha256:0", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
    })
}
