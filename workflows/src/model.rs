//! The data model shared by the engine core, the store, the worker and the API: workflow states, step
//! outcomes, retry policies, permits and the transitions the store applies atomically.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The lifecycle state of a workflow, as stored and as shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Submitted; no step has been claimed yet.
    Pending,
    /// A step is leased by a worker or ready to be claimed.
    Running,
    /// Durably waiting: a poll or retry delay, a signal, child workflows or a semaphore.
    Waiting,
    /// Running the compensations of completed steps after a failure or a cancellation.
    Compensating,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Running,
        State::Waiting,
        State::Compensating,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Waiting => "waiting",
            State::Compensating => "compensating",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
}

/// What one run of a step (or of a compensation) returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step reached its goal; its output is stored and the next step is scheduled.
    Done(Value),
    /// Not there yet: run the step again after `after`, without holding a worker meanwhile. `progress`
    /// is shown in the workflow's status.
    Poll {
        after: Duration,
        progress: Option<Value>,
    },
    /// A transient failure: retried with backoff under the step's retry policy.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// A failure that retrying cannot fix: compensation runs and the workflow fails.
    Fail { error: String },
    /// Start child workflows and run this step again once they have finished (or, with
    /// [`JoinPolicy::FailFast`], as soon as one fails).
    Spawn {
        children: Vec<ChildSpec>,
        join: JoinPolicy,
    },
    /// Wait durably until the named signal is delivered, then run this step again.
    WaitSignal { name: String },
    /// Pause the workflow (state `paused` in the API) until an operator resumes it, then run this
    /// step again; [`crate::StepContext::resumes`] tells the step how often it was resumed.
    Pause { reason: String },
}

/// How a step waits for the children it spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JoinPolicy {
    /// Wake the parent when every child has finished.
    #[default]
    All,
    /// Wake the parent as soon as one child fails or is cancelled.
    FailFast,
}

/// A child workflow to start from a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSpec {
    pub kind: String,
    pub input: Value,
    #[serde(default)]
    pub priority: i32,
}

/// The status of a child workflow as its parent step sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub state: State,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// When the child last changed (for one that has ended: when it ended), ms since the epoch.
    #[serde(default)]
    pub updated_ms: u64,
}

/// When a retryable step gives up and how long it waits between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Lease expiries (a worker died mid-step) count too.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction of the delay that is randomised, in both directions (0.2 = +-20%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry); `unit` is a random number in
    /// [0, 1) that spreads the delay over the jitter band.
    pub fn delay(&self, next_attempt: u32, unit: f64) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(63) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * spread).max(0.0))
    }
}

/// How long a permit is held.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Taken when the step is claimed; released by its commit or by lease expiry.
    #[default]
    Step,
    /// Taken when the step is claimed; held until the workflow ends (an exclusive lock on a node).
    Workflow,
}

/// A unit of a named counting semaphore that a step needs before it may run. A lock is a semaphore of
/// capacity 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Permit {
    pub name: String,
    pub capacity: u32,
    #[serde(default)]
    pub scope: Scope,
}

impl Permit {
    pub fn step(name: impl Into<String>, capacity: u32) -> Permit {
        Permit {
            name: name.into(),
            capacity,
            scope: Scope::Step,
        }
    }

    pub fn lock(name: impl Into<String>) -> Permit {
        Permit {
            name: name.into(),
            capacity: 1,
            scope: Scope::Workflow,
        }
    }

    /// The permit as a workflow of `cluster` takes it: semaphores and locks are per cluster, so a
    /// workflow that names a cluster takes `<cluster>/<name>` (a node lock of `worker-01` in two
    /// clusters is two locks; "5 migrations per cluster" is five in each). A workflow that names no
    /// cluster (the one `[kube]` cluster) takes the name as it is.
    pub fn in_cluster(self, cluster: Option<&str>) -> Permit {
        match cluster {
            Some(c) => Permit {
                name: format!("{c}/{}", self.name),
                ..self
            },
            None => self,
        }
    }
}

/// Whether a task runs a step forward or compensates a completed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Forward,
    Compensate,
}

/// Why compensation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Failed,
    Cancelled,
}

/// The runnable unit the queue holds: one attempt of one step of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub step: usize,
    pub attempt: u32,
    pub phase: Phase,
    /// Not before this time (ms since the Unix epoch).
    pub due_ms: u64,
    pub permits: Vec<Permit>,
}

/// What a workflow record says about where it is, as read when its task was claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub state: State,
    pub step: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub cause: Option<Cause>,
    /// Indexes of the steps that completed (have an output), ascending.
    pub completed: Vec<usize>,
    pub cancel_requested: bool,
    /// The error that started a compensation, with the step it happened in.
    pub error: Option<ErrorInfo>,
}

