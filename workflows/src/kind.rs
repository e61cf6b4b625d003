//! How the engine sees a workflow kind. A kind is an object-safe [`Workflow`]: given a submission's
//! input it loads a [`Loaded`] workflow (the input parsed and checked once per attempt) that lists
//! its steps, their permits, and runs them. Kinds are not written against these traits by hand: the
//! typed SDK in [`crate::sdk`] adapts a [`crate::sdk::Kind`] to them.
//!
//! [`Versioned`] runs a loaded workflow through the step names it was submitted with, so a worker of
//! a newer build continues in-flight workflows by name (see ARCHITECTURE.md, "Versioned steps").

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::{ChildStatus, Outcome, Permit, Phase, RetryPolicy};
use crate::ports::Ports;

/// A step of a workflow kind, as the engine core needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    pub name: String,
    pub retry: RetryPolicy,
    /// Whether the step declares a compensation, run in reverse order after a failure or cancellation.
    pub compensable: bool,
}

impl StepDef {
    pub fn new(name: impl Into<String>) -> StepDef {
        StepDef {
            name: name.into(),
            retry: RetryPolicy::default(),
            compensable: false,
        }
    }

    pub fn compensable(mut self) -> StepDef {
        self.compensable = true;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> StepDef {
        self.retry = retry;
        self
    }
}

/// What one run of a step sees, as the worker hands it over.
pub struct StepContext<'a> {
    pub workflow_id: &'a str,
    /// Index of the step in the workflow's step list.
    pub step: usize,
    pub attempt: u32,
    pub phase: Phase,
    /// The fencing token of this attempt's lease.
    pub token: u64,
    pub worker: &'a str,
    /// Outputs of completed steps, by step name.
    pub outputs: &'a BTreeMap<String, Value>,
    /// Signals delivered to this step, by name.
    pub signals: &'a BTreeMap<String, Value>,
    /// Children this step started, once it has started some.
    pub children: &'a [ChildStatus],
    /// How many times an operator resumed the workflow.
    pub resumes: u32,
    pub ports: &'a Ports,
    /// Where a long step reports progress while it runs (the worker stores it with the lease).
    pub live: &'a LiveProgress,
}

/// Progress a step reports while it runs, before it returns: the latest report wins. The worker
/// reads it when it renews the attempt's lease and stores it in the workflow's record, fenced by
/// the lease token, so a status query shows a conversion's bytes while they move.
#[derive(Debug, Default)]
pub struct LiveProgress {
    latest: std::sync::Mutex<(u64, Option<Value>)>,
}

impl LiveProgress {
    /// Replaces the reported progress.
    pub fn report(&self, progress: Value) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.0 += 1;
        latest.1 = Some(progress);
    }

    /// The latest report, if it is newer than `seen` (a number from an earlier call), with its number.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Value)> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match &latest.1 {
            Some(v) if latest.0 > seen => Some((latest.0, v.clone())),
            _ => None,
        }
    }
}

/// A workflow kind, as the registry holds it.
pub trait Workflow: Send + Sync {
    /// The kind's name, as submitted (`drain-node`).
    fn kind(&self) -> &'static str;

    /// The JSON Schema of the kind's input (for the API's OpenAPI document); none if unknown.
    fn input_schema(&self) -> Option<Value> {
        None
    }

    /// Parses and checks an input; the error says what to fix.
    fn load(&self, input: &Value) -> Result<Box<dyn Loaded>, String>;
}

/// A workflow kind with its input parsed and checked.
#[async_trait]
pub trait Loaded: Send + Sync {
    /// The steps, in order.
    fn steps(&self) -> &[StepDef];

    /// The most workflows this input makes the workflow create, its children's children included, as
    /// far as the input alone says (a drain's migrations depend on the cluster and are bounded when
    /// they are started). Submission refuses an input whose count exceeds the configured maximum.
    fn descendants(&self) -> u64;

    /// Permits step `step` needs before it may run in `phase`.
    fn permits(&self, step: usize, phase: Phase) -> Vec<Permit>;

