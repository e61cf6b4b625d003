//! Maintenance windows as a workflow started by a schedule sees them. A schedule with a window
//! length gives each workflow it starts an input field `window` ([`Window`]: the schedule, the fire
//! time and the window's end); the kinds that take one ask [`admit`] before they start new work (a
//! wave of drains, a drain, a wave of migrations), and work already running goes on.
//!
//! The decision is pure ([`decide`], table-tested): over the schedule's *current* spec, read again
//! each time (so a freeze added, or a schedule edited or deleted while the workflow runs, is seen),
//! and `now`:
//!
//! - a freeze covering now holds new work until the freeze ends, with its name as the reason;
//! - inside the workflow's own window, or inside another window of the schedule (one whose start
//!   is not frozen, as the scheduler opens only those), new work may start until that window ends;
//! - otherwise the window is closed: new work waits for the schedule's next window, and when there
//!   is none (no more fire times, no window length any more, or the schedule is gone) the workflow
//!   pauses until an operator resumes it.
//!
//! A hold with a time to wait for is an [`Outcome::Poll`] that looks again at most every
//! [`RECHECK`] (so a freeze added or lifted meanwhile is seen), with the reason in its progress
//! (`{"held": reason, "until": time}`); one without is an [`Outcome::Pause`] with the reason. A
//! workflow that has been resumed (`Ctx::resumes` above 0) goes on outside a window where it would
//! pause for lack of one: resuming is the operator's "go on anyway". The count is the workflow's
//! whole count, so a resume for another reason (a rollout's failure budget) counts as well; holds
//! until a known next window or a freeze's end are never skipped by a resume.

use std::time::Duration;

use drover_workflows::Outcome;
use drover_workflows::schedule::{Compiled, parse_instant, rfc3339};
use drover_workflows::sdk::{Ctx, Kind, StepError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The maintenance window a schedule's fire opened, as the scheduler writes it into the input of
/// the workflow it starts (`{"schedule": id, "start_ms": fire time, "end_ms": fire time + window
/// length}`, Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The id of the schedule that opened it (its spec is read again for freezes and later
    /// windows).
    pub schedule: String,
    /// The fire time that opened it, inclusive.
    pub start_ms: i64,
    /// Its end, exclusive: no new work starts at or after it.
    pub end_ms: i64,
}

impl Window {
    /// Checks the type cannot express: a schedule id, and a start before the end.
    pub fn check(&self) -> Result<(), String> {
        if self.schedule.is_empty() {
            return Err("window.schedule must name the schedule".into());
        }
        if self.start_ms >= self.end_ms {
            return Err(format!(
                "window.start_ms ({}) must be before window.end_ms ({})",
                self.start_ms, self.end_ms
            ));
        }
        Ok(())
    }
}

/// Whether new work may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Yes, until `end_ms` (the end of the window now open).
    Open { end_ms: i64 },
    /// No: look again at `until_ms`, or, without one, wait for an operator.
    Held {
        until_ms: Option<i64>,
        reason: String,
    },
}

/// The longest a hold waits before it looks at the schedule again.
pub const RECHECK: Duration = Duration::from_secs(300);

/// The shortest a hold waits.
const LEAST_WAIT: Duration = Duration::from_secs(1);

/// Decides whether new work of a workflow with `window` may start at `now_ms`, given its
/// schedule as it is now (`None`: deleted, or no longer valid).
pub fn decide(compiled: Option<&Compiled>, window: &Window, now_ms: i64) -> Gate {
    if let Some(freeze) = compiled.and_then(|c| c.freeze_at(now_ms)) {
        // The spec compiled, so its freezes parse.
        let until_ms = parse_instant(&freeze.to).ok();
        let until = until_ms.map_or_else(|| freeze.to.clone(), rfc3339);
        return Gate::Held {
            until_ms,
            reason: format!("freeze \"{}\" until {until}", freeze.name),
        };
    }
    if window.start_ms <= now_ms && now_ms < window.end_ms {
        return Gate::Open {
            end_ms: window.end_ms,
        };
    }
    let id = &window.schedule;
    let next = match compiled {
        Some(c) => {
            // A window whose start was frozen never opened (the scheduler skips that fire, and
            // `next_window` skips it too).
            if let Some((start, end_ms)) = c.window_containing(now_ms)
                && c.freeze_at(start).is_none()
            {
                return Gate::Open { end_ms };
            }
            c.next_window(now_ms)
        }
        None => None,
    };
    match next {
        Some((start, _)) => Gate::Held {
            until_ms: Some(start),
            reason: format!(
                "window closed; continues in the next window at {} (schedule {id})",
                rfc3339(start)
            ),
        },
        None => Gate::Held {
            until_ms: None,
            reason: format!(
                "window closed; schedule {id} has no next window (resume to go on outside a \
                 window)"
            ),
        },
    }
}

