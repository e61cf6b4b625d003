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

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kind::{StepContext, StepDef, Workflow};
use crate::model::{Outcome, Permit, Phase, RetryPolicy, Scope};
use crate::ports::kube::{Kube, KubeError};

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

/// KubeVirt's default `parallelMigrationsPerCluster`.
pub(crate) fn default_cluster_limit() -> u32 {
    5
}
/// KubeVirt's default `parallelOutboundMigrationsPerNode`.
pub(crate) fn default_node_limit() -> u32 {
    2
}
/// How often the maintenance workflows look at the cluster while they wait, in ms.
pub(crate) fn default_poll_ms() -> u64 {
    1000
}

fn parse(input: &Value) -> Result<Input, String> {
    let i: Input = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    if i.vmi.is_empty() || i.namespace.is_empty() || i.source_node.is_empty() {
        return Err("namespace, vmi and source_node must be set".into());
    }
    if i.cluster_limit == 0 || i.node_limit == 0 {
        return Err("cluster_limit and node_limit must be at least 1".into());
    }
    Ok(i)
}

/// Retries of the cluster-facing steps: the API server's 409/429/5xx and the like.
pub(crate) fn cluster_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        ..RetryPolicy::default()
    }
}

/// The migration's name: derived from the workflow id, so every attempt (a new child) has its own
/// and a re-run of `start` finds the one it made. Kubernetes names are at most 63 characters.
pub fn migration_name(workflow_id: &str, vmi: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workflow_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let prefix: String = vmi.chars().take(40).collect();
    format!("{prefix}-drover-{:012x}", h & 0xffff_ffff_ffff)
}

pub(crate) fn kube<'a>(ctx: &'a StepContext<'_>) -> Result<&'a dyn Kube, Outcome> {
    ctx.ports.kube.as_deref().ok_or_else(|| Outcome::Fail {
        error: "this worker has no Kubernetes connection; configure [kube] (kubeconfig or url)"
            .into(),
    })
}

/// Maps a port error to a step outcome.
pub(crate) fn outcome_of(e: KubeError) -> Outcome {
    match e {
        KubeError::Transient {
            message,
            retry_after,
        } => Outcome::Retry {
            error: message,
            after: retry_after,
        },
        KubeError::NotFound(m) | KubeError::Permanent(m) => Outcome::Fail { error: m },
    }
}

#[async_trait]
impl Workflow for MigrateVmi {
    fn kind(&self) -> &'static str {
        "migrate-vmi"
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        parse(input).map(|_| ())
    }

    fn steps(&self, _input: &Value) -> Vec<StepDef> {
        let retry = cluster_retry();
        vec![
            StepDef::new("start").compensable().retry(retry),
            StepDef::new("wait").retry(retry),
        ]
    }

    fn permits(&self, step: usize, phase: Phase, input: &Value) -> Vec<Permit> {
        let Ok(i) = parse(input) else {
            return Vec::new();
        };
        if phase == Phase::Compensate || step > 0 {
            // Taken at the first step with workflow scope: still held.
            return Vec::new();
        }
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

    async fn run(&self, ctx: &StepContext<'_>) -> Outcome {
        let input = match parse(ctx.input) {
            Ok(i) => i,
            Err(e) => return Outcome::Fail { error: e },
        };
        let kube = match kube(ctx) {
            Ok(k) => k,
            Err(o) => return o,
        };
        let name = migration_name(ctx.workflow_id, &input.vmi);
        match ctx.step {
            0 => match kube
                .create_migration(
                    &input.namespace,
                    &name,
                    &input.vmi,
                    &input.added_node_selector,
                )
                .await
            {
                Ok(m) => Outcome::Done(json!({ "migration": m.name })),
                Err(e) => outcome_of(e),
            },
            _ => match kube
                .watch_migration(&input.namespace, &name, WATCH_WINDOW)
                .await
            {
                Ok(Some(m)) if m.phase == "Succeeded" => Outcome::Done(json!({
                    "migration": m.name, "source": m.source_node, "target": m.target_node,
                })),
                Ok(Some(m)) if m.phase == "Failed" => Outcome::Fail {
                    error: format!(
                        "migration {} of {}/{} failed: {}",
                        m.name,
                        input.namespace,
                        input.vmi,
                        m.failure.unwrap_or_else(|| "no reason given".into())
                    ),
                },
                // A new phase (or the window passed): record it and watch again at once.
                Ok(Some(m)) => Outcome::Poll {
                    after: Duration::ZERO,
                    progress: Some(json!({ "phase": m.phase, "target": m.target_node })),
                },
                Ok(None) => Outcome::Fail {
                    error: format!("migration {name} disappeared"),
                },
                Err(e) => outcome_of(e),
            },
        }
    }

    async fn compensate(&self, ctx: &StepContext<'_>) -> Outcome {
        let Ok(input) = parse(ctx.input) else {
            return Outcome::Done(Value::Null);
        };
        let kube = match kube(ctx) {
            Ok(k) => k,
            Err(o) => return o,
        };
        let name = migration_name(ctx.workflow_id, &input.vmi);
        match kube.get_migration(&input.namespace, &name).await {
            Ok(Some(m)) if m.phase != "Succeeded" && m.phase != "Failed" => {
                match kube.delete_migration(&input.namespace, &name).await {
                    Ok(()) => Outcome::Done(json!({ "aborted": name })),
                    Err(e) => outcome_of(e),
                }
            }
            Ok(_) => Outcome::Done(json!({ "aborted": Value::Null })),
            Err(e) => outcome_of(e),
        }
    }
}
