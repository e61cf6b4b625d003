//! `rolling-maintenance`: drain, maintain and return a set of nodes, a few at a time, moving each VM
//! at most once whenever capacity allows.
//!
//! 0 `plan`     resolves the nodes (a list or a label selector), reads the cluster and plans the order
//!              and every VM's destination ([`crate::plan`]).
//! 1 `rollout`  a reconciler over its `drain-node` children: it starts the next wave (at most
//!              `max_in_maintenance` nodes) once the previous one ended and the nodes already
//!              maintained pass the health gate (Ready and uncordoned; untainted and with
//!              virt-handler running, so VMs can land there, if the node was so before; their VMs
//!              Running; a node that has not passed it `health_timeout_secs` after its drain
//!              pauses the rollout with the reason). Each wave after the first is planned
//!              again from the cluster as it is, so a node whose drain failed (still full, and not
//!              drained again) is no destination it cannot be. When more drains failed than the
//!              failure budget allows, it pauses the workflow (resume through the API grants
//!              another budget's worth).
//! 2 `report`   per-node results, the first plan's migrations and second moves, and the actual
//!              ones (from the `migrated` lists of the drains that finished; a drain that failed
//!              after migrating some VMs reports no list, so its moves are not counted).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::drain_node::{Maintenance, Policy};
use crate::kind::{StepContext, StepDef, Workflow};
use crate::migrate_vmi::{kube, outcome_of};
use crate::model::{ChildSpec, JoinPolicy, Outcome, State};
use crate::plan::{Plan, PlanNode, PlanVm, plan};

/// The `rolling-maintenance` kind.
pub struct RollingMaintenance;

/// Input of `rolling-maintenance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The nodes, by name...
    #[serde(default)]
    pub nodes: Vec<String>,
    /// ...or by labels (all must match).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub max_in_maintenance: u32,
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Failed drains tolerated before the rollout pauses.
    #[serde(default)]
    pub failure_budget: u32,
    /// Seconds a maintained node may take to pass the health gate after its drain ended before
    /// the rollout pauses and says why (each resume grants as long again).
    #[serde(default = "default_health_timeout_secs")]
    pub health_timeout_secs: u64,
    #[serde(default)]
    pub non_migratable: Policy,
    /// Pin destinations to plan each VM's single move (false: let the scheduler choose, the naive way).
    #[serde(default = "yes")]
    pub pin_destinations: bool,
    #[serde(default = "crate::migrate_vmi::default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "crate::migrate_vmi::default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "crate::migrate_vmi::default_poll_ms")]
    pub poll_ms: u64,
}

fn one() -> u32 {
    1
}
fn default_health_timeout_secs() -> u64 {
    1800
}
fn yes() -> bool {
    true
}

fn parse(input: &Value) -> Result<Input, String> {
    let i: Input = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    if i.nodes.is_empty() == i.selector.is_empty() {
        return Err("give either nodes (a list of names) or selector (labels), not both".into());
    }
    if i.max_in_maintenance == 0 {
        return Err("max_in_maintenance must be at least 1".into());
    }
    Ok(i)
}

#[async_trait]
impl Workflow for RollingMaintenance {
    fn kind(&self) -> &'static str {
        "rolling-maintenance"
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        parse(input).map(|_| ())
    }

    fn steps(&self, _input: &Value) -> Vec<StepDef> {
        let retry = crate::migrate_vmi::cluster_retry();
        ["plan", "rollout", "report"]
            .iter()
            .map(|n| StepDef::new(*n).retry(retry))
            .collect()
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Outcome {
        let input = match parse(ctx.input) {
            Ok(i) => i,
            Err(e) => return Outcome::Fail { error: e },
        };
        let kube = match kube(ctx) {
            Ok(k) => k,
            Err(o) => return o,
        };
        let result = match ctx.step {
            0 => make_plan(kube, &input).await,
            1 => rollout(kube, ctx, &input).await,
            _ => Ok(report(ctx)),
        };
        result.unwrap_or_else(|o| o)
    }
}

type Step = Result<Outcome, Outcome>;

