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
//!              another budget's worth). Started by a schedule with a maintenance window
//!              (`window`), it starts a new wave only inside a window: once the window has ended
//!              (or a freeze covers now) it holds, with the reason in its progress ("window
//!              closed; continues in the next window at ..."), until the schedule's next window
//!              or the freeze's end, and pauses when the schedule has no next window (a resume
//!              goes on outside a window; see [`crate::window`]). Drains already running are not
//!              interrupted; each new drain gets the open window (its end is the drain's
//!              deadline for starting, and for starting migrations).
//! 2 `report`   per-node results, the first plan's migrations and second moves, and the actual
//!              ones (from the `migrated` lists of the drains that finished; a drain that failed
//!              after migrating some VMs reports no list, so its moves are not counted).

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::ports::kube::{NodeInfo, VmiInfo};
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, ChildStatus, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_steps, default_cluster_limit, default_node_limit, default_poll_ms};
use crate::decommission_node::{self, DecommissionNode};
use crate::drain_node::{self, DrainNode, Maintenance, Policy};
use crate::gate::{self, Gate, Maintained};
use crate::machines::Erase;
use crate::plan::{Plan, PlanNode, PlanVm, plan};
use crate::provision_node::{self, ProvisionNode};
use crate::window::{self, Admission, Window};

/// The `rolling-maintenance` kind.
pub struct RollingMaintenance;

/// Input of `rolling-maintenance`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    #[serde(default = "default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Spare nodes provisioned from MAAS before the rollout (`surge_node` says how), so that every
    /// VM can move once, onto a node it may stay on.
    #[serde(default)]
    pub surge: u32,
    #[serde(default)]
    pub surge_node: Option<provision_node::Input>,
    /// Keep the surge nodes afterwards (else they are decommissioned, their VMs moved back onto
    /// the maintained nodes, and their machines released with a quick erase).
    #[serde(default)]
    pub keep_surge: bool,
    /// The maintenance window this rollout runs in, set by the schedule that started it: no new
    /// wave of drains starts outside the schedule's windows or inside a freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// The most surge nodes a rollout provisions.
pub const MAX_SURGE: u32 = 16;

fn one() -> u32 {
    1
}
fn default_health_timeout_secs() -> u64 {
    1800
}
fn yes() -> bool {
    true
}

/// `plan`'s output: the plan, and the nodes that could host VMs before the rollout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Planned {
    #[serde(flatten)]
    pub plan: Plan,
    #[serde(default)]
    pub hosted_vms: Vec<String>,
}

impl Kind for RollingMaintenance {
    const NAME: &'static str = "rolling-maintenance";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if i.nodes.is_empty() == i.selector.is_empty() {
            return Err(
                "give either nodes (a list of names) or selector (labels), not both".into(),
            );
        }
        if i.max_in_maintenance == 0 {
            return Err("max_in_maintenance must be at least 1".into());
        }
        if i.surge > MAX_SURGE {
            return Err(format!("surge is at most {MAX_SURGE}"));
        }
        match (&i.surge_node, i.surge) {
            (None, 1..) => {
                return Err("surge needs surge_node: how to provision the spare nodes \
                            (a provision-node input)"
                    .into());
            }
            (Some(n), _) => n.check().map_err(|e| format!("surge_node: {e}"))?,
            (None, 0) => {}
        }
        if let Some(w) = &i.window {
            w.check()?;
        }
        Ok(())
    }

    fn descendants(i: &Input) -> u64 {
        // The surge: each provisioning (with its attempts) and each decommission with its drain.
        // Drains and their migrations are counted as they are started.
        i.surge_node.as_ref().map_or(0, |n| {
            u64::from(i.surge) * (1 + <ProvisionNode as Kind>::descendants(n) + 2)
        })
    }

    fn steps(i: &Input) -> Vec<Step<Self>> {
        let mut steps = Vec::new();
        if i.surge > 0 {
            steps.push(Step::new("surge", |ctx| Box::pin(surge(ctx))));
        }
        steps.push(Step::new("plan", |ctx| Box::pin(make_plan(ctx))));
        steps.push(Step::new("rollout", |ctx| Box::pin(rollout(ctx))));
        if i.surge > 0 && !i.keep_surge {
            steps.push(Step::new("unsurge", |ctx| Box::pin(unsurge(ctx))));
        }
        steps.push(Step::new("report", |ctx| Box::pin(report(ctx))));
        cluster_steps(steps)
    }
}

