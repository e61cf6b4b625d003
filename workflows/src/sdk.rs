//! The kind SDK: how a workflow kind is written. A [`Kind`] declares its name, a typed input (serde;
//! a kind's input type refuses unknown fields), any checks the type cannot express, and a table of
//! named [`Step`]s, each with its retry policy, permits, run and optional compensation. Steps are
//! reconcilers over the ports in [`Ctx`]; they return `Result<Outcome, StepError>`, and every
//! port's error converts into [`StepError`], so a step uses `?`. Reading an earlier step's output is
//! typed and by name ([`Ctx::output`]): an output that does not decode fails the step with a
//! message instead of yielding a default. Children are created from the child kind's typed input
//! ([`ChildSpec::of`]).
//!
//! A new kind on existing ports is one file with a `Kind` impl and one line in its registry
//! (`registry.register::<MyKind>()`). [`Typed`] adapts a `Kind` to the engine's [`Workflow`] trait:
//! the input is parsed once per attempt.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kind::{LiveProgress, Loaded, StepContext, StepDef, Workflow};
use crate::model::{ChildSpec, ChildStatus, Outcome, Permit, Phase, RetryPolicy};
use crate::ports::images::{ImageError, Images};
use crate::ports::kube::{Kube, KubeError};
use crate::ports::maas::{Maas, MaasError};
use crate::ports::secrets::{Secret, SecretError, SecretRef};
use crate::ports::{BoxFuture, Ports};

/// A workflow kind written with the SDK.
pub trait Kind: Send + Sync + Sized + 'static {
    /// The kind's name, as submitted (`drain-node`).
    const NAME: &'static str;
    /// The input, parsed once per attempt. Give it `#[serde(deny_unknown_fields)]`.
    type Input: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static;

    /// Checks the type cannot express; the error says what to fix.
    fn check(_input: &Self::Input) -> Result<(), String> {
        Ok(())
    }

    /// The steps, in order. May depend on the input.
    fn steps(input: &Self::Input) -> Vec<Step<Self>>;

    /// The most workflows this input creates, children's children included, as far as the input
    /// alone says. 0 by default.
    fn descendants(_input: &Self::Input) -> u64 {
        0
    }
}

/// What a step returns.
pub type StepResult = Result<Outcome, StepError>;

/// A step's function: an `async fn(&Ctx<K>) -> StepResult`, passed as `|ctx| Box::pin(f(ctx))`.
pub type StepFn<K> = for<'a> fn(&'a Ctx<'a, K>) -> BoxFuture<'a, StepResult>;

/// The permits a step needs, from the input.
pub type PermitsFn<K> = fn(&<K as Kind>::Input) -> Vec<Permit>;

/// One row of a kind's step table.
pub struct Step<K: Kind> {
    pub name: String,
    pub retry: RetryPolicy,
    /// Permits the step needs before it runs forward (compensations take none).
    pub permits: Option<PermitsFn<K>>,
    pub run: StepFn<K>,
    pub compensate: Option<StepFn<K>>,
}

impl<K: Kind> Step<K> {
    pub fn new(name: impl Into<String>, run: StepFn<K>) -> Step<K> {
        Step {
            name: name.into(),
            retry: RetryPolicy::default(),
            permits: None,
            run,
            compensate: None,
        }
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Step<K> {
        self.retry = retry;
        self
    }

    pub fn permits(mut self, permits: PermitsFn<K>) -> Step<K> {
        self.permits = Some(permits);
        self
    }

    pub fn compensate(mut self, compensate: StepFn<K>) -> Step<K> {
        self.compensate = Some(compensate);
        self
    }
}

/// Why a step did not reach its goal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// Worth retrying under the step's retry policy (after `after`, when the other side said).
    #[error("{error}")]
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help: compensation runs and the workflow fails.
    #[error("{error}")]
    Fail { error: String },
}

impl StepError {
    pub fn fail(error: impl Into<String>) -> StepError {
        StepError::Fail {
            error: error.into(),
        }
    }

    pub fn retry(error: impl Into<String>, after: Option<Duration>) -> StepError {
        StepError::Retry {
            error: error.into(),
            after,
        }
    }

    fn into_outcome(self) -> Outcome {
        match self {
            StepError::Retry { error, after } => Outcome::Retry { error, after },
            StepError::Fail { error } => Outcome::Fail { error },
        }
    }
}

impl From<KubeError> for StepError {
    fn from(e: KubeError) -> StepError {
        match e {
            KubeError::Transient {
                message,
                retry_after,
            } => StepError::Retry {
                error: message,
                after: retry_after,
            },
            KubeError::NotFound(m) | KubeError::Permanent(m) => StepError::Fail { error: m },
        }
    }
}

