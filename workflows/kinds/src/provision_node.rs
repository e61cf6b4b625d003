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
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    // Machines whose NICs did not fit the host network: no later attempt takes them again.
    let mut avoid: Vec<String> = attempts
        .iter()
        .filter(|a| a.misfit)
        .map(|a| a.system_id.clone())
        .collect();
    avoid.dedup();
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
        avoid,
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

#[cfg(test)]
mod tests {
    use drover_workflows::ports::secrets::SecretError;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;
    use crate::fake::{self, FakeKube, Harness, child, node};
    use crate::fake_maas::{self, FakeMaas, Op, held, ready};
    use crate::machines::OWNER_ATTEMPT;

    const T0: u64 = 1_700_000_000_000;

    fn input() -> Value {
        json!({"join": {"secret": "join"}, "labels": {"drover.io/pool": "vm"}})
    }

    fn harness_with(input: Value, kube: FakeKube, maas: FakeMaas) -> Harness {
        Harness::new::<ProvisionNode>(input, kube)
            .with_maas(maas)
            .with_secret("join", "kubeadm join --token s3cr3t")
    }

    fn harness() -> Harness {
        let mut h = harness_with(input(), FakeKube::default(), FakeMaas::default());
        h.outputs.insert(
            "preflight".into(),
            json!(Preflight {
                started_ms: T0,
                candidates: 3,
            }),
        );
        h
    }

    fn done<T: DeserializeOwned>(outcome: Outcome) -> T {
        match outcome {
            Outcome::Done(v) => serde_json::from_value(v).expect("the output decodes"),
            other => panic!("not done: {other:?}"),
        }
    }

    fn fail(outcome: Outcome) -> String {
        match outcome {
            Outcome::Fail { error } => error,
            other => panic!("not a failure: {other:?}"),
        }
    }

    /// The one `deploy-machine` child `provision` asks for.
    fn spawned(outcome: Outcome) -> (ChildSpec, deploy_machine::Input) {
        match outcome {
            Outcome::Spawn { children, join } => {
                assert_eq!(join, JoinPolicy::All);
                assert_eq!(children.len(), 1, "{children:?}");
                let spec = children.into_iter().next().expect("one child");
                assert_eq!(spec.kind, "deploy-machine");
                let input = serde_json::from_value(spec.input.clone()).expect("a child input");
                (spec, input)
            }
            other => panic!("no spawn: {other:?}"),
        }
    }

    /// Attempt `n` on machine `system_id`, ended at `ended_ms`.
    fn attempt(n: u32, system_id: &str, deployed: bool, ended_ms: u64) -> Attempt {
        Attempt {
            attempt: n,
            system_id: system_id.into(),
            hostname: format!("host-{system_id}"),
            deployed,
            reason: (!deployed).then(|| format!("Installation failed on {system_id}")),
            broken: false,
            misfit: false,
            started_ms: T0,
            ended_ms,
            deploy_ms: 600_000,
        }
    }

    /// Drives `provision` through children that end as `ends` (the attempt, or the child's state
    /// and error), spawning each from what the step asked for.
    fn through(h: &mut Harness, ends: &[Result<Attempt, (State, &str)>]) -> Outcome {
        for (n, end) in ends.iter().enumerate() {
            let (spec, _) = spawned(h.run("provision"));
            let id = format!("wf-1.s1t{}.1", n + 1);
            let status = match end {
                Ok(a) => child(&id, &spec, State::Succeeded, Some(json!(a)), None),
                Err((state, error)) => child(&id, &spec, *state, None, Some(error)),
            };
            h.children.push(status);
        }
        h.run("provision")
    }

