//! The engine core: given where a workflow is, what just happened and the time, decide the next
//! state. Pure and total: the store applies the returned [`Transition`] atomically, fenced by the
//! lease, and the same inputs always give the same transition.

use std::time::Duration;

use serde_json::Value;

use crate::kind::StepDef;
use crate::model::{
    Cause, ErrorInfo, JoinPolicy, MAX_CHILDREN, Outcome, Permit, Phase, Snapshot, State, Task,
    Transition, Wait,
};

/// What happened to the claimed task.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The step (or compensation) ran and returned this.
    Outcome(Outcome),
    /// A cancellation was requested; the forward step is not run.
    Cancel,
    /// The attempt budget is spent (attempts that died with their worker count): fail without running.
    Exhausted { error: String },
}

/// The first task of a new workflow.
pub fn first_task(now_ms: u64, permits: Vec<Permit>) -> Task {
    Task {
        step: 0,
        attempt: 1,
        phase: Phase::Forward,
        due_ms: now_ms,
        permits,
    }
}

/// The task a `retry` of a failed workflow starts with.
pub fn resume_task(step: usize, now_ms: u64, permits: Vec<Permit>) -> Task {
    Task {
        step,
        attempt: 1,
        phase: Phase::Forward,
        due_ms: now_ms,
        permits,
    }
}

/// Decides the transition after `event` on the task `snap` describes. `unit` is a random number in
/// [0, 1) for retry jitter; `permits` gives the permits of a step in a phase.
pub fn decide(
    snap: &Snapshot,
    steps: &[StepDef],
    event: Event,
    now_ms: u64,
    unit: f64,
    permits: &dyn Fn(usize, Phase) -> Vec<Permit>,
) -> Transition {
    let d = Decider {
        snap,
        steps,
        now_ms,
        unit,
        permits,
    };
    match (snap.phase, event) {
        (Phase::Forward, Event::Cancel) => {
            d.start_compensation(Cause::Cancelled, None, "cancelled")
        }
        (Phase::Compensate, Event::Cancel) => d.stay(),
        (Phase::Forward, Event::Exhausted { error }) => d.fail_forward(error, "exhausted"),
        (Phase::Compensate, Event::Exhausted { error }) => d.compensation_failed(error),
        (phase, Event::Outcome(outcome)) => d.on_outcome(phase, outcome),
    }
}

struct Decider<'a> {
    snap: &'a Snapshot,
    steps: &'a [StepDef],
    now_ms: u64,
    unit: f64,
    permits: &'a dyn Fn(usize, Phase) -> Vec<Permit>,
}