/// MAAS errors: Transient retries under the step's policy (after MAAS's Retry-After); the rest
/// fail the step. A step that can do better (wait for a machine to free up on `NoMatch`, read the
/// machine's state on `Conflict`) matches on the error before using `?`.
impl From<MaasError> for StepError {
    fn from(e: MaasError) -> StepError {
        match e {
            MaasError::Transient {
                message,
                retry_after,
            } => StepError::Retry {
                error: message,
                after: retry_after,
            },
            e @ (MaasError::NoMatch(_)
            | MaasError::NotFound(_)
            | MaasError::Conflict(_)
            | MaasError::Permanent(_)) => StepError::fail(e.to_string()),
        }
    }
}

/// Image errors: Transient retries; a missing or invalid image fails the step with its reason.
impl From<ImageError> for StepError {
    fn from(e: ImageError) -> StepError {
        match e {
            ImageError::Transient(m) => StepError::retry(m, None),
            e @ (ImageError::NotFound(_) | ImageError::Invalid(_)) => {
                StepError::fail(e.to_string())
            }
        }
    }
}

impl From<crate::ports::tickets::TicketError> for StepError {
    fn from(e: crate::ports::tickets::TicketError) -> StepError {
        match e {
            crate::ports::tickets::TicketError::Transient {
                message,
                retry_after,
            } => StepError::retry(message, retry_after),
            crate::ports::tickets::TicketError::Permanent(message) => StepError::fail(message),
        }
    }
}

impl From<SecretError> for StepError {
    fn from(e: SecretError) -> StepError {
        match e {
            SecretError::Unavailable(_) => StepError::retry(e.to_string(), None),
            SecretError::Unknown(_) | SecretError::Invalid(_) => StepError::fail(e.to_string()),
        }
    }
}

/// What a step of kind `K` sees.
pub struct Ctx<'a, K: Kind> {
    /// The input, parsed once for this attempt.
    pub input: &'a K::Input,
    pub workflow_id: &'a str,
    /// Index of the step in this workflow's list.
    pub step: usize,
    pub step_name: &'a str,
    pub attempt: u32,
    pub phase: Phase,
    /// The fencing token of this attempt's lease.
    pub token: u64,
    pub worker: &'a str,
    /// Children this step started, once it has started some.
    pub children: &'a [ChildStatus],
    /// How many times an operator resumed the workflow.
    pub resumes: u32,
    pub ports: &'a Ports,
    live: &'a LiveProgress,
    outputs: &'a BTreeMap<String, Value>,
    signals: &'a BTreeMap<String, Value>,
}

impl<K: Kind> Ctx<'_, K> {
    /// The output of the earlier step `step`, decoded. A step without an output yet, or one that
    /// does not decode as `T`, fails this step with a message saying which.
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepError> {
        self.output_if(step)?.ok_or_else(|| {
            StepError::fail(format!(
                "step {:?} needs the output of step {step:?}, which has none",
                self.step_name
            ))
        })
    }

    /// The output of step `step` if it has one, decoded (a compensation reads its own step's).
    pub fn output_if<T: DeserializeOwned>(&self, step: &str) -> Result<Option<T>, StepError> {
        self.outputs
            .get(step)
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| {
                    StepError::fail(format!(
                        "the output of step {step:?} does not decode as {} expects: {e}",
                        K::NAME
                    ))
                })
            })
            .transpose()
    }

    /// The payload of signal `name`, once delivered to this step.
    pub fn signal(&self, name: &str) -> Option<&Value> {
        self.signals.get(name)
    }

    /// The Kubernetes port, or a failure saying what to configure.
    pub fn kube(&self) -> Result<&dyn Kube, StepError> {
        self.ports.kube.as_deref().ok_or_else(|| match &self.ports.cluster {
            Some(c) => StepError::fail(format!(
                "this worker has no connection to cluster {c:?}; add it to [[clusters]] in the \
                 workers' config (the API's list and the workers' must agree)"
            )),
            None => StepError::fail(
                "this worker has no Kubernetes connection; configure [kube] (kubeconfig or url)",
            ),
        })
    }

    /// The MAAS port, or a failure saying what to configure.
    pub fn maas(&self) -> Result<&dyn Maas, StepError> {
        self.ports.maas.as_deref().ok_or_else(|| {
            StepError::fail(
                "this worker has no MAAS connection; configure [maas] (url and api key)",
            )
        })
    }

    /// Resolves a secret the input names, from the worker's configuration. The value never goes
    /// into an output, a log line or an error.
    pub async fn secret(&self, reference: &SecretRef) -> Result<Secret, StepError> {
        let secrets = self.ports.secrets.as_deref().ok_or_else(|| {
            StepError::fail(format!(
                "this worker has no secrets configured, and the input names secret {:?}; add it \
                 under [secrets]",
                reference.name()
            ))
        })?;
        Ok(secrets.get(reference.name()).await?)
    }

    /// The images port, or a failure saying what to configure.
    /// The schedules port (a workflow started by a schedule reads its windows and freezes), or a
    /// failure saying what is missing.
    pub fn schedules(&self) -> Result<&dyn crate::ports::schedules::Schedules, StepError> {
        self.ports.schedules.as_deref().ok_or_else(|| {
            StepError::fail("this worker cannot read schedules (no schedules port configured)")
        })
    }

    /// The ticketing port, or a failure saying what to configure.
    pub fn tickets(&self) -> Result<&dyn crate::ports::tickets::Tickets, StepError> {
        self.ports.tickets.as_deref().ok_or_else(|| {
            StepError::fail(
                "this worker has no ticketing system configured; configure [tickets.jira] or \
                 [tickets.servicenow]",
            )
        })
    }

    pub fn images(&self) -> Result<&dyn Images, StepError> {
        self.ports.images.as_deref().ok_or_else(|| {
            StepError::fail(
                "this worker has no image tools configured; configure [images] (work_dir)",
            )
        })
    }

    /// Reports progress while the step still runs (a conversion's bytes, an upload's rate). The
    /// worker stores the latest report with its next lease renewal; the step's outcome replaces it.
    pub fn report_progress(&self, progress: Value) {
        self.live.report(progress);
    }

    /// Now, from the clock port.
    pub fn now_ms(&self) -> u64 {
        self.ports.clock.now_ms()
    }
}

