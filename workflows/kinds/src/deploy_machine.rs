//! `deploy-machine`: one deployment attempt of `provision-node`, on exactly one machine. The parent
//! starts one per attempt; a failed deployment ends this workflow successfully with
//! `deployed: false` and the reason, after it gave the machine back, so the parent can try another.
//! It fails only when retrying elsewhere cannot help (MAAS refused the constraints, the join secret
//! is missing).
//!
//! 0 `begin`     nothing forward; its compensation releases any machine allocated under this
//!               workflow's name, so a cancel that lands between `allocate`'s MAAS call and its
//!               commit still gives the machine back.
//! 1 `allocate`  adopts the machine MAAS already holds under this workflow's `agent_name` (a worker
//!               died after allocating), else allocates one by the constraints (waiting, up to
//!               `allocate_timeout_secs`, while none is free), then writes owner data naming the
//!               provisioning workflow and this attempt. Holds the `maas-deployments` permit from
//!               here to the end.
//! 2 `deploy`    a machine already deploying (or further) is not deployed again; else the host
//!               network is configured (a layout that does not fit this machine's NICs gives the
//!               machine back and ends the attempt) and the machine deployed with the cloud-init
//!               user data that joins the cluster (the join command is resolved from its secret
//!               here and never stored).
//! 3 `wait`      polls MAAS without holding a worker until Deployed. On Failed deployment it records
//!               MAAS's reason (from the machine's events) and releases the machine with a quick
//!               erase, or marks it broken when it has now failed `broken_after` times; past
//!               `deploy_timeout_secs` it aborts the deployment and releases the machine.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::Outcome;
use drover_workflows::ports::maas::{
    Deployment, HostNetwork, MaasError, Machine, MachineFilter, failure_reason, status,
};
use drover_workflows::ports::secrets::SecretRef;
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cloud_init::{self, Join, Taint};
use crate::machines::{
    self, Constraints, Erase, OWNER_ATTEMPT, OWNER_WORKFLOW, deploy_permit, maas_retry,
};

/// The `deploy-machine` kind.
pub struct DeployMachine;

/// Input of `deploy-machine` (written by `provision-node`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The provisioning workflow this attempt serves (owner data on the machine).
    pub provision: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub distro_series: Option<String>,
    #[serde(default)]
    pub hwe_kernel: Option<String>,
    /// The cluster's join command, by secret reference.
    pub join: SecretRef,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub network: Option<HostNetwork>,
    pub deploy_timeout_secs: u64,
    pub allocate_timeout_secs: u64,
    /// Failed deployments so far, per machine (system_id), across this provisioning's attempts.
    #[serde(default)]
    pub failures: BTreeMap<String, u32>,
    pub broken_after: u32,
    pub maas_limit: u32,
    pub poll_ms: u64,
    /// When the parent started this attempt (ms since the epoch): the allocation wait counts from it.
    pub started_ms: u64,
}

/// `allocate`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocated {
    pub system_id: String,
    pub hostname: String,
    /// Found already held under this attempt's name (a worker died after allocating).
    pub adopted: bool,
    pub allocated_ms: u64,
}

/// `deploy`'s output: the deployment started, or the attempt ended before it could.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deploying {
    pub deploy_started_ms: u64,
    /// Set when the attempt ended here (the machine was given back).
    #[serde(default)]
    pub failed: Option<String>,
}

/// The attempt's result (`wait`'s output), as `provision-node` reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub system_id: String,
    pub hostname: String,
    pub deployed: bool,
    /// Why the deployment failed (MAAS's own words), when it did.
    #[serde(default)]
    pub reason: Option<String>,
    /// The machine was marked broken rather than released.
    #[serde(default)]
    pub broken: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// From the deploy call to Deployed (or to the failure).
    #[serde(default)]
    pub deploy_ms: u64,
}

