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
        let mut call = self.fcall(name, &self.wf_key(id)).arg(id);
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
        now_ms: u64,
    ) -> Result<ControlResult> {
        let extra = [name.to_string(), serde_json::to_string(payload)?];
        self.control("drover_signal", id, &extra, now_ms).await
    }

    /// Resumes a failed workflow with `task` (built by the engine core from its resume point).
    pub async fn retry(&self, id: &str, task: &Task, now_ms: u64) -> Result<ControlResult> {
        let reply: Vec<String> = self
            .fcall("drover_retry", &self.wf_key(id))
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
