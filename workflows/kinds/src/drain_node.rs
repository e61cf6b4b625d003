//! `drain-node`: empty a node for maintenance, durably. Each step is a reconciler over the
//! Kubernetes port: it reads the cluster first and acts only if needed, so a step re-run after a
//! crash finds its own work instead of repeating it.
//!
//! 0 `preflight`  takes the node's lock (one workflow per node), classifies the node's VMIs by
//!                `LiveMigratable`, checks the other schedulable nodes have room, and with policy
//!                `fail` stops with a report naming each blocking VM and why. Inside a maintenance
//!                window (`window`), it first asks the window: outside it the drain does not start
//!                (it waits, holding the node's lock, for the next window or a freeze's end, or
//!                pauses when the schedule has no next window; see [`crate::window`]).
//! 1 `cordon`     remembers whether the node was already cordoned (compensation uncordons only then).
//! 2 `migrate`    one `migrate-vmi` child per migratable VMI (limits enforced by their permits);
//!                failed migrations are retried as new children up to a limit, then the policy
//!                applies. With a window, each spawn of children waits for the window to be open
//!                and gives each child its end (`not_after_ms`); a child whose migration was not
//!                made by then ends deferred and is started again in the next window, without
//!                counting as a failed try. Migrations already running finish.
//! 3 `stop-blocked` per policy, stops the VMs that cannot move (compensation starts them again); it
//!                ends as soon as the stops are asked for, so a cancellation from here on restarts them.
//! 3b `wait-stopped` waits until their instances have left the node.
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
use crate::window::{self, Admission, Window};

/// The `drain-node` kind.
pub struct DrainNode;

