//! `replace-node`: a new node provisioned from MAAS, the old node's VMs moved onto it, the old node
//! decommissioned.
//!
//! 0 `provision`     a `provision-node` child; if it fails, nothing of the old node was touched.
//! 1 `decommission`  a `decommission-node` child for the old node whose drain pins every VM to the
//!                   new node (`onto_new`, the default) or lets the scheduler choose. If it fails,
//!                   the new node stays: it is healthy capacity, and the old node is as its drain
//!                   left it (its own compensation uncordons it).
//! 2 `report`        both nodes and machines.

use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::cluster::{default_cluster_limit, default_node_limit, default_poll_ms};
use crate::decommission_node::{self, DecommissionNode};
use crate::drain_node::Policy;
use crate::machines::Erase;
use crate::provision_node::{self, ProvisionNode};

/// The `replace-node` kind.
pub struct ReplaceNode;

/// Input of `replace-node`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The node to replace.
    pub node: String,
    /// How to provision its replacement.
    pub with: provision_node::Input,
    /// Move the old node's VMs onto the new node (else wherever the scheduler puts them).
    #[serde(default = "yes")]
    pub onto_new: bool,
    #[serde(default)]
    pub non_migratable: Policy,
    #[serde(default)]
    pub erase: Erase,
    #[serde(default = "default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "default_node_limit")]
    pub node_limit: u32,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn yes() -> bool {
    true
}

impl Kind for ReplaceNode {
    const NAME: &'static str = "replace-node";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if !drover_workflows::is_name(&i.node) {
            return Err(format!("node: {}", drover_workflows::NAME_RULE));
        }
        i.with.check().map_err(|e| format!("with: {e}"))
    }

    fn descendants(i: &Input) -> u64 {
        // The provisioning (and its attempts), the decommission and its drain.
        1 + <ProvisionNode as Kind>::descendants(&i.with) + 2
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("provision", |ctx| Box::pin(provision(ctx))),
            Step::new("decommission", |ctx| Box::pin(decommission(ctx))),
            Step::new("report", |ctx| Box::pin(report(ctx))),
        ]
    }
}

/// The one child of the current step: its result once it succeeded, a failure naming it otherwise.
fn child_result(ctx: &Ctx<'_, ReplaceNode>, what: &str) -> Result<Option<Value>, StepError> {
    match ctx.children.last() {
        None => Ok(None),
        Some(c) if c.state == State::Succeeded => Ok(Some(c.result.clone().unwrap_or_default())),
        Some(c) => Err(StepError::fail(format!(
            "{what} {}: {}",
            c.state.as_str(),
            c.error.as_deref().unwrap_or("no reason given")
        ))),
    }
}

async fn provision(ctx: &Ctx<'_, ReplaceNode>) -> StepResult {
    if let Some(result) = child_result(ctx, "provisioning the replacement")? {
        return Ok(Outcome::Done(result));
    }
    Ok(Outcome::Spawn {
        children: vec![ChildSpec::of::<ProvisionNode>(&ctx.input.with)],
        join: JoinPolicy::All,
    })
}

async fn decommission(ctx: &Ctx<'_, ReplaceNode>) -> StepResult {
    let input = ctx.input;
    if let Some(result) = child_result(ctx, &format!("decommissioning {}", input.node))? {
        return Ok(Outcome::Done(result));
    }
    let new: Value = ctx.output("provision")?;
    let new_node = new["node"]
        .as_str()
        .ok_or_else(|| StepError::fail("the provisioning reported no node"))?;
    let target_selector = if input.onto_new {
        BTreeMap::from([("kubernetes.io/hostname".to_string(), new_node.to_string())])
    } else {
        BTreeMap::new()
    };
    let child = decommission_node::Input {
        node: input.node.clone(),
        non_migratable: input.non_migratable,
        target_selector,
        targets: BTreeMap::new(),
        erase: input.erase,
        cluster_limit: input.cluster_limit,
        node_limit: input.node_limit,
        poll_ms: input.poll_ms,
    };
    Ok(Outcome::Spawn {
        children: vec![ChildSpec::of::<DecommissionNode>(&child)],
        join: JoinPolicy::All,
    })
}

async fn report(ctx: &Ctx<'_, ReplaceNode>) -> StepResult {
    let new: Value = ctx.output("provision")?;
    let old: Value = ctx.output("decommission")?;
    Ok(Outcome::Done(json!({
        "old": {"node": ctx.input.node, "machine": old["machine"]},
        "new": {"node": new["node"], "machine": new["machine"]},
        "attempts": new["attempts"],
    })))
}
