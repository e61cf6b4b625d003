//! The set of workflow kinds a process knows, looked up by name at submission and at claim, and the
//! one way a workflow is made: [`Registry::prepare`] checks a [`Submission`] (kind, input, priority,
//! labels, the descendant bound) and builds the [`NewWorkflow`] with its first task and the step
//! names it is submitted with. The API, child creation in the worker, the test harness and the
//! benchmarks all go through it; the store writes what it returns.
//!
//! A registry may also carry an [`Admission`]: the check of a prepared input against the world
//! outside (does MAAS have the pool a provisioning names?), which the API makes after `prepare`
//! accepted a submission and before anything is written. `prepare` stays pure; admission is the one
//! asynchronous check, and only the API makes it (children are built by steps from admitted
//! inputs, and the worker's registry carries none).
//!
//! The registry knows no kind of its own: `drover-kinds` fills it (`drover_kinds::builtin()`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::kind::{Loaded, Versioned, Workflow};
use crate::model::{DEFAULT_MAX_DESCENDANTS, NAME_RULE, Phase, Task, is_name};
use crate::ports::BoxFuture;
use crate::sdk::{Kind, Typed};

/// Workflow kinds by name, and the admission check submissions pass, if any.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Workflow>>,
    max_descendants: u64,
    admission: Option<Arc<dyn Admission>>,
    /// The cluster names a workflow may give (`[[clusters]]`).
    clusters: std::collections::BTreeSet<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            kinds: BTreeMap::new(),
            max_descendants: DEFAULT_MAX_DESCENDANTS,
            admission: None,
            clusters: Default::default(),
        }
    }
}

/// A check of a submission against the world outside (`drover_kinds::admission` asks MAAS about
/// constraints), given inputs [`Registry::prepare`] accepted. It reads and never writes.
pub trait Admission: Send + Sync {
    /// `Ok` when `input` (already parsed and checked for `kind`) may be submitted; a kind the check
    /// has nothing to say about passes.
    fn admit<'a>(&'a self, kind: &'a str, input: &'a Value) -> BoxFuture<'a, Result<(), Refusal>>;
}

/// Why an admission check did not pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The input asks for what the world does not have; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The check could not be made (what it asks is unreachable or failing): nothing is decided
    /// about the input, and the same submission may pass later. The message carries no secret and
    /// may carry internals, so it is for logs.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// Why a submission was refused before anything was written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("unknown workflow kind {kind:?}; known kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("invalid input for {kind}: {reason}")]
    InvalidInput { kind: String, reason: String },
    /// Something other than the input: priority, labels.
    #[error("{0}")]
    InvalidRequest(String),
}

/// A request to start a workflow: what the API receives, what a step's child is.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub kind: String,
    pub input: Value,
    /// -100..=100; higher runs first.
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// The W3C traceparent of the span submitting it (see [`NewWorkflow::trace`]).
    pub trace: Option<String>,
    /// The Kubernetes cluster it acts on, by its `[[clusters]]` name; `None`: the `[kube]` cluster.
    pub cluster: Option<String>,
}

impl Submission {
    pub fn new(kind: impl Into<String>, input: Value) -> Submission {
        Submission {
            kind: kind.into(),
            input,
            priority: 0,
            labels: BTreeMap::new(),
            trace: None,
            cluster: None,
        }
    }

    /// The cluster it acts on (see [`Submission::cluster`]).
    pub fn cluster(mut self, cluster: Option<String>) -> Submission {
        self.cluster = cluster;
        self
    }

    /// Carries the submitting span's trace context into the workflow's record.
    pub fn trace(mut self, traceparent: Option<String>) -> Submission {
        self.trace = traceparent;
        self
    }