/// `surge`'s output: the spare nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Surged {
    pub nodes: Vec<String>,
}

/// Provisions the surge nodes (in parallel) before anything is planned.
async fn surge(ctx: &Ctx<'_, RollingMaintenance>) -> StepResult {
    let input = ctx.input;
    let Some(template) = &input.surge_node else {
        return Err(StepError::fail("surge needs surge_node"));
    };
    if ctx.children.is_empty() {
        let children = (0..input.surge)
            .map(|_| ChildSpec::of::<ProvisionNode>(template))
            .collect();
        return Ok(Outcome::Spawn {
            children,
            join: JoinPolicy::All,
        });
    }
    let mut nodes = Vec::new();
    for c in ctx.children {
        if c.state != State::Succeeded {
            return Err(StepError::fail(format!(
                "surge node {} {}: {}",
                c.id,
                c.state.as_str(),
                c.error.as_deref().unwrap_or("no reason given")
            )));
        }
        let r = c.result.clone().unwrap_or_default();
        let node = r["node"]
            .as_str()
            .ok_or_else(|| StepError::fail(format!("surge node {} reported no node", c.id)))?;
        nodes.push(node.to_string());
    }
    Ok(Outcome::Done(json!(Surged { nodes })))
}

/// Decommissions the surge nodes once the rollout is over: their VMs go back onto the maintained
/// nodes (moved a second time), the Nodes are deleted and the machines released.
async fn unsurge(ctx: &Ctx<'_, RollingMaintenance>) -> StepResult {
    let input = ctx.input;
    let surged: Surged = ctx.output("surge")?;
    if ctx.children.is_empty() {
        let children = surged
            .nodes
            .iter()
            .map(|node| {
                ChildSpec::of::<DecommissionNode>(&decommission_node::Input {
                    node: node.clone(),
                    non_migratable: input.non_migratable,
                    target_selector: BTreeMap::new(),
                    targets: BTreeMap::new(),
                    erase: Erase::Quick,
                    cluster_limit: input.cluster_limit,
                    node_limit: input.node_limit,
                    poll_ms: input.poll_ms,
                })
            })
            .collect();
        return Ok(Outcome::Spawn {
            children,
            join: JoinPolicy::All,
        });
    }
    let mut migrations = 0u64;
    for c in ctx.children {
        if c.state != State::Succeeded {
            return Err(StepError::fail(format!(
                "decommissioning a surge node {} {}: {}",
                c.id,
                c.state.as_str(),
                c.error.as_deref().unwrap_or("no reason given")
            )));
        }
    }
    for c in ctx.children {
        let migrated = c.result.as_ref().and_then(|r| r["migrated"].as_array());
        migrations += migrated.map_or(0, |m| m.len() as u64);
    }
    Ok(Outcome::Done(json!({
        "decommissioned": surged.nodes,
        "migrations": migrations,
    })))
}

async fn make_plan(ctx: &Ctx<'_, RollingMaintenance>) -> StepResult {
    let kube = ctx.kube()?;
    let input = ctx.input;
    let nodes = kube.list_nodes().await?;
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
        return Err(StepError::fail(format!("node {missing} does not exist")));
    }
    if names.is_empty() {
        return Err(StepError::fail("the selector matches no node"));
    }
    let vmis = kube.list_vmis(None).await?;
    let planned = Planned {
        plan: plan_for(&nodes, &vmis, &names, input.max_in_maintenance as usize),
        // Which nodes could host VMs before (cordon aside): the health gate asks them to again,
        // and asks the others only to be Ready and uncordoned (a node without virt-handler, or
        // with a taint of its own, would otherwise hold the rollout forever).
        hosted_vms: nodes
            .iter()
            .filter(|n| names.contains(&n.name) && n.hosts_vms_when_uncordoned())
            .map(|n| n.name.clone())
            .collect(),
    };
    serde_json::to_value(&planned)
        .map(Outcome::Done)
        .map_err(|e| StepError::fail(format!("encoding the plan: {e}")))
}

