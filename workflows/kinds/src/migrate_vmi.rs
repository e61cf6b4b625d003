//! `migrate-vmi`: live-migrate one VMI off a node. A child of `drain-node`, one per VMI and attempt,
//! holding its permits (at most N migrations per cluster, M outbound per node) from its first step
//! to its end, so the limits hold while the migration runs in the cluster, not only while a worker
//! looks at it.
//!
//! Steps: `start` reads, and unless it finds it creates, the VirtualMachineInstanceMigration named
//! after this workflow, so a re-run finds its own instead of asking for a second (KubeVirt's webhook
//! would refuse that one while the first runs; a create that races another gets the 409 adopted by
//! the adapter). Its compensation deletes it, which makes KubeVirt abort it; `wait` watches it
//! (each run until its phase changes, at most [`WATCH_WINDOW`]) to Succeeded, or fails with
//! KubeVirt's reason.
//!
//! A child of a drain inside a maintenance window carries the window's end (`not_after_ms`): a
//! `start` that finds no migration of its own at or after it creates none and ends the workflow
//! *deferred* (`{"deferred": "window closed"}`, [`Started::Deferred`]; `wait` ends at once too),
//! which releases its permits quickly; the drain starts it again in the next window without
//! counting it as a failed try. A migration already made runs to its end whatever the time.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildStatus, Outcome, Permit, Scope, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_retry, default_cluster_limit, default_node_limit, migration_name};

/// The `migrate-vmi` kind.
pub struct MigrateVmi;

/// Input of `migrate-vmi`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// No migration is created at or after this time (Unix ms; the end of the drain's maintenance
    /// window): `start` ends the workflow deferred instead. A migration already created runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_ms: Option<i64>,
}

/// `start`'s output: the migration it made or found, or why it made none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Started {
    Migration {
        migration: String,
    },
    /// Nothing made: `not_after_ms` had passed. `wait` ends the workflow with the same.
    Deferred {
        deferred: String,
    },
}

/// Why a deferred child made no migration.
pub const WINDOW_CLOSED: &str = "window closed";

/// Whether a `migrate-vmi` child ended deferred (it made no migration because its window had
/// closed): neither moved nor a failed try.
pub fn deferred(child: &ChildStatus) -> bool {
    child.state == State::Succeeded
        && child.result.as_ref().is_some_and(|r| {
            matches!(
                serde_json::from_value::<Started>(r.clone()),
                Ok(Started::Deferred { .. })
            )
        })
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
    let kube = ctx.kube()?;
    let m = match kube.get_migration(&i.namespace, &name).await? {
        Some(ours) => ours,
        None => {
            let now = i64::try_from(ctx.now_ms()).unwrap_or(i64::MAX);
            if i.not_after_ms.is_some_and(|end| now >= end) {
                return done(&Started::Deferred {
                    deferred: WINDOW_CLOSED.into(),
                });
            }
            kube.create_migration(&i.namespace, &name, &i.vmi, &i.added_node_selector)
                .await?
        }
    };
    done(&Started::Migration { migration: m.name })
}

fn done(started: &Started) -> StepResult {
    serde_json::to_value(started)
        .map(Outcome::Done)
        .map_err(|e| StepError::fail(format!("encoding the output: {e}")))
}