    pub fn priority(mut self, priority: i32) -> Submission {
        self.priority = priority;
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Submission {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// A checked workflow, ready for the store to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkflow {
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// The step names it is submitted with; workers run it by these names (see [`crate::Versioned`]).
    pub steps: Vec<String>,
    pub task: Task,
    /// The W3C traceparent of the span that creates it (its submission, or the step that starts
    /// it), kept in its record so every attempt joins that trace; `None` when traces are off.
    pub trace: Option<String>,
    /// The cluster it acts on; its children act on the same one.
    pub cluster: Option<String>,
}

impl Registry {
    /// Registers a kind written with the SDK.
    pub fn register<K: Kind>(&mut self) -> &mut Registry {
        self.register_workflow(Arc::new(Typed::<K>::default()))
    }

    /// Registers a kind that implements the engine's trait directly.
    pub fn register_workflow(&mut self, workflow: Arc<dyn Workflow>) -> &mut Registry {
        self.kinds.insert(workflow.kind(), workflow);
        self
    }

    /// Each registered kind's input schema (JSON Schema), by kind.
    pub fn input_schemas(&self) -> BTreeMap<&'static str, Value> {
        self.kinds
            .iter()
            .filter_map(|(k, w)| Some((*k, w.input_schema()?)))
            .collect()
    }

    /// The cluster names submissions may give (the `[[clusters]]` entries).
    pub fn with_clusters(mut self, names: impl IntoIterator<Item = String>) -> Registry {
        self.clusters = names.into_iter().collect();
        self
    }

    /// Sets the most workflows one top-level workflow may create (0: no limit).
    pub fn with_max_descendants(mut self, max: u64) -> Registry {
        self.max_descendants = max;
        self
    }

    /// The most workflows one top-level workflow may create (0: no limit).
    pub fn max_descendants(&self) -> u64 {
        self.max_descendants
    }

    /// Sets the admission check [`Registry::admit`] makes.
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Registry {
        self.admission = Some(admission);
        self
    }

    /// Whether submissions pass an admission check.
    pub fn admits(&self) -> bool {
        self.admission.is_some()
    }

    /// The admission check of an input [`Registry::prepare`] accepted; passes when there is none.
    pub async fn admit(&self, kind: &str, input: &Value) -> Result<(), Refusal> {
        match &self.admission {
            Some(a) => a.admit(kind, input).await,
            None => Ok(()),
        }
    }

    /// The names of the kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Workflow>, Error> {
        self.kinds.get(kind).ok_or_else(|| Error::UnknownKind {
            kind: kind.to_string(),
            known: self.kinds().join(", "),
        })
    }

    /// The kind's workflow with `input` parsed and checked.
    pub fn load(&self, kind: &str, input: &Value) -> Result<Box<dyn Loaded>, Error> {
        self.get(kind)?
            .load(input)
            .map_err(|reason| Error::InvalidInput {
                kind: kind.to_string(),
                reason,
            })
    }

    /// Checks a submission and builds the workflow to write, with its first task due at `now_ms`.
    pub fn prepare(
        &self,
        id: String,
        submission: Submission,
        now_ms: u64,
    ) -> Result<NewWorkflow, Error> {
        let Submission {
            kind,
            input,
            priority,
            labels,
            trace: submission_trace,
            cluster,
        } = submission;
        if let Some(c) = &cluster
            && !self.clusters.contains(c)
        {
            return Err(Error::InvalidRequest(if self.clusters.is_empty() {
                format!(
                    "cluster {c:?}: no clusters are configured; leave cluster out to use the [kube] \
                     cluster, or add a [[clusters]] entry named {c:?}"
                )
            } else {
                format!(
                    "cluster {c:?} is not configured; the configured clusters are {}",
                    self.clusters
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        }
        if !(-100..=100).contains(&priority) {
            return Err(Error::InvalidRequest(format!(
                "priority must be within -100..=100, got {priority}"
            )));
        }
        if labels.len() > 16 {
            return Err(Error::InvalidRequest(format!(
                "at most 16 labels, got {}",
                labels.len()
            )));
        }
        if let Some((k, v)) = labels.iter().find(|(k, v)| !is_name(k) || !is_name(v)) {
            return Err(Error::InvalidRequest(format!(
                "label {k:?}={v:?}: keys and values are {NAME_RULE}"
            )));
        }
        let loaded = self.load(&kind, &input)?;
        let invalid = |reason: String| Error::InvalidInput {
            kind: kind.clone(),
            reason,
        };
        let descendants = loaded.descendants();
        if self.max_descendants > 0 && descendants > self.max_descendants {
            return Err(invalid(format!(
                "the input creates {descendants} workflows (children and their children); at most \
                 {} are allowed per workflow",
                self.max_descendants
            )));
        }
        if loaded.steps().is_empty() {
            return Err(invalid("the input yields no steps".to_string()));
        }
        // Through `Versioned`, as every later task's permits are: a cluster's are its own.
        let permits = Versioned::new(loaded.as_ref(), None)
            .in_cluster(cluster.as_deref())
            .permits(0, Phase::Forward);
        let task = crate::decide::first_task(now_ms, permits);
        let steps = loaded.steps().iter().map(|s| s.name.clone()).collect();
        Ok(NewWorkflow {
            id,
            kind,
            input,
            priority,
            labels,
            steps,
            task,
            trace: submission_trace,
            cluster,
        })
    }
}