/// Plans the drain of `names` (in waves of `wave`) from the cluster as it is now. Nodes in the plan
/// count as destinations for the VMs of later waves (they will have been maintained by then), as
/// long as they are Ready and untainted; other nodes when they take VMs now.
fn plan_for(nodes: &[NodeInfo], vmis: &[VmiInfo], names: &[String], wave: usize) -> Plan {
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

async fn rollout(ctx: &Ctx<'_, RollingMaintenance>) -> StepResult {
    let kube = ctx.kube()?;
    let input = ctx.input;
    let planned: Planned = ctx.output("plan")?;
    let p = &planned.plan;
    // The latest drain per node.
    let mut latest: BTreeMap<String, &ChildStatus> = BTreeMap::new();
    for c in ctx.children {
        let drain: drain_node::Input = serde_json::from_value(c.input.clone())
            .map_err(|e| StepError::fail(format!("child {} has an unreadable input: {e}", c.id)))?;
        latest.insert(drain.node, c);
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
    let nodes = kube.list_nodes().await?;
    let vmis = kube.list_vmis(None).await?;
    let maintained: Vec<Maintained> = latest
        .iter()
        .filter(|(_, c)| c.state == State::Succeeded)
        .map(|(node, c)| Maintained {
            node,
            drained_ms: c.updated_ms,
        })
        .collect();
    let hosted: Vec<&str> = planned.hosted_vms.iter().map(String::as_str).collect();
    let timeout_ms = input.health_timeout_secs * 1000 * (1 + u64::from(ctx.resumes));
    match gate::check(
        &maintained,
        &nodes,
        &vmis,
        &hosted,
        ctx.now_ms(),
        timeout_ms,
    ) {
        Gate::Open => {}
        Gate::Wait(progress) => {
            return Ok(Outcome::Poll {
                after: Duration::from_millis(input.poll_ms),
                progress: Some(progress),
            });
        }
        Gate::Overdue(reason) => return Ok(Outcome::Pause { reason }),
        Gate::Gone(error) => return Err(StepError::fail(error)),
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
    // No new wave outside the window (the drains that ran are over: the health gate is open).
    let open = match window::admit(ctx, input.window.as_ref()).await? {
        Admission::Go(open) => open,
        Admission::Wait(held) => return Ok(held),
    };
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
            ChildSpec::of::<DrainNode>(&drain_node::Input {
                node: node.to_string(),
                non_migratable: input.non_migratable,
                deadline_ms: None,
                target_selector: BTreeMap::new(),
                uncordon: true,
                targets,
                maintenance: input.maintenance,
                max_migration_attempts: 3,
                cluster_limit: input.cluster_limit,
                node_limit: input.node_limit,
                poll_ms: input.poll_ms,
                window: open.clone(),
            })
        })
        .collect();
    Ok(Outcome::Spawn {
        children,
        join: JoinPolicy::All,
    })
}

/// `rollout`'s output, as the report reads it.
#[derive(Debug, Clone, Default, Deserialize)]
struct RolloutOut {
    #[serde(default)]
    migrations: Value,
    #[serde(default)]
    moved_more_than_once: Value,
    #[serde(default)]
    nodes: Value,
}

async fn report(ctx: &Ctx<'_, RollingMaintenance>) -> StepResult {
    let planned: Planned = ctx.output("plan")?;
    let rollout: RolloutOut = ctx.output("rollout")?;
    let p = planned.plan;
    let surged: Option<Surged> = ctx.output_if("surge")?;
    let unsurged: Option<Value> = ctx.output_if("unsurge")?;
    Ok(Outcome::Done(json!({
        "surge": surged.map(|s| s.nodes),
        "surge_kept": ctx.input.keep_surge,
        // Moves that emptied the surge nodes afterwards (each VM there moved a second time).
        "surge_return_migrations": unsurged.map(|u| u["migrations"].clone()),
        "order": p.order,
        "planned_migrations": p.migrations,
        "planned_second_moves": p.second_moves,
        "unplaced": p.unplaced,
        "migrations": rollout.migrations,
        "moved_more_than_once": rollout.moved_more_than_once,
        "nodes": rollout.nodes,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{
        FakeKube, HOUR_MS, Harness, MONDAY_MS, child, monday_window, nightly, node, vmi,
    };
    use crate::window::RECHECK;

    const DAY_MS: i64 = 24 * HOUR_MS;

    /// A planned rollout of n1 then n2, one at a time, over n1-n3 (VM `a` on n1, going to n3), in
    /// `nightly`'s Monday window when `windowed`, at `now_ms`.
    fn rollout_at(windowed: bool, now_ms: i64) -> Harness {
        let mut input = json!({ "nodes": ["n1", "n2"] });
        if windowed {
            input["window"] = json!(monday_window());
        }
        let kube = FakeKube::default()
            .node(node("n1"))
            .node(node("n2"))
            .node(node("n3"))
            .vmi(vmi("a", "n1"));
        let mut h = Harness::new::<RollingMaintenance>(input, kube)
            .with_schedule("nightly", nightly(json!([])));
        let planned = Planned {
            plan: Plan {
                order: vec!["n1".into(), "n2".into()],
                targets: BTreeMap::from([(
                    "n1".to_string(),
                    BTreeMap::from([("ns/a".to_string(), "n3".to_string())]),
                )]),
                ..Plan::default()
            },
            hosted_vms: vec!["n1".into(), "n2".into()],
        };
        let planned = serde_json::to_value(&planned).expect("the plan encodes");
        h.outputs.insert("plan".into(), planned);
        h.clock
            .set(u64::try_from(now_ms).expect("a time after 1970"));
        h
    }

    /// The inputs of the drains `outcome` spawns.
    fn drains(outcome: &Outcome) -> Vec<drain_node::Input> {
        let Outcome::Spawn { children, .. } = outcome else {
            panic!("no drains spawned: {outcome:?}");
        };
        children
            .iter()
            .map(|c| serde_json::from_value(c.input.clone()).expect("a drain's input"))
            .collect()
    }

    /// A drain of `node` that succeeded.
    fn drained(node: &str) -> ChildStatus {
        let input = json!({ "node": node });
        let spec = ChildSpec::of::<DrainNode>(
            &drover_workflows::sdk::parse::<DrainNode>(&input).expect("a drain's input"),
        );
        child(
            &format!("drain-{node}"),
            &spec,
            State::Succeeded,
            Some(json!({ "migrated": [] })),
            None,
        )
    }

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
    fn a_new_wave_starts_only_inside_a_window_and_its_drains_carry_it() {
        // Inside its own window: the drain of n1 gets the window, and its pinned destination.
        let h = rollout_at(true, MONDAY_MS + 3 * HOUR_MS);
        let spawned = drains(&h.run("rollout"));
        assert_eq!(spawned.len(), 1);
        assert_eq!(spawned[0].node, "n1");
        assert_eq!(spawned[0].window, Some(monday_window()));
        assert_eq!(spawned[0].targets["ns/a"], "n3");
        // Past its end: no drain starts; held until Tuesday's window, with the reason.
        let h = rollout_at(true, MONDAY_MS + 5 * HOUR_MS);
        assert_eq!(h.run("rollout"), held_until_tuesday());
        // In Tuesday's window: the drain gets Tuesday's end.
        let h = rollout_at(true, MONDAY_MS + DAY_MS + 3 * HOUR_MS);
        let spawned = drains(&h.run("rollout"));
        let tuesday = Window {
            end_ms: MONDAY_MS + DAY_MS + 4 * HOUR_MS,
            ..monday_window()
        };
        assert_eq!(spawned[0].window, Some(tuesday));
        // A freeze declared while the rollout runs holds it until the freeze ends.
        let h = rollout_at(true, MONDAY_MS + 3 * HOUR_MS);
        let freeze = json!([{
            "name": "change freeze",
            "from": "2026-03-02T02:50:00Z",
            "to": "2026-03-05T00:00:00Z",
        }]);
        h.schedules.set("nightly", nightly(freeze));
        assert_eq!(
            h.run("rollout"),
            Outcome::Poll {
                after: RECHECK,
                progress: Some(json!({
                    "held": "freeze \"change freeze\" until 2026-03-05T00:00:00Z",
                    "until": "2026-03-05T00:00:00Z",
                })),
            }
        );
        // Without a window: no schedule is read, and the drain's input is as before windows.
        let h = rollout_at(false, MONDAY_MS + 5 * HOUR_MS);
        let outcome = h.run("rollout");
        let Outcome::Spawn { children, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(children[0].input.get("window").is_none());
        assert_eq!(h.schedules.reads(), 0);
    }

    #[test]
    fn the_next_wave_waits_for_the_next_window_but_the_end_does_not() {
        // n1's drain ended after the window closed (it was running, so it finished): n2's does
        // not start.
        let mut h = rollout_at(true, MONDAY_MS + 5 * HOUR_MS);
        h.children = vec![drained("n1")];
        assert_eq!(h.run("rollout"), held_until_tuesday());
        // Tuesday: n2's drain starts.
        h.clock
            .set(u64::try_from(MONDAY_MS + DAY_MS + 2 * HOUR_MS).expect("a time"));
        let spawned = drains(&h.run("rollout"));
        assert_eq!(spawned.len(), 1);
        assert_eq!(spawned[0].node, "n2");
        // Every node drained: the rollout ends whatever the time (it starts nothing new).
        h.clock
            .set(u64::try_from(MONDAY_MS + DAY_MS + 5 * HOUR_MS).expect("a time"));
        h.children.push(drained("n2"));
        assert!(matches!(h.run("rollout"), Outcome::Done(_)));
    }

    #[test]
    fn a_rollout_whose_schedule_is_gone_pauses_and_goes_on_once_resumed() {
        let mut h = rollout_at(true, MONDAY_MS + 5 * HOUR_MS);
        h.schedules.remove("nightly");
        assert_eq!(
            h.run("rollout"),
            Outcome::Pause {
                reason: "window closed; schedule nightly has no next window (resume to go on \
                         outside a window)"
                    .into()
            }
        );
        // Resumed: the drains start, without a window of their own.
        h.resumes = 1;
        let spawned = drains(&h.run("rollout"));
        assert_eq!(spawned[0].window, None);
        // Inside its own window a deleted schedule does not matter.
        let h = rollout_at(true, MONDAY_MS + 3 * HOUR_MS);
        h.schedules.remove("nightly");
        assert_eq!(drains(&h.run("rollout"))[0].window, Some(monday_window()));
    }

    #[test]
    fn a_window_is_checked_with_the_input() {
        let kind = drover_workflows::sdk::Typed::<RollingMaintenance>::default();
        for (window, says) in [
            (
                json!({ "schedule": "", "start_ms": 1, "end_ms": 2 }),
                "window.schedule",
            ),
            (
                json!({ "schedule": "s", "start_ms": 2, "end_ms": 1 }),
                "window.start_ms",
            ),
            (
                json!({ "schedule": "s", "start_ms": 1, "end_ms": 2, "zone": "UTC" }),
                "unknown field",
            ),
        ] {
            let input = json!({ "nodes": ["n1"], "window": window });
            let error = drover_workflows::Workflow::load(&kind, &input)
                .err()
                .unwrap_or_default();
            assert!(error.contains(says), "{input}: {error}");
        }
    }
}