    #[test]
    fn provision_starts_attempt_1_with_its_start_time() {
        let h = harness();
        h.clock.set(T0 + 1_234);
        let (_, child) = spawned(h.run("provision"));
        assert_eq!(child.provision, "wf-1");
        assert_eq!(child.attempt, 1);
        assert_eq!(child.started_ms, T0 + 1_234);
        assert!(child.failures.is_empty());
        assert_eq!(child.join.name(), "join");
        assert_eq!(
            child.labels,
            BTreeMap::from([("drover.io/pool".to_string(), "vm".to_string())])
        );
        // The input's defaults, handed down.
        assert_eq!(
            (
                child.deploy_timeout_secs,
                child.allocate_timeout_secs,
                child.broken_after,
                child.maas_limit,
                child.poll_ms
            ),
            (1800, 900, 2, 10, 5000)
        );
    }

    #[test]
    fn after_failed_attempts_the_next_one_carries_every_machine_s_failures() {
        let mut h = harness();
        let ends = [
            Ok(attempt(1, "a", false, T0 + 1)),
            Ok(attempt(2, "b", false, T0 + 2)),
            Ok(attempt(3, "a", false, T0 + 3)),
        ];
        let (_, child) = spawned(through(&mut h, &ends[..1]));
        assert_eq!(child.attempt, 2);
        assert_eq!(child.failures, BTreeMap::from([("a".to_string(), 1)]));
        h.children.clear();
        let (_, child) = spawned(through(&mut h, &ends));
        assert_eq!(child.attempt, 4);
        assert_eq!(
            child.failures,
            BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
        );
    }

    #[test]
    fn a_machine_whose_nics_do_not_fit_is_avoided_by_later_attempts() {
        let mut h = harness();
        let misfit = Attempt {
            misfit: true,
            reason: Some("the host network does not fit this machine: no NIC eth2".into()),
            ..attempt(1, "a", false, T0 + 1)
        };
        let (_, child) = spawned(through(&mut h, &[Ok(misfit)]));
        assert_eq!(child.avoid, vec!["a".to_string()]);
        assert_eq!(child.failures, BTreeMap::from([("a".to_string(), 1)]));
    }

    #[test]
    fn provision_ends_with_the_machine_that_deployed() {
        let mut h = harness();
        let ends = [
            Ok(attempt(1, "a", false, T0 + 1_000)),
            Ok(attempt(2, "b", true, T0 + 900_000)),
        ];
        let p: Provisioned = done(through(&mut h, &ends));
        assert_eq!(p.system_id, "b");
        assert_eq!(p.hostname, "host-b");
        assert_eq!(p.deployed_ms, T0 + 900_000);
        assert_eq!(p.attempts.len(), 2);
        assert_eq!(
            p.attempts[0].reason.as_deref(),
            Some("Installation failed on a")
        );
    }

    #[test]
    fn provision_fails_with_every_reason_once_the_budget_is_spent() {
        let mut input = input();
        input["failure_budget"] = json!(1);
        let mut h = harness_with(input, FakeKube::default(), FakeMaas::default());
        h.outputs.insert(
            "preflight".into(),
            json!({"started_ms": T0, "candidates": 2}),
        );
        // One failure is within the budget: another attempt starts.
        let ends = [
            Ok(attempt(1, "a", false, T0 + 1)),
            Ok(attempt(2, "b", false, T0 + 2)),
        ];
        let (_, child) = spawned(through(&mut h, &ends[..1]));
        assert_eq!(child.attempt, 2);
        h.children.clear();
        let error = fail(through(&mut h, &ends));
        assert!(
            error.contains("2 deployments failed, over the failure budget of 1"),
            "{error}"
        );
        assert!(
            error.contains("host-a (a): Installation failed on a")
                && error.contains("host-b (b): Installation failed on b"),
            "{error}"
        );
    }

    #[test]
    fn a_child_that_failed_fails_the_step_with_its_error() {
        for (state, says) in [(State::Failed, "failed"), (State::Cancelled, "cancelled")] {
            let mut h = harness();
            let ends = [
                Ok(attempt(1, "a", false, T0 + 1)),
                Err((state, "no machine matches the constraints after 900 s")),
            ];
            let error = fail(through(&mut h, &ends));
            assert_eq!(
                error,
                format!("attempt 2 {says}: no machine matches the constraints after 900 s")
            );
        }
    }

