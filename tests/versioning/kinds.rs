//! The kinds of the versioned-steps test, in both versions: `versioned` (version 1: `a`, `c`;
//! version 2: `b` inserted before `c`) and `retired` (version 1: `a`, `old`, `z`; version 2: `old`
//! removed). Shared by the test (which submits under a version) and the worker process it starts
//! (`examples/versioned_worker.rs`, which runs a version). They are also the example of a kind written
//! with the SDK: one type, one `Kind` impl, and one registry line.

use drover_workflows::ports::ProbeEvent;
use drover_workflows::sdk::{Ctx, Kind, Step, StepResult};
use drover_workflows::{Outcome, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Input of the `versioned` kind: the step that waits for the signal `go`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    park: String,
}

/// `versioned`, version 1: `a`, `c`.
struct V1;
/// `versioned`, version 2: `b` inserted before `c`.
struct V2;
/// `retired`, version 1: `a`, `old`, `z`.
struct R1;
/// `retired`, version 2: `old` removed.
struct R2;

fn table<K: Kind<Input = Input>>(names: &[&str]) -> Vec<Step<K>> {
    names
        .iter()
        .map(|name| Step::new(*name, |ctx| Box::pin(run(ctx))))
        .collect()
}

impl Kind for V1 {
    const NAME: &'static str = "versioned";
    type Input = Input;

    fn steps(_: &Input) -> Vec<Step<Self>> {
        table(&["a", "c"])
    }
}

impl Kind for V2 {
    const NAME: &'static str = "versioned";
    type Input = Input;

    fn steps(_: &Input) -> Vec<Step<Self>> {
        table(&["a", "b", "c"])
    }
}

impl Kind for R1 {
    const NAME: &'static str = "retired";
    type Input = Input;

    fn steps(_: &Input) -> Vec<Step<Self>> {
        table(&["a", "old", "z"])
    }
}

impl Kind for R2 {
    const NAME: &'static str = "retired";
    type Input = Input;

    fn steps(_: &Input) -> Vec<Step<Self>> {
        table(&["a", "z"])
    }
}

/// Waits for `go` at the parking step; otherwise (and once `go` came) records that this step ran,
/// by name, and is done.
async fn run<K: Kind<Input = Input>>(ctx: &Ctx<'_, K>) -> StepResult {
    if ctx.input.park == ctx.step_name && ctx.signal("go").is_none() {
        return Ok(Outcome::WaitSignal { name: "go".into() });
    }
    if let Some(probe) = &ctx.ports.probe {
        probe
            .record(ProbeEvent {
                what: ctx.step_name.to_string(),
                workflow_id: ctx.workflow_id.to_string(),
                step: ctx.step,
                attempt: ctx.attempt,
                token: ctx.token,
                worker: ctx.worker.to_string(),
                permits: Vec::new(),
                at_ms: ctx.now_ms(),
            })
            .await;
    }
    Ok(Outcome::Done(json!({ "ran": ctx.step_name })))
}

/// The kinds of `version` (`v1` or `v2`).
pub fn registry(version: &str) -> Registry {
    let mut registry = Registry::default();
    match version {
        "v1" => registry.register::<V1>().register::<R1>(),
        _ => registry.register::<V2>().register::<R2>(),
    };
    registry
}
