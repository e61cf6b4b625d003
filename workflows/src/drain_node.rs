//! `drain-node`: empty a node for maintenance, durably. Each step is a reconciler over the
//! Kubernetes port: it reads the cluster first and acts only if needed, so a step re-run after a
//! crash finds its own work instead of repeating it.
//!
//! 0 `preflight`  takes the node's lock (one workflow per node), classifies the node's VMIs by
//!                `LiveMigratable`, checks the other schedulable nodes have room, and with policy
//!                `fail` stops with a report naming each blocking VM and why.
//! 1 `cordon`     remembers whether the node was already cordoned (compensation uncordons only then).
//! 2 `migrate`    one `migrate-vmi` child per migratable VMI (limits enforced by their permits);
//!                failed migrations are retried as new children up to a limit, then the policy applies.
//! 3 `stop-blocked` per policy, stops the VMs that cannot move (compensation starts them again).
//! 4 `evict`      evicts the remaining non-DaemonSet pods through the Eviction API (429: wait, retry).
//! 5 `verify`     checks no VMI is left and starts the stopped VMs (they land elsewhere).
//! 6 `maintenance` with `wait-for-signal`, waits for the signal `maintenance-done` (sent through the
//!                API when the node is back); with `none`, goes straight on.
//! 7 `return`     uncordons if asked, waits for the node to be Ready again and for the VMs stopped
//!                for the drain to run again elsewhere.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kind::{StepContext, StepDef, Workflow};
use crate::migrate_vmi::{kube, outcome_of};
use crate::model::{ChildSpec, JoinPolicy, Outcome, Permit, Phase, State};
use crate::ports::kube::{Eviction, Kube, VmiInfo};

/// The `drain-node` kind.
pub struct DrainNode;

/// What to do with VMs that cannot live-migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Refuse to drain; report the blocking VMs.
    #[default]
    Fail,
    /// Stop them, drain, and start them again elsewhere.
    ShutdownRestart,
    /// Leave them (and their pods) on the node.
    Skip,
}

/// What happens to a drained node before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Maintenance {
    #[default]
    None,
    /// Wait for the signal `maintenance-done`.
    WaitForSignal,
}

/// The signal that ends a `wait-for-signal` maintenance.
pub const MAINTENANCE_DONE: &str = "maintenance-done";

/// Input of `drain-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub node: String,
    #[serde(default)]
    pub non_migratable: Policy,
    /// Give up (and compensate) when a step runs after this time (ms since the epoch).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Destination nodes must carry these labels (the migrations' addedNodeSelector).
    #[serde(default)]
    pub target_selector: BTreeMap<String, String>,
    /// Uncordon at the end instead of leaving the node cordoned for maintenance.
    #[serde(default)]
    pub uncordon: bool,
    /// Destination per VMI (`namespace/name` -> node), pinned through the migration's
    /// addedNodeSelector on `kubernetes.io/hostname`; VMIs not listed go where the scheduler puts them.
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    /// What happens while the node is drained.
    #[serde(default)]
    pub maintenance: Maintenance,
    #[serde(default = "default_attempts")]
    pub max_migration_attempts: u32,
    #[serde(default = "crate::migrate_vmi::default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "crate::migrate_vmi::default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "crate::migrate_vmi::default_poll_ms")]
    pub poll_ms: u64,
}

fn default_attempts() -> u32 {
    3
}

fn parse(input: &Value) -> Result<Input, String> {
    let i: Input = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    if i.node.is_empty() {
        return Err("node must name a node".into());
    }
    if i.max_migration_attempts == 0 || i.cluster_limit == 0 || i.node_limit == 0 {
        return Err(
            "max_migration_attempts, cluster_limit and node_limit must be at least 1".into(),
        );
    }
    Ok(i)
}

/// A VM the drain could not move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub namespace: String,
    pub name: String,
    pub vm: Option<String>,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Preflight {
    was_cordoned: bool,
    migratable: Vec<(String, String)>,
    blocked: Vec<Blocked>,
}

const STEPS: [&str; 8] = [
    "preflight",
    "cordon",
    "migrate",
    "stop-blocked",
    "evict",
    "verify",
    "maintenance",
    "return",
];

