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

use drover_workflows::ports::kube::{Eviction, Kube, VmiInfo};
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, ChildStatus, JoinPolicy, Outcome, Permit, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_steps, default_cluster_limit, default_node_limit, default_poll_ms};
use crate::migrate_vmi::{self, MigrateVmi};

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
    #[serde(default = "default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_attempts() -> u32 {
    3
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

/// `preflight`'s output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Preflight {
    pub was_cordoned: bool,
    pub migratable: Vec<(String, String)>,
    pub blocked: Vec<Blocked>,
}

/// `cordon`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cordoned {
    pub cordoned_by_us: bool,
}

/// `migrate`'s output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Migrated {
    /// `{namespace, vmi, target}` per VM moved.
    #[serde(default)]
    pub migrated: Vec<Value>,
    /// VMs whose migrations failed `max_migration_attempts` times.
    #[serde(default)]
    pub gave_up: Vec<Blocked>,
}

/// `stop-blocked`'s output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stopped {
    #[serde(default)]
    pub stopped: Vec<Blocked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<Blocked>>,
}

impl Kind for DrainNode {
    const NAME: &'static str = "drain-node";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if i.node.is_empty() {
            return Err("node must name a node".into());
        }
        if i.max_migration_attempts == 0 || i.cluster_limit == 0 || i.node_limit == 0 {
            return Err(
                "max_migration_attempts, cluster_limit and node_limit must be at least 1".into(),
            );
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        cluster_steps(vec![
            Step::new("preflight", |ctx| Box::pin(preflight(ctx))).permits(node_lock),
            Step::new("cordon", |ctx| Box::pin(cordon(ctx)))
                .compensate(|ctx| Box::pin(uncordon(ctx))),
            Step::new("migrate", |ctx| Box::pin(migrate(ctx))),
            Step::new("stop-blocked", |ctx| Box::pin(stop_blocked(ctx)))
                .compensate(|ctx| Box::pin(restart_stopped(ctx))),
            Step::new("evict", |ctx| Box::pin(evict(ctx))),
            Step::new("verify", |ctx| Box::pin(verify(ctx))),
            Step::new("maintenance", |ctx| Box::pin(maintenance(ctx))),
            Step::new("return", |ctx| Box::pin(node_return(ctx))),
        ])
    }
}

/// One drain per node at a time.
fn node_lock(i: &Input) -> Vec<Permit> {
    vec![Permit::lock(format!("node:{}", i.node))]
}

/// What every forward step does first: give up past the deadline, and find the cluster.
fn begin<'a>(ctx: &'a Ctx<'a, DrainNode>) -> Result<&'a dyn Kube, StepError> {
    if let Some(deadline) = ctx.input.deadline_ms
        && ctx.now_ms() > deadline
    {
        return Err(StepError::fail(format!(
            "the drain of {} passed its deadline",
            ctx.input.node
        )));
    }
    ctx.kube()
}

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

fn done<T: Serialize>(output: &T) -> StepResult {
    serde_json::to_value(output)
        .map(Outcome::Done)
        .map_err(|e| StepError::fail(format!("encoding the output: {e}")))
}

async fn preflight(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    let node = kube.get_node(&input.node).await?;
    let vmis: Vec<VmiInfo> = kube.list_vmis(Some(&input.node)).await?;
    let blockers: Vec<Blocked> = vmis.iter().filter_map(blocked).collect();
    if input.non_migratable == Policy::Fail && !blockers.is_empty() {
        let list: Vec<String> = blockers
            .iter()
            .map(|b| format!("{}/{} ({}: {})", b.namespace, b.name, b.reason, b.message))
            .collect();
        return Err(StepError::fail(format!(
            "{} VMs on {} cannot live-migrate: {}",
            blockers.len(),
            input.node,
            list.join("; ")
        )));
    }
    // Room elsewhere: every VM that must leave (and, with shutdown-restart, the blocked ones too).
    let leaving: Vec<&VmiInfo> = vmis
        .iter()
        .filter(|v| v.not_migratable.is_none() || input.non_migratable == Policy::ShutdownRestart)
        .collect();
    let (need_cpu, need_mem) = leaving
        .iter()
        .fold((0, 0), |(c, m), v| (c + v.cpu_millis, m + v.memory_bytes));
    let nodes = kube.list_nodes().await?;
    let all = kube.list_vmis(None).await?;
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
        return Err(StepError::fail(format!(
            "not enough room to drain {}: its VMs need {:.1} GiB and {} mCPU, the {targets} other schedulable nodes have {:.1} GiB and {} mCPU free",
            input.node,
            gib(need_mem),
            need_cpu,
            gib(free_mem),
            free_cpu
        )));
    }
    done(&Preflight {
        was_cordoned: node.unschedulable,
        migratable: vmis
            .iter()
            .filter(|v| v.not_migratable.is_none())
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect(),
        blocked: blockers,
    })
}