impl Decider<'_> {
    fn name(&self, step: usize) -> String {
        self.steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("step-{step}"))
    }

    fn task(&self, step: usize, attempt: u32, phase: Phase, after: Duration) -> Task {
        Task {
            step,
            attempt,
            phase,
            due_ms: self.now_ms.saturating_add(after.as_millis() as u64),
            permits: (self.permits)(step, phase),
        }
    }

    fn base(&self, state: State, outcome: &str) -> Transition {
        Transition {
            state,
            step: self.snap.step,
            attempt: self.snap.attempt,
            phase: self.snap.phase,
            cause: self.snap.cause,
            output: None,
            progress: None,
            error: self.snap.error.clone(),
            next: None,
            wait: Wait::None,
            spawn: Vec::new(),
            outcome: outcome.to_string(),
            attempt_error: None,
            resume_from: None,
            handles_cancel: false,
        }
    }

    fn waiting_state(&self, phase: Phase) -> State {
        match phase {
            Phase::Forward => State::Waiting,
            Phase::Compensate => State::Compensating,
        }
    }

    /// Re-queue the same task unchanged (a cancel that arrives during compensation).
    fn stay(&self) -> Transition {
        let mut t = self.base(State::Compensating, "requeued");
        t.next = Some(self.task(
            self.snap.step,
            self.snap.attempt,
            Phase::Compensate,
            Duration::ZERO,
        ));
        t.handles_cancel = true;
        t
    }

    fn on_outcome(&self, phase: Phase, outcome: Outcome) -> Transition {
        let step = self.snap.step;
        match outcome {
            Outcome::Done(value) => match phase {
                Phase::Forward => self.forward_done(value),
                Phase::Compensate => self.compensation_done(),
            },
            Outcome::Poll { after, progress } => {
                let mut t = self.base(self.waiting_state(phase), "poll");
                t.progress = progress;
                t.next = Some(self.task(step, self.snap.attempt, phase, after));
                t
            }
            Outcome::Retry { error, after } => {
                let policy = self.steps.get(step).map(|s| s.retry).unwrap_or_default();
                let next_attempt = self.snap.attempt + 1;
                if next_attempt > policy.max_attempts {
                    let error = format!("gave up after {} attempts: {error}", self.snap.attempt);
                    return match phase {
                        Phase::Forward => self.fail_forward(error, "retry"),
                        Phase::Compensate => self.compensation_failed(error),
                    };
                }
                let delay = after.unwrap_or_else(|| policy.delay(next_attempt, self.unit));
                let mut t = self.base(self.waiting_state(phase), "retry");
                t.attempt = next_attempt;
                t.attempt_error = Some(error);
                t.next = Some(self.task(step, next_attempt, phase, delay));
                t
            }
            Outcome::Fail { error } => match phase {
                Phase::Forward => self.fail_forward(error, "fail"),
                Phase::Compensate => self.compensation_failed(error),
            },
            Outcome::Spawn { children, join } => {
                if children.len() > MAX_CHILDREN {
                    let error = format!(
                        "step {} tried to start {} child workflows; at most {MAX_CHILDREN} may be started at once",
                        self.name(step),
                        children.len()
                    );
                    return self.fail_forward(error, "fail");
                }
                let mut t = self.base(self.waiting_state(phase), "spawn");
                t.next = Some(self.task(step, self.snap.attempt, phase, Duration::ZERO));
                if !children.is_empty() {
                    t.wait = Wait::Children { join };
                    t.spawn = children;
                }
                t
            }
            Outcome::Pause { reason } => {
                let mut t = self.base(self.waiting_state(phase), "pause");
                t.next = Some(self.task(step, self.snap.attempt, phase, Duration::ZERO));
                t.wait = Wait::Pause;
                t.progress = Some(serde_json::json!({ "paused": reason }));
                t
            }
            Outcome::WaitSignal { name } => {
                let mut t = self.base(self.waiting_state(phase), "wait-signal");
                t.next = Some(self.task(step, self.snap.attempt, phase, Duration::ZERO));
                t.wait = Wait::Signal { name };
                t
            }
        }
    }

    fn forward_done(&self, value: Value) -> Transition {
        let step = self.snap.step;
        let next = step + 1;
        if next >= self.steps.len() {
            let mut t = self.base(State::Succeeded, "done");
            t.output = Some((step, value));
            t.error = None;
            return t;
        }
        let mut t = self.base(State::Running, "done");
        t.output = Some((step, value));
        t.step = next;
        t.attempt = 1;
        t.next = Some(self.task(next, 1, Phase::Forward, Duration::ZERO));
        t
    }

    /// The highest completed, compensable step strictly below `below`.
    fn next_compensation(&self, below: usize, include_current: Option<usize>) -> Option<usize> {
        let mut completed: Vec<usize> = self.snap.completed.clone();
        if let Some(step) = include_current {
            completed.push(step);
        }
        completed
            .into_iter()
            .filter(|&s| s < below && self.steps.get(s).is_some_and(|d| d.compensable))
            .max()
    }

    fn start_compensation(
        &self,
        cause: Cause,
        error: Option<ErrorInfo>,
        outcome: &str,
    ) -> Transition {
        let failed_step = self.snap.step;
        match self.next_compensation(usize::MAX, None) {
            Some(first) => {
                let mut t = self.base(State::Compensating, outcome);
                t.phase = Phase::Compensate;
                t.cause = Some(cause);
                t.step = first;
                t.attempt = 1;
                t.error = error.or(t.error);
                t.next = Some(self.task(first, 1, Phase::Compensate, Duration::ZERO));
                t.handles_cancel = true;
                t
            }
            None => {
                let state = match cause {
                    Cause::Failed => State::Failed,
                    Cause::Cancelled => State::Cancelled,
                };
                let mut t = self.base(state, outcome);
                t.cause = Some(cause);
                t.error = error.or(t.error);
                t.resume_from = Some(failed_step);
                t.handles_cancel = true;
                t
            }
        }
    }

    fn fail_forward(&self, error: String, outcome: &str) -> Transition {
        let info = ErrorInfo {
            step: self.name(self.snap.step),
            message: error.clone(),
        };
        let mut t = self.start_compensation(Cause::Failed, Some(info), outcome);
        t.attempt_error = Some(error);
        t
    }

    fn compensation_done(&self) -> Transition {
        let cause = self.snap.cause.unwrap_or(Cause::Failed);
        match self.next_compensation(self.snap.step, None) {
            Some(next) => {
                let mut t = self.base(State::Compensating, "done");
                t.step = next;
                t.attempt = 1;
                t.next = Some(self.task(next, 1, Phase::Compensate, Duration::ZERO));
                t
            }
            None => {
                let state = match cause {
                    Cause::Failed => State::Failed,
                    Cause::Cancelled => State::Cancelled,
                };
                let mut t = self.base(state, "done");
                // Everything from the lowest compensated step on was undone: a retry redoes it.
                t.resume_from = Some(self.snap.step);
                t
            }
        }
    }

    fn compensation_failed(&self, error: String) -> Transition {
        let message = format!(
            "compensation of step {} failed: {error}",
            self.name(self.snap.step)
        );
        let mut t = self.base(State::Failed, "fail");
        t.error = Some(ErrorInfo {
            step: self.name(self.snap.step),
            message,
        });
        t.attempt_error = Some(error);
        t.resume_from = Some(self.snap.step);
        t
    }
}