async fn make_plan(kube: &dyn crate::ports::kube::Kube, input: &Input) -> Step {
    let nodes = kube.list_nodes().await.map_err(outcome_of)?;
    let names: Vec<String> = if input.nodes.is_empty() {
        nodes
            .iter()
            .filter(|n| {
                input
                    .selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
            })
            .map(|n| n.name.clone())
            .collect()
    } else {
        input.nodes.clone()
    };
    if let Some(missing) = names.iter().find(|n| !nodes.iter().any(|x| &x.name == *n)) {
        return Err(Outcome::Fail {
            error: format!("node {missing} does not exist"),
        });
    }
    if names.is_empty() {
        return Err(Outcome::Fail {
            error: "the selector matches no node".into(),
        });
    }
    let vmis = kube.list_vmis(None).await.map_err(outcome_of)?;
    let p = plan_for(&nodes, &vmis, &names, input.max_in_maintenance as usize);
    let mut out = serde_json::to_value(&p).unwrap_or(Value::Null);
    // Which nodes could host VMs before (cordon aside): the health gate asks them to again, and
    // asks the others only to be Ready and uncordoned (a node without virt-handler, or with a taint
    // of its own, would otherwise hold the rollout forever).
    out["hosted_vms"] = json!(
        nodes
            .iter()
            .filter(|n| names.contains(&n.name) && n.hosts_vms_when_uncordoned())
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
    );
    Ok(Outcome::Done(out))
}

/// Plans the drain of `names` (in waves of `wave`) from the cluster as it is now. Nodes in the plan
/// count as destinations for the VMs of later waves (they will have been maintained by then), as
/// long as they are Ready and untainted; other nodes when they take VMs now.
fn plan_for(
    nodes: &[crate::ports::kube::NodeInfo],
    vmis: &[crate::ports::kube::VmiInfo],
    names: &[String],
    wave: usize,
) -> Plan {
    let plan_nodes: Vec<PlanNode> = nodes
        .iter()
        .map(|n| PlanNode {
            name: n.name.clone(),
            cpu_millis: n.cpu_millis,
            memory_bytes: n.memory_bytes,
            takes_vms: n.takes_vms() || (names.contains(&n.name) && n.ready && n.taints.is_empty()),
        })
        .filter(|n| n.takes_vms)
        .collect();
    let plan_vms: Vec<PlanVm> = vmis
        .iter()
        .filter_map(|v| {
            Some(PlanVm {
                key: format!("{}/{}", v.namespace, v.name),
                node: v.node.clone()?,
                cpu_millis: v.cpu_millis,
                memory_bytes: v.memory_bytes,
                migratable: v.not_migratable.is_none(),
            })
        })
        .collect();
    plan(&plan_nodes, &plan_vms, names, wave)
}

