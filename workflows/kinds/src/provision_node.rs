//! `provision-node`: a bare-metal machine from MAAS, deployed and joined to the cluster as a Node
//! that runs VMs, trying other machines when deployments fail.
//!
//! 0 `preflight`  checks what can be checked before anything is held: the join secret resolves on
//!                this worker and some machine in MAAS could ever match the constraints. Its
//!                compensation is the clean-up of the whole workflow: every machine whose owner data
//!                names this workflow loses its Node (cordoned, deleted) and is released.
//! 1 `provision`  a reconciler over `deploy-machine` children, one per attempt and each on exactly
//!                one machine: it starts the next attempt, with every machine's failures so far,
//!                until one deploys, and fails once more deployments failed than `failure_budget`.
//! 2 `join`       waits without holding a worker for the Node named after the machine to register,
//!                turn Ready and be marked `kubevirt.io/schedulable=true` by virt-handler, up to
//!                `join_timeout_secs` after the deployment; then reports the machine, the node,
//!                every attempt with its reason, and the durations.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::ports::kube::KubeError;
use drover_workflows::ports::maas::{HostNetwork, MachineFilter, status};
use drover_workflows::ports::secrets::SecretRef;
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cloud_init::{self, Taint};
use crate::deploy_machine::{self, Attempt, DeployMachine};
use crate::machines::{
    self, Constraints, Erase, OWNER_WORKFLOW, default_allocate_timeout_secs, default_broken_after,
    default_deploy_timeout_secs, default_failure_budget, default_join_timeout_secs,
    default_maas_limit, default_maas_poll_ms, maas_retry,
};

/// The `provision-node` kind.
pub struct ProvisionNode;

/// Input of `provision-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Which machine: pool, zone, tags, not_tags, minimum cpu_count and memory_mib.
    #[serde(default)]
    pub constraints: Constraints,
    /// The image: `jammy`, `ubuntu/noble`, `custom/<name>`; MAAS's default when absent.
    #[serde(default)]
    pub distro_series: Option<String>,
    #[serde(default)]
    pub hwe_kernel: Option<String>,
    /// The cluster's join command (`kubeadm join ...`), by secret reference.
    pub join: SecretRef,
    /// Labels and taints the node registers with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// The host network to build before deploying (bond, bridge, VLANs).
    #[serde(default)]
    pub network: Option<HostNetwork>,
    /// A deployment not done after this long is aborted and counted as failed.
    #[serde(default = "default_deploy_timeout_secs")]
    pub deploy_timeout_secs: u64,
    /// The Node must be Ready and schedulable for VMs this long after its machine deployed.
    #[serde(default = "default_join_timeout_secs")]
    pub join_timeout_secs: u64,
    /// How long an attempt waits for a free machine matching the constraints.
    #[serde(default = "default_allocate_timeout_secs")]
    pub allocate_timeout_secs: u64,
    /// Failed deployments tolerated (each on some machine) before the workflow fails.
    #[serde(default = "default_failure_budget")]
    pub failure_budget: u32,
    /// A machine is marked broken when a deployment on it failed this many times.
    #[serde(default = "default_broken_after")]
    pub broken_after: u32,
    /// Machines deploying at once across all of Drover (the `maas-deployments` semaphore).
    #[serde(default = "default_maas_limit")]
    pub maas_limit: u32,
    #[serde(default = "default_maas_poll_ms")]
    pub poll_ms: u64,
}

impl Input {
    pub fn check(&self) -> Result<(), String> {
        self.constraints.check()?;
        cloud_init::check(&self.labels, &self.taints)?;
        if self.broken_after == 0 {
            return Err("broken_after must be at least 1".into());
        }
        if self.maas_limit == 0 {
            return Err("maas_limit must be at least 1".into());
        }
        if self.failure_budget > 100 {
            return Err("failure_budget is at most 100".into());
        }
        if self.deploy_timeout_secs == 0 || self.join_timeout_secs == 0 {
            return Err("deploy_timeout_secs and join_timeout_secs must be at least 1".into());
        }
        if !(10..=600_000).contains(&self.poll_ms) {
            return Err("poll_ms must be between 10 and 600000".into());
        }
        Ok(())
    }
}