async fn cordon(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let pre: Preflight = ctx.output("preflight")?;
    let node = kube.get_node(&ctx.input.node).await?;
    if !node.unschedulable {
        kube.set_unschedulable(&ctx.input.node, true).await?;
    }
    done(&Cordoned {
        cordoned_by_us: !pre.was_cordoned,
    })
}

/// Compensation of `cordon`: uncordon only if this drain cordoned.
async fn uncordon(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = ctx.kube()?;
    let by_us = ctx
        .output_if::<Cordoned>("cordon")?
        .is_some_and(|c| c.cordoned_by_us);
    if by_us {
        kube.set_unschedulable(&ctx.input.node, false).await?;
    }
    Ok(Outcome::Done(json!({ "uncordoned": by_us })))
}

/// The child that migrates `vmi` (`namespace`, `name`), pinned where the input says.
fn migration(input: &Input, vmi: &(String, String)) -> ChildSpec {
    let mut selector = input.target_selector.clone();
    if let Some(target) = input.targets.get(&format!("{}/{}", vmi.0, vmi.1)) {
        selector.insert("kubernetes.io/hostname".into(), target.clone());
    }
    ChildSpec::of::<MigrateVmi>(&migrate_vmi::Input {
        namespace: vmi.0.clone(),
        vmi: vmi.1.clone(),
        source_node: input.node.clone(),
        added_node_selector: selector,
        cluster_limit: input.cluster_limit,
        node_limit: input.node_limit,
        poll_ms: None,
    })
}

async fn migrate(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    if ctx.children.is_empty() {
        let vmis = kube.list_vmis(Some(&input.node)).await?;
        let targets: Vec<(String, String)> = vmis
            .iter()
            .filter(|v| v.not_migratable.is_none())
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect();
        if targets.is_empty() {
            return done(&Migrated::default());
        }
        return Ok(Outcome::Spawn {
            children: targets.iter().map(|t| migration(input, t)).collect(),
            join: JoinPolicy::All,
        });
    }
    // The latest child per VMI and how many were tried.
    let mut latest: BTreeMap<(String, String), (usize, &ChildStatus)> = BTreeMap::new();
    for c in ctx.children {
        let child: migrate_vmi::Input = serde_json::from_value(c.input.clone())
            .map_err(|e| StepError::fail(format!("child {} has an unreadable input: {e}", c.id)))?;
        let entry = latest.entry((child.namespace, child.vmi)).or_insert((0, c));
        *entry = (entry.0 + 1, c);
    }
    let mut retry = Vec::new();
    let mut out = Migrated::default();
    for (key, (tries, c)) in &latest {
        match c.state {
            State::Succeeded => out.migrated.push(json!({ "namespace": key.0, "vmi": key.1, "target": c.result.as_ref().and_then(|r| r.get("target").cloned()) })),
            _ if (*tries as u32) < input.max_migration_attempts => retry.push(key.clone()),
            _ => out.gave_up.push(Blocked {
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
            children: retry.iter().map(|t| migration(input, t)).collect(),
            join: JoinPolicy::All,
        });
    }
    if !out.gave_up.is_empty() && input.non_migratable == Policy::Fail {
        let list: Vec<String> = out
            .gave_up
            .iter()
            .map(|b| format!("{}/{}: {}", b.namespace, b.name, b.message))
            .collect();
        return Err(StepError::fail(format!(
            "{} migrations failed {} times: {}",
            out.gave_up.len(),
            input.max_migration_attempts,
            list.join("; ")
        )));
    }
    // VMs given up on are handled like the non-migratable ones; find their VirtualMachines.
    if !out.gave_up.is_empty() {
        let vmis = kube.list_vmis(Some(&input.node)).await?;
        for b in &mut out.gave_up {
            b.vm = vmis
                .iter()
                .find(|v| v.namespace == b.namespace && v.name == b.name)
                .and_then(|v| v.vm.clone());
        }
    }
    done(&out)
}

/// The VMs that cannot stay running on the node: blocked from the start, or given up on.
fn must_not_stay(ctx: &Ctx<'_, DrainNode>) -> Result<Vec<Blocked>, StepError> {
    let pre: Preflight = ctx.output("preflight")?;
    let migrated: Migrated = ctx.output("migrate")?;
    Ok(pre.blocked.into_iter().chain(migrated.gave_up).collect())
}

async fn stop_blocked(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    let stuck = must_not_stay(ctx)?;
    match input.non_migratable {
        Policy::Skip => {
            return done(&Stopped {
                stopped: Vec::new(),
                skipped: Some(stuck),
            });
        }
        Policy::Fail => return done(&Stopped::default()),
        Policy::ShutdownRestart => {}
    }
    if let Some(orphan) = stuck.iter().find(|b| b.vm.is_none()) {
        return Err(StepError::fail(format!(
            "{}/{} cannot move and has no VirtualMachine to restart it from",
            orphan.namespace, orphan.name
        )));
    }
    for b in &stuck {
        if let Some(vm) = &b.vm {
            kube.set_vm_running(&b.namespace, vm, false).await?;
        }
    }
    let on_node = kube.list_vmis(Some(&input.node)).await?;
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
    done(&Stopped {
        stopped: stuck,
        skipped: None,
    })
}

/// The VMs `stop-blocked` stopped (none before it ran).
fn stopped(ctx: &Ctx<'_, DrainNode>) -> Result<Vec<Blocked>, StepError> {
    Ok(ctx
        .output_if::<Stopped>("stop-blocked")?
        .map(|s| s.stopped)
        .unwrap_or_default())
}

/// Compensation of `stop-blocked`: start what it stopped.
async fn restart_stopped(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = ctx.kube()?;
    let stopped = stopped(ctx)?;
    for b in &stopped {
        if let Some(vm) = &b.vm {
            kube.set_vm_running(&b.namespace, vm, true).await?;
        }
    }
    Ok(Outcome::Done(json!({ "started": stopped.len() })))
}

async fn evict(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    let pods = kube.list_pods(&input.node).await?;
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
        if let Eviction::Refused { message } = kube.evict_pod(&p.namespace, &p.name).await? {
            refused.push(format!("{}/{}: {message}", p.namespace, p.name));
        }
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(input.poll_ms),
        progress: Some(json!({ "remaining_pods": evictable.len(), "refused": refused })),
    })
}