fn output<T: serde::de::DeserializeOwned + Default>(ctx: &StepContext<'_>, step: &str) -> T {
    ctx.outputs
        .get(step)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

#[async_trait]
impl Workflow for DrainNode {
    fn kind(&self) -> &'static str {
        "drain-node"
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        parse(input).map(|_| ())
    }

    fn steps(&self, _input: &Value) -> Vec<StepDef> {
        let retry = crate::migrate_vmi::cluster_retry();
        STEPS
            .iter()
            .map(|name| {
                let def = StepDef::new(*name).retry(retry);
                if matches!(*name, "cordon" | "stop-blocked") {
                    def.compensable()
                } else {
                    def
                }
            })
            .collect()
    }

    fn permits(&self, step: usize, phase: Phase, input: &Value) -> Vec<Permit> {
        match (step, phase, parse(input)) {
            (0, Phase::Forward, Ok(i)) => vec![Permit::lock(format!("node:{}", i.node))],
            _ => Vec::new(),
        }
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Outcome {
        let input = match parse(ctx.input) {
            Ok(i) => i,
            Err(e) => return Outcome::Fail { error: e },
        };
        if let Some(deadline) = input.deadline_ms
            && ctx.ports.clock.now_ms() > deadline
        {
            return Outcome::Fail {
                error: format!("the drain of {} passed its deadline", input.node),
            };
        }
        let kube = match kube(ctx) {
            Ok(k) => k,
            Err(o) => return o,
        };
        let result = match ctx.step {
            0 => preflight(kube, &input).await,
            1 => cordon(kube, &input, &output(ctx, "preflight")).await,
            2 => migrate(kube, ctx, &input).await,
            3 => stop_blocked(kube, ctx, &input).await,
            4 => evict(kube, &input).await,
            5 => verify(kube, ctx, &input).await,
            6 => Ok(maintenance(ctx, &input)),
            _ => node_return(kube, ctx, &input).await,
        };
        result.unwrap_or_else(|o| o)
    }

    async fn compensate(&self, ctx: &StepContext<'_>) -> Outcome {
        let Ok(input) = parse(ctx.input) else {
            return Outcome::Done(Value::Null);
        };
        let kube = match kube(ctx) {
            Ok(k) => k,
            Err(o) => return o,
        };
        match ctx.step {
            1 => {
                let cordoned_by_us = ctx
                    .outputs
                    .get("cordon")
                    .and_then(|o| o["cordoned_by_us"].as_bool())
                    == Some(true);
                if cordoned_by_us && let Err(e) = kube.set_unschedulable(&input.node, false).await {
                    return outcome_of(e);
                }
                Outcome::Done(json!({ "uncordoned": cordoned_by_us }))
            }
            3 => {
                let stopped: Vec<Blocked> = ctx
                    .outputs
                    .get("stop-blocked")
                    .and_then(|o| serde_json::from_value(o["stopped"].clone()).ok())
                    .unwrap_or_default();
                for b in &stopped {
                    if let Some(vm) = &b.vm
                        && let Err(e) = kube.set_vm_running(&b.namespace, vm, true).await
                    {
                        return outcome_of(e);
                    }
                }
                Outcome::Done(json!({ "started": stopped.len() }))
            }
            _ => Outcome::Done(Value::Null),
        }
    }
}

type Step = Result<Outcome, Outcome>;

fn blocked(v: &VmiInfo) -> Option<Blocked> {
    v.not_migratable.as_ref().map(|(reason, message)| Blocked {
        namespace: v.namespace.clone(),
        name: v.name.clone(),
        vm: v.vm.clone(),
        reason: reason.clone(),
        message: message.clone(),
    })
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

async fn preflight(kube: &dyn Kube, input: &Input) -> Step {
    let node = kube.get_node(&input.node).await.map_err(outcome_of)?;
    let vmis: Vec<VmiInfo> = kube
        .list_vmis(Some(&input.node))
        .await
        .map_err(outcome_of)?;
    let blockers: Vec<Blocked> = vmis.iter().filter_map(blocked).collect();
    if input.non_migratable == Policy::Fail && !blockers.is_empty() {
        let list: Vec<String> = blockers
            .iter()
            .map(|b| format!("{}/{} ({}: {})", b.namespace, b.name, b.reason, b.message))
            .collect();
        return Err(Outcome::Fail {
            error: format!(
                "{} VMs on {} cannot live-migrate: {}",
                blockers.len(),
                input.node,
                list.join("; ")
            ),
        });
    }
    // Room elsewhere: every VM that must leave (and, with shutdown-restart, the blocked ones too).
    let leaving: Vec<&VmiInfo> = vmis
        .iter()
        .filter(|v| v.not_migratable.is_none() || input.non_migratable == Policy::ShutdownRestart)
        .collect();
    let (need_cpu, need_mem) = leaving
        .iter()
        .fold((0, 0), |(c, m), v| (c + v.cpu_millis, m + v.memory_bytes));
    let nodes = kube.list_nodes().await.map_err(outcome_of)?;
    let all = kube.list_vmis(None).await.map_err(outcome_of)?;
    let mut free_cpu = 0u64;
    let mut free_mem = 0u64;
    let mut targets = 0;
    for n in nodes.iter().filter(|n| {
        n.name != input.node
            && !n.unschedulable
            && n.ready
            && input
                .target_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
    }) {
        let (cpu, mem) = all
            .iter()
            .filter(|v| v.node.as_deref() == Some(n.name.as_str()))
            .fold((0, 0), |(c, m), v| (c + v.cpu_millis, m + v.memory_bytes));
        free_cpu += n.cpu_millis.saturating_sub(cpu);
        free_mem += n.memory_bytes.saturating_sub(mem);
        targets += 1;
    }
    if need_mem > free_mem || need_cpu > free_cpu {
        return Err(Outcome::Fail {
            error: format!(
                "not enough room to drain {}: its VMs need {:.1} GiB and {} mCPU, the {targets} other schedulable nodes have {:.1} GiB and {} mCPU free",
                input.node,
                gib(need_mem),
                need_cpu,
                gib(free_mem),
                free_cpu
            ),
        });
    }
    let report = Preflight {
        was_cordoned: node.unschedulable,
        migratable: vmis
            .iter()
            .filter(|v| v.not_migratable.is_none())
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect(),
        blocked: blockers,
    };
    Ok(Outcome::Done(
        serde_json::to_value(report).unwrap_or(Value::Null),
    ))
}

async fn cordon(kube: &dyn Kube, input: &Input, pre: &Preflight) -> Step {
    let node = kube.get_node(&input.node).await.map_err(outcome_of)?;
    if !node.unschedulable {
        kube.set_unschedulable(&input.node, true)
            .await
            .map_err(outcome_of)?;
    }
    Ok(Outcome::Done(
        json!({ "cordoned_by_us": !pre.was_cordoned }),
    ))
}

async fn migrate(kube: &dyn Kube, ctx: &StepContext<'_>, input: &Input) -> Step {
    let child = |v: &(String, String)| {
        let mut selector = input.target_selector.clone();
        if let Some(target) = input.targets.get(&format!("{}/{}", v.0, v.1)) {
            selector.insert("kubernetes.io/hostname".into(), target.clone());
        }
        ChildSpec {
            kind: "migrate-vmi".into(),
            input: json!({
                "namespace": v.0, "vmi": v.1, "source_node": input.node,
                "added_node_selector": selector,
                "cluster_limit": input.cluster_limit, "node_limit": input.node_limit,
            }),
            priority: 0,
        }
    };
    if ctx.children.is_empty() {
        let vmis = kube
            .list_vmis(Some(&input.node))
            .await
            .map_err(outcome_of)?;
        let targets: Vec<(String, String)> = vmis
            .iter()
            .filter(|v| v.not_migratable.is_none())
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect();
        if targets.is_empty() {
            return Ok(Outcome::Done(json!({ "migrated": [], "gave_up": [] })));
        }
        return Ok(Outcome::Spawn {
            children: targets.iter().map(child).collect(),
            join: JoinPolicy::All,
        });
    }
    // The latest child per VMI and how many were tried.
    let mut latest: BTreeMap<(String, String), (usize, &crate::model::ChildStatus)> =
        BTreeMap::new();
    for c in ctx.children {
        let key = (
            c.input["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            c.input["vmi"].as_str().unwrap_or_default().to_string(),
        );
        let entry = latest.entry(key).or_insert((0, c));
        *entry = (entry.0 + 1, c);
    }
    let mut retry = Vec::new();
    let mut migrated = Vec::new();
    let mut gave_up = Vec::new();
    for (key, (tries, c)) in &latest {
        match c.state {
            State::Succeeded => migrated.push(json!({ "namespace": key.0, "vmi": key.1, "target": c.result.as_ref().and_then(|r| r.get("target").cloned()) })),
            _ if (*tries as u32) < input.max_migration_attempts => retry.push(key.clone()),
            _ => gave_up.push(Blocked {
                namespace: key.0.clone(),
                name: key.1.clone(),
                vm: None,
                reason: "MigrationFailed".into(),
                message: c.error.clone().unwrap_or_else(|| format!("{:?}", c.state)),
            }),
        }
    }
    if !retry.is_empty() {
        return Ok(Outcome::Spawn {
            children: retry.iter().map(child).collect(),
            join: JoinPolicy::All,
        });
    }
    if !gave_up.is_empty() && input.non_migratable == Policy::Fail {
        let list: Vec<String> = gave_up
            .iter()
            .map(|b| format!("{}/{}: {}", b.namespace, b.name, b.message))
            .collect();
        return Err(Outcome::Fail {
            error: format!(
                "{} migrations failed {} times: {}",
                gave_up.len(),
                input.max_migration_attempts,
                list.join("; ")
            ),
        });
    }
    // VMs given up on are handled like the non-migratable ones; find their VirtualMachines.
    if !gave_up.is_empty() {
        let vmis = kube
            .list_vmis(Some(&input.node))
            .await
            .map_err(outcome_of)?;
        for b in &mut gave_up {
            b.vm = vmis
                .iter()
                .find(|v| v.namespace == b.namespace && v.name == b.name)
                .and_then(|v| v.vm.clone());
        }
    }
    Ok(Outcome::Done(
        json!({ "migrated": migrated, "gave_up": gave_up }),
    ))
}

fn must_not_stay(ctx: &StepContext<'_>) -> Vec<Blocked> {
    let pre: Preflight = output(ctx, "preflight");
    let gave_up: Vec<Blocked> = ctx
        .outputs
        .get("migrate")
        .and_then(|o| serde_json::from_value(o["gave_up"].clone()).ok())
        .unwrap_or_default();
    pre.blocked.into_iter().chain(gave_up).collect()
}

async fn stop_blocked(kube: &dyn Kube, ctx: &StepContext<'_>, input: &Input) -> Step {
    let stuck = must_not_stay(ctx);
    match input.non_migratable {
        Policy::Skip => return Ok(Outcome::Done(json!({ "skipped": stuck, "stopped": [] }))),
        Policy::Fail => return Ok(Outcome::Done(json!({ "stopped": [] }))),
        Policy::ShutdownRestart => {}
    }
    if let Some(orphan) = stuck.iter().find(|b| b.vm.is_none()) {
        return Err(Outcome::Fail {
            error: format!(
                "{}/{} cannot move and has no VirtualMachine to restart it from",
                orphan.namespace, orphan.name
            ),
        });
    }
    for b in &stuck {
        if let Some(vm) = &b.vm {
            kube.set_vm_running(&b.namespace, vm, false)
                .await
                .map_err(outcome_of)?;
        }
    }
    let on_node = kube
        .list_vmis(Some(&input.node))
        .await
        .map_err(outcome_of)?;
    let still: Vec<&str> = stuck
        .iter()
        .filter(|b| {
            on_node
                .iter()
                .any(|v| v.namespace == b.namespace && v.name == b.name)
        })
        .map(|b| b.name.as_str())
        .collect();
    if !still.is_empty() {
        return Ok(Outcome::Poll {
            after: Duration::from_millis(input.poll_ms),
            progress: Some(json!({ "stopping": still })),
        });
    }
    Ok(Outcome::Done(json!({ "stopped": stuck })))
}

async fn evict(kube: &dyn Kube, input: &Input) -> Step {
    let pods = kube.list_pods(&input.node).await.map_err(outcome_of)?;
    let evictable: Vec<_> = pods
        .iter()
        .filter(|p| !matches!(p.owner_kind.as_deref(), Some("DaemonSet") | Some("Node")))
        .filter(|p| {
            !(input.non_migratable == Policy::Skip
                && p.labels.get("kubevirt.io").map(String::as_str) == Some("virt-launcher"))
        })
        .collect();
    if evictable.is_empty() {
        return Ok(Outcome::Done(json!({ "evicted": "all" })));
    }
    let mut refused = Vec::new();
    for p in &evictable {
        if let Eviction::Refused { message } = kube
            .evict_pod(&p.namespace, &p.name)
            .await
            .map_err(outcome_of)?
        {
            refused.push(format!("{}/{}: {message}", p.namespace, p.name));
        }
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(input.poll_ms),
        progress: Some(json!({ "remaining_pods": evictable.len(), "refused": refused })),
    })
}

async fn verify(kube: &dyn Kube, ctx: &StepContext<'_>, input: &Input) -> Step {
    let skipped: Vec<Blocked> = if input.non_migratable == Policy::Skip {
        must_not_stay(ctx)
    } else {
        Vec::new()
    };
    let left: Vec<String> = kube
        .list_vmis(Some(&input.node))
        .await
        .map_err(outcome_of)?
        .into_iter()
        .filter(|v| {
            !skipped
                .iter()
                .any(|b| b.namespace == v.namespace && b.name == v.name)
        })
        .map(|v| format!("{}/{}", v.namespace, v.name))
        .collect();
    if !left.is_empty() {
        return Err(Outcome::Retry {
            error: format!("VMIs still on {}: {}", input.node, left.join(", ")),
            after: Some(Duration::from_millis(input.poll_ms)),
        });
    }
    let stopped: Vec<Blocked> = ctx
        .outputs
        .get("stop-blocked")
        .and_then(|o| serde_json::from_value(o["stopped"].clone()).ok())
        .unwrap_or_default();
    for b in &stopped {
        if let Some(vm) = &b.vm {
            kube.set_vm_running(&b.namespace, vm, true)
                .await
                .map_err(outcome_of)?;
        }
    }
    Ok(Outcome::Done(json!({
        "node": input.node,
        "restarted": stopped.len(),
        "skipped": skipped,
    })))
}

fn maintenance(ctx: &StepContext<'_>, input: &Input) -> Outcome {
    match input.maintenance {
        Maintenance::None => Outcome::Done(json!({ "maintenance": "none" })),
        Maintenance::WaitForSignal => match ctx.signals.get(MAINTENANCE_DONE) {
            Some(payload) => Outcome::Done(json!({ "maintenance": payload })),
            None => Outcome::WaitSignal {
                name: MAINTENANCE_DONE.into(),
            },
        },
    }
}

async fn node_return(kube: &dyn Kube, ctx: &StepContext<'_>, input: &Input) -> Step {
    if input.uncordon {
        kube.set_unschedulable(&input.node, false)
            .await
            .map_err(outcome_of)?;
    }
    // The VMs stopped for the drain run again, elsewhere.
    let stopped: Vec<Blocked> = ctx
        .outputs
        .get("stop-blocked")
        .and_then(|o| serde_json::from_value(o["stopped"].clone()).ok())
        .unwrap_or_default();
    if !stopped.is_empty() {
        let vmis = kube.list_vmis(None).await.map_err(outcome_of)?;
        let starting: Vec<&str> = stopped
            .iter()
            .filter(|b| {
                !vmis
                    .iter()
                    .any(|v| v.namespace == b.namespace && v.name == b.name && v.phase == "Running")
            })
            .map(|b| b.name.as_str())
            .collect();
        if !starting.is_empty() {
            return Ok(Outcome::Poll {
                after: Duration::from_millis(input.poll_ms),
                progress: Some(json!({ "starting": starting })),
            });
        }
    }
    let node = kube.get_node(&input.node).await.map_err(outcome_of)?;
    if !node.ready {
        return Ok(Outcome::Poll {
            after: Duration::from_millis(input.poll_ms),
            progress: Some(json!({ "waiting": format!("{} to be Ready", input.node) })),
        });
    }
    // The drain's result: what moved where (the rollout's report counts moves from it).
    let migrated = ctx
        .outputs
        .get("migrate")
        .map(|o| o["migrated"].clone())
        .unwrap_or_else(|| json!([]));
    Ok(Outcome::Done(json!({
        "node": input.node, "uncordoned": input.uncordon, "ready": true, "migrated": migrated,
    })))
}