/// `preflight`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preflight {
    pub started_ms: u64,
    /// Machines in MAAS matching the constraints, in any state.
    pub candidates: usize,
}

/// `provision`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provisioned {
    pub system_id: String,
    pub hostname: String,
    pub deployed_ms: u64,
    pub attempts: Vec<Attempt>,
}

impl Kind for ProvisionNode {
    const NAME: &'static str = "provision-node";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        i.check()
    }

    fn descendants(i: &Input) -> u64 {
        u64::from(i.failure_budget) + 1
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("preflight", |ctx| Box::pin(preflight(ctx)))
                .compensate(|ctx| Box::pin(clean_up(ctx))),
            Step::new("provision", |ctx| Box::pin(provision(ctx))),
            Step::new("join", |ctx| Box::pin(join(ctx))),
        ]
        .into_iter()
        .map(|s| s.retry(maas_retry()))
        .collect()
    }
}

async fn preflight(ctx: &Ctx<'_, ProvisionNode>) -> StepResult {
    let maas = ctx.maas()?;
    ctx.kube()?;
    let c = &ctx.input.constraints;
    // The secret is resolved here only to know it exists; its value goes nowhere.
    ctx.secret(&ctx.input.join).await?;
    let filter = MachineFilter {
        pool: c.pool.clone(),
        zone: c.zone.clone(),
        tags: c.tags.clone(),
        ..MachineFilter::default()
    };
    let candidates = maas
        .list_machines(&filter)
        .await?
        .into_iter()
        .filter(|m| {
            !m.tags.iter().any(|t| c.not_tags.contains(t))
                && c.cpu_count.is_none_or(|n| m.cpu_count >= n)
                && c.memory_mib.is_none_or(|n| m.memory_mib >= n)
        })
        .count();
    if candidates == 0 {
        return Err(StepError::fail(format!(
            "no machine in MAAS matches the constraints {}, in any state",
            serde_json::to_string(c).unwrap_or_default()
        )));
    }
    Ok(Outcome::Done(json!(Preflight {
        started_ms: ctx.now_ms(),
        candidates,
    })))
}

async fn provision(ctx: &Ctx<'_, ProvisionNode>) -> StepResult {
    let input = ctx.input;
    let mut attempts: Vec<Attempt> = Vec::new();
    for c in ctx.children {
        match c.state {
            State::Succeeded => {
                let a: Attempt = c
                    .result
                    .clone()
                    .and_then(|r| serde_json::from_value(r).ok())
                    .ok_or_else(|| {
                        StepError::fail(format!("attempt {} has an unreadable result", c.id))
                    })?;
                attempts.push(a);
            }
            _ => {
                return Err(StepError::fail(format!(
                    "attempt {} {}: {}",
                    attempts.len() + 1,
                    c.state.as_str(),
                    c.error.as_deref().unwrap_or("no reason given")
                )));
            }
        }
    }
    if let Some(ok) = attempts.iter().find(|a| a.deployed) {
        return Ok(Outcome::Done(json!(Provisioned {
            system_id: ok.system_id.clone(),
            hostname: ok.hostname.clone(),
            deployed_ms: ok.ended_ms,
            attempts: attempts.clone(),
        })));
    }
    if attempts.len() as u32 > input.failure_budget {
        let reasons: Vec<String> = attempts
            .iter()
            .map(|a| {
                format!(
                    "{} ({}): {}",
                    a.hostname,
                    a.system_id,
                    a.reason.as_deref().unwrap_or("?")
                )
            })
            .collect();
        return Err(StepError::fail(format!(
            "{} deployments failed, over the failure budget of {}: {}",
            attempts.len(),
            input.failure_budget,
            reasons.join("; ")
        )));
    }
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    for a in &attempts {
        *failures.entry(a.system_id.clone()).or_default() += 1;
    }
    let child = deploy_machine::Input {
        provision: ctx.workflow_id.to_string(),
        attempt: attempts.len() as u32 + 1,
        constraints: input.constraints.clone(),
        distro_series: input.distro_series.clone(),
        hwe_kernel: input.hwe_kernel.clone(),
        join: input.join.clone(),
        labels: input.labels.clone(),
        taints: input.taints.clone(),
        network: input.network.clone(),
        deploy_timeout_secs: input.deploy_timeout_secs,
        allocate_timeout_secs: input.allocate_timeout_secs,
        failures,
        broken_after: input.broken_after,
        maas_limit: input.maas_limit,
        poll_ms: input.poll_ms,
        started_ms: ctx.now_ms(),
    };
    Ok(Outcome::Spawn {
        children: vec![ChildSpec::of::<DeployMachine>(&child)],
        join: JoinPolicy::All,
    })
}

