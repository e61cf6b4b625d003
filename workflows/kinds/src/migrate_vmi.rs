//! `migrate-vmi`: live-migrate one VMI off a node. A child of `drain-node`, one per VMI and attempt,
//! holding its permits (at most N migrations per cluster, M outbound per node) from its first step
//! to its end, so the limits hold while the migration runs in the cluster, not only while a worker
//! looks at it.
//!
//! Steps: `start` creates the VirtualMachineInstanceMigration, named after this workflow so a re-run
//! finds it instead of creating a second (its compensation deletes it, which makes KubeVirt abort
//! it); `wait` watches it (each run until its phase changes, at most [`WATCH_WINDOW`]) to Succeeded,
//! or fails with KubeVirt's reason.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{Outcome, Permit, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_retry, default_cluster_limit, default_node_limit, migration_name};

/// The `migrate-vmi` kind.
pub struct MigrateVmi;

/// Input of `migrate-vmi`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub namespace: String,
    pub vmi: String,
    pub source_node: String,
    /// Pins the destination (the migration's `addedNodeSelector`).
    #[serde(default)]
    pub added_node_selector: BTreeMap<String, String>,
    /// Cluster-wide and per-source-node migration limits (KubeVirt's parallelMigrationsPerCluster and
    /// parallelOutboundMigrationsPerNode).
    #[serde(default = "default_cluster_limit")]
    pub cluster_limit: u32,
    #[serde(default = "default_node_limit")]
    pub node_limit: u32,
    /// Accepted and ignored: children created before `wait` watched its migration carry it, and
    /// they must still run (and compensate) after an upgrade.
    #[serde(default, skip_serializing)]
    pub poll_ms: Option<u64>,
}

/// How long one run of `wait` watches its migration before it hands the worker slot back (and is
/// run again at once): short enough that a worker shutting down is not held up for long.
const WATCH_WINDOW: Duration = Duration::from_secs(10);

impl Kind for MigrateVmi {
    const NAME: &'static str = "migrate-vmi";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if i.vmi.is_empty() || i.namespace.is_empty() || i.source_node.is_empty() {
            return Err("namespace, vmi and source_node must be set".into());
        }
        if i.cluster_limit == 0 || i.node_limit == 0 {
            return Err("cluster_limit and node_limit must be at least 1".into());
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("start", |ctx| Box::pin(start(ctx)))
                .retry(cluster_retry())
                .permits(permits)
                .compensate(|ctx| Box::pin(abort(ctx))),
            Step::new("wait", |ctx| Box::pin(wait(ctx))).retry(cluster_retry()),
        ]
    }
}

/// Taken at the first step with workflow scope, so they are held until the migration ends.
fn permits(i: &Input) -> Vec<Permit> {
    vec![
        Permit {
            name: "migrations:cluster".into(),
            capacity: i.cluster_limit,
            scope: Scope::Workflow,
        },
        Permit {
            name: format!("migrations-out:{}", i.source_node),
            capacity: i.node_limit,
            scope: Scope::Workflow,
        },
    ]
}

async fn start(ctx: &Ctx<'_, MigrateVmi>) -> StepResult {
    let i = ctx.input;
    let name = migration_name(ctx.workflow_id, &i.vmi);
    let m = ctx
        .kube()?
        .create_migration(&i.namespace, &name, &i.vmi, &i.added_node_selector)
        .await?;
    Ok(Outcome::Done(json!({ "migration": m.name })))
}

async fn wait(ctx: &Ctx<'_, MigrateVmi>) -> StepResult {
    let i = ctx.input;
    let name = migration_name(ctx.workflow_id, &i.vmi);
    match ctx
        .kube()?
        .watch_migration(&i.namespace, &name, WATCH_WINDOW)
        .await?
    {
        Some(m) if m.phase == "Succeeded" => Ok(Outcome::Done(json!({
            "migration": m.name, "source": m.source_node, "target": m.target_node,
        }))),
        Some(m) if m.phase == "Failed" => Err(StepError::fail(format!(
            "migration {} of {}/{} failed: {}",
            m.name,
            i.namespace,
            i.vmi,
            m.failure.unwrap_or_else(|| "no reason given".into())
        ))),
        // A new phase (or the window passed): record it and watch again at once.
        Some(m) => Ok(Outcome::Poll {
            after: Duration::ZERO,
            progress: Some(json!({ "phase": m.phase, "target": m.target_node })),
        }),
        None => Err(StepError::fail(format!("migration {name} disappeared"))),
    }
}

/// Deletes a migration still running, which makes KubeVirt abort it.
async fn abort(ctx: &Ctx<'_, MigrateVmi>) -> StepResult {
    let i = ctx.input;
    let kube = ctx.kube()?;
    let name = migration_name(ctx.workflow_id, &i.vmi);
    match kube.get_migration(&i.namespace, &name).await? {
        Some(m) if !m.is_finished() => {
            kube.delete_migration(&i.namespace, &name).await?;
            Ok(Outcome::Done(json!({ "aborted": name })))
        }
        _ => Ok(Outcome::Done(json!({ "aborted": Value::Null }))),
    }
}