    /// At `join`, with machine `a` deployed at `T0 + 1000` and the clock `waited_ms` later.
    fn at_join(kube: FakeKube, waited_ms: u64) -> Harness {
        let mut h = harness_with(input(), kube, FakeMaas::default());
        h.outputs.insert(
            "preflight".into(),
            json!(Preflight {
                started_ms: T0,
                candidates: 1,
            }),
        );
        h.outputs.insert(
            "provision".into(),
            json!(Provisioned {
                system_id: "a".into(),
                hostname: "host-a".into(),
                deployed_ms: T0 + 1_000,
                attempts: vec![
                    attempt(1, "b", false, T0 + 500),
                    attempt(2, "a", true, T0 + 1_000)
                ],
            }),
        );
        h.clock.set(T0 + 1_000 + waited_ms);
        h
    }

    #[test]
    fn join_waits_for_a_ready_node_virt_handler_marked_schedulable() {
        let mut not_ready = node("host-a");
        not_ready.ready = false;
        let mut no_handler = node("host-a");
        no_handler.labels.remove("kubevirt.io/schedulable");
        let mut not_yet = node("host-a");
        not_yet
            .labels
            .insert("kubevirt.io/schedulable".into(), "false".into());
        let cases = [
            (None, (false, false, false), "never registered"),
            (Some(not_ready), (true, false, true), "is not Ready"),
            (
                Some(no_handler),
                (true, true, false),
                "has no virt-handler (kubevirt.io/schedulable is not true)",
            ),
            (
                Some(not_yet),
                (true, true, false),
                "has no virt-handler (kubevirt.io/schedulable is not true)",
            ),
        ];
        for (n, (registered, ready, schedulable), lacks) in cases {
            let kube = n.map_or_else(FakeKube::default, |n| FakeKube::default().node(n));
            let h = at_join(kube, 899_999);
            match h.run("join") {
                Outcome::Poll { after, progress } => {
                    assert_eq!(after, Duration::from_millis(5000));
                    let p = progress.unwrap_or_default();
                    assert_eq!(p["node"], "host-a");
                    assert_eq!(
                        (&p["registered"], &p["ready"], &p["schedulable"]),
                        (&json!(registered), &json!(ready), &json!(schedulable)),
                        "{lacks}"
                    );
                    assert_eq!(p["waited_s"], 899);
                }
                other => panic!("{lacks}: {other:?}"),
            }
            // Past the timeout, the failure names what is missing.
            h.clock.set(T0 + 1_000 + 900_000);
            let error = fail(h.run("join"));
            assert_eq!(
                error,
                format!("node host-a {lacks} 900 s after its machine a deployed")
            );
            assert_eq!(h.kube.mutations(), []);
        }
    }

