//! KubeVirt's evacuation controller: a Running VMI on a node tainted `kubevirt.io/drain`, or whose
//! `status.evacuationNodeName` names its node (set by an eviction of its virt-launcher pod), gets a
//! `kubevirt-evacuation-*` migration, one at a time, and after a failed one not before the back-off
//! the migration controller set. A stale `evacuationNodeName` (the VMI has moved) is cleared.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::kube::resources::keys;
use crate::sim::memory::SimState;
use crate::state::Shared;

/// Create the evacuation migrations due now.
pub fn reconcile(shared: &Shared, st: &mut SimState, now: SimTime) {
    let (nodes, _) = shared.store.list_shared(keys::NODES, None, |n| {
        n["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "kubevirt.io/drain"))
    });
    let drained: HashSet<String> = nodes
        .iter()
        .map(|n| s(n, "/metadata/name").to_string())
        .collect();
    let (vmis, _) = shared.store.list_shared(keys::VMIS, None, |v| {
        !s(v, "/status/evacuationNodeName").is_empty() || drained.contains(s(v, "/status/nodeName"))
    });
    for vmi in vmis {
        let ns = s(&vmi, "/metadata/namespace").to_string();
        let name = s(&vmi, "/metadata/name").to_string();
        let node = s(&vmi, "/status/nodeName").to_string();
        let evac = s(&vmi, "/status/evacuationNodeName").to_string();
        if !evac.is_empty() && evac != node {
            let _ = shared.store.modify(keys::VMIS, &ns, &name, |v| {
                if let Some(st) = v["status"].as_object_mut() {
                    st.remove("evacuationNodeName");
                }
                Ok(())
            });
            continue;
        }
        if s(&vmi, "/status/phase") != "Running" {
            continue;
        }
        let in_flight = st
            .runs
            .iter()
            .any(|((n, _), e)| *n == ns && e.vmi == name && !e.run.phase.is_final());
        let key = (ns.clone(), name.clone());
        if in_flight || st.evacuation_retry.get(&key).is_some_and(|t| *t > now) {
            continue;
        }
        let obj = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "generateName": "kubevirt-evacuation-",
                "namespace": ns,
                "annotations": {"kubevirt.io/evacuationMigration": node},
                "labels": {"kubevirt.io/vmi-name": name}
            },
            "spec": {"vmiName": name}
        });
        if shared.store.create(keys::VMIMS, obj).is_ok() {
            // Hold further evacuations of this VMI until the migration registers.
            st.evacuation_retry.insert(key, now + 1e-3);
        }
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