impl Kind for DeployMachine {
    const NAME: &'static str = "deploy-machine";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        i.constraints.check()?;
        cloud_init::check(&i.labels, &i.taints)?;
        if i.attempt == 0 || i.broken_after == 0 || i.maas_limit == 0 {
            return Err("attempt, broken_after and maas_limit start at 1".into());
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("begin", |_| {
                Box::pin(async { Ok(Outcome::Done(json!({}))) })
            })
            .compensate(|ctx| Box::pin(give_back_unrecorded(ctx))),
            Step::new("allocate", |ctx| Box::pin(allocate(ctx)))
                .permits(|i| vec![deploy_permit(i.maas_limit)])
                .compensate(|ctx| Box::pin(give_back(ctx))),
            Step::new("deploy", |ctx| Box::pin(deploy(ctx))),
            Step::new("wait", |ctx| Box::pin(wait(ctx))),
        ]
        .into_iter()
        .map(|s| s.retry(maas_retry()))
        .collect()
    }
}

fn comment(ctx: &Ctx<'_, DeployMachine>, what: &str) -> String {
    format!(
        "drover {what}: provisioning {} attempt {}",
        ctx.input.provision, ctx.input.attempt
    )
}

/// The machines MAAS holds under this attempt's name.
async fn held(ctx: &Ctx<'_, DeployMachine>) -> Result<Vec<Machine>, StepError> {
    let maas = ctx.maas()?;
    let filter = MachineFilter {
        agent_name: Some(ctx.workflow_id.to_string()),
        ..MachineFilter::default()
    };
    Ok(maas
        .list_machines(&filter)
        .await?
        .into_iter()
        .filter(|m| !machines::given_back(m))
        .collect())
}

async fn allocate(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let input = ctx.input;
    let mut found = held(ctx).await?;
    let adopted = !found.is_empty();
    let machine = if let Some(m) = found.pop() {
        m
    } else {
        let allocation = input
            .constraints
            .allocation(ctx.workflow_id, comment(ctx, "allocate"));
        match maas.allocate(&allocation).await {
            Ok(m) => m,
            Err(MaasError::NoMatch(message)) => {
                let waited = ctx.now_ms().saturating_sub(input.started_ms);
                if waited >= input.allocate_timeout_secs * 1000 {
                    return Err(StepError::fail(format!(
                        "no machine matches the constraints after {} s: {message}",
                        waited / 1000
                    )));
                }
                return Ok(Outcome::Poll {
                    after: Duration::from_millis(input.poll_ms),
                    progress: Some(json!({"waiting_for": "a free machine", "maas": message})),
                });
            }
            Err(e) => return Err(e.into()),
        }
    };
    let owner_data = BTreeMap::from([
        (OWNER_WORKFLOW.to_string(), Some(input.provision.clone())),
        (OWNER_ATTEMPT.to_string(), Some(ctx.workflow_id.to_string())),
    ]);
    maas.set_owner_data(&machine.system_id, &owner_data).await?;
    Ok(Outcome::Done(
        serde_json::to_value(Allocated {
            system_id: machine.system_id,
            hostname: machine.hostname,
            adopted,
            allocated_ms: ctx.now_ms(),
        })
        .map_err(|e| StepError::fail(e.to_string()))?,
    ))
}