    /// Runs step `ctx.step` forward.
    async fn run(&self, ctx: &StepContext<'_>) -> Outcome;

    /// Undoes step `ctx.step`; only called for steps declared compensable.
    async fn compensate(&self, ctx: &StepContext<'_>) -> Outcome;
}

/// A loaded workflow seen through the step names it was submitted with. Step indexes (the task's
/// step, the outputs' keys, history) are positions in that recorded list; each recorded name runs
/// as the step of that name in this build, wherever this build puts it. A recorded step this build
/// no longer has fails the workflow with a message that says so: no other step ever runs under its
/// index. Workflows recorded without names (submitted before names were recorded) use this build's
/// list as it is.
pub struct Versioned<'a> {
    loaded: &'a dyn Loaded,
    /// For each recorded step, its index in this build's list; `None` when the recorded list is
    /// this build's own (the common case: nothing is built or cloned per attempt then).
    map: Option<Vec<Option<usize>>>,
    steps: Cow<'a, [StepDef]>,
    /// The cluster the workflow names, whose semaphores its permits are (see [`Permit::in_cluster`]).
    cluster: Option<String>,
}

impl<'a> Versioned<'a> {
    pub fn new(loaded: &'a dyn Loaded, recorded: Option<&[String]>) -> Versioned<'a> {
        let current = loaded.steps();
        let same = |r: &[String]| {
            r.len() == current.len() && r.iter().zip(current).all(|(name, s)| &s.name == name)
        };
        let Some(recorded) = recorded.filter(|r| !r.is_empty() && !same(r)) else {
            return Versioned {
                loaded,
                map: None,
                steps: Cow::Borrowed(current),
                cluster: None,
            };
        };
        let map: Vec<Option<usize>> = recorded
            .iter()
            .map(|name| current.iter().position(|s| &s.name == name))
            .collect();
        let steps = recorded
            .iter()
            .zip(&map)
            .map(|(name, at)| match at {
                Some(i) => current[*i].clone(),
                // Kept in the list so indexes stay those of the recorded list; running it fails.
                None => StepDef::new(name.clone()),
            })
            .collect();
        Versioned {
            loaded,
            map: Some(map),
            steps: Cow::Owned(steps),
            cluster: None,
        }
    }

    /// This build's index of recorded step `step`, if this build has it.
    fn index(&self, step: usize) -> Option<usize> {
        match &self.map {
            None => (step < self.steps.len()).then_some(step),
            Some(map) => map.get(step).copied().flatten(),
        }
    }

    /// The workflow's steps, indexed as recorded.
    pub fn steps(&self) -> &[StepDef] {
        &self.steps
    }

    /// The recorded step names.
    pub fn names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.clone()).collect()
    }

    pub fn permits(&self, step: usize, phase: Phase) -> Vec<Permit> {
        match self.index(step) {
            Some(i) => self
                .loaded
                .permits(i, phase)
                .into_iter()
                .map(|p| p.in_cluster(self.cluster.as_deref()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The workflow names `cluster` (its record's `cluster`).
    pub fn in_cluster(self, cluster: Option<&str>) -> Versioned<'a> {
        Versioned {
            cluster: cluster.map(str::to_string),
            ..self
        }
    }

    /// Runs the recorded step `ctx.step` as this build's step of the same name.
    pub async fn run(&self, ctx: &StepContext<'_>) -> Outcome {
        match self.current(ctx) {
            Ok(inner) => match ctx.phase {
                Phase::Forward => self.loaded.run(&inner).await,
                Phase::Compensate => self.loaded.compensate(&inner).await,
            },
            Err(outcome) => outcome,
        }
    }

    fn current<'c>(&self, ctx: &StepContext<'c>) -> Result<StepContext<'c>, Outcome> {
        let name = self.steps.get(ctx.step).map(|s| s.name.as_str());
        match (self.index(ctx.step), name) {
            (Some(i), _) => Ok(StepContext { step: i, ..*ctx }),
            (_, Some(name)) => Err(Outcome::Fail {
                error: format!(
                    "this workflow is at step {name:?}, which this version of the kind no longer has \
                     (its steps now: {}); run a worker of the version it was submitted with, or \
                     cancel it",
                    self.loaded
                        .steps()
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            _ => Err(Outcome::Fail {
                error: format!("step {} does not exist in this workflow", ctx.step),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build whose steps are `a`, `b`, `c`; step i takes the permit `p<i>`.
    struct Build(Vec<StepDef>);

    #[async_trait]
    impl Loaded for Build {
        fn steps(&self) -> &[StepDef] {
            &self.0
        }
        fn descendants(&self) -> u64 {
            0
        }
        fn permits(&self, step: usize, _phase: Phase) -> Vec<Permit> {
            vec![Permit::step(format!("p{step}"), 1)]
        }
        async fn run(&self, _ctx: &StepContext<'_>) -> Outcome {
            Outcome::Done(Value::Null)
        }
        async fn compensate(&self, _ctx: &StepContext<'_>) -> Outcome {
            Outcome::Done(Value::Null)
        }
    }

    fn names(v: &Versioned) -> Vec<String> {
        v.steps().iter().map(|s| s.name.clone()).collect()
    }

    fn permit(v: &Versioned, step: usize) -> Option<String> {
        v.permits(step, Phase::Forward).pop().map(|p| p.name)
    }

    /// Recorded lists: none, the build's own (nothing copied), another order, a step gone.
    #[test]
    fn recorded_steps_map_to_this_build_by_name() {
        let build = Build(["a", "b", "c"].map(StepDef::new).to_vec());
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

        for recorded in [None, Some(list(&[])), Some(list(&["a", "b", "c"]))] {
            let v = Versioned::new(&build, recorded.as_deref());
            assert!(matches!(v.steps, Cow::Borrowed(_)), "{recorded:?}");
            assert_eq!(names(&v), ["a", "b", "c"]);
            assert_eq!(permit(&v, 2).as_deref(), Some("p2"));
            assert_eq!(permit(&v, 3), None);
        }

        let recorded = list(&["a", "c"]);
        let v = Versioned::new(&build, Some(&recorded));
        assert_eq!(names(&v), ["a", "c"]);
        assert_eq!(
            permit(&v, 1).as_deref(),
            Some("p2"),
            "c is the build's third step"
        );
        assert_eq!(permit(&v, 2), None);

        let recorded = list(&["a", "old", "c"]);
        let v = Versioned::new(&build, Some(&recorded));
        assert_eq!(names(&v), ["a", "old", "c"]);
        assert_eq!(permit(&v, 1), None, "a step this build lacks takes nothing");
        assert_eq!(permit(&v, 2).as_deref(), Some("p2"));
    }
}
