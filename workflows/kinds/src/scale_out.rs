//! `scale-out`: `count` new nodes provisioned in parallel, each a `provision-node` child (which
//! retries failed deployments on other machines). How many machines deploy at once is bounded by
//! the `maas-deployments` semaphore (`node.maas_limit`), shared with every other provisioning.
//!
//! 0 `provision`  starts the children and, once all ended, succeeds when no more nodes failed than
//!                `failure_budget`. Nodes that did join stay either way: they are healthy capacity,
//!                and the result lists them with the failures and their reasons.

use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::provision_node::{self, ProvisionNode};

/// The `scale-out` kind.
pub struct ScaleOut;

/// The most nodes one scale-out adds (a step starts at most 256 children).
pub const MAX_NODES: u32 = 256;

/// Input of `scale-out`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub count: u32,
    /// How each node is provisioned.
    pub node: provision_node::Input,
    /// Nodes that may fail to join without failing the scale-out.
    #[serde(default)]
    pub failure_budget: u32,
}

impl Kind for ScaleOut {
    const NAME: &'static str = "scale-out";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if i.count == 0 || i.count > MAX_NODES {
            return Err(format!("count must be between 1 and {MAX_NODES}"));
        }
        i.node.check().map_err(|e| format!("node: {e}"))
    }

    fn descendants(i: &Input) -> u64 {
        u64::from(i.count) * (1 + <ProvisionNode as Kind>::descendants(&i.node))
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![Step::new("provision", |ctx| Box::pin(provision(ctx)))]
    }
}

async fn provision(ctx: &Ctx<'_, ScaleOut>) -> StepResult {
    let input = ctx.input;
    if ctx.children.is_empty() {
        let children = (0..input.count)
            .map(|_| ChildSpec::of::<ProvisionNode>(&input.node))
            .collect();
        return Ok(Outcome::Spawn {
            children,
            join: JoinPolicy::All,
        });
    }
    let mut nodes = Vec::new();
    let mut failed = Vec::new();
    let mut failed_deployments = 0u64;
    for c in ctx.children {
        if c.state == State::Succeeded {
            let r = c.result.clone().unwrap_or_default();
            failed_deployments += r["failed_deployments"].as_u64().unwrap_or(0);
            nodes.push(json!({"workflow": c.id, "node": r["node"], "machine": r["machine"]}));
        } else {
            failed.push(json!({
                "workflow": c.id,
                "state": c.state.as_str(),
                "error": c.error,
            }));
        }
    }
    if failed.len() as u32 > input.failure_budget {
        let reasons: Vec<String> = failed
            .iter()
            .map(|f| f["error"].as_str().unwrap_or("no reason given").to_string())
            .collect();
        return Err(StepError::fail(format!(
            "{} of {} nodes failed, over the failure budget of {}; {} joined. Failures: {}",
            failed.len(),
            input.count,
            input.failure_budget,
            nodes.len(),
            reasons.join("; ")
        )));
    }
    Ok(Outcome::Done(json!({
        "nodes": nodes,
        "failed": failed,
        "failed_deployments": failed_deployments,
    })))
}
