//! `decommission-node`: a node's VMs moved off, the Node deleted, its machine erased and back in
//! MAAS's pool.
//!
//! 0 `find`     the Node and its MAAS machine (by hostname); a machine already released counts as
//!              found, so a re-run after the release goes on.
//! 1 `drain`    a `drain-node` child (left cordoned, `non_migratable` as given, destinations by
//!              `targets` or `target_selector`); its failure fails this workflow before anything is
//!              deleted.
//! 2 `delete`   deletes the Node (gone already is fine).
//! 3 `release`  releases the machine with the chosen erase and waits, without holding a worker,
//!              until MAAS has it Ready again (Failed disk erasing fails the workflow with MAAS's
//!              reason).

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::ports::kube::KubeError;
use drover_workflows::ports::maas::{MachineFilter, failure_reason, status};
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{default_cluster_limit, default_node_limit, default_poll_ms};
use crate::drain_node::{self, DrainNode, Maintenance, Policy};
use crate::machines::{self, Erase, maas_retry};

/// The `decommission-node` kind.
pub struct DecommissionNode;

/// Input of `decommission-node`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub node: String,
    #[serde(default)]
    pub non_migratable: Policy,
    /// Destinations must carry these labels.
    #[serde(default)]
    pub target_selector: BTreeMap<String, String>,
    /// Destination per VMI (`namespace/name` -> node).
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    /// How the machine's disks are erased on release (`full` by default).
    #[serde(default)]
    pub erase: Erase,
    #[serde(default = "default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

/// `find`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    pub system_id: String,
    pub hostname: String,
    pub node_exists: bool,
}

impl Kind for DecommissionNode {
    const NAME: &'static str = "decommission-node";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if !drover_workflows::is_name(&i.node) {
            return Err(format!("node: {}", drover_workflows::NAME_RULE));
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("find", |ctx| Box::pin(find(ctx))),
            Step::new("drain", |ctx| Box::pin(drain(ctx))),
            Step::new("delete", |ctx| Box::pin(delete(ctx))),
            Step::new("release", |ctx| Box::pin(release(ctx))),
        ]
        .into_iter()
        .map(|s| s.retry(maas_retry()))
        .collect()
    }
}

async fn find(ctx: &Ctx<'_, DecommissionNode>) -> StepResult {
    let maas = ctx.maas()?;
    let kube = ctx.kube()?;
    let node = &ctx.input.node;
    let node_exists = match kube.get_node(node).await {
        Ok(_) => true,
        Err(KubeError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let filter = MachineFilter {
        hostnames: vec![node.clone()],
        ..MachineFilter::default()
    };
    let machine = maas.list_machines(&filter).await?.into_iter().next();
    let Some(m) = machine else {
        return Err(StepError::fail(format!(
            "node {node} has no machine in MAAS (no machine has hostname {node})"
        )));
    };
    if !node_exists && machines::given_back(&m) {
        return Err(StepError::fail(format!(
            "node {node} does not exist and its machine {} is {} already",
            m.system_id, m.status_name
        )));
    }
    Ok(Outcome::Done(json!(Found {
        system_id: m.system_id,
        hostname: m.hostname,
        node_exists,
    })))
}

async fn drain(ctx: &Ctx<'_, DecommissionNode>) -> StepResult {
    let input = ctx.input;
    let found: Found = ctx.output("find")?;
    if let Some(c) = ctx.children.last() {
        if c.state == State::Succeeded {
            return Ok(Outcome::Done(json!({
                "drain": c.id,
                "result": c.result,
            })));
        }
        return Err(StepError::fail(format!(
            "draining {} {}: {}",
            input.node,
            c.state.as_str(),
            c.error.as_deref().unwrap_or("no reason given")
        )));
    }
    if !found.node_exists {
        return Ok(Outcome::Done(json!({"drain": null})));
    }
    let child = drain_node::Input {
        node: input.node.clone(),
        non_migratable: input.non_migratable,
        deadline_ms: None,
        target_selector: input.target_selector.clone(),
        uncordon: false,
        targets: input.targets.clone(),
        maintenance: Maintenance::None,
        max_migration_attempts: 3,
        cluster_limit: input.cluster_limit,
        node_limit: input.node_limit,
        poll_ms: input.poll_ms,
        window: None,
    };
    Ok(Outcome::Spawn {
        children: vec![ChildSpec::of::<DrainNode>(&child)],
        join: JoinPolicy::All,
    })
}

async fn delete(ctx: &Ctx<'_, DecommissionNode>) -> StepResult {
    let kube = ctx.kube()?;
    machines::remove_node(kube, &ctx.input.node).await?;
    Ok(Outcome::Done(json!({"deleted": ctx.input.node})))
}

async fn release(ctx: &Ctx<'_, DecommissionNode>) -> StepResult {
    let maas = ctx.maas()?;
    let found: Found = ctx.output("find")?;
    let mut m = maas.get_machine(&found.system_id).await?;
    if !matches!(
        m.status,
        status::FAILED_DISK_ERASING | status::FAILED_RELEASING | status::READY
    ) && !machines::given_back(&m)
    {
        let comment = format!("drover: decommissioned by {}", ctx.workflow_id);
        m = machines::release(maas, &found.system_id, ctx.input.erase, comment).await?;
    }
    match m.status {
        status::READY => Ok(Outcome::Done(json!({
            "machine": {"system_id": found.system_id, "hostname": found.hostname},
            "migrated": ctx.output_if::<Value>("drain")?.map(|d| d["result"]["migrated"].clone()),
            "node": ctx.input.node,
            "erase": ctx.input.erase,
            "status": m.status_name,
        }))),
        status::FAILED_DISK_ERASING | status::FAILED_RELEASING => {
            let events = maas.events(&found.system_id, 20).await?;
            Err(StepError::fail(format!(
                "machine {} ({}): {}",
                found.hostname,
                m.status_name,
                failure_reason(&m, &events)
            )))
        }
        _ => Ok(Outcome::Poll {
            after: Duration::from_millis(ctx.input.poll_ms),
            progress: Some(json!({
                "machine": found.hostname,
                "status": m.status_name,
                "message": m.status_message,
            })),
        }),
    }
}