async fn join(ctx: &Ctx<'_, ProvisionNode>) -> StepResult {
    let kube = ctx.kube()?;
    let input = ctx.input;
    let pre: Preflight = ctx.output("preflight")?;
    let p: Provisioned = ctx.output("provision")?;
    let now = ctx.now_ms();
    let waited = now.saturating_sub(p.deployed_ms);
    let (registered, ready, schedulable) = match kube.get_node(&p.hostname).await {
        Ok(n) => (
            true,
            n.ready,
            n.labels.get("kubevirt.io/schedulable").map(String::as_str) == Some("true"),
        ),
        Err(KubeError::NotFound(_)) => (false, false, false),
        Err(e) => return Err(e.into()),
    };
    if !(registered && ready && schedulable) {
        if waited >= input.join_timeout_secs * 1000 {
            let lacks = if !registered {
                "never registered"
            } else if !ready {
                "is not Ready"
            } else {
                "has no virt-handler (kubevirt.io/schedulable is not true)"
            };
            return Err(StepError::fail(format!(
                "node {} {lacks} {} s after its machine {} deployed",
                p.hostname,
                waited / 1000,
                p.system_id
            )));
        }
        return Ok(Outcome::Poll {
            after: Duration::from_millis(input.poll_ms),
            progress: Some(json!({
                "node": p.hostname,
                "registered": registered,
                "ready": ready,
                "schedulable": schedulable,
                "waited_s": waited / 1000,
            })),
        });
    }
    let failed = p.attempts.iter().filter(|a| !a.deployed).count();
    let deploy_ms = p
        .attempts
        .iter()
        .find(|a| a.deployed)
        .map_or(0, |a| a.deploy_ms);
    Ok(Outcome::Done(json!({
        "machine": {"system_id": p.system_id, "hostname": p.hostname},
        "node": p.hostname,
        "attempts": p.attempts,
        "failed_deployments": failed,
        "durations_ms": {
            "total": now.saturating_sub(pre.started_ms),
            "provision": p.deployed_ms.saturating_sub(pre.started_ms),
            "deploy": deploy_ms,
            "join": waited,
        },
    })))
}

/// The workflow's clean-up: the machine it deployed and any other machine still carrying its name
/// lose their Node and go back to MAAS (quick erase: nothing was stored on them yet).
async fn clean_up(ctx: &Ctx<'_, ProvisionNode>) -> StepResult {
    let maas = ctx.maas()?;
    let kube = ctx.kube()?;
    let filter = MachineFilter {
        owner_data: BTreeMap::from([(OWNER_WORKFLOW.to_string(), ctx.workflow_id.to_string())]),
        ..MachineFilter::default()
    };
    // Only machines that still carry this workflow's name: one released earlier may be someone
    // else's by now, and so may a Node of its hostname.
    let held: Vec<(String, String)> = maas
        .list_machines(&filter)
        .await?
        .into_iter()
        .filter(|m| m.status != status::BROKEN)
        .map(|m| (m.system_id, m.hostname))
        .collect();
    let comment = format!("drover: provisioning {} undone", ctx.workflow_id);
    for (system_id, hostname) in &held {
        machines::remove_node(kube, hostname).await?;
        machines::release(maas, system_id, Erase::Quick, comment.clone()).await?;
    }
    Ok(Outcome::Done(json!({
        "released": held.iter().map(|(s, _)| s).collect::<Vec<_>>(),
    })))
}