async fn wait(ctx: &Ctx<'_, MigrateVmi>) -> StepResult {
    let i = ctx.input;
    if let Some(deferred @ Started::Deferred { .. }) = ctx.output_if("start")? {
        return done(&deferred);
    }
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

#[cfg(test)]
mod tests {
    use drover_workflows::ports::kube::KubeError;
    use drover_workflows::sdk::Typed;
    use drover_workflows::{Phase, Scope, State, Workflow};

    use super::*;
    use drover_workflows::ChildSpec;

    use crate::fake::{
        Call, FakeKube, Harness, Op, child, migration, node, too_many_requests, vmi,
    };

    fn input() -> Value {
        json!({
            "namespace": "ns", "vmi": "a", "source_node": "n1",
            "added_node_selector": { "kubernetes.io/hostname": "n2" },
        })
    }

    /// A cluster where VMI `a` runs on `n1`.
    fn cluster() -> FakeKube {
        FakeKube::default()
            .node(node("n1"))
            .node(node("n2"))
            .vmi(vmi("a", "n1"))
    }

    fn harness(kube: FakeKube) -> Harness {
        Harness::new::<MigrateVmi>(input(), kube)
    }

    /// The name `start` gives the migration of `harness`'s workflow.
    fn name(h: &Harness) -> String {
        migration_name(&h.workflow_id, "a")
    }

    fn create(name: &str) -> Call {
        Call::CreateMigration {
            namespace: "ns".into(),
            name: name.into(),
            vmi: "a".into(),
            selector: BTreeMap::from([("kubernetes.io/hostname".into(), "n2".into())]),
        }
    }

    fn fail_containing(outcome: &Outcome, text: &str) -> bool {
        matches!(outcome, Outcome::Fail { error } if error.contains(text))
    }

    #[test]
    fn the_input_is_checked_and_the_permits_are_held_for_the_workflow() {
        let kind = Typed::<MigrateVmi>::default();
        for (bad, says) in [
            (
                json!({"namespace": "ns", "vmi": "", "source_node": "n1"}),
                "must be set",
            ),
            (
                json!({"namespace": "ns", "vmi": "a", "source_node": "n1", "node_limit": 0}),
                "at least 1",
            ),
            (
                json!({"namespace": "ns", "vmi": "a", "source_node": "n1", "speed": 1}),
                "unknown field",
            ),
        ] {
            let error = kind.load(&bad).err().unwrap_or_default();
            assert!(error.contains(says), "{bad}: {error}");
        }
        // Children created before `wait` watched still carry poll_ms.
        let old = json!({"namespace": "ns", "vmi": "a", "source_node": "n1", "poll_ms": 500});
        assert!(kind.load(&old).is_ok());

        let h = harness(cluster());
        let steps: Vec<(&str, bool)> = h
            .loaded()
            .steps()
            .iter()
            .map(|s| (s.name.as_str(), s.compensable))
            .collect();
        assert_eq!(steps, [("start", true), ("wait", false)]);
        let permits = h.loaded().permits(0, Phase::Forward);
        let names: Vec<(&str, u32, Scope)> = permits
            .iter()
            .map(|p| (p.name.as_str(), p.capacity, p.scope))
            .collect();
        assert_eq!(
            names,
            [
                ("migrations:cluster", 5, Scope::Workflow),
                ("migrations-out:n1", 2, Scope::Workflow)
            ]
        );
        assert!(h.loaded().permits(1, Phase::Forward).is_empty());
    }

    #[test]
    fn start_creates_the_migration_named_after_the_workflow() {
        let h = harness(cluster());
        let name = name(&h);
        assert_eq!(h.run("start"), Outcome::Done(json!({ "migration": name })));
        assert_eq!(h.kube.mutations(), [create(&name)]);
        let made = h
            .kube
            .edit(|c| c.migrations.values().cloned().collect::<Vec<_>>());
        assert_eq!(made.len(), 1);
        assert_eq!(
            (made[0].vmi.as_str(), made[0].phase.as_str()),
            ("a", "Pending")
        );
        assert_eq!(made[0].source_node.as_deref(), Some("n1"));
    }

    #[test]
    fn a_rerun_of_start_finds_its_own_migration() {
        let h = harness(cluster());
        let name = name(&h);
        let first = h.run("start");
        // The worker died before the output was recorded: the step runs again.
        let second = h.run("start");
        assert_eq!(first, second);
        // The re-run reads first and finds the object it made: no second create.
        assert_eq!(h.kube.edit(|c| c.created.clone()), [name.as_str()]);
        assert!(h.kube.edit(|c| c.adopted.is_empty()));
        assert_eq!(h.kube.mutations(), [create(&name)]);
        assert_eq!(h.kube.edit(|c| c.migrations.len()), 1);
        // Another attempt of the drain is another child with its own migration.
        let mut other = harness(cluster());
        other.workflow_id = "wf-2".into();
        assert_ne!(name, migration_name(&other.workflow_id, "a"));
    }

    #[test]
    fn a_409_on_create_is_adopted_as_it_is() {
        // An earlier attempt's migration, already running: the create meets its name.
        let h = harness(cluster());
        let name = name(&h);
        let mut running = migration(&name, "a", "Running");
        running.target_node = Some("n2".into());
        let kube = cluster().migration(running.clone());
        let h = harness(kube);
        // It appeared between the read and the create (another attempt's create raced ours).
        h.kube.edit(|c| c.unseen_reads = 1);
        assert_eq!(h.run("start"), Outcome::Done(json!({ "migration": name })));
        assert!(h.kube.edit(|c| c.created.is_empty()));
        assert_eq!(h.kube.edit(|c| c.adopted.clone()), [name.as_str()]);
        let now = h
            .kube
            .edit(|c| c.migrations.values().cloned().collect::<Vec<_>>());
        assert_eq!(now, [running]);
    }

    /// KubeVirt's webhook refuses a migration of a VMI that has one in flight, before the API
    /// server would answer 409; a re-run of `start` while its migration runs finds it by reading
    /// first, and never meets the webhook.
    #[test]
    fn a_rerun_of_start_finds_its_own_migration_under_kubevirts_webhook() {
        let h = harness(cluster());
        h.kube.edit(|c| c.in_flight_webhook = true);
        let first = h.run("start");
        assert!(matches!(first, Outcome::Done(_)), "{first:?}");
        assert_eq!(h.run("start"), first);
    }

    #[test]
    fn under_kubevirts_webhook_start_finds_its_own_and_is_refused_beside_another() {
        let h = harness(cluster());
        let name = name(&h);
        for phase in ["Pending", "Running", "Succeeded", "Failed"] {
            let h = harness(cluster().migration(migration(&name, "a", phase)));
            h.kube.edit(|c| c.in_flight_webhook = true);
            assert_eq!(
                h.run("start"),
                Outcome::Done(json!({ "migration": name })),
                "{phase}"
            );
            assert!(h.kube.mutations().is_empty(), "{phase}");
        }
        // Someone else's migration of the VMI still runs: KubeVirt refuses ours, permanently.
        let h = harness(cluster().migration(migration("someone-else", "a", "Running")));
        h.kube.edit(|c| c.in_flight_webhook = true);
        let outcome = h.run("start");
        assert!(
            fail_containing(&outcome, "in-flight migration detected"),
            "{outcome:?}"
        );
    }

    #[test]
    fn start_defers_past_its_deadline_only_when_it_has_made_nothing() {
        let at = 1_700_000_000_000; // The harness's clock.
        let with_deadline = |not_after_ms: i64, kube: FakeKube| {
            let mut input = input();
            input["not_after_ms"] = json!(not_after_ms);
            Harness::new::<MigrateVmi>(input, kube)
        };
        let deferred = Outcome::Done(json!({ "deferred": "window closed" }));
        // At or past the deadline with nothing made: nothing is created, and `wait` ends at once.
        for not_after in [at, at - 1] {
            let mut h = with_deadline(not_after, cluster());
            assert_eq!(h.advance("start"), deferred, "{not_after}");
            let name = name(&h);
            assert_eq!(
                h.kube.calls(),
                [Call::GetMigration {
                    namespace: "ns".into(),
                    name,
                }]
            );
            h.kube.clear_calls();
            assert_eq!(h.run("wait"), deferred, "{not_after}");
            assert!(h.kube.calls().is_empty());
            // Nothing to abort either.
            assert_eq!(
                h.compensate("start"),
                Outcome::Done(json!({ "aborted": null }))
            );
        }
        // Before it: made as usual.
        let h = with_deadline(at + 1, cluster());
        let name = name(&h);
        assert_eq!(h.run("start"), Outcome::Done(json!({ "migration": name })));
        assert_eq!(h.kube.mutations(), [create(&name)]);
        // Made before the deadline (a re-run after it): found and watched to its end.
        let mut h = with_deadline(at, cluster().migration(migration(&name, "a", "Running")));
        assert_eq!(
            h.advance("start"),
            Outcome::Done(json!({ "migration": name }))
        );
        assert!(h.kube.mutations().is_empty());
        assert!(matches!(h.run("wait"), Outcome::Poll { .. }));
    }

    #[test]
    fn a_deferred_child_is_told_from_one_that_migrated() {
        let spec = ChildSpec::of::<MigrateVmi>(
            &drover_workflows::sdk::parse::<MigrateVmi>(&input()).expect("a valid input"),
        );
        // Without a deadline the child's input is as it was before windows.
        assert!(spec.input.get("not_after_ms").is_none());
        let ended = |state: State, result: Value| child("c", &spec, state, Some(result), None);
        let deferred = json!({ "deferred": "window closed" });
        let moved = json!({ "migration": "m", "source": "n1", "target": "n2" });
        assert!(super::deferred(&ended(State::Succeeded, deferred.clone())));
        assert!(!super::deferred(&ended(State::Succeeded, moved)));
        assert!(!super::deferred(&ended(State::Failed, deferred)));
    }

    #[test]
    fn start_turns_cluster_errors_into_outcomes() {
        let delay = Duration::from_secs(7);
        let cases = [
            (
                too_many_requests(delay),
                Outcome::Retry {
                    error: "429 Too Many Requests".into(),
                    after: Some(delay),
                },
            ),
            (
                KubeError::Transient {
                    message: "503 Service Unavailable".into(),
                    retry_after: None,
                },
                Outcome::Retry {
                    error: "503 Service Unavailable".into(),
                    after: None,
                },
            ),
            (
                KubeError::Permanent("403 forbidden".into()),
                Outcome::Fail {
                    error: "403 forbidden".into(),
                },
            ),
            (
                KubeError::NotFound("namespaces \"ns\" not found".into()),
                Outcome::Fail {
                    error: "namespaces \"ns\" not found".into(),
                },
            ),
        ];
        for (error, expected) in cases {
            let h = harness(cluster());
            h.kube.fail(Op::CreateMigration, 1, error.clone());
            assert_eq!(h.run("start"), expected, "{error:?}");
            assert!(h.kube.edit(|c| c.migrations.is_empty()));
            // The failure was for one call: the retry creates it.
            assert!(matches!(h.run("start"), Outcome::Done(_)), "{error:?}");
        }
    }

    #[test]
    fn a_429_is_retried_until_the_server_lets_the_create_through() {
        let h = harness(cluster());
        let delay = Duration::from_millis(1500);
        h.kube
            .fail(Op::CreateMigration, 2, too_many_requests(delay));
        for _ in 0..2 {
            assert!(matches!(h.run("start"), Outcome::Retry { after: Some(d), .. } if d == delay));
        }
        assert!(matches!(h.run("start"), Outcome::Done(_)));
        assert_eq!(h.kube.edit(|c| c.created.len()), 1);
    }

    #[test]
    fn start_for_a_vmi_that_is_gone_fails() {
        // KubeVirt's webhook refuses a migration of a VMI that does not exist: the child fails (it
        // does not count as moved here; see drain-node's `migrate` for what the parent does).
        let h = harness(FakeKube::default().node(node("n1")));
        let outcome = h.run("start");
        assert!(fail_containing(&outcome, "does not exist"), "{outcome:?}");
        assert!(h.kube.edit(|c| c.migrations.is_empty()));
    }

    #[test]
    fn wait_turns_each_phase_into_an_outcome() {
        let h = harness(cluster());
        let name = name(&h);
        let with = |phase: &str, target: Option<&str>, failure: Option<&str>| {
            let mut m = migration(&name, "a", phase);
            m.source_node = Some("n1".into());
            m.target_node = target.map(str::to_string);
            m.failure = failure.map(str::to_string);
            Some(m)
        };
        let cases = [
            (
                with("Pending", None, None),
                Outcome::Poll {
                    after: Duration::ZERO,
                    progress: Some(json!({ "phase": "Pending", "target": null })),
                },
            ),
            (
                with("Running", Some("n2"), None),
                Outcome::Poll {
                    after: Duration::ZERO,
                    progress: Some(json!({ "phase": "Running", "target": "n2" })),
                },
            ),
            (
                with("Succeeded", Some("n2"), None),
                Outcome::Done(json!({ "migration": name, "source": "n1", "target": "n2" })),
            ),
            (
                with("Failed", Some("n2"), Some("target pod failed")),
                Outcome::Fail {
                    error: format!("migration {name} of ns/a failed: target pod failed"),
                },
            ),
            (
                with("Failed", None, None),
                Outcome::Fail {
                    error: format!("migration {name} of ns/a failed: no reason given"),
                },
            ),
            (
                None,
                Outcome::Fail {
                    error: format!("migration {name} disappeared"),
                },
            ),
        ];
        for (m, expected) in cases {
            let kube = match &m {
                Some(m) => cluster().migration(m.clone()),
                None => cluster(),
            };
            let h = harness(kube);
            assert_eq!(h.run("wait"), expected, "{m:?}");
            assert_eq!(
                h.kube.calls(),
                [Call::WatchMigration {
                    namespace: "ns".into(),
                    name: name.clone(),
                    timeout: WATCH_WINDOW,
                }]
            );
            assert!(h.kube.mutations().is_empty());
        }
    }

    #[test]
    fn wait_follows_the_migration_the_cluster_moves_on() {
        let mut h = harness(cluster());
        let name = name(&h);
        assert!(matches!(h.advance("start"), Outcome::Done(_)));
        let set = |h: &Harness, phase: &str| {
            h.kube.edit(|c| {
                let m = c.migrations.values_mut().next().expect("the migration");
                m.phase = phase.into();
                m.target_node = Some("n2".into());
            })
        };
        assert!(matches!(h.run("wait"), Outcome::Poll { .. }));
        set(&h, "Scheduling");
        assert!(
            matches!(h.run("wait"), Outcome::Poll { progress: Some(p), .. } if p["phase"] == "Scheduling")
        );
        set(&h, "Succeeded");
        assert_eq!(
            h.run("wait"),
            Outcome::Done(json!({ "migration": name, "source": "n1", "target": "n2" }))
        );
    }

    #[test]
    fn a_429_while_waiting_is_retried_with_the_servers_delay() {
        let h = harness(cluster());
        let kube = cluster().migration(migration(&name(&h), "a", "Running"));
        let h = harness(kube);
        h.kube.fail(
            Op::WatchMigration,
            1,
            too_many_requests(Duration::from_secs(3)),
        );
        assert_eq!(
            h.run("wait"),
            Outcome::Retry {
                error: "429 Too Many Requests".into(),
                after: Some(Duration::from_secs(3)),
            }
        );
        assert!(matches!(h.run("wait"), Outcome::Poll { .. }));
    }

    #[test]
    fn the_compensation_of_start_deletes_only_a_migration_still_running() {
        let h = harness(cluster());
        let name = name(&h);
        let delete = Call::DeleteMigration {
            namespace: "ns".into(),
            name: name.clone(),
        };
        let cases = [
            (
                Some("Pending"),
                json!({ "aborted": name }),
                vec![delete.clone()],
            ),
            (Some("Running"), json!({ "aborted": name }), vec![delete]),
            (Some("Succeeded"), json!({ "aborted": null }), vec![]),
            (Some("Failed"), json!({ "aborted": null }), vec![]),
            (None, json!({ "aborted": null }), vec![]),
        ];
        for (phase, output, mutations) in cases {
            let kube = match phase {
                Some(p) => cluster().migration(migration(&name, "a", p)),
                None => cluster(),
            };
            let h = harness(kube);
            assert_eq!(h.compensate("start"), Outcome::Done(output), "{phase:?}");
            assert_eq!(h.kube.mutations(), mutations, "{phase:?}");
            let left = h.kube.edit(|c| c.migrations.len());
            let finished = matches!(phase, Some("Succeeded" | "Failed"));
            assert_eq!(left, usize::from(finished), "{phase:?}");
        }
    }

    #[test]
    fn the_compensation_of_start_is_idempotent_and_retries_the_cluster() {
        let mut h = harness(cluster());
        let name = name(&h);
        assert!(matches!(h.advance("start"), Outcome::Done(_)));
        h.kube.clear_calls();
        // A 429 on the read, then on the delete: retried, nothing deleted meanwhile.
        h.kube.fail(
            Op::GetMigration,
            1,
            too_many_requests(Duration::from_secs(2)),
        );
        assert!(
            matches!(h.compensate("start"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2))
        );
        h.kube.fail(
            Op::DeleteMigration,
            1,
            too_many_requests(Duration::from_secs(4)),
        );
        assert!(
            matches!(h.compensate("start"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(4))
        );
        assert_eq!(h.kube.edit(|c| c.migrations.len()), 1);
        assert_eq!(
            h.compensate("start"),
            Outcome::Done(json!({ "aborted": name }))
        );
        // Run again (the worker died before recording it): the migration is gone, nothing to do.
        assert_eq!(
            h.compensate("start"),
            Outcome::Done(json!({ "aborted": null }))
        );
        let deletes = h
            .kube
            .mutations()
            .into_iter()
            .filter(|c| matches!(c, Call::DeleteMigration { .. }))
            .count();
        assert_eq!(
            deletes, 2,
            "the failed delete and the one that went through"
        );
        // `wait` can never have run: the compensation leaves a workflow with nothing to wait for.
        assert!(fail_containing(&h.run("wait"), "disappeared"));
    }

    #[test]
    fn without_a_cluster_the_steps_say_what_to_configure() {
        let h = harness(cluster()).without_kube();
        for outcome in [h.run("start"), h.run("wait"), h.compensate("start")] {
            assert!(fail_containing(&outcome, "configure [kube]"), "{outcome:?}");
        }
        assert!(h.kube.calls().is_empty());
    }
}
