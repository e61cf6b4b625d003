//! The [`Workflow`] trait every workflow kind implements, and the [`StepContext`] a step runs with.
//! Steps are reconcilers: they read the world, act only if needed, name what they create from the
//! workflow id, and return an [`Outcome`].

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

/// What one run of a step sees.
pub struct StepContext<'a> {
    pub workflow_id: &'a str,
    pub input: &'a Value,
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
}

/// A workflow kind: its input validation, its steps and what each step does.
#[async_trait]
pub trait Workflow: Send + Sync {
    /// The kind's name, as submitted (`drain-node`).
    fn kind(&self) -> &'static str;

    /// Checks a submission's input; the error says what to fix.
    fn validate(&self, input: &Value) -> Result<(), String>;

    /// The steps, in order. May depend on the (valid) input.
    fn steps(&self, input: &Value) -> Vec<StepDef>;

    /// The most workflows this input makes the workflow create, its children's children included, as
    /// far as the input alone says (a drain's migrations depend on the cluster and are bounded when
    /// they are started). Submission refuses an input whose count exceeds the configured maximum.
    fn descendants(&self, _input: &Value) -> u64 {
        0
    }

    /// Permits the step needs before it may run. None by default.
    fn permits(&self, _step: usize, _phase: Phase, _input: &Value) -> Vec<Permit> {
        Vec::new()
    }

    /// Runs step `ctx.step` forward.
    async fn run(&self, ctx: &StepContext<'_>) -> Outcome;

    /// Undoes step `ctx.step`; only called for steps declared compensable.
    async fn compensate(&self, _ctx: &StepContext<'_>) -> Outcome {
        Outcome::Done(Value::Null)
    }
}
