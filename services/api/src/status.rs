//! The status the API shows for each step of a workflow, pure: from the workflow's state, its
//! current step and phase, and which steps have an output. Table-tested below.

use drover_workflows::{Phase, State};
use serde::Serialize;

/// A step's status in a workflow's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Current,
    Done,
    Failed,
    Compensating,
    Compensated,
}

/// Where a workflow is, as the status rules need it.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub state: State,
    pub step: usize,
    pub phase: Phase,
}

/// The status of step `index`, which has an output when `done`.
pub fn step_status(at: Position, index: usize, done: bool) -> StepStatus {
    let here = index == at.step;
    let live = !at.state.is_terminal();
    match (at.phase, done) {
        // Compensation walks back from the current step: completed steps from there on are undone.
        (Phase::Compensate, true) if index >= at.step => {
            if here && live {
                StepStatus::Compensating
            } else {
                StepStatus::Compensated
            }
        }
        (_, true) => StepStatus::Done,
        _ if here && live => StepStatus::Current,
        _ if here && at.state == State::Failed => StepStatus::Failed,
        _ => StepStatus::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepStatus::*;

    #[test]
    fn every_status_from_where_the_workflow_is() {
        let at = |state, step, phase| Position { state, step, phase };
        let fwd = Phase::Forward;
        let comp = Phase::Compensate;
        let cases = [
            // (position, index, has output, expected)
            (at(State::Running, 1, fwd), 0, true, Done),
            (at(State::Running, 1, fwd), 1, false, Current),
            (at(State::Running, 1, fwd), 2, false, Pending),
            (at(State::Waiting, 1, fwd), 1, false, Current),
            (at(State::Failed, 1, fwd), 1, false, Failed),
            (at(State::Failed, 1, fwd), 2, false, Pending),
            (at(State::Succeeded, 2, fwd), 2, true, Done),
            (at(State::Compensating, 1, comp), 1, true, Compensating),
            (at(State::Compensating, 1, comp), 2, true, Compensated),
            (at(State::Compensating, 1, comp), 0, true, Done),
            (at(State::Compensating, 1, comp), 3, false, Pending),
            (at(State::Cancelled, 0, comp), 0, true, Compensated),
            (at(State::Cancelled, 0, comp), 1, true, Compensated),
            (at(State::Failed, 0, comp), 1, false, Pending),
        ];
        for (position, index, done, expected) in cases {
            assert_eq!(
                step_status(position, index, done),
                expected,
                "{position:?} step {index} done={done}"
            );
        }
    }
}