async fn verify(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    let skipped: Vec<Blocked> = if input.non_migratable == Policy::Skip {
        must_not_stay(ctx)?
    } else {
        Vec::new()
    };
    let left: Vec<String> = kube
        .list_vmis(Some(&input.node))
        .await?
        .into_iter()
        .filter(|v| {
            !skipped
                .iter()
                .any(|b| b.namespace == v.namespace && b.name == v.name)
        })
        .map(|v| format!("{}/{}", v.namespace, v.name))
        .collect();
    if !left.is_empty() {
        return Err(StepError::retry(
            format!("VMIs still on {}: {}", input.node, left.join(", ")),
            Some(Duration::from_millis(input.poll_ms)),
        ));
    }
    let stopped = stopped(ctx)?;
    for b in &stopped {
        if let Some(vm) = &b.vm {
            kube.set_vm_running(&b.namespace, vm, true).await?;
        }
    }
    Ok(Outcome::Done(json!({
        "node": input.node,
        "restarted": stopped.len(),
        "skipped": skipped,
    })))
}

async fn maintenance(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    begin(ctx)?;
    Ok(match ctx.input.maintenance {
        Maintenance::None => Outcome::Done(json!({ "maintenance": "none" })),
        Maintenance::WaitForSignal => match ctx.signal(MAINTENANCE_DONE) {
            Some(payload) => Outcome::Done(json!({ "maintenance": payload })),
            None => Outcome::WaitSignal {
                name: MAINTENANCE_DONE.into(),
            },
        },
    })
}

async fn node_return(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    if input.uncordon {
        kube.set_unschedulable(&input.node, false).await?;
    }
    // The VMs stopped for the drain run again, elsewhere.
    let stopped = stopped(ctx)?;
    if !stopped.is_empty() {
        let vmis = kube.list_vmis(None).await?;
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
    let node = kube.get_node(&input.node).await?;
    if !node.ready {
        return Ok(Outcome::Poll {
            after: Duration::from_millis(input.poll_ms),
            progress: Some(json!({ "waiting": format!("{} to be Ready", input.node) })),
        });
    }
    // The drain's result: what moved where (the rollout's report counts moves from it).
    let migrated: Migrated = ctx.output("migrate")?;
    Ok(Outcome::Done(json!({
        "node": input.node, "uncordoned": input.uncordon, "ready": true, "migrated": migrated.migrated,
    })))
}