impl ChildSpec {
    /// A child of kind `C`, from its typed input.
    pub fn of<C: Kind>(input: &C::Input) -> ChildSpec {
        ChildSpec {
            kind: C::NAME.to_string(),
            input: serde_json::to_value(input).unwrap_or(Value::Null),
            priority: 0,
        }
    }
}

/// Adapts a [`Kind`] to the engine's [`Workflow`].
pub struct Typed<K: Kind>(PhantomData<fn() -> K>);

impl<K: Kind> Default for Typed<K> {
    fn default() -> Self {
        Typed(PhantomData)
    }
}

/// Parses `input` as `K`'s input and checks it. A parse error names where it is
/// (`constraints.cpu_count: invalid type: string "x", expected u32`).
pub fn parse<K: Kind>(input: &Value) -> Result<K::Input, String> {
    let parsed: K::Input = serde_path_to_error::deserialize(input).map_err(|e| e.to_string())?;
    K::check(&parsed)?;
    Ok(parsed)
}

impl<K: Kind> Workflow for Typed<K> {
    fn kind(&self) -> &'static str {
        K::NAME
    }

    fn input_schema(&self) -> Option<Value> {
        Some(schemars::schema_for!(K::Input).to_value())
    }

    fn load(&self, input: &Value) -> Result<Box<dyn Loaded>, String> {
        let input = parse::<K>(input)?;
        let table = K::steps(&input);
        let defs = table
            .iter()
            .map(|s| StepDef {
                name: s.name.clone(),
                retry: s.retry,
                compensable: s.compensate.is_some(),
            })
            .collect();
        Ok(Box::new(LoadedKind::<K> { input, table, defs }))
    }
}

struct LoadedKind<K: Kind> {
    input: K::Input,
    table: Vec<Step<K>>,
    defs: Vec<StepDef>,
}

impl<K: Kind> LoadedKind<K> {
    async fn call(&self, ctx: &StepContext<'_>, compensation: bool) -> Outcome {
        let Some(step) = self.table.get(ctx.step) else {
            return Outcome::Fail {
                error: format!("{} has no step {}", K::NAME, ctx.step),
            };
        };
        let f = if compensation {
            match step.compensate {
                Some(f) => f,
                None => return Outcome::Done(Value::Null),
            }
        } else {
            step.run
        };
        let typed = Ctx::<K> {
            input: &self.input,
            workflow_id: ctx.workflow_id,
            step: ctx.step,
            step_name: &step.name,
            attempt: ctx.attempt,
            phase: ctx.phase,
            token: ctx.token,
            worker: ctx.worker,
            children: ctx.children,
            resumes: ctx.resumes,
            ports: ctx.ports,
            live: ctx.live,
            outputs: ctx.outputs,
            signals: ctx.signals,
        };
        f(&typed).await.unwrap_or_else(StepError::into_outcome)
    }
}

#[async_trait]
impl<K: Kind> Loaded for LoadedKind<K> {
    fn steps(&self) -> &[StepDef] {
        &self.defs
    }

    fn descendants(&self) -> u64 {
        K::descendants(&self.input)
    }

    fn permits(&self, step: usize, phase: Phase) -> Vec<Permit> {
        match (phase, self.table.get(step).and_then(|s| s.permits)) {
            (Phase::Forward, Some(f)) => f(&self.input),
            _ => Vec::new(),
        }
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Outcome {
        self.call(ctx, false).await
    }

    async fn compensate(&self, ctx: &StepContext<'_>) -> Outcome {
        self.call(ctx, true).await
    }
}
