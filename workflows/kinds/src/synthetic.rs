//! `synthetic`: a workflow kind whose steps only take time, fail on purpose and hold permits. It drives
//! `drover dev`'s demo, the crash and semaphore tests and the benchmarks, so it exercises every engine
//! feature (retries, compensation, signals, fan-out, permits) without any external system.
//!
//! Randomness is derived from (workflow id, step, attempt), so a run is reproducible and a re-run of
//! the same attempt behaves the same.

use std::time::Duration;

use drover_workflows::ports::ProbeEvent;
use drover_workflows::ports::secrets::SecretRef;
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{
    ChildSpec, JoinPolicy, MAX_CHILDREN, NAME_RULE, Outcome, Permit, RetryPolicy, State, is_name,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `synthetic` kind.
pub struct Synthetic;

/// Input of `synthetic`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Number of steps, 1..=100.
    steps: usize,
    /// Each step sleeps a pseudo-random time in [min_ms, max_ms].
    #[serde(default)]
    min_ms: u64,
    #[serde(default)]
    max_ms: u64,
    /// Probability that an attempt fails with a retryable error.
    #[serde(default)]
    fail_rate: f64,
    /// Attempts per step before giving up.
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    /// Delay before a retry, in ms.
    #[serde(default = "default_retry_ms")]
    retry_ms: u64,
    /// Permits every step needs.
    #[serde(default)]
    permits: Vec<Permit>,
    /// Step that fails permanently (after which compensation runs).
    #[serde(default)]
    fail_step: Option<usize>,
    /// Whether steps declare a compensation.
    #[serde(default)]
    compensate: bool,
    /// A step that waits for this signal before completing: {"step": 1, "name": "approve"}.
    #[serde(default)]
    signal: Option<SignalAt>,
    /// A step that starts children and waits for them.
    #[serde(default)]
    fan_out: Option<FanOut>,
    /// A step that pauses the workflow until an operator resumes it.
    #[serde(default)]
    pause_step: Option<usize>,
    /// Report permit holding to the probe port.
    #[serde(default)]
    probe: bool,
    /// A secret every step resolves (and reports only the length of), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretRef>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SignalAt {
    step: usize,
    name: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FanOut {
    step: usize,
    children: usize,
    #[serde(default)]
    fail_fast: bool,
    child: Value,
}

fn default_attempts() -> u32 {
    5
}

fn default_retry_ms() -> u64 {
    100
}

fn check(parsed: &Input) -> Result<(), String> {
    if !(1..=100).contains(&parsed.steps) {
        return Err(format!(
            "steps must be between 1 and 100, got {}",
            parsed.steps
        ));
    }
    if parsed.max_ms < parsed.min_ms {
        return Err(format!(
            "max_ms ({}) is below min_ms ({})",
            parsed.max_ms, parsed.min_ms
        ));
    }
    if !(0.0..=1.0).contains(&parsed.fail_rate) {
        return Err(format!(
            "fail_rate must be within [0, 1], got {}",
            parsed.fail_rate
        ));
    }
    if parsed.max_attempts == 0 {
        return Err("max_attempts must be at least 1".to_string());
    }
    if let Some(p) = parsed
        .permits
        .iter()
        .find(|p| p.capacity == 0 || !is_name(&p.name))
    {
        return Err(format!(
            "permit {:?} needs a name of {NAME_RULE} and a capacity of at least 1",
            p.name
        ));
    }
    let step_fields = [
        ("signal.step", parsed.signal.as_ref().map(|s| s.step)),
        ("fan_out.step", parsed.fan_out.as_ref().map(|f| f.step)),
        ("fail_step", parsed.fail_step),
        ("pause_step", parsed.pause_step),
    ];
    for (field, step) in step_fields {
        if let Some(step) = step
            && step >= parsed.steps
        {
            return Err(format!(
                "{field} is {step}, but steps are numbered 0..{} ({} steps)",
                parsed.steps - 1,
                parsed.steps
            ));
        }
    }
    if let Some(signal) = &parsed.signal
        && !is_name(&signal.name)
    {
        return Err(format!(
            "signal.name {:?} must be {NAME_RULE}, as the signal route requires",
            signal.name
        ));
    }
    if let Some(f) = &parsed.fan_out {
        if f.children > MAX_CHILDREN {
            return Err(format!("fan_out.children must be at most {MAX_CHILDREN}"));
        }
        parse(&f.child).map_err(|e| format!("fan_out.child: {e}"))?;
    }
    Ok(())
}

fn parse(input: &Value) -> Result<Input, String> {
    drover_workflows::sdk::parse::<Synthetic>(input)
}

/// The most workflows `input` creates: each fan-out child and, recursively, what it creates.
fn descendants(input: &Input) -> u64 {
    input.fan_out.as_ref().map_or(0, |f| {
        let below = parse(&f.child).map_or(0, |child| descendants(&child));
        (f.children as u64).saturating_mul(below.saturating_add(1))
    })
}

/// A number in [0, 1) derived from the arguments (FNV-1a, then a final mix).
fn unit(id: &str, step: usize, attempt: u32, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in id
        .bytes()
        .chain(step.to_le_bytes())
        .chain(attempt.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Kind for Synthetic {
    const NAME: &'static str = "synthetic";
    type Input = Input;

    fn check(input: &Input) -> Result<(), String> {
        check(input)
    }

    fn descendants(input: &Input) -> u64 {
        descendants(input)
    }

    fn steps(input: &Input) -> Vec<Step<Self>> {
        let retry = RetryPolicy {
            max_attempts: input.max_attempts,
            initial: Duration::from_millis(input.retry_ms),
            max: Duration::from_millis(input.retry_ms.saturating_mul(8)),
            multiplier: 2.0,
            jitter: 0.2,
        };
        (0..input.steps)
            .map(|i| {
                let step = Step::new(format!("step-{i}"), |ctx| Box::pin(run(ctx)))
                    .retry(retry)
                    .permits(|input| input.permits.clone());
                if input.compensate {
                    step.compensate(|ctx| Box::pin(compensate(ctx)))
                } else {
                    step
                }
            })
            .collect()
    }
}

async fn run(ctx: &Ctx<'_, Synthetic>) -> StepResult {
    let input = ctx.input;
    if let Some(f) = input.fan_out.as_ref().filter(|f| f.step == ctx.step) {
        return fan_out(ctx, f);
    }
    if input.pause_step == Some(ctx.step) && ctx.resumes == 0 {
        return Ok(Outcome::Pause {
            reason: format!("step {} asks for an operator", ctx.step),
        });
    }
    if let Some(s) = input.signal.as_ref().filter(|s| s.step == ctx.step) {
        return Ok(match ctx.signal(&s.name) {
            Some(payload) => Outcome::Done(json!({ "signal": payload })),
            None => Outcome::WaitSignal {
                name: s.name.clone(),
            },
        });
    }
    let secret_bytes = match &input.secret {
        Some(reference) => Some(ctx.secret(reference).await?.expose().len()),
        None => None,
    };
    let span = input.max_ms - input.min_ms;
    let duration =
        input.min_ms + (unit(ctx.workflow_id, ctx.step, ctx.attempt, 1) * span as f64) as u64;
    let permits: Vec<String> = input.permits.iter().map(|p| p.name.clone()).collect();
    if input.probe {
        probe(ctx, "enter", &permits).await;
    }
    if duration > 0 {
        ctx.ports.clock.sleep(Duration::from_millis(duration)).await;
    }
    if input.probe {
        probe(ctx, "exit", &permits).await;
    }
    if input.fail_step == Some(ctx.step) {
        return Err(StepError::fail(format!(
            "step {} fails on purpose",
            ctx.step
        )));
    }
    if unit(ctx.workflow_id, ctx.step, ctx.attempt, 2) < input.fail_rate {
        return Err(StepError::retry(
            format!("injected failure at attempt {}", ctx.attempt),
            None,
        ));
    }
    let mut out = json!({
        "step": ctx.step,
        "attempt": ctx.attempt,
        "worker": ctx.worker,
        "token": ctx.token,
        "slept_ms": duration,
    });
    if let Some(n) = secret_bytes {
        out["secret_bytes"] = json!(n);
    }
    Ok(Outcome::Done(out))
}

async fn compensate(ctx: &Ctx<'_, Synthetic>) -> StepResult {
    Ok(Outcome::Done(
        json!({ "compensated": ctx.step, "token": ctx.token }),
    ))
}

fn fan_out(ctx: &Ctx<'_, Synthetic>, f: &FanOut) -> StepResult {
    if ctx.children.is_empty() {
        let children = (0..f.children)
            .map(|_| ChildSpec {
                kind: "synthetic".to_string(),
                input: f.child.clone(),
                priority: 0,
            })
            .collect();
        let join = if f.fail_fast {
            JoinPolicy::FailFast
        } else {
            JoinPolicy::All
        };
        return Ok(Outcome::Spawn { children, join });
    }
    let failed: Vec<&str> = ctx
        .children
        .iter()
        .filter(|c| matches!(c.state, State::Failed | State::Cancelled))
        .map(|c| c.id.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(StepError::fail(format!(
            "children failed: {}",
            failed.join(", ")
        )));
    }
    Ok(Outcome::Done(json!({ "children": ctx.children.len() })))
}

async fn probe(ctx: &Ctx<'_, Synthetic>, what: &str, permits: &[String]) {
    if let Some(probe) = &ctx.ports.probe {
        probe
            .record(ProbeEvent {
                what: what.to_string(),
                workflow_id: ctx.workflow_id.to_string(),
                step: ctx.step,
                attempt: ctx.attempt,
                token: ctx.token,
                worker: ctx.worker.to_string(),
                permits: permits.to_vec(),
                at_ms: ctx.now_ms(),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(input: &Value) -> Result<(), String> {
        parse(input).map(|_| ())
    }

    #[test]
    fn validation_says_what_to_fix() {
        assert!(validate(&json!({"steps": 3})).is_ok());
        assert!(
            validate(&json!({"steps": 0}))
                .unwrap_err()
                .contains("between 1 and 100")
        );
        assert!(
            validate(&json!({"steps": 2, "bogus": 1}))
                .unwrap_err()
                .contains("bogus")
        );
        assert!(
            validate(&json!({"steps": 2, "min_ms": 5, "max_ms": 1}))
                .unwrap_err()
                .contains("max_ms")
        );
        assert!(validate(&json!("x")).is_err());
    }

    #[test]
    fn inputs_that_could_never_work_are_refused() {
        for (input, says) in [
            (
                json!({"steps": 2, "signal": {"step": 1, "name": "with space"}}),
                "signal.name",
            ),
            (
                json!({"steps": 2, "signal": {"step": 1, "name": "x".repeat(80)}}),
                "signal.name",
            ),
            (
                json!({"steps": 2, "signal": {"step": 2, "name": "go"}}),
                "signal.step is 2",
            ),
            (json!({"steps": 2, "fail_step": 5}), "fail_step is 5"),
            (json!({"steps": 2, "pause_step": 2}), "pause_step"),
            (
                json!({"steps": 1, "fan_out": {"step": 1, "children": 1, "child": {"steps": 1}}}),
                "fan_out.step",
            ),
            (
                json!({"steps": 1, "permits": [{"name": "a b", "capacity": 1}]}),
                "permit",
            ),
        ] {
            let err = validate(&input).unwrap_err();
            assert!(err.contains(says), "{input}: {err}");
        }
        assert!(validate(&json!({"steps": 2, "signal": {"step": 1, "name": "go"}})).is_ok());
    }

    #[test]
    fn descendants_count_every_level() {
        let leaf = json!({"steps": 1});
        let one = json!({"steps": 1, "fan_out": {"step": 0, "children": 256, "child": leaf}});
        let two = json!({"steps": 1, "fan_out": {"step": 0, "children": 256, "child": one}});
        let three = json!({"steps": 1, "fan_out": {"step": 0, "children": 256, "child": two}});
        assert_eq!(descendants(&parse(&leaf).unwrap()), 0);
        assert_eq!(descendants(&parse(&one).unwrap()), 256);
        assert_eq!(descendants(&parse(&two).unwrap()), 256 + 256 * 256);
        assert_eq!(
            descendants(&parse(&three).unwrap()),
            256 + 256 * 256 + 256 * 256 * 256
        );
    }

    #[test]
    fn unit_is_deterministic_and_spread() {
        assert_eq!(unit("a", 1, 1, 0), unit("a", 1, 1, 0));
        let n = (0..1000).filter(|i| unit("wf", *i, 1, 2) < 0.2).count();
        assert!((120..280).contains(&n), "{n}");
    }
}