/// Whether a woken parent should run now: every child finished, or one failed under fail-fast.
pub fn join_ready(join: JoinPolicy, pending: u64, failed: u64) -> bool {
    pending == 0 || (join == JoinPolicy::FailFast && failed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChildSpec, RetryPolicy};
    use serde_json::json;

    const NOW: u64 = 1_000_000;

    fn steps() -> Vec<StepDef> {
        vec![
            StepDef::new("lock"),
            StepDef::new("cordon").compensable(),
            StepDef::new("migrate").retry(RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }),
            StepDef::new("verify").compensable(),
        ]
    }

    fn snap(step: usize, attempt: u32, phase: Phase, completed: &[usize]) -> Snapshot {
        Snapshot {
            id: "wf1".into(),
            kind: "k".into(),
            input: json!({}),
            state: State::Running,
            step,
            attempt,
            phase,
            cause: if phase == Phase::Compensate {
                Some(Cause::Failed)
            } else {
                None
            },
            completed: completed.to_vec(),
            cancel_requested: false,
            error: None,
        }
    }

    fn no_permits(_: usize, _: Phase) -> Vec<Permit> {
        Vec::new()
    }

    fn run(s: &Snapshot, e: Event) -> Transition {
        decide(s, &steps(), e, NOW, 0.5, &no_permits)
    }

    fn outcome(o: Outcome) -> Event {
        Event::Outcome(o)
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            snap: Snapshot,
            event: Event,
            state: State,
            next: Option<(usize, u32, Phase, u64)>,
            outcome: &'static str,
        }
        let err = |m: &str| Outcome::Retry {
            error: m.into(),
            after: None,
        };
        let cases = vec![
            Case {
                name: "done moves to the next step",
                snap: snap(0, 1, Phase::Forward, &[]),
                event: outcome(Outcome::Done(json!(1))),
                state: State::Running,
                next: Some((1, 1, Phase::Forward, NOW)),
                outcome: "done",
            },
            Case {
                name: "last step done succeeds",
                snap: snap(3, 2, Phase::Forward, &[0, 1, 2]),
                event: outcome(Outcome::Done(json!(1))),
                state: State::Succeeded,
                next: None,
                outcome: "done",
            },
            Case {
                name: "poll keeps step and attempt",
                snap: snap(2, 2, Phase::Forward, &[0, 1]),
                event: outcome(Outcome::Poll {
                    after: Duration::from_secs(5),
                    progress: None,
                }),
                state: State::Waiting,
                next: Some((2, 2, Phase::Forward, NOW + 5000)),
                outcome: "poll",
            },
            Case {
                name: "retry backs off (first retry = initial delay)",
                snap: snap(2, 1, Phase::Forward, &[0, 1]),
                event: outcome(err("boom")),
                state: State::Waiting,
                next: Some((2, 2, Phase::Forward, NOW + 500)),
                outcome: "retry",
            },
            Case {
                name: "retry honours the step's delay",
                snap: snap(2, 1, Phase::Forward, &[0, 1]),
                event: outcome(Outcome::Retry {
                    error: "429".into(),
                    after: Some(Duration::from_secs(7)),
                }),
                state: State::Waiting,
                next: Some((2, 2, Phase::Forward, NOW + 7000)),
                outcome: "retry",
            },
            Case {
                name: "retries exhausted compensates completed steps in reverse",
                snap: snap(2, 3, Phase::Forward, &[0, 1]),
                event: outcome(err("boom")),
                state: State::Compensating,
                next: Some((1, 1, Phase::Compensate, NOW)),
                outcome: "retry",
            },
            Case {
                name: "permanent failure without compensable steps fails",
                snap: snap(1, 1, Phase::Forward, &[0]),
                event: outcome(Outcome::Fail { error: "no".into() }),
                state: State::Failed,
                next: None,
                outcome: "fail",
            },
            Case {
                name: "cancel compensates",
                snap: snap(3, 1, Phase::Forward, &[0, 1, 2]),
                event: Event::Cancel,
                state: State::Compensating,
                next: Some((1, 1, Phase::Compensate, NOW)),
                outcome: "cancelled",
            },
            Case {
                name: "cancel with nothing to undo ends cancelled",
                snap: snap(0, 1, Phase::Forward, &[]),
                event: Event::Cancel,
                state: State::Cancelled,
                next: None,
                outcome: "cancelled",
            },
            Case {
                name: "last compensation ends the workflow",
                snap: snap(1, 1, Phase::Compensate, &[0, 1, 2]),
                event: outcome(Outcome::Done(Value::Null)),
                state: State::Failed,
                next: None,
                outcome: "done",
            },
            Case {
                name: "compensation failing fails the workflow",
                snap: snap(1, 1, Phase::Compensate, &[0, 1, 2]),
                event: outcome(Outcome::Fail {
                    error: "stuck".into(),
                }),
                state: State::Failed,
                next: None,
                outcome: "fail",
            },
            Case {
                name: "exhausted by dead workers fails forward",
                snap: snap(2, 4, Phase::Forward, &[0, 1]),
                event: Event::Exhausted {
                    error: "lease expired".into(),
                },
                state: State::Compensating,
                next: Some((1, 1, Phase::Compensate, NOW)),
                outcome: "exhausted",
            },
            Case {
                name: "signal wait keeps the task for later",
                snap: snap(2, 1, Phase::Forward, &[0, 1]),
                event: outcome(Outcome::WaitSignal { name: "go".into() }),
                state: State::Waiting,
                next: Some((2, 1, Phase::Forward, NOW)),
                outcome: "wait-signal",
            },
        ];
        for c in cases {
            let t = run(&c.snap, c.event);
            assert_eq!(t.state, c.state, "{}", c.name);
            assert_eq!(t.outcome, c.outcome, "{}", c.name);
            let next = t
                .next
                .as_ref()
                .map(|n| (n.step, n.attempt, n.phase, n.due_ms));
            assert_eq!(next, c.next, "{}", c.name);
        }
    }

    #[test]
    fn compensation_walks_down_and_records_cause() {
        let mut s = snap(3, 1, Phase::Compensate, &[0, 1, 2]);
        s.cause = Some(Cause::Cancelled);
        let t = run(&s, outcome(Outcome::Done(Value::Null)));
        assert_eq!((t.state, t.step), (State::Compensating, 1));
        let mut s = snap(1, 1, Phase::Compensate, &[0, 1, 2]);
        s.cause = Some(Cause::Cancelled);
        let t = run(&s, outcome(Outcome::Done(Value::Null)));
        assert_eq!(t.state, State::Cancelled);
        assert_eq!(t.resume_from, Some(1));
    }

    #[test]
    fn failure_keeps_error_and_resume_point() {
        let t = run(
            &snap(1, 1, Phase::Forward, &[0]),
            outcome(Outcome::Fail {
                error: "bad".into(),
            }),
        );
        assert_eq!(t.error.as_ref().map(|e| e.message.as_str()), Some("bad"));
        assert_eq!(t.error.as_ref().map(|e| e.step.as_str()), Some("cordon"));
        assert_eq!(t.resume_from, Some(1));
        assert!(t.handles_cancel);
    }

    #[test]
    fn spawn_waits_for_children_and_caps_fan_out() {
        let child = ChildSpec {
            kind: "k".into(),
            input: json!({}),
            priority: 0,
        };
        let t = run(
            &snap(2, 1, Phase::Forward, &[0, 1]),
            outcome(Outcome::Spawn {
                children: vec![child.clone(); 3],
                join: JoinPolicy::FailFast,
            }),
        );
        assert_eq!(
            t.wait,
            Wait::Children {
                join: JoinPolicy::FailFast
            }
        );
        assert_eq!(t.spawn.len(), 3);
        assert_eq!(t.state, State::Waiting);
        let t = run(
            &snap(2, 1, Phase::Forward, &[0, 1]),
            outcome(Outcome::Spawn {
                children: vec![child; MAX_CHILDREN + 1],
                join: JoinPolicy::All,
            }),
        );
        assert_eq!(t.state, State::Compensating);
        assert!(t.spawn.is_empty());
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        };
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(9, 0.5), Duration::from_secs(10));
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(800));
        assert!(p.delay(2, 0.999) > Duration::from_millis(1190));
    }

    #[test]
    fn a_step_can_pause_its_workflow() {
        let t = run(
            &snap(2, 1, Phase::Forward, &[0, 1]),
            outcome(Outcome::Pause {
                reason: "budget".into(),
            }),
        );
        assert_eq!(t.wait, Wait::Pause);
        assert_eq!(t.state, State::Waiting);
        assert_eq!(t.next.as_ref().map(|n| (n.step, n.attempt)), Some((2, 1)));
    }

    #[test]
    fn join_policy() {
        assert!(join_ready(JoinPolicy::All, 0, 2));
        assert!(!join_ready(JoinPolicy::All, 1, 2));
        assert!(join_ready(JoinPolicy::FailFast, 1, 1));
        assert!(!join_ready(JoinPolicy::FailFast, 1, 0));
    }
}
