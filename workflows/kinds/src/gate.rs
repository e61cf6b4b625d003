//! The rollout's health gate, pure: whether the nodes a rolling maintenance has drained so far are
//! back (so the next wave may start), still on their way, or overdue. `rolling_maintenance` reads the
//! cluster once and asks [`check`].
//!
//! A node is back when it is Ready and uncordoned, and, if it could host VMs before the rollout,
//! takes VMs again (untainted, virt-handler running: after a reboot the node is Ready before
//! virt-handler labels it schedulable, and until then the next node's VMs would have nowhere to go
//! but nodes still to be maintained); and when the VMs on it run. A node that has not passed
//! `timeout_ms` after its drain ended pauses the rollout with what it lacks.

use drover_workflows::ports::kube::{NodeInfo, VmiInfo};
use serde_json::{Value, json};

/// A node whose drain succeeded, and when its drain ended (ms; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Maintained<'a> {
    pub node: &'a str,
    pub drained_ms: u64,
}

/// What the gate says.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Every maintained node is back.
    Open,
    /// A node is not back yet; look again later. The progress says which and why.
    Wait(Value),
    /// A node has been on its way for too long: pause the rollout with this reason.
    Overdue(String),
    /// A maintained node is gone from the cluster.
    Gone(String),
}

/// Checks `maintained` (in order) against the cluster. `hosted` names the nodes that could host VMs
/// before the rollout; `timeout_ms` is how long a node may take after its drain ended.
pub fn check(
    maintained: &[Maintained<'_>],
    nodes: &[NodeInfo],
    vmis: &[VmiInfo],
    hosted: &[&str],
    now_ms: u64,
    timeout_ms: u64,
) -> Gate {
    for m in maintained {
        let node = m.node;
        let Some(info) = nodes.iter().find(|n| n.name == node) else {
            return Gate::Gone(format!("node {node} is gone from the cluster"));
        };
        let not_running: Vec<&str> = vmis
            .iter()
            .filter(|v| v.node.as_deref() == Some(node) && v.phase != "Running")
            .map(|v| v.name.as_str())
            .collect();
        let back = if hosted.contains(&node) {
            info.takes_vms()
        } else {
            info.ready && !info.unschedulable
        };
        if back && not_running.is_empty() {
            continue;
        }
        let waited_ms = now_ms.saturating_sub(m.drained_ms);
        if m.drained_ms > 0 && waited_ms > timeout_ms {
            return Gate::Overdue(format!(
                "{node} has not passed the health gate {} s after its drain ended (Ready: {}, \
                 uncordoned: {}, takes VMs: {}, VMs not running: {}); fix it and resume",
                waited_ms / 1000,
                info.ready,
                !info.unschedulable,
                info.takes_vms(),
                if not_running.is_empty() {
                    "none".to_string()
                } else {
                    not_running.join(", ")
                },
            ));
        }
        return Gate::Wait(json!({
            "health_gate": node,
            "ready": info.ready,
            "takes_vms": info.takes_vms(),
            "not_running": not_running,
        }));
    }
    Gate::Open
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(name: &str, ready: bool, cordoned: bool, handler: bool, taints: &[&str]) -> NodeInfo {
        let mut labels = BTreeMap::new();
        if handler {
            labels.insert("kubevirt.io/schedulable".to_string(), "true".to_string());
        }
        NodeInfo {
            name: name.into(),
            unschedulable: cordoned,
            ready,
            labels,
            taints: taints.iter().map(|t| t.to_string()).collect(),
            cpu_millis: 8000,
            memory_bytes: 64 << 30,
        }
    }

    fn vmi(name: &str, on: &str, phase: &str) -> VmiInfo {
        VmiInfo {
            namespace: "ns".into(),
            name: name.into(),
            node: Some(on.into()),
            phase: phase.into(),
            not_migratable: None,
            cpu_millis: 100,
            memory_bytes: 1 << 30,
            vm: None,
        }
    }

    const MIN: u64 = 60_000;

    #[test]
    fn the_gate_in_every_state_a_node_comes_back_in() {
        let w1 = |drained_ms| {
            [Maintained {
                node: "w1",
                drained_ms,
            }]
        };
        let running = [vmi("a", "w1", "Running")];
        let starting = [vmi("a", "w1", "Scheduling")];
        let wait = |g: &Gate| matches!(g, Gate::Wait(_));
        let overdue = |g: &Gate| matches!(g, Gate::Overdue(r) if r.contains("w1 has not passed"));
        type Expect<'a> = &'a dyn Fn(&Gate) -> bool;
        type Case<'a> = (
            &'a str,
            NodeInfo,
            &'a [VmiInfo],
            &'a [&'a str],
            u64,
            Expect<'a>,
        );
        let cases: Vec<Case> = vec![
            (
                "back and running",
                node("w1", true, false, true, &[]),
                &running,
                &["w1"],
                10 * MIN,
                &|g| *g == Gate::Open,
            ),
            (
                "rebooting: not Ready",
                node("w1", false, false, false, &[]),
                &[],
                &["w1"],
                MIN,
                &wait,
            ),
            (
                "Ready before virt-handler",
                node("w1", true, false, false, &[]),
                &[],
                &["w1"],
                MIN,
                &wait,
            ),
            (
                "still cordoned",
                node(
                    "w1",
                    true,
                    true,
                    true,
                    &["node.kubernetes.io/unschedulable"],
                ),
                &[],
                &["w1"],
                MIN,
                &wait,
            ),
            (
                "a VM still starting",
                node("w1", true, false, true, &[]),
                &starting,
                &["w1"],
                MIN,
                &wait,
            ),
            (
                "never hosted VMs: Ready and uncordoned is enough",
                node("w1", true, false, false, &["dedicated"]),
                &[],
                &[],
                MIN,
                &|g| *g == Gate::Open,
            ),
            (
                "overdue",
                node("w1", true, false, false, &[]),
                &[],
                &["w1"],
                31 * MIN,
                &overdue,
            ),
            (
                "drain end unknown: never overdue",
                node("w1", false, false, false, &[]),
                &[],
                &["w1"],
                u64::MAX,
                &wait,
            ),
        ];
        for (label, n, vmis, hosted, now, expect) in cases {
            let drained = if label.starts_with("drain end unknown") {
                0
            } else {
                1
            };
            let g = check(&w1(drained), &[n], vmis, hosted, now, 30 * MIN);
            assert!(expect(&g), "{label}: {g:?}");
        }
        let gone = check(&w1(1), &[], &[], &[], MIN, 30 * MIN);
        assert_eq!(gone, Gate::Gone("node w1 is gone from the cluster".into()));
        assert_eq!(check(&[], &[], &[], &[], 0, 0), Gate::Open);
    }

    #[test]
    fn the_first_node_not_back_is_the_one_reported() {
        let maintained = [
            Maintained {
                node: "w1",
                drained_ms: 1,
            },
            Maintained {
                node: "w2",
                drained_ms: 1,
            },
        ];
        let nodes = [
            node("w1", true, false, true, &[]),
            node("w2", false, false, true, &[]),
        ];
        match check(&maintained, &nodes, &[], &["w1", "w2"], MIN, 30 * MIN) {
            Gate::Wait(p) => assert_eq!(p["health_gate"], "w2"),
            other => panic!("{other:?}"),
        }
    }
}