/// [`decide`] over the schedule as stored now, read through the schedules port. A store that does
/// not answer is a retry; a spec that no longer compiles counts as no schedule.
pub async fn gate<K: Kind>(ctx: &Ctx<'_, K>, window: &Window) -> Result<Gate, StepError> {
    let spec = ctx.schedules()?.spec(&window.schedule).await.map_err(|e| {
        StepError::retry(format!("reading schedule {}: {e}", window.schedule), None)
    })?;
    let compiled = spec.and_then(|s| Compiled::compile(&s).ok());
    Ok(decide(compiled.as_ref(), window, now(ctx)))
}

/// The outcome of a step held by its window: look again at `until_ms` (at most [`RECHECK`] from
/// now, at least a second), or pause with the reason when there is nothing to wait for.
pub fn hold(until_ms: Option<i64>, reason: String, now_ms: i64) -> Outcome {
    match until_ms {
        Some(until) => {
            let wait = u64::try_from(until.saturating_sub(now_ms)).unwrap_or(0);
            Outcome::Poll {
                after: Duration::from_millis(wait).clamp(LEAST_WAIT, RECHECK),
                progress: Some(json!({ "held": reason, "until": rfc3339(until) })),
            }
        }
        None => Outcome::Pause { reason },
    }
}

/// What a step does about its window before it starts new work.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Start it. The window its children get: the one open now (its end is their deadline), or
    /// none (the workflow has no window, or was resumed to go on outside one).
    Go(Option<Window>),
    /// Start nothing; return this outcome (a [`hold`]).
    Wait(Outcome),
}

/// Asks the gate when the workflow has a window (without one, new work always starts and the
/// schedules port is not read). A hold without a time to wait for lets a workflow that has been
/// resumed go on without a window.
pub async fn admit<K: Kind>(
    ctx: &Ctx<'_, K>,
    window: Option<&Window>,
) -> Result<Admission, StepError> {
    let Some(window) = window else {
        return Ok(Admission::Go(None));
    };
    Ok(match gate(ctx, window).await? {
        Gate::Open { end_ms } => Admission::Go(Some(Window {
            end_ms,
            ..window.clone()
        })),
        Gate::Held { until_ms: None, .. } if ctx.resumes > 0 => Admission::Go(None),
        Gate::Held { until_ms, reason } => Admission::Wait(hold(until_ms, reason, now(ctx))),
    })
}

