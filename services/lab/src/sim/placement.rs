//! Target node choice for VMIs and migration target pods: honours readiness, cordons, KubeVirt's
//! schedulable label, node selectors (the VMI's and a migration's `addedNodeSelector`) and free CPU
//! and memory, and prefers the least allocated node like the default scheduler. Pure.

use std::collections::BTreeMap;

/// What the scheduler knows about a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    /// Carries `kubevirt.io/schedulable=true` (virt-handler is running there).
    pub kubevirt_schedulable: bool,
    pub labels: BTreeMap<String, String>,
    /// Free CPU in cores after requests already placed.
    pub free_cpu: f64,
    /// Free memory in bytes after requests already placed.
    pub free_memory: f64,
}

/// What a VMI (or its migration target pod) asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demand {
    pub cpu: f64,
    pub memory: f64,
    pub node_selector: BTreeMap<String, String>,
    /// The source node of a migration, never a target.
    pub exclude: Option<String>,
}

/// Why no node fits, in the scheduler's words.
pub fn unschedulable_message(nodes: &[NodeView], demand: &Demand) -> String {
    let total = nodes.len();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for n in nodes {
        let r = if !n.ready {
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        } else if n.unschedulable {
            "node(s) were unschedulable"
        } else if demand.exclude.as_deref() == Some(n.name.as_str()) {
            "node(s) didn't match pod anti-affinity rules"
        } else if !n.kubevirt_schedulable || !selector_matches(&demand.node_selector, &n.labels) {
            "node(s) didn't match Pod's node affinity/selector"
        } else if n.free_memory < demand.memory {
            "Insufficient memory"
        } else {
            "Insufficient cpu"
        };
        *reasons.entry(r).or_default() += 1;
    }
    let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// The best node for `demand`, or `None` when nothing fits.
pub fn choose(nodes: &[NodeView], demand: &Demand) -> Option<String> {
    nodes
        .iter()
        .filter(|n| fits(n, demand))
        .max_by(|a, b| {
            a.free_memory
                .total_cmp(&b.free_memory)
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|n| n.name.clone())
}

/// Whether one node can take `demand`.
pub fn fits(n: &NodeView, demand: &Demand) -> bool {
    n.ready
        && !n.unschedulable
        && n.kubevirt_schedulable
        && demand.exclude.as_deref() != Some(n.name.as_str())
        && selector_matches(&demand.node_selector, &n.labels)
        && n.free_memory >= demand.memory
        && n.free_cpu >= demand.cpu
}

fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, free_gib: f64) -> NodeView {
        NodeView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            kubevirt_schedulable: true,
            labels: [("zone".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            free_cpu: 10.0,
            free_memory: free_gib * 1073741824.0,
        }
    }

    #[test]
    fn choice_table() {
        let gib = 1073741824.0;
        let base = vec![node("w1", 100.0), node("w2", 50.0), node("w3", 120.0)];
        let demand = |mem: f64| Demand {
            cpu: 0.4,
            memory: mem * gib,
            ..Demand::default()
        };
        let mut cordoned = base.clone();
        cordoned[2].unschedulable = true;
        let mut not_ready = base.clone();
        not_ready[2].ready = false;
        let mut labelled = base.clone();
        labelled[1].labels.insert("gpu".into(), "yes".into());
        let cases: Vec<(Vec<NodeView>, Demand, Option<&str>)> = vec![
            (base.clone(), demand(8.0), Some("w3")),
            (cordoned, demand(8.0), Some("w1")),
            (not_ready, demand(8.0), Some("w1")),
            (
                base.clone(),
                Demand {
                    exclude: Some("w3".into()),
                    ..demand(8.0)
                },
                Some("w1"),
            ),
            (base.clone(), demand(110.0), Some("w3")),
            (base.clone(), demand(130.0), None),
            (
                labelled,
                Demand {
                    node_selector: [("gpu".to_string(), "yes".to_string())]
                        .into_iter()
                        .collect(),
                    ..demand(8.0)
                },
                Some("w2"),
            ),
            (
                base.clone(),
                Demand {
                    cpu: 11.0,
                    ..demand(1.0)
                },
                None,
            ),
        ];
        for (nodes, d, want) in cases {
            assert_eq!(choose(&nodes, &d).as_deref(), want, "{d:?}");
        }
        let msg = unschedulable_message(&base, &demand(130.0));
        assert_eq!(msg, "0/3 nodes are available: 3 Insufficient memory.");
    }
}