async fn deploy(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let input = ctx.input;
    let a: Allocated = ctx.output("allocate")?;
    let machine = maas.get_machine(&a.system_id).await?;
    let done = |failed: Option<String>| {
        Ok(Outcome::Done(json!(Deploying {
            deploy_started_ms: ctx.now_ms(),
            failed,
        })))
    };
    if machine.status != status::ALLOCATED {
        // Deploying already (a worker died after the call), or on: `wait` reads what happened.
        return done(None);
    }
    if let Some(layout) = &input.network {
        match maas.configure_network(&a.system_id, layout).await {
            Ok(_) => {}
            Err(MaasError::Permanent(misfit)) => {
                let reason = format!("the host network does not fit this machine: {misfit}");
                machines::release(maas, &a.system_id, Erase::None, comment(ctx, "release")).await?;
                return done(Some(reason));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let command = ctx.secret(&input.join).await?;
    let user_data = cloud_init::render(&Join {
        command: &command,
        labels: &input.labels,
        taints: &input.taints,
    });
    let deployment = Deployment {
        distro_series: input.distro_series.clone(),
        hwe_kernel: input.hwe_kernel.clone(),
        user_data: Some(user_data),
        comment: Some(comment(ctx, "deploy")),
    };
    match maas.deploy(&a.system_id, &deployment).await {
        Ok(_) => done(None),
        // The state moved under us (a deploy whose answer was lost, an operator): `wait` decides.
        Err(MaasError::Conflict(_)) => done(None),
        Err(e) => Err(e.into()),
    }
}

async fn wait(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let input = ctx.input;
    let a: Allocated = ctx.output("allocate")?;
    let d: Deploying = ctx.output("deploy")?;
    let attempt = |deployed: bool, reason: Option<String>, broken: bool| {
        let now = ctx.now_ms();
        Ok(Outcome::Done(json!(Attempt {
            attempt: input.attempt,
            system_id: a.system_id.clone(),
            hostname: a.hostname.clone(),
            deployed,
            reason,
            broken,
            started_ms: input.started_ms,
            ended_ms: now,
            deploy_ms: now.saturating_sub(d.deploy_started_ms),
        })))
    };
    if let Some(reason) = d.failed {
        return attempt(false, Some(reason), false);
    }
    let m = maas.get_machine(&a.system_id).await?;
    let elapsed = ctx.now_ms().saturating_sub(d.deploy_started_ms);
    match m.status {
        status::DEPLOYED => attempt(true, None, false),
        status::DEPLOYING if elapsed < input.deploy_timeout_secs * 1000 => Ok(Outcome::Poll {
            after: Duration::from_millis(input.poll_ms),
            progress: Some(json!({
                "machine": a.hostname,
                "system_id": a.system_id,
                "status": m.status_name,
                "message": m.status_message,
                "elapsed_s": elapsed / 1000,
            })),
        }),
        status::DEPLOYING | status::ALLOCATED => {
            // Past the deadline (or aborted by someone): stop the deployment, give the machine back.
            if m.status == status::DEPLOYING {
                match maas.abort(&a.system_id, Some(&comment(ctx, "abort"))).await {
                    Ok(_) | Err(MaasError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            machines::release(maas, &a.system_id, Erase::Quick, comment(ctx, "release")).await?;
            let reason = if m.status == status::DEPLOYING {
                format!(
                    "not deployed within {} s (MAAS: {}: {})",
                    input.deploy_timeout_secs, m.status_name, m.status_message
                )
            } else {
                "the deployment was aborted".to_string()
            };
            attempt(false, Some(reason), false)
        }
        status::FAILED_DEPLOYMENT => {
            let events = maas.events(&a.system_id, 100).await?;
            let reason = failure_reason(&m, &events);
            // This provisioning's count, or MAAS's own record of failures in a row (other
            // workflows' attempts included), whichever is higher.
            let ours = input.failures.get(&a.system_id).copied().unwrap_or(0) + 1;
            let failed = ours.max(machines::failures_in_a_row(&events));
            if failed >= input.broken_after {
                let note =
                    format!("drover: failed deployment {failed} times in a row; last: {reason}");
                match maas.mark_broken(&a.system_id, &note).await {
                    Ok(_) => return attempt(false, Some(reason), true),
                    // Someone else acted on it; give it back as usual.
                    Err(MaasError::Conflict(_) | MaasError::Permanent(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            machines::release(maas, &a.system_id, Erase::Quick, comment(ctx, "release")).await?;
            attempt(false, Some(reason), false)
        }
        _ => {
            // Released, broken or erasing: this step gave it back before a crash, or someone else
            // took it from us. Either way the attempt is over; the events say why.
            let events = maas.events(&a.system_id, 20).await.unwrap_or_default();
            let reason = failure_reason(&m, &events);
            let broken = m.status == status::BROKEN;
            attempt(
                false,
                Some(format!(
                    "machine left the deployment ({}): {reason}",
                    m.status_name
                )),
                broken,
            )
        }
    }
}

/// `allocate`'s compensation: gives the machine back unless it is gone already.
async fn give_back(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let a: Option<Allocated> = ctx.output_if("allocate")?;
    if let Some(a) = a {
        // MAAS releases a deploying machine too (it powers it off first).
        machines::release(maas, &a.system_id, Erase::Quick, comment(ctx, "release")).await?;
    }
    Ok(Outcome::Done(json!({})))
}

/// `begin`'s compensation: machines allocated under this attempt's name that no step recorded.
async fn give_back_unrecorded(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let mut released = Vec::new();
    for m in held(ctx).await? {
        machines::release(maas, &m.system_id, Erase::Quick, comment(ctx, "release")).await?;
        released.push(m.system_id);
    }
    Ok(Outcome::Done(json!({ "released": released })))
}