    #[test]
    fn join_reports_the_node_every_attempt_and_the_durations() {
        let h = at_join(FakeKube::default().node(node("host-a")), 120_000);
        let Outcome::Done(out) = h.run("join") else {
            panic!("not done");
        };
        assert_eq!(out["node"], "host-a");
        assert_eq!(
            out["machine"],
            json!({"system_id": "a", "hostname": "host-a"})
        );
        assert_eq!(out["failed_deployments"], 1);
        assert_eq!(out["attempts"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            out["durations_ms"],
            json!({"total": 121_000, "provision": 1_000, "deploy": 600_000, "join": 120_000})
        );
    }

    #[test]
    fn a_kube_error_in_join_is_classified() {
        let h = at_join(FakeKube::default(), 0);
        h.kube.fail(
            fake::Op::GetNode,
            1,
            fake::too_many_requests(Duration::from_secs(3)),
        );
        assert_eq!(
            h.run("join"),
            Outcome::Retry {
                error: "429 Too Many Requests".into(),
                after: Some(Duration::from_secs(3)),
            }
        );
    }

    #[test]
    fn clean_up_gives_back_only_what_names_this_workflow() {
        let ours = [(OWNER_WORKFLOW, "wf-1"), (OWNER_ATTEMPT, "wf-1.s1t1.1")];
        let theirs = [(OWNER_WORKFLOW, "wf-2"), (OWNER_ATTEMPT, "wf-2.s1t1.1")];
        // `b` was once ours and has been released since; `e` the region marked broken while it
        // was deployed (it keeps its owner and owner data).
        let maas = FakeMaas::default()
            .machine(held("a", status::DEPLOYED, "wf-1.s1t1.1", &ours))
            .machine(ready("b"))
            .machine(held("c", status::DEPLOYING, "wf-2.s1t1.1", &theirs))
            .machine(held("d", status::ALLOCATED, "wf-1.s1t2.1", &ours))
            .machine(held("e", status::BROKEN, "wf-1.s1t3.1", &ours));
        let kube = ["host-a", "host-b", "host-c", "host-e"]
            .into_iter()
            .fold(FakeKube::default(), |k, n| k.node(node(n)));
        let h = harness_with(input(), kube, maas);
        assert_eq!(
            h.compensate("preflight"),
            Outcome::Done(json!({"released": ["a", "d"]}))
        );
        for (id, s) in [
            ("a", status::READY),
            ("b", status::READY),
            ("c", status::DEPLOYING),
            ("d", status::READY),
            ("e", status::BROKEN),
        ] {
            assert_eq!(h.maas.get(id).status, s, "machine {id}");
        }
        assert_eq!(h.maas.get("c").owner_data.len(), 2);
        let released: Vec<fake_maas::Call> = h
            .maas
            .mutations()
            .into_iter()
            .filter(|c| c.op() == Op::Release)
            .collect();
        assert_eq!(released.len(), 2);
        for c in &released {
            let fake_maas::Call::Release { release, .. } = c else {
                unreachable!()
            };
            assert!(release.quick_erase, "{c:?}");
        }
        // Nodes: only ours are gone (a missing one, d's, is fine).
        let nodes: Vec<String> = h.kube.edit(|c| c.nodes.keys().cloned().collect());
        assert_eq!(nodes, ["host-b", "host-c", "host-e"]);
        assert_eq!(
            h.kube.mutations(),
            [
                fake::Call::SetUnschedulable {
                    node: "host-a".into(),
                    unschedulable: true
                },
                fake::Call::DeleteNode {
                    node: "host-a".into()
                },
                fake::Call::SetUnschedulable {
                    node: "host-d".into(),
                    unschedulable: true
                },
                fake::Call::DeleteNode {
                    node: "host-d".into()
                },
            ]
        );
        // Run again (a crash before its commit): nothing left to do.
        h.maas.clear_calls();
        assert_eq!(
            h.compensate("preflight"),
            Outcome::Done(json!({"released": []}))
        );
        assert_eq!(h.maas.mutations(), []);
    }

    #[test]
    fn preflight_checks_the_secret_and_that_some_machine_could_match() {
        let mut input = input();
        input["constraints"] = json!({"pool": "spare", "not_tags": ["gpu"], "cpu_count": 16});
        let maas = FakeMaas::default()
            .machine(ready("a").pool("spare").tags(&["gpu"]))
            .machine(ready("b").pool("spare").size(8, 1024))
            .machine(held("c", status::DEPLOYED, "x", &[]).pool("spare"))
            .machine(ready("d"));
        let h = harness_with(input.clone(), FakeKube::default(), maas);
        h.clock.set(T0 + 5);
        let p: Preflight = done(h.run("preflight"));
        assert_eq!((p.started_ms, p.candidates), (T0 + 5, 1));
        assert_eq!(h.maas.mutations(), []);

        h.maas.edit(|r| r.machines.remove(2));
        let error = fail(h.run("preflight"));
        assert!(
            error.contains("no machine in MAAS matches the constraints"),
            "{error}"
        );

        h.secrets.fail("join", SecretError::Unknown("join".into()));
        let error = fail(h.run("preflight"));
        assert!(error.contains("no secret named \"join\""), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        assert_eq!(h.maas.count(Op::Allocate), 0);
    }
}