async fn rollout(
    kube: &dyn crate::ports::kube::Kube,
    ctx: &StepContext<'_>,
    input: &Input,
) -> Step {
    let p: Plan = ctx
        .outputs
        .get("plan")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    // The latest drain per node.
    let mut latest: BTreeMap<String, &crate::model::ChildStatus> = BTreeMap::new();
    for c in ctx.children {
        latest.insert(c.input["node"].as_str().unwrap_or_default().to_string(), c);
    }
    let failed: Vec<&String> = latest
        .iter()
        .filter(|(_, c)| c.state != State::Succeeded)
        .map(|(n, _)| n)
        .collect();
    let allowed = input.failure_budget + ctx.resumes * input.failure_budget.max(1);
    if failed.len() as u32 > allowed {
        let names: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
        return Ok(Outcome::Pause {
            reason: format!(
                "{} drains failed ({}), over the failure budget of {allowed}; resume to go on",
                failed.len(),
                names.join(", ")
            ),
        });
    }
    // Health gate: maintained nodes take VMs again and the VMs on them run. One read of the
    // cluster serves the gate and the next wave's plan.
    let nodes = kube.list_nodes().await.map_err(outcome_of)?;
    let vmis = kube.list_vmis(None).await.map_err(outcome_of)?;
    let hosted: Vec<&str> = ctx
        .outputs
        .get("plan")
        .and_then(|p| p["hosted_vms"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (node, c) in &latest {
        if c.state != State::Succeeded {
            continue;
        }
        let Some(info) = nodes.iter().find(|n| &n.name == node) else {
            return Err(Outcome::Fail {
                error: format!("node {node} is gone from the cluster"),
            });
        };
        let not_running: Vec<&str> = vmis
            .iter()
            .filter(|v| v.node.as_deref() == Some(node.as_str()) && v.phase != "Running")
            .map(|v| v.name.as_str())
            .collect();
        // Ready is not enough: after a reboot virt-handler starts later, and until it labels the
        // node schedulable no VM can land there, so the next node's VMs would have nowhere to go
        // but nodes still to be maintained.
        let back = if hosted.contains(&node.as_str()) {
            info.takes_vms()
        } else {
            info.ready && !info.unschedulable
        };
        if !back || !not_running.is_empty() {
            let waited_ms = ctx.ports.clock.now_ms().saturating_sub(c.updated_ms);
            let allowed_ms = input.health_timeout_secs * 1000 * (1 + u64::from(ctx.resumes));
            if c.updated_ms > 0 && waited_ms > allowed_ms {
                return Ok(Outcome::Pause {
                    reason: format!(
                        "{node} has not passed the health gate {} s after its drain ended (Ready: \
                         {}, uncordoned: {}, takes VMs: {}, VMs not running: {}); fix it and resume",
                        waited_ms / 1000,
                        info.ready,
                        !info.unschedulable,
                        info.takes_vms(),
                        if not_running.is_empty() {
                            "none".to_string()
                        } else {
                            not_running.join(", ")
                        },
                    ),
                });
            }
            return Ok(Outcome::Poll {
                after: Duration::from_millis(input.poll_ms),
                progress: Some(json!({
                    "health_gate": node,
                    "ready": info.ready,
                    "takes_vms": info.takes_vms(),
                    "not_running": not_running,
                })),
            });
        }
    }
    let remaining: Vec<String> = p
        .order
        .iter()
        .filter(|n| !latest.contains_key(*n))
        .cloned()
        .collect();
    if remaining.is_empty() {
        let summary: BTreeMap<&String, &str> =
            latest.iter().map(|(n, c)| (n, c.state.as_str())).collect();
        // What happened, from the drains that finished: each VM's moves.
        let mut moves: BTreeMap<String, u32> = BTreeMap::new();
        for c in ctx.children {
            let migrated = c.result.as_ref().and_then(|r| r["migrated"].as_array());
            for m in migrated.into_iter().flatten() {
                let key = format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap_or_default(),
                    m["vmi"].as_str().unwrap_or_default()
                );
                *moves.entry(key).or_default() += 1;
            }
        }
        let again: Vec<&String> = moves
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        return Ok(Outcome::Done(json!({
            "nodes": summary,
            "migrations": moves.values().sum::<u32>(),
            "moved_more_than_once": again,
        })));
    }
    // Plan the rest again from the cluster as it is: a node whose drain failed was never emptied
    // (its VMs are still there, so it has no room for the ones the first plan sent it), and it is
    // not drained again by this rollout, so it counts as outside the plan now.
    let wave_size = input.max_in_maintenance as usize;
    let now = if latest.is_empty() {
        p.clone()
    } else {
        plan_for(&nodes, &vmis, &remaining, wave_size)
    };
    let wave: Vec<&String> = now
        .order
        .iter()
        .filter(|n| remaining.contains(n))
        .take(wave_size)
        .collect();
    let children = wave
        .iter()
        .map(|node| {
            let targets = if input.pin_destinations {
                now.targets.get(*node).cloned().unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            ChildSpec {
                kind: "drain-node".into(),
                input: json!({
                    "node": node,
                    "non_migratable": input.non_migratable,
                    "uncordon": true,
                    "maintenance": input.maintenance,
                    "targets": targets,
                    "cluster_limit": input.cluster_limit,
                    "node_limit": input.node_limit,
                    "poll_ms": input.poll_ms,
                }),
                priority: 0,
            }
        })
        .collect();
    Ok(Outcome::Spawn {
        children,
        join: JoinPolicy::All,
    })
}

fn report(ctx: &StepContext<'_>) -> Outcome {
    let p: Plan = ctx
        .outputs
        .get("plan")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let rollout = ctx.outputs.get("rollout");
    Outcome::Done(json!({
        "order": p.order,
        "planned_migrations": p.migrations,
        "planned_second_moves": p.second_moves,
        "unplaced": p.unplaced,
        "migrations": rollout.map(|r| r["migrations"].clone()),
        "moved_more_than_once": rollout.map(|r| r["moved_more_than_once"].clone()),
        "nodes": rollout.map(|r| r["nodes"].clone()),
    }))
}
