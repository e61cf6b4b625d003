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
    Allocation, Deployment, HostNetwork, Maas, MaasError, Machine, MachineFilter, failure_reason,
    status,
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
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Machines not to take (their NICs do not fit `network`): the attempt picks a Ready machine
    /// itself and allocates that one.
    #[serde(default)]
    pub avoid: Vec<String>,
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
    /// It ended because the host network does not fit the machine.
    #[serde(default)]
    pub misfit: bool,
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
    /// The host network does not fit the machine's NICs: later attempts avoid it.
    #[serde(default)]
    pub misfit: bool,
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
        if i.deploy_timeout_secs == 0 || i.allocate_timeout_secs == 0 {
            return Err("deploy_timeout_secs and allocate_timeout_secs must be at least 1".into());
        }
        if !(10..=600_000).contains(&i.poll_ms) {
            return Err("poll_ms must be between 10 and 600000".into());
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
        match allocate_avoiding(maas, allocation, &input.avoid).await {
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

/// Allocates by `allocation`, never one of `avoid`: with machines to avoid, MAAS is asked for
/// the Ready candidates and each is allocated by `system_id` in turn until one is taken (another
/// allocator may take a candidate first: MAAS then answers NoMatch for it).
async fn allocate_avoiding(
    maas: &dyn Maas,
    allocation: Allocation,
    avoid: &[String],
) -> Result<Machine, MaasError> {
    if avoid.is_empty() {
        return maas.allocate(&allocation).await;
    }
    let filter = MachineFilter {
        statuses: vec![status::READY],
        pool: allocation.pool.clone(),
        zone: allocation.zone.clone(),
        tags: allocation.tags.clone(),
        ..MachineFilter::default()
    };
    let candidates = maas.list_machines(&filter).await?;
    for m in candidates.iter().filter(|m| {
        !avoid.contains(&m.system_id)
            && m.owner.is_none()
            && !m.tags.iter().any(|t| allocation.not_tags.contains(t))
            && allocation.cpu_count.is_none_or(|n| m.cpu_count >= n)
            && allocation.memory_mib.is_none_or(|n| m.memory_mib >= n)
    }) {
        let one = Allocation {
            system_id: Some(m.system_id.clone()),
            ..allocation.clone()
        };
        match maas.allocate(&one).await {
            Err(MaasError::NoMatch(_)) => continue,
            other => return other,
        }
    }
    Err(MaasError::NoMatch(format!(
        "no Ready machine matches the constraints but the {} whose NICs do not fit the host \
         network",
        avoid.len()
    )))
}

async fn deploy(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let input = ctx.input;
    let a: Allocated = ctx.output("allocate")?;
    let machine = maas.get_machine(&a.system_id).await?;
    let done = |failed: Option<String>, misfit: bool| {
        Ok(Outcome::Done(json!(Deploying {
            deploy_started_ms: ctx.now_ms(),
            failed,
            misfit,
        })))
    };
    if machine.status != status::ALLOCATED {
        // Deploying already (a worker died after the call), or on: `wait` reads what happened.
        return done(None, false);
    }
    // Resolved before anything changes on the machine: a missing secret leaves it as it was.
    let command = ctx.secret(&input.join).await?;
    if let Some(layout) = &input.network {
        match maas.configure_network(&a.system_id, layout).await {
            Ok(_) => {}
            Err(MaasError::Permanent(misfit)) => {
                let reason = format!("the host network does not fit this machine: {misfit}");
                machines::release(maas, &a.system_id, Erase::None, comment(ctx, "release")).await?;
                return done(Some(reason), true);
            }
            Err(e) => return Err(e.into()),
        }
    }
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
        Ok(_) => done(None, false),
        // The state moved under us (a deploy whose answer was lost, an operator): `wait` decides.
        Err(MaasError::Conflict(_)) => done(None, false),
        Err(e) => Err(e.into()),
    }
}

async fn wait(ctx: &Ctx<'_, DeployMachine>) -> StepResult {
    let maas = ctx.maas()?;
    let input = ctx.input;
    let a: Allocated = ctx.output("allocate")?;
    let d: Deploying = ctx.output("deploy")?;
    let misfit = d.misfit;
    let attempt = |deployed: bool, reason: Option<String>, broken: bool| {
        let now = ctx.now_ms();
        Ok(Outcome::Done(json!(Attempt {
            attempt: input.attempt,
            system_id: a.system_id.clone(),
            hostname: a.hostname.clone(),
            deployed,
            reason,
            broken,
            misfit,
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

#[cfg(test)]
mod tests {
    use drover_workflows::ports::secrets::SecretError;
    use drover_workflows::{Phase, Scope};
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;
    use crate::fake::{FakeKube, Harness};
    use crate::fake_maas::{Call, FakeMaas, Op, USER, event, held, marked_failed, ready};

    /// The harness clock's start, and so when the parent started the attempt.
    const T0: u64 = 1_700_000_000_000;
    /// What the join secret resolves to: no output, error or progress may contain it.
    const JOIN: &str = "kubeadm join 10.0.0.1:6443 --token abcdef.s3cr3tt0ken0000";

    fn input() -> Value {
        json!({
            "provision": "prov-1", "attempt": 1, "join": {"secret": "join"},
            "labels": {"node-role.kubernetes.io/vm": ""},
            "deploy_timeout_secs": 1800, "allocate_timeout_secs": 900,
            "broken_after": 2, "maas_limit": 10, "poll_ms": 5000, "started_ms": T0,
        })
    }

    fn harness_with(input: Value, maas: FakeMaas) -> Harness {
        Harness::new::<DeployMachine>(input, FakeKube::default())
            .with_maas(maas)
            .with_secret("join", JOIN)
    }

    fn harness(maas: FakeMaas) -> Harness {
        harness_with(input(), maas)
    }

    /// The harness past `allocate` (on machine `system_id`) and, when `deploy_started_ms` is
    /// given, past `deploy` too.
    fn at(mut h: Harness, system_id: &str, deploy_started_ms: Option<u64>) -> Harness {
        h.outputs.insert(
            "allocate".into(),
            json!(Allocated {
                system_id: system_id.into(),
                hostname: format!("host-{system_id}"),
                adopted: false,
                allocated_ms: T0,
            }),
        );
        if let Some(started) = deploy_started_ms {
            h.outputs.insert(
                "deploy".into(),
                json!(Deploying {
                    deploy_started_ms: started,
                    failed: None,
                    misfit: false,
                }),
            );
        }
        h
    }

    fn done<T: DeserializeOwned>(outcome: Outcome) -> T {
        match outcome {
            Outcome::Done(v) => serde_json::from_value(v).expect("the output decodes"),
            other => panic!("not done: {other:?}"),
        }
    }

    fn owner_data() -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_WORKFLOW.to_string(), "prov-1".to_string()),
            (OWNER_ATTEMPT.to_string(), "wf-1".to_string()),
        ])
    }

    fn release_call(system_id: &str, erase: Erase, what: &str) -> Call {
        Call::Release {
            system_id: system_id.into(),
            release: erase.release(format!("drover {what}: provisioning prov-1 attempt 1")),
        }
    }

    fn quick_release(system_id: &str) -> Call {
        release_call(system_id, Erase::Quick, "release")
    }

    #[test]
    fn the_steps_hold_the_deployment_permit_from_allocate_on() {
        let h = harness(FakeMaas::default());
        let steps: Vec<(&str, bool)> = h
            .loaded()
            .steps()
            .iter()
            .map(|s| (s.name.as_str(), s.compensable))
            .collect();
        assert_eq!(
            steps,
            [
                ("begin", true),
                ("allocate", true),
                ("deploy", false),
                ("wait", false)
            ]
        );
        let permits = h.loaded().permits(1, Phase::Forward);
        assert_eq!(permits.len(), 1);
        assert_eq!(
            (
                permits[0].name.as_str(),
                permits[0].capacity,
                permits[0].scope
            ),
            ("maas-deployments", 10, Scope::Workflow)
        );
        assert!(h.loaded().permits(0, Phase::Forward).is_empty());
    }

    #[test]
    fn allocate_adopts_the_machine_held_under_its_name() {
        // A worker died after MAAS allocated `b` under this workflow's name; `c` is another
        // attempt's.
        let maas = FakeMaas::default()
            .machine(ready("a"))
            .machine(held("b", status::ALLOCATED, "wf-1", &[]))
            .machine(held("c", status::ALLOCATED, "wf-2", &[]));
        let h = harness(maas);
        let a: Allocated = done(h.run("allocate"));
        assert_eq!((a.system_id.as_str(), a.adopted), ("b", true));
        assert_eq!(a.hostname, "host-b");
        assert_eq!(h.maas.count(Op::Allocate), 0);
        assert_eq!(h.maas.get("b").owner_data, owner_data());
        assert!(h.maas.get("a").is(status::READY));
        assert!(h.maas.get("c").owner_data.is_empty());
        // Only its owner data was written.
        assert_eq!(h.maas.mutations().len(), 1);
        assert!(
            matches!(&h.maas.mutations()[0], Call::SetOwnerData { system_id, .. } if system_id == "b")
        );
    }

    #[test]
    fn allocate_takes_one_machine_by_the_constraints_and_names_it() {
        let mut input = input();
        input["constraints"] = json!({"pool": "spare", "tags": ["vmo"], "cpu_count": 8});
        let maas = FakeMaas::default()
            .machine(ready("a").tags(&["vmo"]))
            .machine(ready("b").pool("spare"))
            .machine(ready("c").pool("spare").tags(&["vmo"]));
        let h = harness_with(input, maas);
        let a: Allocated = done(h.run("allocate"));
        assert_eq!((a.system_id.as_str(), a.adopted), ("c", false));
        assert_eq!(a.allocated_ms, T0);
        let c = h.maas.get("c");
        assert!(c.is(status::ALLOCATED));
        assert_eq!(c.owner.as_deref(), Some(USER));
        assert_eq!(c.owner_data, owner_data());
        assert_eq!(h.maas.agent_name("c").as_deref(), Some("wf-1"));
        let Some(Call::Allocate(asked)) =
            h.maas.calls().into_iter().find(|c| c.op() == Op::Allocate)
        else {
            panic!("no allocate call");
        };
        assert_eq!(asked.agent_name.as_deref(), Some("wf-1"));
        assert_eq!(asked.pool.as_deref(), Some("spare"));
        assert_eq!(asked.cpu_count, Some(8));
        assert!(
            asked
                .comment
                .as_deref()
                .is_some_and(|c| c.contains("prov-1 attempt 1"))
        );

        // The commit was lost: the step runs again and finds the same machine by its name.
        let again: Allocated = done(h.run("allocate"));
        assert_eq!((again.system_id.as_str(), again.adopted), ("c", true));
        assert_eq!(h.maas.count(Op::Allocate), 1, "one allocate");
        assert!(h.maas.get("a").is(status::READY) && h.maas.get("b").is(status::READY));
    }

    #[test]
    fn machines_to_avoid_are_never_allocated() {
        // "a" is first in MAAS's order but its NICs did not fit in an earlier attempt.
        let mut input = input();
        input["avoid"] = json!(["a"]);
        let maas = FakeMaas::default().machine(ready("a")).machine(ready("b"));
        let h = harness_with(input, maas);
        let a: Allocated = done(h.run("allocate"));
        assert_eq!(a.system_id, "b");
        assert!(h.maas.get("a").is(status::READY));
        let asked: Vec<Option<String>> = h
            .maas
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Allocate(a) => Some(a.system_id),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![Some("b".to_string())], "allocated by system_id");
    }

    #[test]
    fn a_transient_error_from_allocate_retries_and_the_retry_adopts() {
        // A proxy timeout: MAAS may have acted. The fake failed the call without acting, so the
        // retry allocates; had MAAS acted, the retry would have adopted (as above).
        let h = harness(FakeMaas::default().machine(ready("a")));
        h.maas.fail(
            Op::Allocate,
            1,
            MaasError::Transient {
                message: "504 Gateway Timeout".into(),
                retry_after: None,
            },
        );
        assert!(matches!(h.run("allocate"), Outcome::Retry { error, .. } if error.contains("504")));
        let a: Allocated = done(h.run("allocate"));
        assert_eq!(a.system_id, "a");
        assert_eq!(h.maas.count(Op::Allocate), 2);
    }

    #[test]
    fn no_free_machine_polls_until_the_allocate_timeout_then_fails() {
        // The only machine matching is another workflow's.
        let maas = FakeMaas::default().machine(held("a", status::DEPLOYED, "wf-2", &[]));
        let h = harness(maas);
        for now in [T0, T0 + 899_999] {
            h.clock.set(now);
            match h.run("allocate") {
                Outcome::Poll { after, progress } => {
                    assert_eq!(after, Duration::from_millis(5000));
                    let p = progress.unwrap_or_default();
                    assert_eq!(p["waiting_for"], "a free machine", "{p}");
                }
                other => panic!("{other:?}"),
            }
        }
        h.clock.set(T0 + 900_000);
        match h.run("allocate") {
            Outcome::Fail { error } => assert!(
                error.contains("no machine matches the constraints after 900 s"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.maas.count(Op::Allocate), 3);
        assert!(h.maas.mutations().iter().all(|c| c.op() == Op::Allocate));
        assert!(h.maas.get("a").owner_data.is_empty());
    }

    #[test]
    fn deploy_renders_the_join_and_deploys_once() {
        let maas = FakeMaas::default().machine(held("a", status::ALLOCATED, "wf-1", &[]));
        let h = at(harness(maas), "a", None);
        h.clock.set(T0 + 7_000);
        let outcome = h.run("deploy");
        assert!(!format!("{outcome:?}").contains("s3cr3t"));
        let d: Deploying = done(outcome);
        assert_eq!(d.deploy_started_ms, T0 + 7_000);
        assert_eq!(d.failed, None);
        assert!(h.maas.get("a").is(status::DEPLOYING));
        // The join command reaches MAAS in the user data, and nowhere else.
        let deployment = h.maas.deployment("a").expect("deployed");
        let user_data = deployment.user_data.unwrap_or_default();
        assert!(user_data.starts_with("#cloud-config"), "{user_data}");
        assert!(user_data.contains(JOIN), "{user_data}");
        assert!(user_data.contains("--node-labels=node-role.kubernetes.io/vm="));
        assert_eq!(
            deployment.comment.as_deref(),
            Some("drover deploy: provisioning prov-1 attempt 1")
        );
        // The commit was lost: the step runs again and finds the machine deploying.
        let _: Deploying = done(h.run("deploy"));
        assert_eq!(h.maas.count(Op::Deploy), 1);
    }

    #[test]
    fn deploy_leaves_a_machine_already_deploying_or_further_alone() {
        for s in [
            status::DEPLOYING,
            status::DEPLOYED,
            status::FAILED_DEPLOYMENT,
            status::READY,
        ] {
            let maas = FakeMaas::default().machine(held("a", s, "wf-1", &[]));
            let h = at(harness(maas), "a", None);
            // Not even the secret is read.
            h.secrets.fail("join", SecretError::Unknown("join".into()));
            let d: Deploying = done(h.run("deploy"));
            assert_eq!(d.failed, None, "status {s}");
            assert_eq!(h.maas.mutations(), [], "status {s}");
            assert!(h.maas.get("a").is(s));
        }
    }

    #[test]
    fn a_conflict_from_deploy_is_left_to_wait() {
        let maas = FakeMaas::default().machine(held("a", status::ALLOCATED, "wf-1", &[]));
        let mut h = at(harness(maas), "a", None);
        h.maas.fail(
            Op::Deploy,
            1,
            MaasError::Conflict("Can't deploy a machine that is in the 'Deploying' state".into()),
        );
        let d: Deploying = done(h.advance("deploy"));
        assert_eq!(d.failed, None);
        assert_eq!(h.maas.count(Op::Deploy), 1);
        // The lost answer had started the deployment: `wait` follows it.
        h.maas.set_status("a", status::DEPLOYING);
        assert!(matches!(h.run("wait"), Outcome::Poll { .. }));
        assert_eq!(h.maas.count(Op::Deploy), 1);
    }

    #[test]
    fn a_missing_join_secret_fails_naming_it_and_no_value() {
        let maas = FakeMaas::default().machine(held("a", status::ALLOCATED, "wf-1", &[]));
        // Another secret is configured; the one the input names is not.
        let mut input = input();
        input["join"] = json!({"secret": "cluster-join"});
        let h = at(harness_with(input, maas), "a", None);
        let error = match h.run("deploy") {
            Outcome::Fail { error } => error,
            other => panic!("{other:?}"),
        };
        assert!(error.contains("\"cluster-join\""), "{error}");
        assert!(
            !error.contains("s3cr3t") && !error.contains("kubeadm"),
            "{error}"
        );
        assert_eq!(h.maas.count(Op::Deploy), 0);
        assert!(h.maas.get("a").is(status::ALLOCATED));

        // One that cannot be read for now is retried, still without a value.
        h.secrets.fail(
            "cluster-join",
            SecretError::Unavailable("\"cluster-join\" (file /run/join is not there)".into()),
        );
        match h.run("deploy") {
            Outcome::Retry { error, .. } => {
                assert!(error.contains("cluster-join"), "{error}");
                assert!(!error.contains("s3cr3t"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        // The failed workflow's compensation gives the machine back.
        assert_eq!(h.compensate("allocate"), Outcome::Done(json!({})));
        assert!(h.maas.get("a").is(status::READY));
        assert_eq!(h.maas.mutations(), [quick_release("a")]);
    }

    /// At `wait` on machine `a` (held by this attempt in `status`, with `events`), with
    /// `failures` in the input, `elapsed_ms` after the deploy call.
    fn at_wait(
        status: u32,
        events: Vec<drover_workflows::ports::maas::Event>,
        failures: Value,
        elapsed_ms: u64,
    ) -> Harness {
        let mut input = input();
        input["failures"] = failures;
        let maas = FakeMaas::default().machine(held(
            "a",
            status,
            "wf-1",
            &[(OWNER_WORKFLOW, "prov-1"), (OWNER_ATTEMPT, "wf-1")],
        ));
        maas.set_events("a", events);
        let h = at(harness_with(input, maas), "a", Some(T0 + 10_000));
        h.clock.set(T0 + 10_000 + elapsed_ms);
        h
    }

    /// The same, and runs `wait` once.
    fn wait_on(
        status: u32,
        events: Vec<drover_workflows::ports::maas::Event>,
        failures: Value,
        elapsed_ms: u64,
    ) -> (Harness, Outcome) {
        let h = at_wait(status, events, failures, elapsed_ms);
        let outcome = h.run("wait");
        (h, outcome)
    }

    #[test]
    fn wait_reports_a_deployed_machine() {
        let (h, outcome) = wait_on(status::DEPLOYED, Vec::new(), json!({}), 600_000);
        let a: Attempt = done(outcome);
        assert_eq!(
            a,
            Attempt {
                attempt: 1,
                system_id: "a".into(),
                hostname: "host-a".into(),
                deployed: true,
                reason: None,
                broken: false,
                misfit: false,
                started_ms: T0,
                ended_ms: T0 + 610_000,
                deploy_ms: 600_000,
            }
        );
        assert_eq!(h.maas.mutations(), []);
    }

    #[test]
    fn wait_polls_a_deployment_in_progress_with_its_progress() {
        let (h, outcome) = wait_on(status::DEPLOYING, Vec::new(), json!({}), 1_799_999);
        match outcome {
            Outcome::Poll { after, progress } => {
                assert_eq!(after, Duration::from_millis(5000));
                let p = progress.unwrap_or_default();
                assert_eq!(p["machine"], "host-a");
                assert_eq!(p["system_id"], "a");
                assert_eq!(p["status"], "Deploying");
                assert_eq!(p["elapsed_s"], 1799);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.maas.mutations(), []);
    }

    #[test]
    fn wait_past_the_deadline_aborts_and_releases() {
        let (h, outcome) = wait_on(status::DEPLOYING, Vec::new(), json!({}), 1_800_000);
        let a: Attempt = done(outcome);
        assert!(!a.deployed && !a.broken);
        let reason = a.reason.unwrap_or_default();
        assert!(reason.contains("not deployed within 1800 s"), "{reason}");
        assert_eq!(
            h.maas.mutations(),
            [
                Call::Abort {
                    system_id: "a".into(),
                    comment: Some("drover abort: provisioning prov-1 attempt 1".into()),
                },
                quick_release("a"),
            ]
        );
        let m = h.maas.get("a");
        assert!(m.is(status::READY) && m.owner.is_none() && m.owner_data.is_empty());
    }

    #[test]
    fn a_failed_deployment_is_released_with_a_quick_erase_and_maas_s_reason() {
        let events = vec![
            marked_failed("Installation failed (refer to the installation log)"),
            event("INFO", "Installing OS", ""),
            event("INFO", "Deployed", ""),
            marked_failed("an older failure, before the machine last deployed"),
        ];
        let (h, outcome) = wait_on(status::FAILED_DEPLOYMENT, events, json!({}), 60_000);
        let a: Attempt = done(outcome);
        assert!(!a.deployed && !a.broken);
        assert_eq!(
            a.reason.as_deref(),
            Some("Marking node failed: Installation failed (refer to the installation log)")
        );
        assert_eq!(h.maas.mutations(), [quick_release("a")]);
        assert!(h.maas.get("a").is(status::READY));
    }

    #[test]
    fn a_machine_failed_twice_in_a_row_is_marked_broken() {
        // Counted by this provisioning (its earlier attempt failed on `a`), or by MAAS's events
        // (another workflow's attempt failed on it).
        let once = vec![marked_failed("Installation failed")];
        let twice = vec![
            marked_failed("Installation failed"),
            event("INFO", "Releasing", ""),
            marked_failed("Power on failed"),
        ];
        for (events, failures) in [(once, json!({"a": 1})), (twice, json!({"b": 5}))] {
            let (h, outcome) = wait_on(status::FAILED_DEPLOYMENT, events, failures, 60_000);
            let a: Attempt = done(outcome);
            assert!(!a.deployed && a.broken);
            assert_eq!(
                a.reason.as_deref(),
                Some("Marking node failed: Installation failed")
            );
            let mutations = h.maas.mutations();
            assert_eq!(mutations.len(), 1, "{mutations:?}");
            let Call::MarkBroken { system_id, comment } = &mutations[0] else {
                panic!("{mutations:?}");
            };
            assert_eq!(system_id, "a");
            assert!(
                comment.contains("failed deployment 2 times in a row"),
                "{comment}"
            );
            let m = h.maas.get("a");
            assert!(m.is(status::BROKEN) && m.owner.is_none());
        }
    }

    #[test]
    fn a_machine_that_cannot_be_marked_broken_is_released_instead() {
        // An admin took the machine over (MAAS's 403 to mark_broken, Permanent), or someone
        // marked it broken first (409).
        for refusal in [
            MaasError::Permanent("403 You do not have permission".into()),
            MaasError::Conflict("node a is already broken".into()),
        ] {
            let h = at_wait(status::FAILED_DEPLOYMENT, Vec::new(), json!({"a": 1}), 0);
            h.maas.fail(Op::MarkBroken, 1, refusal);
            let a: Attempt = done(h.run("wait"));
            assert!(!a.deployed && !a.broken);
            let ops: Vec<Op> = h.maas.mutations().iter().map(Call::op).collect();
            assert_eq!(ops, [Op::MarkBroken, Op::Release]);
            assert!(h.maas.get("a").is(status::READY));
        }
        // A transient error is retried rather than taken for a refusal.
        let h = at_wait(status::FAILED_DEPLOYMENT, Vec::new(), json!({"a": 1}), 0);
        h.maas.fail(
            Op::MarkBroken,
            1,
            MaasError::Transient {
                message: "503".into(),
                retry_after: None,
            },
        );
        assert!(matches!(h.run("wait"), Outcome::Retry { .. }));
        assert_eq!(h.maas.count(Op::Release), 0);
        let a: Attempt = done(h.run("wait"));
        assert!(a.broken);
    }

    #[test]
    fn a_machine_given_back_before_a_crash_is_not_given_back_twice() {
        // The step released (or marked broken) and died before its commit: it runs again.
        for (s, broken) in [
            (status::READY, false),
            (status::RELEASING, false),
            (status::DISK_ERASING, false),
            (status::BROKEN, true),
        ] {
            let (h, _) = wait_on(s, vec![marked_failed("Installation failed")], json!({}), 0);
            if s != status::BROKEN {
                h.maas.edit(|r| {
                    r.machines[0].machine.owner = None;
                    r.machines[0].machine.owner_data.clear();
                });
            }
            let a: Attempt = done(h.run("wait"));
            assert!(!a.deployed, "status {s}");
            assert_eq!(a.broken, broken, "status {s}");
            let reason = a.reason.unwrap_or_default();
            assert!(
                reason.contains("machine left the deployment")
                    && reason.contains("Installation failed"),
                "{reason}"
            );
            assert_eq!(h.maas.mutations(), [], "status {s}");
        }
    }

    #[test]
    fn a_network_that_does_not_fit_gives_the_machine_back_and_ends_the_attempt() {
        let mut input = input();
        input["network"] = json!({"bond": {"name": "bond0", "nics": ["eno1", "eno2"]}});
        // The machine has no NICs of those names.
        let maas = FakeMaas::default().machine(held("a", status::ALLOCATED, "wf-1", &[]));
        let mut h = at(harness_with(input, maas), "a", None);
        let d: Deploying = done(h.advance("deploy"));
        let failed = d.failed.unwrap_or_default();
        assert!(
            failed.contains("the host network does not fit this machine")
                && failed.contains("no interface eno1"),
            "{failed}"
        );
        assert_eq!(h.maas.count(Op::Deploy), 0);
        assert_eq!(
            h.maas.mutations(),
            [release_call("a", Erase::None, "release")]
        );
        let a: Attempt = done(h.run("wait"));
        assert!(!a.deployed);
        assert_eq!(a.reason, Some(failed));
    }

    #[test]
    fn compensations_give_back_what_the_attempt_holds() {
        // Cancelled between allocate's MAAS call and its commit: begin's compensation finds the
        // machine by the attempt's name (never another attempt's).
        let maas = FakeMaas::default()
            .machine(held("a", status::ALLOCATED, "wf-1", &[]))
            .machine(held("b", status::DEPLOYING, "wf-2", &[]));
        let h = harness(maas);
        assert_eq!(
            h.compensate("begin"),
            Outcome::Done(json!({"released": ["a"]}))
        );
        assert_eq!(h.maas.mutations(), [quick_release("a")]);
        assert!(h.maas.get("b").is(status::DEPLOYING));
        // Run again, nothing more.
        h.maas.clear_calls();
        assert_eq!(
            h.compensate("begin"),
            Outcome::Done(json!({"released": []}))
        );
        assert_eq!(h.maas.mutations(), []);

        // Cancelled while deploying: allocate's compensation releases the recorded machine.
        let maas = FakeMaas::default().machine(held("a", status::DEPLOYING, "wf-1", &[]));
        let h = at(harness(maas), "a", Some(T0));
        assert_eq!(h.compensate("allocate"), Outcome::Done(json!({})));
        assert_eq!(h.compensate("allocate"), Outcome::Done(json!({})));
        assert_eq!(h.maas.mutations(), [quick_release("a")]);
    }
}