/// Why a workflow stopped (or a step failed), as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub step: String,
    pub message: String,
}

/// What waits on the workflow after a transition, besides the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Wait {
    #[default]
    None,
    Signal {
        name: String,
    },
    Children {
        join: JoinPolicy,
    },
    /// Parked until resumed through the API.
    Pause,
}

/// The result of [`crate::decide`]: everything the store writes in one atomic commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: State,
    pub step: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub cause: Option<Cause>,
    /// Output of the step that just completed: (step index, value).
    pub output: Option<(usize, Value)>,
    /// Progress reported by a polling step.
    pub progress: Option<Value>,
    pub error: Option<ErrorInfo>,
    /// The next task to queue, if any.
    pub next: Option<Task>,
    pub wait: Wait,
    pub spawn: Vec<ChildSpec>,
    /// Outcome recorded in history for the attempt that just ended.
    pub outcome: String,
    /// Error recorded in history for the attempt that just ended.
    pub attempt_error: Option<String>,
    /// The step a `retry` resumes from, once failed.
    pub resume_from: Option<usize>,
    /// Whether this transition already acted on a pending cancellation.
    pub handles_cancel: bool,
}

impl Transition {
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// The most children one step may start; keeps every store script bounded.
pub const MAX_CHILDREN: usize = 256;

/// The default for the most workflows one top-level workflow may create, its children's children
/// included (configurable as `max_descendants`).
pub const DEFAULT_MAX_DESCENDANTS: u64 = 10_000;

/// Whether `s` has the form workflow ids take: a UUID in its canonical lowercase form (as the API
/// assigns), followed by one `.s<step>t<token>.<n>` segment per level of nesting for children. Ids
/// become parts of Redis key names, so nothing else (no `:`, no path separators, no control
/// characters) may reach the store through them.
pub fn is_workflow_id(s: &str) -> bool {
    if s.len() > 512 || s.len() < 36 || !s.is_char_boundary(36) {
        return false;
    }
    let (root, mut rest) = s.split_at(36);
    let uuid_ok = root.bytes().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    });
    if !uuid_ok {
        return false;
    }
    // Each child segment: ".s" digits "t" digits "." digits.
    fn digits(s: &str) -> Option<(&str, &str)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (1..=20).contains(&n).then(|| s.split_at(n))
    }
    while !rest.is_empty() {
        let Some(r) = rest.strip_prefix(".s") else {
            return false;
        };
        let Some((_, r)) = digits(r) else {
            return false;
        };
        let Some(r) = r.strip_prefix('t') else {
            return false;
        };
        let Some((_, r)) = digits(r) else {
            return false;
        };
        let Some(r) = r.strip_prefix('.') else {
            return false;
        };
        let Some((_, r)) = digits(r) else {
            return false;
        };
        rest = r;
    }
    true
}

/// Whether `s` is a valid name for a signal, a semaphore or a label key or value: 1-63 characters of
/// letters, digits, `-`, `_`, `.` and `/`. The API's routes and the kinds' input checks share it, so an
/// input can never name a signal that the signal route would refuse.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// What [`is_name`] accepts, for error messages.
pub const NAME_RULE: &str = "1-63 characters of letters, digits, '-', '_', '.', '/'";

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn workflow_ids_take_one_form() {
        let root = "0192f0c1-7d2e-7a4b-9c3d-0123456789ab";
        for ok in [
            root.to_string(),
            format!("{root}.s1t42.0"),
            format!("{root}.s1t42.0.s3t7.255"),
        ] {
            assert!(is_workflow_id(&ok), "{ok}");
        }
        for bad in [
            String::new(),
            format!("{root}:out"),
            format!("{root}:hist"),
            format!("{root}.s1t42"),
            format!("{root}.s1t42.0:out"),
            format!("{root}.sxt1.0"),
            format!("{root}/../x"),
            format!("{root}\0"),
            root.to_uppercase(),
            "0192f0c1x7d2e-7a4b-9c3d-0123456789ab".to_string(),
            "../../etc/passwd".to_string(),
            "é".repeat(40),
            format!("{root}{}", ".s1t1.1".repeat(80)),
        ] {
            assert!(!is_workflow_id(&bad), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_label_rule() {
        assert!(is_name("maintenance-done"));
        assert!(is_name("a/b.c_d"));
        assert!(!is_name(""));
        assert!(!is_name("with space"));
        assert!(!is_name(&"x".repeat(64)));
        assert!(!is_name("a:b"));
    }
}