/// What to do with VMs that cannot live-migrate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The maintenance window this drain runs in (set by a schedule, or by the rollout that
    /// started it): no drain or migration starts outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
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
    /// VMIs whose migration failed but which left the node anyway (deleted, or stopped, meanwhile):
    /// off the node, so neither retried nor given up on. `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
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
        if let Some(w) = &i.window {
            w.check()?;
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
            Step::new("wait-stopped", |ctx| Box::pin(wait_stopped(ctx))),
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
    // A drain does not start outside its window: nothing is read or changed before it opens.
    if let Admission::Wait(held) = window::admit(ctx, input.window.as_ref()).await? {
        return Ok(held);
    }
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
        // Where a VM can land: Ready, uncordoned, untainted, virt-handler running.
        n.name != input.node
            && n.takes_vms()
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

/// The child that migrates `vmi` (`namespace`, `name`), pinned where the input says, making no
/// migration at or after `not_after_ms`.
fn migration(input: &Input, vmi: &(String, String), not_after_ms: Option<i64>) -> ChildSpec {
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
        not_after_ms,
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
        // New migrations start inside the window only, and make nothing after its end.
        let not_after = match window::admit(ctx, input.window.as_ref()).await? {
            Admission::Go(open) => open.map(|w| w.end_ms),
            Admission::Wait(held) => return Ok(held),
        };
        return Ok(Outcome::Spawn {
            children: targets
                .iter()
                .map(|t| migration(input, t, not_after))
                .collect(),
            join: JoinPolicy::All,
        });
    }
    // The latest child per VMI and how many were tried (a deferred child tried nothing).
    let mut latest: BTreeMap<(String, String), (usize, &ChildStatus)> = BTreeMap::new();
    for c in ctx.children {
        let child: migrate_vmi::Input = serde_json::from_value(c.input.clone())
            .map_err(|e| StepError::fail(format!("child {} has an unreadable input: {e}", c.id)))?;
        let entry = latest.entry((child.namespace, child.vmi)).or_insert((0, c));
        *entry = (entry.0 + usize::from(!migrate_vmi::deferred(c)), c);
    }
    // A VMI whose migration failed (or was deferred) but which is no longer on the node has left
    // it all the same.
    let on_node: Vec<VmiInfo> = if latest
        .values()
        .any(|(_, c)| c.state != State::Succeeded || migrate_vmi::deferred(c))
    {
        kube.list_vmis(Some(&input.node)).await?
    } else {
        Vec::new()
    };
    let still_there = |key: &(String, String)| {
        on_node
            .iter()
            .any(|v| v.namespace == key.0 && v.name == key.1)
    };
    let mut retry = Vec::new();
    let mut out = Migrated::default();
    for (key, (tries, c)) in &latest {
        let deferred = migrate_vmi::deferred(c);
        match c.state {
            State::Succeeded if !deferred => out.migrated.push(json!({ "namespace": key.0, "vmi": key.1, "target": c.result.as_ref().and_then(|r| r.get("target").cloned()) })),
            _ if !still_there(key) => out.gone.push(format!("{}/{}", key.0, key.1)),
            // Its window closed before its migration was made: again, once a window is open.
            _ if deferred => retry.push(key.clone()),
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
        // New migrations start inside the window only, and make nothing after its end.
        let not_after = match window::admit(ctx, input.window.as_ref()).await? {
            Admission::Go(open) => open.map(|w| w.end_ms),
            Admission::Wait(held) => return Ok(held),
        };
        return Ok(Outcome::Spawn {
            children: retry
                .iter()
                .map(|t| migration(input, t, not_after))
                .collect(),
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
        for b in &mut out.gave_up {
            b.vm = on_node
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
    // Done once the stops are asked for: from here on this step is compensable, so a cancellation
    // while the VMs shut down starts them again. `wait-stopped` waits for them to leave the node.
    done(&Stopped {
        stopped: stuck,
        skipped: None,
    })
}

/// Waits until the instances of the VMs `stop-blocked` stopped have left the node.
async fn wait_stopped(ctx: &Ctx<'_, DrainNode>) -> StepResult {
    let kube = begin(ctx)?;
    let input = ctx.input;
    let stopped = stopped(ctx)?;
    if stopped.is_empty() {
        return Ok(Outcome::Done(json!({ "stopped": 0 })));
    }
    let on_node = kube.list_vmis(Some(&input.node)).await?;
    let still: Vec<&str> = stopped
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
    Ok(Outcome::Done(json!({ "stopped": stopped.len() })))
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

#[cfg(test)]
mod tests {
    use drover_workflows::ports::kube::{KubeError, PodInfo};
    use drover_workflows::sdk::Typed;
    use drover_workflows::{Phase, Workflow};

    use super::*;
    use crate::fake::{
        Call, FakeKube, HOUR_MS, Harness, MONDAY_MS, Op, child, monday_window, nightly, node, pod,
        too_many_requests, vmi,
    };
    use crate::window::RECHECK;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_workflow_naming_a_cluster_takes_that_clusters_permits() {
        use drover_workflows::{Permit, Submission};
        let registry = crate::builtin().with_clusters(["east".to_string()]);
        let sub = |cluster: Option<&str>| {
            Submission::new("drain-node", json!({"node": "n1"}))
                .cluster(cluster.map(str::to_string))
        };
        let wf = registry.prepare("a".into(), sub(Some("east")), 0).unwrap();
        assert_eq!(wf.cluster.as_deref(), Some("east"));
        assert_eq!(wf.task.permits, [Permit::lock("east/node:n1")]);
        let wf = registry.prepare("b".into(), sub(None), 0).unwrap();
        assert_eq!(wf.task.permits, [Permit::lock("node:n1")]);
        let e = registry
            .prepare("c".into(), sub(Some("west")), 0)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"the configured clusters are "east""#),
            "{e}"
        );
        let e = crate::builtin()
            .prepare("d".into(), sub(Some("east")), 0)
            .unwrap_err();
        assert!(e.to_string().contains("no clusters are configured"), "{e}");
        // A running workflow's later steps and a retry take them the same way.
        let loaded = registry.load("drain-node", &json!({"node": "n1"})).unwrap();
        let versioned =
            drover_workflows::Versioned::new(loaded.as_ref(), None).in_cluster(Some("east"));
        assert_eq!(
            versioned.permits(0, Phase::Forward),
            [Permit::lock("east/node:n1")]
        );
    }

    fn input(policy: &str) -> Value {
        json!({ "node": "n1", "non_migratable": policy })
    }

    fn blocked_vmi() -> VmiInfo {
        VmiInfo {
            not_migratable: Some((
                "DisksNotLiveMigratable".into(),
                "PVC data is not shared".into(),
            )),
            ..vmi("c", "n1")
        }
    }

    fn launcher(vmi: &str) -> PodInfo {
        PodInfo {
            labels: BTreeMap::from([("kubevirt.io".into(), "virt-launcher".into())]),
            ..pod(
                &format!("virt-launcher-{vmi}"),
                Some("VirtualMachineInstance"),
            )
        }
    }

    /// `n1` to drain, with migratable `a` and `b`, non-migratable `c` and their launcher pods, a
    /// DaemonSet pod, a mirror pod and a ReplicaSet's pod; `n2` and `n3` with room, `x` on `n2`.
    fn cluster() -> FakeKube {
        FakeKube::default()
            .node(node("n1"))
            .node(node("n2"))
            .node(node("n3"))
            .vmi(vmi("a", "n1"))
            .vmi(vmi("b", "n1"))
            .vmi(blocked_vmi())
            .vmi(vmi("x", "n2"))
            .pod("n1", launcher("a"))
            .pod("n1", launcher("b"))
            .pod("n1", launcher("c"))
            .pod("n1", pod("node-agent-n1", Some("DaemonSet")))
            .pod("n1", pod("kube-proxy-n1", Some("Node")))
            .pod("n1", pod("web-1", Some("ReplicaSet")))
            .pod("n2", pod("web-2", Some("ReplicaSet")))
    }

    fn harness(input: Value, kube: FakeKube) -> Harness {
        Harness::new::<DrainNode>(input, kube)
    }

    fn blocked(name: &str, vm: Option<&str>, reason: &str, message: &str) -> Blocked {
        Blocked {
            namespace: "ns".into(),
            name: name.into(),
            vm: vm.map(str::to_string),
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn c_blocked() -> Blocked {
        blocked(
            "c",
            Some("c-vm"),
            "DisksNotLiveMigratable",
            "PVC data is not shared",
        )
    }

    fn preflight_of(was_cordoned: bool) -> Preflight {
        Preflight {
            was_cordoned,
            migratable: vec![("ns".into(), "a".into()), ("ns".into(), "b".into())],
            blocked: vec![c_blocked()],
        }
    }

    fn set<T: Serialize>(h: &mut Harness, step: &str, output: T) {
        let value = serde_json::to_value(output).expect("an output encodes");
        h.outputs.insert(step.to_string(), value);
    }

    fn fail_containing(outcome: &Outcome, text: &str) -> bool {
        matches!(outcome, Outcome::Fail { error } if error.contains(text))
    }

    fn cordon_call(unschedulable: bool) -> Call {
        Call::SetUnschedulable {
            node: "n1".into(),
            unschedulable,
        }
    }

    fn vm_call(vm: &str, running: bool) -> Call {
        Call::SetVmRunning {
            namespace: "ns".into(),
            vm: vm.into(),
            running,
        }
    }

    fn evict_call(name: &str) -> Call {
        Call::EvictPod {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    /// The child `migrate` spawns for `vmi` with the default input.
    fn spec(vmi: &str) -> ChildSpec {
        migration(
            &parse(input("shutdown-restart")),
            &("ns".to_string(), vmi.to_string()),
            None,
        )
    }

    fn parse(v: Value) -> Input {
        drover_workflows::sdk::parse::<DrainNode>(&v).expect("a valid input")
    }

    fn removed(h: &Harness, name: &str) {
        h.kube.edit(|c| c.vmis.retain(|v| v.name != name));
    }

    fn moved(h: &Harness, name: &str, to: &str) {
        h.kube.edit(|c| {
            for v in c.vmis.iter_mut().filter(|v| v.name == name) {
                v.node = Some(to.into());
            }
        });
    }

    #[test]
    fn the_step_table_and_the_input_checks() {
        let h = harness(input("fail"), cluster());
        let steps: Vec<(&str, bool)> = h
            .loaded()
            .steps()
            .iter()
            .map(|s| (s.name.as_str(), s.compensable))
            .collect();
        assert_eq!(
            steps,
            [
                ("preflight", false),
                ("cordon", true),
                ("migrate", false),
                ("stop-blocked", true),
                ("wait-stopped", false),
                ("evict", false),
                ("verify", false),
                ("maintenance", false),
                ("return", false),
            ]
        );
        let lock = h.loaded().permits(0, Phase::Forward);
        assert_eq!(lock, [drover_workflows::Permit::lock("node:n1")]);
        assert!(h.loaded().permits(0, Phase::Compensate).is_empty());

        let kind = Typed::<DrainNode>::default();
        for (bad, says) in [
            (json!({ "node": "" }), "node must name a node"),
            (
                json!({ "node": "n1", "max_migration_attempts": 0 }),
                "at least 1",
            ),
            (
                json!({ "node": "n1", "non_migratable": "ignore" }),
                "unknown variant",
            ),
            (json!({ "node": "n1", "force": true }), "unknown field"),
        ] {
            let error = kind.load(&bad).err().unwrap_or_default();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn preflight_classifies_the_vmis_and_changes_nothing() {
        for policy in ["shutdown-restart", "skip"] {
            let h = harness(input(policy), cluster());
            let outcome = h.run("preflight");
            let Outcome::Done(out) = outcome else {
                panic!("{policy}: {outcome:?}");
            };
            let out: Preflight = serde_json::from_value(out).expect("preflight's output");
            assert!(!out.was_cordoned);
            assert_eq!(out.migratable, preflight_of(false).migratable, "{policy}");
            assert_eq!(out.blocked, [c_blocked()], "{policy}");
            assert!(h.kube.mutations().is_empty(), "{policy}");
        }
        let h = harness(input("fail"), cluster());
        assert_eq!(
            h.run("preflight"),
            Outcome::Fail {
                error: "1 VMs on n1 cannot live-migrate: ns/c (DisksNotLiveMigratable: PVC data \
                        is not shared)"
                    .into()
            }
        );
        assert!(h.kube.mutations().is_empty());
        // Without blockers, policy `fail` goes on; a node cordoned already is remembered as such.
        let kube = cluster();
        kube.edit(|c| {
            c.vmis.retain(|v| v.name != "c");
            c.nodes.get_mut("n1").expect("n1").unschedulable = true;
        });
        let h = harness(input("fail"), kube);
        let Outcome::Done(out) = h.run("preflight") else {
            panic!("preflight did not pass");
        };
        assert_eq!(out["was_cordoned"], true);
        assert_eq!(out["blocked"], json!([]));
    }

    #[test]
    fn preflight_counts_room_only_where_the_vms_may_go() {
        // a, b and c each ask 1 core and 4 GiB: 8 GiB must leave, 12 GiB with shutdown-restart.
        // The only other node is n2, where x uses 4 GiB.
        type Shape = fn(&mut crate::fake::Cluster);
        fn n2(c: &mut crate::fake::Cluster) -> &mut drover_workflows::ports::kube::NodeInfo {
            c.nodes.get_mut("n2").expect("n2")
        }
        let small: Shape = |c| n2(c).memory_bytes = 12 * GIB;
        let cordoned: Shape = |c| n2(c).unschedulable = true;
        let not_ready: Shape = |c| n2(c).ready = false;
        let racked: Shape = |c| {
            n2(c).labels.insert("rack".into(), "r2".into());
        };
        let crowded: Shape = |c| {
            for x in c.vmis.iter_mut().filter(|v| v.name == "x") {
                x.memory_bytes = 60 * GIB;
            }
        };
        let tainted: Shape = |c| n2(c).taints.push("dedicated".into());
        let no_handler: Shape = |c| {
            n2(c).labels.remove("kubevirt.io/schedulable");
        };
        let rack = json!({ "rack": "r2" });
        let cases: [(&str, Shape, Value, bool); 9] = [
            ("skip", small, json!({}), true),
            ("shutdown-restart", small, json!({}), false),
            ("skip", cordoned, json!({}), false),
            ("skip", not_ready, json!({}), false),
            ("skip", |_| {}, rack.clone(), false),
            ("skip", racked, rack, true),
            ("skip", crowded, json!({}), false),
            ("skip", tainted, json!({}), false),
            ("skip", no_handler, json!({}), false),
        ];
        for (i, (policy, shape, selector, fits)) in cases.into_iter().enumerate() {
            let kube = cluster();
            kube.edit(|c| {
                c.nodes.remove("n3");
                shape(c);
            });
            let mut input = input(policy);
            input["target_selector"] = selector;
            let outcome = harness(input, kube).run("preflight");
            if fits {
                assert!(matches!(outcome, Outcome::Done(_)), "case {i}: {outcome:?}");
            } else {
                assert!(
                    fail_containing(&outcome, "not enough room to drain n1"),
                    "case {i}: {outcome:?}"
                );
            }
        }
        let kube = cluster();
        kube.edit(|c| c.nodes.retain(|n, _| n == "n1"));
        assert_eq!(
            harness(input("skip"), kube).run("preflight"),
            Outcome::Fail {
                error: "not enough room to drain n1: its VMs need 8.0 GiB and 2000 mCPU, the 0 \
                        other schedulable nodes have 0.0 GiB and 0 mCPU free"
                    .into()
            }
        );
    }

    #[test]
    fn preflight_turns_cluster_errors_into_outcomes() {
        let h = harness(input("skip"), cluster());
        h.kube
            .fail(Op::GetNode, 1, too_many_requests(Duration::from_secs(5)));
        assert_eq!(
            h.run("preflight"),
            Outcome::Retry {
                error: "429 Too Many Requests".into(),
                after: Some(Duration::from_secs(5)),
            }
        );
        h.kube.fail(
            Op::ListNodes,
            1,
            KubeError::Transient {
                message: "connection reset".into(),
                retry_after: None,
            },
        );
        assert!(matches!(
            h.run("preflight"),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(h.run("preflight"), Outcome::Done(_)));
        let h = harness(json!({ "node": "n9" }), cluster());
        assert_eq!(
            h.run("preflight"),
            Outcome::Fail {
                error: "nodes \"n9\" not found".into()
            }
        );
    }

    #[test]
    fn past_the_deadline_every_forward_step_fails_but_compensations_run() {
        let mut input = input("shutdown-restart");
        input["deadline_ms"] = json!(1_000);
        let mut h = harness(input, cluster());
        h.clock.set(1_001);
        set(&mut h, "preflight", preflight_of(false));
        set(
            &mut h,
            "cordon",
            Cordoned {
                cordoned_by_us: true,
            },
        );
        for step in [
            "preflight",
            "cordon",
            "migrate",
            "stop-blocked",
            "evict",
            "verify",
            "maintenance",
            "return",
        ] {
            assert_eq!(
                h.run(step),
                Outcome::Fail {
                    error: "the drain of n1 passed its deadline".into()
                },
                "{step}"
            );
        }
        assert!(h.kube.calls().is_empty());
        // Undoing is never too late.
        assert_eq!(
            h.compensate("cordon"),
            Outcome::Done(json!({ "uncordoned": true }))
        );
        h.clock.set(1_000);
        assert!(matches!(h.run("maintenance"), Outcome::Done(_)));
    }

    #[test]
    fn cordon_cordons_and_remembers_whether_the_drain_did() {
        // (cordoned at preflight, cordoned now) -> (cordon call made, cordoned by us)
        let cases = [
            ((false, false), (true, true)),
            ((true, true), (false, false)),
            // A re-run after a crash: our own cordon is found and still ours.
            ((false, true), (false, true)),
            // Uncordoned by someone since preflight: cordoned again, but not ours to undo.
            ((true, false), (true, false)),
        ];
        for ((was, now), (calls, ours)) in cases {
            let mut h = harness(input("skip"), cluster());
            h.kube
                .edit(|c| c.nodes.get_mut("n1").expect("n1").unschedulable = now);
            set(&mut h, "preflight", preflight_of(was));
            assert_eq!(
                h.run("cordon"),
                Outcome::Done(json!({ "cordoned_by_us": ours })),
                "{was} {now}"
            );
            let expected = if calls {
                vec![cordon_call(true)]
            } else {
                vec![]
            };
            assert_eq!(h.kube.mutations(), expected, "{was} {now}");
            assert!(h.kube.edit(|c| c.nodes["n1"].unschedulable));
        }
    }

    #[test]
    fn an_output_that_does_not_decode_fails_the_step_with_a_message() {
        let mut h = harness(input("skip"), cluster());
        assert_eq!(
            h.run("cordon"),
            Outcome::Fail {
                error: "step \"cordon\" needs the output of step \"preflight\", which has none"
                    .into()
            }
        );
        h.outputs.insert("preflight".into(), json!("garbage"));
        let outcome = h.run("cordon");
        assert!(
            fail_containing(
                &outcome,
                "the output of step \"preflight\" does not decode as drain-node expects"
            ),
            "{outcome:?}"
        );
        h.outputs.insert("cordon".into(), json!({ "cordoned": 1 }));
        assert!(fail_containing(
            &h.compensate("cordon"),
            "\"cordon\" does not decode"
        ));
        h.outputs.insert("migrate".into(), json!([1, 2]));
        assert!(fail_containing(
            &h.run("return"),
            "\"migrate\" does not decode"
        ));
        assert!(h.kube.mutations().is_empty());
    }

    #[test]
    fn the_compensation_of_cordon_uncordons_only_its_own_cordon() {
        let cases = [
            (Some(true), vec![cordon_call(false)], true),
            (Some(false), vec![], false),
            (None, vec![], false),
        ];
        for (ours, mutations, uncordoned) in cases {
            let mut h = harness(input("skip"), cluster());
            h.kube
                .edit(|c| c.nodes.get_mut("n1").expect("n1").unschedulable = true);
            if let Some(ours) = ours {
                set(
                    &mut h,
                    "cordon",
                    Cordoned {
                        cordoned_by_us: ours,
                    },
                );
            }
            assert_eq!(
                h.compensate("cordon"),
                Outcome::Done(json!({ "uncordoned": uncordoned })),
                "{ours:?}"
            );
            assert_eq!(h.kube.mutations(), mutations, "{ours:?}");
            assert_eq!(h.kube.edit(|c| c.nodes["n1"].unschedulable), !uncordoned);
        }
        let mut h = harness(input("skip"), cluster());
        set(
            &mut h,
            "cordon",
            Cordoned {
                cordoned_by_us: true,
            },
        );
        h.kube.fail(
            Op::SetUnschedulable,
            1,
            too_many_requests(Duration::from_secs(1)),
        );
        assert!(matches!(
            h.compensate("cordon"),
            Outcome::Retry { after: Some(_), .. }
        ));
        assert!(matches!(h.compensate("cordon"), Outcome::Done(_)));
    }

    #[test]
    fn migrate_spawns_one_child_per_migratable_vmi_pinned_as_asked() {
        let mut input = input("shutdown-restart");
        input["target_selector"] = json!({ "rack": "r2" });
        input["targets"] = json!({ "ns/a": "n3" });
        input["cluster_limit"] = json!(4);
        input["node_limit"] = json!(1);
        let h = harness(input, cluster());
        let child = |vmi: &str, pin: Option<&str>| {
            let mut selector = BTreeMap::from([("rack".to_string(), "r2".to_string())]);
            if let Some(pin) = pin {
                selector.insert("kubernetes.io/hostname".into(), pin.into());
            }
            ChildSpec::of::<MigrateVmi>(&migrate_vmi::Input {
                namespace: "ns".into(),
                vmi: vmi.into(),
                source_node: "n1".into(),
                added_node_selector: selector,
                cluster_limit: 4,
                node_limit: 1,
                poll_ms: None,
                not_after_ms: None,
            })
        };
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![child("a", Some("n3")), child("b", None)],
                join: JoinPolicy::All,
            }
        );
        assert_eq!(
            h.kube.calls(),
            [Call::ListVmis {
                node: Some("n1".into())
            }]
        );
        // Nothing left to move (they left, or only blocked ones remain): done at once.
        let h = harness(json!({ "node": "n1", "non_migratable": "skip" }), cluster());
        removed(&h, "a");
        moved(&h, "b", "n2");
        assert_eq!(
            h.run("migrate"),
            Outcome::Done(json!({ "migrated": [], "gave_up": [] }))
        );
        h.kube
            .fail(Op::ListVmis, 1, too_many_requests(Duration::from_secs(2)));
        assert!(
            matches!(h.run("migrate"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2))
        );
    }

    #[test]
    fn migrate_reports_the_moves_and_retries_failed_migrations_as_new_children() {
        let (a, b) = (spec("a"), spec("b"));
        let target = |node: &str| Some(json!({ "migration": "m", "target": node }));
        let mut h = harness(input("shutdown-restart"), cluster());
        h.children = vec![
            child("c1", &a, State::Succeeded, target("n2"), None),
            child("c2", &b, State::Failed, None, Some("target pod failed")),
        ];
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![b.clone()],
                join: JoinPolicy::All,
            }
        );
        h.children
            .push(child("c3", &b, State::Cancelled, None, None));
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![b.clone()],
                join: JoinPolicy::All,
            }
        );
        h.children
            .push(child("c4", &b, State::Succeeded, target("n3"), None));
        assert_eq!(
            h.run("migrate"),
            Outcome::Done(json!({
                "migrated": [
                    { "namespace": "ns", "vmi": "a", "target": "n2" },
                    { "namespace": "ns", "vmi": "b", "target": "n3" },
                ],
                "gave_up": [],
            }))
        );
        // Once children ran, the step judges by them, and reads the node only to see whether the
        // VMIs whose migration failed are still there (twice here: c2 and c3 had failed).
        let reads = vec![
            Call::ListVmis {
                node: Some("n1".into())
            };
            2
        ];
        assert_eq!(h.kube.calls(), reads);
        h.children.push(ChildStatus {
            input: json!({ "vmi": 7 }),
            ..child("c5", &b, State::Failed, None, None)
        });
        assert!(fail_containing(
            &h.run("migrate"),
            "child c5 has an unreadable input"
        ));
    }

    #[test]
    fn migrate_gives_up_after_the_attempts_and_applies_the_policy() {
        let (a, b) = (spec("a"), spec("b"));
        let tries = |h: &mut Harness| {
            h.children = vec![child(
                "c1",
                &a,
                State::Succeeded,
                Some(json!({ "target": "n2" })),
                None,
            )];
            for i in 0..3 {
                h.children.push(child(
                    &format!("b{i}"),
                    &b,
                    State::Failed,
                    None,
                    Some("migration timed out"),
                ));
            }
        };
        let mut h = harness(input("fail"), cluster());
        tries(&mut h);
        assert_eq!(
            h.run("migrate"),
            Outcome::Fail {
                error: "1 migrations failed 3 times: ns/b: migration timed out".into()
            }
        );
        for policy in ["shutdown-restart", "skip"] {
            let mut h = harness(input(policy), cluster());
            tries(&mut h);
            assert_eq!(
                h.run("migrate"),
                Outcome::Done(json!({
                    "migrated": [{ "namespace": "ns", "vmi": "a", "target": "n2" }],
                    "gave_up": [blocked("b", Some("b-vm"), "MigrationFailed", "migration timed out")],
                })),
                "{policy}"
            );
            // The VirtualMachine to stop is looked up on the node.
            assert_eq!(
                h.kube.calls(),
                [Call::ListVmis {
                    node: Some("n1".into())
                }]
            );
        }
    }

    /// What the code does with a VMI that disappears (deleted, or stopped by its owner) while its
    /// migration runs: `migrate-vmi` fails (KubeVirt refuses a migration of a missing VMI), and
    /// `migrate` judges by its children alone, so the VMI does not count as moved there: it is
    /// tried again, then given up on with no VirtualMachine, which `stop-blocked` refuses. Only
    /// `verify` (and `migrate`'s first run) count a VMI that is gone as off the node.
    #[test]
    fn a_vmi_that_is_gone_counts_as_off_the_node_in_migrate() {
        let b = spec("b");
        let gone = "422 admission webhook: the VMI \"ns/b\" does not exist";
        for policy in ["fail", "shutdown-restart", "skip"] {
            let mut h = harness(input(policy), cluster());
            removed(&h, "b");
            // Its migration failed because it was deleted meanwhile: no retry, no give-up.
            h.children = vec![child("b0", &b, State::Failed, None, Some(gone))];
            let Outcome::Done(out) = h.run("migrate") else {
                panic!("{policy}: migrate did not finish");
            };
            assert_eq!(out["migrated"], json!([]), "{policy}");
            assert_eq!(out["gave_up"], json!([]), "{policy}");
            assert_eq!(out["gone"], json!(["ns/b"]), "{policy}");
        }
        // Still on the node: the failed migration is tried again.
        let mut h = harness(input("fail"), cluster());
        h.children = vec![child("b0", &b, State::Failed, None, Some("timed out"))];
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![b.clone()],
                join: JoinPolicy::All,
            }
        );
    }

    #[test]
    fn stop_blocked_acts_as_the_policy_says() {
        let migrated = Migrated::default();
        for (policy, output) in [
            ("fail", json!({ "stopped": [] })),
            ("skip", json!({ "stopped": [], "skipped": [c_blocked()] })),
        ] {
            let mut h = harness(input(policy), cluster());
            set(&mut h, "preflight", preflight_of(false));
            set(&mut h, "migrate", &migrated);
            assert_eq!(h.run("stop-blocked"), Outcome::Done(output), "{policy}");
            assert!(h.kube.calls().is_empty(), "{policy}");
        }
        // shutdown-restart stops the VM and is done at once (so a cancellation from then on
        // restarts it); wait-stopped waits for its instance to leave the node.
        let mut h = harness(input("shutdown-restart"), cluster());
        set(&mut h, "preflight", preflight_of(false));
        set(&mut h, "migrate", &migrated);
        assert_eq!(
            h.advance("stop-blocked"),
            Outcome::Done(json!({ "stopped": [c_blocked()] }))
        );
        assert_eq!(h.kube.mutations(), [vm_call("c-vm", false)]);
        assert!(!h.kube.edit(|c| c.vms[&("ns".into(), "c-vm".into())]));
        assert_eq!(
            h.run("wait-stopped"),
            Outcome::Poll {
                after: Duration::from_millis(1000),
                progress: Some(json!({ "stopping": ["c"] })),
            }
        );
        removed(&h, "c");
        assert_eq!(
            h.run("wait-stopped"),
            Outcome::Done(json!({ "stopped": 1 }))
        );
        // A re-run of stop-blocked stops the stopped VM again, which is fine.
        h.run("stop-blocked");
        assert_eq!(
            h.kube.mutations(),
            [vm_call("c-vm", false), vm_call("c-vm", false)]
        );
    }

    #[test]
    fn stop_blocked_also_stops_what_migrate_gave_up_on() {
        let mut h = harness(input("shutdown-restart"), cluster());
        let gave_up = blocked("b", Some("b-vm"), "MigrationFailed", "timed out");
        set(&mut h, "preflight", preflight_of(false));
        set(
            &mut h,
            "migrate",
            Migrated {
                migrated: vec![json!({ "namespace": "ns", "vmi": "a", "target": "n2" })],
                gave_up: vec![gave_up.clone()],
                gone: vec![],
            },
        );
        removed(&h, "b");
        removed(&h, "c");
        assert_eq!(
            h.run("stop-blocked"),
            Outcome::Done(json!({ "stopped": [c_blocked(), gave_up] }))
        );
        assert_eq!(
            h.kube.mutations(),
            [vm_call("c-vm", false), vm_call("b-vm", false)]
        );
    }

    #[test]
    fn stop_blocked_fails_on_what_it_cannot_stop() {
        // A VMI without a VirtualMachine: nothing to start it again from, so nothing is stopped.
        let mut h = harness(input("shutdown-restart"), cluster());
        let mut pre = preflight_of(false);
        pre.blocked.push(blocked("d", None, "HostDevice", "a GPU"));
        set(&mut h, "preflight", pre);
        set(&mut h, "migrate", Migrated::default());
        assert_eq!(
            h.run("stop-blocked"),
            Outcome::Fail {
                error: "ns/d cannot move and has no VirtualMachine to restart it from".into()
            }
        );
        assert!(h.kube.calls().is_empty());
        // A VirtualMachine deleted since preflight: the stop's 404 fails the step.
        let mut h = harness(input("shutdown-restart"), cluster());
        h.kube.edit(|c| c.vms.clear());
        set(&mut h, "preflight", preflight_of(false));
        set(&mut h, "migrate", Migrated::default());
        assert_eq!(
            h.run("stop-blocked"),
            Outcome::Fail {
                error: "virtualmachines.kubevirt.io \"c-vm\" not found".into()
            }
        );
        // A 429 on the stop is retried with the server's delay.
        let mut h = harness(input("shutdown-restart"), cluster());
        h.kube.fail(
            Op::SetVmRunning,
            1,
            too_many_requests(Duration::from_secs(9)),
        );
        set(&mut h, "preflight", preflight_of(false));
        set(&mut h, "migrate", Migrated::default());
        assert!(
            matches!(h.run("stop-blocked"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(9))
        );
        h.outputs
            .insert("migrate".into(), json!({ "gave_up": "b" }));
        assert!(fail_containing(
            &h.run("stop-blocked"),
            "\"migrate\" does not decode"
        ));
    }

    #[test]
    fn the_compensation_of_stop_blocked_starts_only_what_it_stopped() {
        let outputs = [
            (
                Some(Stopped {
                    stopped: vec![c_blocked()],
                    skipped: None,
                }),
                vec![vm_call("c-vm", true)],
            ),
            (
                Some(Stopped {
                    stopped: vec![],
                    skipped: Some(vec![c_blocked()]),
                }),
                vec![],
            ),
            (Some(Stopped::default()), vec![]),
            // The step never finished: nothing recorded as stopped, nothing started.
            (None, vec![]),
        ];
        for (output, mutations) in outputs {
            let mut h = harness(input("shutdown-restart"), cluster());
            h.kube
                .edit(|c| c.vms.insert(("ns".into(), "c-vm".into()), false));
            let started = output.as_ref().map_or(0, |s| s.stopped.len());
            if let Some(output) = &output {
                set(&mut h, "stop-blocked", output);
            }
            assert_eq!(
                h.compensate("stop-blocked"),
                Outcome::Done(json!({ "started": started })),
                "{output:?}"
            );
            assert_eq!(h.kube.mutations(), mutations, "{output:?}");
        }
    }

    #[test]
    fn evict_leaves_daemonset_and_mirror_pods_and_waits_for_the_rest() {
        let kube = cluster().pod("n1", pod("db-0", Some("StatefulSet")));
        kube.edit(|c| {
            c.evictions.insert(
                ("ns".into(), "db-0".into()),
                Eviction::Refused {
                    message: "Cannot evict pod as it would violate the pod's disruption budget."
                        .into(),
                },
            );
        });
        let h = harness(input("shutdown-restart"), kube);
        assert_eq!(
            h.run("evict"),
            Outcome::Poll {
                after: Duration::from_millis(1000),
                progress: Some(json!({
                    "remaining_pods": 5,
                    "refused": ["ns/db-0: Cannot evict pod as it would violate the pod's disruption budget."],
                })),
            }
        );
        assert_eq!(
            h.kube.mutations(),
            [
                evict_call("virt-launcher-a"),
                evict_call("virt-launcher-b"),
                evict_call("virt-launcher-c"),
                evict_call("web-1"),
                evict_call("db-0"),
            ]
        );
        // The budget allows it now: the next run evicts it; the one after finds only the pods left
        // alone.
        h.kube.clear_calls();
        h.kube.edit(|c| c.evictions.clear());
        assert_eq!(
            h.run("evict"),
            Outcome::Poll {
                after: Duration::from_millis(1000),
                progress: Some(json!({ "remaining_pods": 1, "refused": [] })),
            }
        );
        assert_eq!(h.kube.mutations(), [evict_call("db-0")]);
        assert_eq!(h.run("evict"), Outcome::Done(json!({ "evicted": "all" })));
        let left: Vec<String> = h.kube.edit(|c| {
            c.pods
                .iter()
                .filter(|(n, _)| n == "n1")
                .map(|(_, p)| p.name.clone())
                .collect()
        });
        assert_eq!(left, ["node-agent-n1", "kube-proxy-n1"]);
    }

    #[test]
    fn evict_under_skip_leaves_the_vms_pods_and_handles_a_pod_gone_meanwhile() {
        let kube = cluster();
        kube.edit(|c| {
            c.evictions
                .insert(("ns".into(), "web-1".into()), Eviction::Gone)
        });
        let h = harness(input("skip"), kube);
        assert_eq!(
            h.run("evict"),
            Outcome::Poll {
                after: Duration::from_millis(1000),
                progress: Some(json!({ "remaining_pods": 1, "refused": [] })),
            }
        );
        assert_eq!(h.kube.mutations(), [evict_call("web-1")]);
        assert_eq!(h.run("evict"), Outcome::Done(json!({ "evicted": "all" })));
    }

    #[test]
    fn evict_retries_what_the_api_server_throttles() {
        let h = harness(input("skip"), cluster());
        h.kube
            .fail(Op::ListPods, 1, too_many_requests(Duration::from_secs(2)));
        assert_eq!(
            h.run("evict"),
            Outcome::Retry {
                error: "429 Too Many Requests".into(),
                after: Some(Duration::from_secs(2)),
            }
        );
        // A 429 from the Eviction API is a refusal (above); other transient trouble is a retry.
        h.kube.fail(
            Op::EvictPod,
            1,
            KubeError::Transient {
                message: "503 etcdserver: leader changed".into(),
                retry_after: None,
            },
        );
        assert!(matches!(h.run("evict"), Outcome::Retry { after: None, .. }));
        assert!(matches!(h.run("evict"), Outcome::Poll { .. }));
    }

    #[test]
    fn verify_checks_the_node_is_empty_and_starts_the_stopped_vms() {
        let mut h = harness(input("shutdown-restart"), cluster());
        set(
            &mut h,
            "stop-blocked",
            Stopped {
                stopped: vec![c_blocked()],
                skipped: None,
            },
        );
        h.kube
            .edit(|c| c.vms.insert(("ns".into(), "c-vm".into()), false));
        assert_eq!(
            h.run("verify"),
            Outcome::Retry {
                error: "VMIs still on n1: ns/a, ns/b, ns/c".into(),
                after: Some(Duration::from_millis(1000)),
            }
        );
        assert!(h.kube.mutations().is_empty());
        moved(&h, "a", "n2");
        // A VMI that is gone (deleted, or stopped by its owner) counts as off the node.
        removed(&h, "b");
        removed(&h, "c");
        assert_eq!(
            h.run("verify"),
            Outcome::Done(json!({ "node": "n1", "restarted": 1, "skipped": [] }))
        );
        assert_eq!(h.kube.mutations(), [vm_call("c-vm", true)]);
    }

    #[test]
    fn verify_under_skip_leaves_the_skipped_vmis_where_they_are() {
        let mut h = harness(input("skip"), cluster());
        let gave_up = blocked("b", Some("b-vm"), "MigrationFailed", "timed out");
        set(&mut h, "preflight", preflight_of(false));
        set(
            &mut h,
            "migrate",
            Migrated {
                migrated: vec![],
                gave_up: vec![gave_up.clone()],
                gone: vec![],
            },
        );
        set(
            &mut h,
            "stop-blocked",
            Stopped {
                stopped: vec![],
                skipped: Some(vec![c_blocked(), gave_up.clone()]),
            },
        );
        assert!(
            matches!(h.run("verify"), Outcome::Retry { error, .. } if error == "VMIs still on n1: ns/a")
        );
        removed(&h, "a");
        assert_eq!(
            h.run("verify"),
            Outcome::Done(
                json!({ "node": "n1", "restarted": 0, "skipped": [c_blocked(), gave_up] })
            )
        );
        assert!(h.kube.mutations().is_empty());
    }

    #[test]
    fn maintenance_waits_for_its_signal_only_when_asked() {
        let cases = [
            (
                "none",
                None,
                Outcome::Done(json!({ "maintenance": "none" })),
            ),
            (
                "wait-for-signal",
                None,
                Outcome::WaitSignal {
                    name: MAINTENANCE_DONE.into(),
                },
            ),
            (
                "wait-for-signal",
                Some(json!({ "firmware": "2.1" })),
                Outcome::Done(json!({ "maintenance": { "firmware": "2.1" } })),
            ),
        ];
        for (maintenance, signal, expected) in cases {
            let mut input = input("skip");
            input["maintenance"] = json!(maintenance);
            let mut h = harness(input, cluster());
            if let Some(payload) = signal.clone() {
                h.signals.insert(MAINTENANCE_DONE.into(), payload);
            }
            assert_eq!(h.run("maintenance"), expected, "{maintenance} {signal:?}");
            assert!(h.kube.calls().is_empty());
        }
    }

    #[test]
    fn return_waits_for_the_node_and_the_restarted_vms() {
        let moves = Migrated {
            migrated: vec![json!({ "namespace": "ns", "vmi": "a", "target": "n2" })],
            gave_up: vec![],
            gone: vec![],
        };
        // (uncordon, node ready) -> (outcome shape, mutations)
        for uncordon in [false, true] {
            let mut input = input("shutdown-restart");
            input["uncordon"] = json!(uncordon);
            let mut h = harness(input, cluster());
            h.kube.edit(|c| {
                let n1 = c.nodes.get_mut("n1").expect("n1");
                n1.unschedulable = true;
                n1.ready = false;
            });
            set(&mut h, "migrate", &moves);
            set(
                &mut h,
                "stop-blocked",
                Stopped {
                    stopped: vec![c_blocked()],
                    skipped: None,
                },
            );
            // c was stopped and has not come back yet.
            removed(&h, "c");
            assert_eq!(
                h.run("return"),
                Outcome::Poll {
                    after: Duration::from_millis(1000),
                    progress: Some(json!({ "starting": ["c"] })),
                }
            );
            h.kube.edit(|c| {
                let mut back = blocked_vmi();
                back.node = Some("n3".into());
                c.vmis.push(back);
            });
            assert_eq!(
                h.run("return"),
                Outcome::Poll {
                    after: Duration::from_millis(1000),
                    progress: Some(json!({ "waiting": "n1 to be Ready" })),
                }
            );
            h.kube
                .edit(|c| c.nodes.get_mut("n1").expect("n1").ready = true);
            assert_eq!(
                h.run("return"),
                Outcome::Done(json!({
                    "node": "n1", "uncordoned": uncordon, "ready": true,
                    "migrated": [{ "namespace": "ns", "vmi": "a", "target": "n2" }],
                }))
            );
            let expected = if uncordon {
                vec![cordon_call(false); 3]
            } else {
                vec![]
            };
            assert_eq!(h.kube.mutations(), expected, "uncordon {uncordon}");
            assert_eq!(h.kube.edit(|c| c.nodes["n1"].unschedulable), !uncordon);
        }
    }

    /// Runs `step` forward until it is done, letting the cluster act in between as KubeVirt and
    /// the controllers would: children's migrations succeed, stopped VMs' instances go, evicted
    /// pods go.
    fn drive(h: &mut Harness, step: &str) -> Value {
        for _ in 0..5 {
            match h.advance(step) {
                Outcome::Done(v) => return v,
                Outcome::Spawn { children, .. } => {
                    for (i, c) in children.iter().enumerate() {
                        let vmi = c.input["vmi"].as_str().expect("a child's vmi").to_string();
                        moved(h, &vmi, "n2");
                        let result = json!({ "target": "n2" });
                        let id = format!("child-{i}");
                        h.children
                            .push(child(&id, c, State::Succeeded, Some(result), None));
                    }
                }
                Outcome::Poll { .. } => {
                    let stopped: Vec<String> = h.kube.edit(|c| {
                        c.vms
                            .iter()
                            .filter(|(_, running)| !**running)
                            .map(|((_, vm), _)| vm.trim_end_matches("-vm").to_string())
                            .collect()
                    });
                    for vmi in stopped {
                        removed(h, &vmi);
                    }
                }
                other => panic!("{step}: {other:?}"),
            }
        }
        panic!("{step} did not finish");
    }

    #[test]
    fn a_drain_runs_forward_step_by_step() {
        let mut h = harness(input("shutdown-restart"), cluster());
        for step in [
            "preflight",
            "cordon",
            "migrate",
            "stop-blocked",
            "wait-stopped",
            "evict",
        ] {
            drive(&mut h, step);
        }
        h.children.clear();
        let verified = drive(&mut h, "verify");
        assert_eq!(verified["restarted"], 1);
        // c-vm was started again; KubeVirt schedules its instance on another node.
        h.kube.edit(|c| {
            let mut back = blocked_vmi();
            back.node = Some("n3".into());
            c.vmis.push(back);
        });
        drive(&mut h, "maintenance");
        let result = drive(&mut h, "return");
        assert_eq!(result["migrated"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            h.kube.mutations(),
            [
                cordon_call(true),
                // Once: wait-stopped only looks.
                vm_call("c-vm", false),
                evict_call("virt-launcher-a"),
                evict_call("virt-launcher-b"),
                evict_call("virt-launcher-c"),
                evict_call("web-1"),
                vm_call("c-vm", true),
            ]
        );
        let (cordoned, running) = h.kube.edit(|c| {
            (
                c.nodes["n1"].unschedulable,
                c.vms[&("ns".into(), "c-vm".into())],
            )
        });
        assert!(cordoned && running);
    }

    /// Drives a drain through `stop-blocked` (its VMs asked to stop, still shutting down: a
    /// cancellation during `wait-stopped`), then runs the compensations as a cancellation does:
    /// completed compensable steps, in reverse.
    fn cancelled_after_stop_blocked(kube: FakeKube) -> Harness {
        let mut h = harness(input("shutdown-restart"), kube);
        for step in ["preflight", "cordon", "migrate", "stop-blocked"] {
            drive(&mut h, step);
        }
        assert!(!h.kube.edit(|c| c.vms[&("ns".into(), "c-vm".into())]));
        h.kube.clear_calls();
        for step in ["stop-blocked", "cordon"] {
            assert!(matches!(h.compensate(step), Outcome::Done(_)), "{step}");
        }
        h
    }

    #[test]
    fn cancellation_compensates_in_reverse() {
        let h = cancelled_after_stop_blocked(cluster());
        assert_eq!(
            h.kube.mutations(),
            [vm_call("c-vm", true), cordon_call(false)]
        );
        let (cordoned, running) = h.kube.edit(|c| {
            (
                c.nodes["n1"].unschedulable,
                c.vms[&("ns".into(), "c-vm".into())],
            )
        });
        assert!(!cordoned && running);
    }

    #[test]
    fn cancellation_leaves_a_node_cordoned_before_the_drain_cordoned() {
        let kube = cluster();
        kube.edit(|c| c.nodes.get_mut("n1").expect("n1").unschedulable = true);
        let h = cancelled_after_stop_blocked(kube);
        assert_eq!(h.kube.mutations(), [vm_call("c-vm", true)]);
        assert!(h.kube.edit(|c| c.nodes["n1"].unschedulable));
    }

    /// A harness over `cluster()` for `input` inside `nightly`'s Monday window (02:00-04:00),
    /// with `nightly` stored, at `now_ms`.
    fn windowed(mut input: Value, now_ms: i64) -> Harness {
        input["window"] = json!(monday_window());
        let h = harness(input, cluster()).with_schedule("nightly", nightly(json!([])));
        h.clock
            .set(u64::try_from(now_ms).expect("a time after 1970"));
        h
    }

    /// The child `migrate` spawns for `vmi` with the default input and deadline `not_after_ms`.
    fn spec_until(vmi: &str, not_after_ms: i64) -> ChildSpec {
        migration(
            &parse(input("shutdown-restart")),
            &("ns".to_string(), vmi.to_string()),
            Some(not_after_ms),
        )
    }

    const DAY_MS: i64 = 24 * HOUR_MS;
    const MONDAY_END: i64 = MONDAY_MS + 4 * HOUR_MS;
    const TUESDAY_END: i64 = MONDAY_END + DAY_MS;

    fn held_until_tuesday() -> Outcome {
        Outcome::Poll {
            after: RECHECK,
            progress: Some(json!({
                "held": "window closed; continues in the next window at 2026-03-03T02:00:00Z \
                         (schedule nightly)",
                "until": "2026-03-03T02:00:00Z",
            })),
        }
    }

    #[test]
    fn preflight_does_not_start_a_drain_outside_its_window() {
        // Inside it: as without a window.
        let h = windowed(input("skip"), MONDAY_MS + 3 * HOUR_MS);
        assert!(matches!(h.run("preflight"), Outcome::Done(_)));
        assert_eq!(h.schedules.reads(), 1);
        // After its end: held until Tuesday's window, before anything is read from the cluster.
        let h = windowed(input("skip"), MONDAY_MS + 5 * HOUR_MS);
        assert_eq!(h.run("preflight"), held_until_tuesday());
        assert!(h.kube.calls().is_empty());
        // Inside a freeze added since: held until the freeze ends.
        let h = windowed(input("skip"), MONDAY_MS + 3 * HOUR_MS);
        let freeze = json!([{
            "name": "incident 42",
            "from": "2026-03-02T02:30:00Z",
            "to": "2026-03-02T03:03:00Z",
        }]);
        h.schedules.set("nightly", nightly(freeze));
        assert_eq!(
            h.run("preflight"),
            Outcome::Poll {
                after: Duration::from_secs(180),
                progress: Some(json!({
                    "held": "freeze \"incident 42\" until 2026-03-02T03:03:00Z",
                    "until": "2026-03-02T03:03:00Z",
                })),
            }
        );
        assert!(h.kube.calls().is_empty());
        // The schedule deleted: paused for an operator, and once resumed the drain goes on
        // without a window.
        let mut h = windowed(input("skip"), MONDAY_MS + 5 * HOUR_MS);
        h.schedules.remove("nightly");
        assert_eq!(
            h.run("preflight"),
            Outcome::Pause {
                reason: "window closed; schedule nightly has no next window (resume to go on \
                         outside a window)"
                    .into()
            }
        );
        assert!(h.kube.calls().is_empty());
        h.resumes = 1;
        assert!(matches!(h.run("preflight"), Outcome::Done(_)));
        // The store does not answer: retried, nothing read from the cluster.
        let h = windowed(input("skip"), MONDAY_MS + 3 * HOUR_MS);
        h.schedules.fail_next("connection refused");
        assert_eq!(
            h.run("preflight"),
            Outcome::Retry {
                error: "reading schedule nightly: connection refused".into(),
                after: None,
            }
        );
        assert!(h.kube.calls().is_empty());
        // Without a window the schedules are never read.
        let h = harness(input("skip"), cluster());
        assert!(matches!(h.run("preflight"), Outcome::Done(_)));
        assert_eq!(h.schedules.reads(), 0);
        // A window must make sense.
        let mut bad = input("skip");
        bad["window"] = json!({ "schedule": "nightly", "start_ms": 5, "end_ms": 5 });
        let error = Typed::<DrainNode>::default()
            .load(&bad)
            .err()
            .unwrap_or_default();
        assert!(error.contains("window.start_ms"), "{error}");
    }

    #[test]
    fn migrate_starts_migrations_only_inside_a_window_with_its_end_as_their_deadline() {
        let h = windowed(input("shutdown-restart"), MONDAY_MS + 3 * HOUR_MS);
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![spec_until("a", MONDAY_END), spec_until("b", MONDAY_END)],
                join: JoinPolicy::All,
            }
        );
        let h = windowed(input("shutdown-restart"), MONDAY_MS + 5 * HOUR_MS);
        assert_eq!(h.run("migrate"), held_until_tuesday());
        // In Tuesday's window the migrations get Tuesday's end.
        let h = windowed(input("shutdown-restart"), MONDAY_MS + DAY_MS + 3 * HOUR_MS);
        assert_eq!(
            h.run("migrate"),
            Outcome::Spawn {
                children: vec![spec_until("a", TUESDAY_END), spec_until("b", TUESDAY_END)],
                join: JoinPolicy::All,
            }
        );
    }

    #[test]
    fn migrate_starts_deferred_children_again_without_counting_them_as_tries() {
        let deferred = || Some(json!({ "deferred": "window closed" }));
        let mut input = input("fail");
        input["max_migration_attempts"] = json!(2);
        let mut h = windowed(input, MONDAY_MS + 5 * HOUR_MS);
        let (a, b) = (spec_until("a", MONDAY_END), spec_until("b", MONDAY_END));
        h.children = vec![
            child(
                "a0",
                &a,
                State::Succeeded,
                Some(json!({ "target": "n2" })),
                None,
            ),
            child("b0", &b, State::Failed, None, Some("target pod failed")),
            child("b1", &b, State::Succeeded, deferred(), None),
        ];
        // Monday's window has closed: b waits for Tuesday's.
        assert_eq!(h.run("migrate"), held_until_tuesday());
        // In Tuesday's window b is started again with Tuesday's end: b1 tried nothing, so b0
        // was the first of two tries.
        h.clock
            .set(u64::try_from(MONDAY_MS + DAY_MS + 3 * HOUR_MS).expect("a time"));
        let again = spec_until("b", TUESDAY_END);
        let spawn_b = Outcome::Spawn {
            children: vec![again.clone()],
            join: JoinPolicy::All,
        };
        assert_eq!(h.run("migrate"), spawn_b);
        // Deferred once more (it waited for permits past the end): again, still no try.
        h.children
            .push(child("b2", &again, State::Succeeded, deferred(), None));
        assert_eq!(h.run("migrate"), spawn_b);
        // Its second try fails: given up, under policy fail the drain fails.
        h.children
            .push(child("b3", &again, State::Failed, None, Some("timed out")));
        assert_eq!(
            h.run("migrate"),
            Outcome::Fail {
                error: "1 migrations failed 2 times: ns/b: timed out".into()
            }
        );
        // A deferred VMI that left the node meanwhile is not started again.
        let mut h = windowed(json!({ "node": "n1", "non_migratable": "skip" }), MONDAY_MS);
        h.children = vec![
            child(
                "a0",
                &a,
                State::Succeeded,
                Some(json!({ "target": "n2" })),
                None,
            ),
            child("b1", &b, State::Succeeded, deferred(), None),
        ];
        removed(&h, "b");
        assert_eq!(
            h.run("migrate"),
            Outcome::Done(json!({
                "migrated": [{ "namespace": "ns", "vmi": "a", "target": "n2" }],
                "gave_up": [],
                "gone": ["ns/b"],
            }))
        );
        assert_eq!(h.schedules.reads(), 0);
    }

    #[test]
    fn without_a_cluster_the_steps_say_what_to_configure() {
        let h = harness(input("skip"), cluster()).without_kube();
        let outcome = h.run("preflight");
        assert!(fail_containing(&outcome, "configure [kube]"), "{outcome:?}");
        assert!(fail_containing(&h.compensate("cordon"), "configure [kube]"));
    }
}