/// Now, from the clock port, as the schedule module counts time.
pub fn now<K: Kind>(ctx: &Ctx<'_, K>) -> i64 {
    i64::try_from(ctx.now_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use drover_workflows::schedule::ScheduleSpec;

    use super::*;
    use crate::fake::{HOUR_MS as HOUR, MONDAY_MS as MONDAY, monday_window as monday, nightly};

    const DAY: i64 = 24 * HOUR;

    fn compile(spec: ScheduleSpec) -> Compiled {
        Compiled::compile(&spec).expect("the spec compiles")
    }

    fn held(until_ms: Option<i64>, reason: &str) -> Gate {
        Gate::Held {
            until_ms,
            reason: reason.into(),
        }
    }

    #[test]
    fn the_gate_over_windows_and_freezes() {
        let plain = compile(nightly(json!([])));
        // Tuesday 01:00 to Wednesday 01:00 frozen: Tuesday's window never opens.
        let tuesday_frozen = compile(nightly(json!([{
            "name": "release",
            "from": "2026-03-03T01:00:00Z",
            "to": "2026-03-04T01:00:00Z",
        }])));
        // A freeze over Monday 03:00-03:30, inside Monday's window.
        let lunch = compile(nightly(json!([{
            "name": "all hands",
            "from": "2026-03-02T03:00:00Z",
            "to": "2026-03-02T03:30:00Z",
        }])));
        // Tuesday 01:00-02:30: over Tuesday's start only.
        let short = compile(nightly(json!([{
            "name": "short",
            "from": "2026-03-03T01:00:00Z",
            "to": "2026-03-03T02:30:00Z",
        }])));
        let open = |end_ms| Gate::Open { end_ms };
        let cases: Vec<(&str, Option<&Compiled>, i64, Gate)> = vec![
            (
                "at its own start",
                Some(&plain),
                MONDAY + 2 * HOUR,
                open(MONDAY + 4 * HOUR),
            ),
            (
                "inside its own window",
                Some(&plain),
                MONDAY + 3 * HOUR,
                open(MONDAY + 4 * HOUR),
            ),
            (
                "its own window even with the schedule gone",
                None,
                MONDAY + 3 * HOUR,
                open(MONDAY + 4 * HOUR),
            ),
            (
                "at its own end: closed until Tuesday's",
                Some(&plain),
                MONDAY + 4 * HOUR,
                held(
                    Some(MONDAY + DAY + 2 * HOUR),
                    "window closed; continues in the next window at 2026-03-03T02:00:00Z \
                     (schedule nightly)",
                ),
            ),
            (
                "between windows",
                Some(&plain),
                MONDAY + 12 * HOUR,
                held(
                    Some(MONDAY + DAY + 2 * HOUR),
                    "window closed; continues in the next window at 2026-03-03T02:00:00Z \
                     (schedule nightly)",
                ),
            ),
            (
                "inside a later window",
                Some(&plain),
                MONDAY + DAY + 3 * HOUR,
                open(MONDAY + DAY + 4 * HOUR),
            ),
            (
                "a frozen next window is skipped",
                Some(&tuesday_frozen),
                MONDAY + 12 * HOUR,
                held(
                    Some(MONDAY + 2 * DAY + 2 * HOUR),
                    "window closed; continues in the next window at 2026-03-04T02:00:00Z \
                     (schedule nightly)",
                ),
            ),
            (
                "inside a freeze: held until its end",
                Some(&tuesday_frozen),
                MONDAY + DAY + 3 * HOUR,
                held(
                    Some(MONDAY + 2 * DAY + HOUR),
                    "freeze \"release\" until 2026-03-04T01:00:00Z",
                ),
            ),
            (
                "a window whose start was frozen did not open, even after the freeze",
                Some(&short),
                MONDAY + DAY + 3 * HOUR,
                held(
                    Some(MONDAY + 2 * DAY + 2 * HOUR),
                    "window closed; continues in the next window at 2026-03-04T02:00:00Z \
                     (schedule nightly)",
                ),
            ),
            (
                "a freeze inside its own window holds it",
                Some(&lunch),
                MONDAY + 3 * HOUR + 10 * 60_000,
                held(
                    Some(MONDAY + 3 * HOUR + 30 * 60_000),
                    "freeze \"all hands\" until 2026-03-02T03:30:00Z",
                ),
            ),
            (
                "after that freeze, its own window again",
                Some(&lunch),
                MONDAY + 3 * HOUR + 30 * 60_000,
                open(MONDAY + 4 * HOUR),
            ),
            (
                "the schedule is gone",
                None,
                MONDAY + 12 * HOUR,
                held(
                    None,
                    "window closed; schedule nightly has no next window (resume to go on \
                     outside a window)",
                ),
            ),
        ];
        for (label, compiled, now, expected) in cases {
            assert_eq!(decide(compiled, &monday(), now), expected, "{label}");
        }
    }

    #[test]
    fn a_schedule_without_more_windows_holds_without_a_time() {
        let no_window = |extra: serde_json::Value| {
            let mut spec = json!({ "cron": "0 2 * * *", "kind": "rolling-maintenance" });
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            compile(serde_json::from_value(spec).expect("a spec"))
        };
        let reason = "window closed; schedule nightly has no next window (resume to go on \
                      outside a window)";
        for (label, compiled) in [
            ("window length removed", no_window(json!({}))),
            (
                "no fire time after end_at",
                no_window(json!({ "window_secs": 7200, "end_at": "2026-03-02T12:00:00Z" })),
            ),
        ] {
            assert_eq!(
                decide(Some(&compiled), &monday(), MONDAY + 12 * HOUR),
                held(None, reason),
                "{label}"
            );
        }
    }

    #[test]
    fn a_hold_polls_within_bounds_or_pauses() {
        let now = MONDAY;
        let poll = |after: Duration, until: i64| Outcome::Poll {
            after,
            progress: Some(json!({ "held": "why", "until": rfc3339(until) })),
        };
        let cases = [
            (
                Some(now + 30_000),
                poll(Duration::from_secs(30), now + 30_000),
            ),
            (Some(now + DAY), poll(RECHECK, now + DAY)),
            (Some(now + 10), poll(LEAST_WAIT, now + 10)),
            (Some(now - 5_000), poll(LEAST_WAIT, now - 5_000)),
            (
                None,
                Outcome::Pause {
                    reason: "why".into(),
                },
            ),
        ];
        for (until, expected) in cases {
            assert_eq!(hold(until, "why".into(), now), expected, "{until:?}");
        }
    }

    #[test]
    fn a_window_is_checked_and_refuses_unknown_fields() {
        assert_eq!(monday().check(), Ok(()));
        let empty = Window {
            schedule: String::new(),
            ..monday()
        };
        assert!(empty.check().is_err());
        let backwards = Window {
            end_ms: MONDAY,
            ..monday()
        };
        let error = backwards.check().err().unwrap_or_default();
        assert!(error.contains("must be before window.end_ms"), "{error}");
        let extra = json!({ "schedule": "s", "start_ms": 1, "end_ms": 2, "tz": "UTC" });
        assert!(serde_json::from_value::<Window>(extra).is_err());
    }
}
