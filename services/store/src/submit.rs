//! Submitting a workflow: its record and first task are written by one function call, so an
//! acknowledged submission is always runnable.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::Task;
use serde_json::{Value, json};

use crate::{Result, Store};

/// A workflow to create.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    pub task: Task,
}

/// The outcome of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    /// False when the idempotency key (or the id) already named a workflow: nothing was written.
    pub created: bool,
    /// The idempotency key named a workflow submitted with a different request (kind, input,
    /// priority or labels): nothing was written, and `id` is that other workflow.
    pub key_reused: bool,
}

impl NewWorkflow {
    /// The record as the `create` helper of the Lua library reads it.
    pub(crate) fn to_record(&self, parent: Option<&str>) -> Result<Value> {
        let mut rec = json!({
            "id": self.id,
            "kind": self.kind,
            "input": serde_json::to_string(&self.input)?,
            "priority": self.priority,
            "labels": self.labels,
            "task": serde_json::to_string(&self.task)?,
            "due": self.task.due_ms,
        });
        if let Some(parent) = parent {
            rec["parent"] = json!(parent);
        }
        if !self.task.permits.is_empty() {
            rec["permits"] = json!(serde_json::to_string(&self.task.permits)?);
        }
        Ok(rec)
    }

    /// What an idempotent repeat must match: SHA-1 of the canonical JSON of kind, input, priority
    /// and labels (serde_json sorts object keys, so equal requests give equal text).
    pub fn fingerprint(&self) -> String {
        let canonical = json!([self.kind, self.input, self.priority, self.labels]).to_string();
        sha1_smol::Sha1::from(canonical.as_bytes())
            .digest()
            .to_string()
    }
}

impl Store {
    /// Creates the workflow unless the idempotency key (kept for `ttl`) or the id already exists.
    pub async fn submit(
        &self,
        wf: &NewWorkflow,
        idempotency: Option<(&str, Duration)>,
        now_ms: u64,
    ) -> Result<Submitted> {
        if !crate::plausible_id(&wf.id) {
            return Err(crate::Error::InvalidId(wf.id.clone()));
        }
        let (key, ttl) = idempotency.unwrap_or(("", Duration::ZERO));
        let reply: (String, String) = self
            .fcall("drover_submit", &self.wf_key(&wf.id))
            .arg(serde_json::to_string(&wf.to_record(None)?)?)
            .arg(key)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(now_ms)
            .arg(wf.fingerprint())
            .run()
            .await?;
        Ok(Submitted {
            id: reply.1,
            created: reply.0 == "created",
            key_reused: reply.0 == "conflict",
        })
    }
}
