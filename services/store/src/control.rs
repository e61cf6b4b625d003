//! Operator controls: cancel, pause, resume, signal, retry. Each is one function call that moves the
//! workflow's task; what a cancellation means is left to the engine core in the worker.

use drover_workflows::{State, Task};
use serde_json::Value;

use crate::{Result, Store};

/// What a control call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlResult {
    /// Applied; the detail says how ("delivered", "queued", "already").
    Ok(Option<String>),
    NotFound,
    /// The workflow has ended; nothing changed.
    Terminal(State),
    /// The control does not apply in this state (retry of a workflow that did not fail).
    WrongState(String),
    /// A signal was not queued: the workflow already holds `limit` queued signals with this name
    /// (`per_name`) or in all.
    QueueFull {
        per_name: bool,
        limit: u64,
    },
}

/// Bounds on the signals a workflow holds before it waits on them.
#[derive(Debug, Clone, Copy)]
pub struct SignalLimits {
    /// Queued payloads per signal name.
    pub per_name: u64,
    /// Queued payloads per workflow, all names together.
    pub per_workflow: u64,
}

impl Default for SignalLimits {
    /// The API's defaults.
    fn default() -> Self {
        SignalLimits {
            per_name: 16,
            per_workflow: 64,
        }
    }
}

fn parse(reply: Vec<String>) -> ControlResult {
    match reply.first().map(String::as_str) {
        Some("ok") => ControlResult::Ok(reply.get(1).cloned()),
        Some("terminal") => ControlResult::Terminal(
            reply
                .get(1)
                .and_then(|s| State::parse(s))
                .unwrap_or(State::Failed),
        ),
        Some("state") => ControlResult::WrongState(reply.get(1).cloned().unwrap_or_default()),
        Some("full") => ControlResult::QueueFull {
            per_name: reply.get(1).map(String::as_str) == Some("name"),
            limit: reply.get(2).and_then(|l| l.parse().ok()).unwrap_or(0),
        },
        _ => ControlResult::NotFound,
    }
}

impl Store {
    async fn control(
        &self,
        name: &str,
        id: &str,
        extra: &[String],
        now_ms: u64,
    ) -> Result<ControlResult> {
        if !crate::plausible_id(id) {
            return Ok(ControlResult::NotFound);
        }
        let mut call = self.wf_call(name, id).arg(id);
        for e in extra {
            call = call.arg(e);
        }
        let reply: Vec<String> = call.arg(now_ms).run().await?;
        Ok(parse(reply))
    }

    pub async fn cancel(&self, id: &str, now_ms: u64) -> Result<ControlResult> {
        self.control("drover_cancel", id, &[], now_ms).await
    }

    pub async fn pause(&self, id: &str, now_ms: u64) -> Result<ControlResult> {
        self.control("drover_pause", id, &[], now_ms).await
    }

    pub async fn resume(&self, id: &str, now_ms: u64) -> Result<ControlResult> {
        self.control("drover_resume", id, &[], now_ms).await
    }

    pub async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: &Value,
        limits: SignalLimits,
        now_ms: u64,
    ) -> Result<ControlResult> {
        if !crate::plausible_id(id) {
            return Ok(ControlResult::NotFound);
        }
        let reply: Vec<String> = self
            .wf_call("drover_signal", id)
            .arg(id)
            .arg(name)
            .arg(serde_json::to_string(payload)?)
            .arg(now_ms)
            .arg(limits.per_name)
            .arg(limits.per_workflow)
            .run()
            .await?;
        Ok(parse(reply))
    }

    /// Resumes a failed workflow with `task` (built by the engine core from its resume point).
    pub async fn retry(&self, id: &str, task: &Task, now_ms: u64) -> Result<ControlResult> {
        if !crate::plausible_id(id) {
            return Ok(ControlResult::NotFound);
        }
        let reply: Vec<String> = self
            .wf_call("drover_retry", id)
            .arg(id)
            .arg(now_ms)
            .arg(serde_json::to_string(task)?)
            .arg(task.step)
            .arg(if task.permits.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&task.permits)?
            })
            .run()
            .await?;
        Ok(parse(reply))
    }
}
