//! Submitting a workflow: its record and first task are written by one function call, so an
//! acknowledged submission is always runnable.

use std::time::Duration;

use drover_workflows::registry::Error as Refused;
use drover_workflows::{NewWorkflow, Registry, Submission};
use serde_json::{Value, json};

use crate::{Result, Store};

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

/// Why [`Store::submit_new`] did not acknowledge a submission. It wrote nothing, except after
/// [`crate::Error::NotReplicated`] (written on the primary, not confirmed by its replicas): a retry
/// with the same Idempotency-Key finds that workflow rather than making a second.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission itself is wrong (kind, input, priority, labels): the caller's to fix.
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] crate::Error),
}

/// The record as the `create` helper of the Lua library reads it.
pub(crate) fn record(wf: &NewWorkflow, parent: Option<&str>) -> Result<Value> {
    let mut rec = json!({
        "id": wf.id,
        "kind": wf.kind,
        "input": serde_json::to_string(&wf.input)?,
        "priority": wf.priority,
        "labels": wf.labels,
        "steps": serde_json::to_string(&wf.steps)?,
        "task": serde_json::to_string(&wf.task)?,
        "due": wf.task.due_ms,
    });
    if let Some(parent) = parent {
        rec["parent"] = json!(parent);
    }
    if let Some(trace) = &wf.trace {
        rec["trace"] = json!(trace);
    }
    if let Some(cluster) = &wf.cluster {
        rec["cluster"] = json!(cluster);
    }
    if !wf.task.permits.is_empty() {
        rec["permits"] = json!(serde_json::to_string(&wf.task.permits)?);
    }
    Ok(rec)
}

/// What an idempotent repeat must match: SHA-1 of the canonical JSON of kind, input, priority,
/// labels and, when it names one, cluster (serde_json sorts object keys, so equal requests give
/// equal text; a request without a cluster keeps the fingerprint it had before clusters existed).
pub fn fingerprint(wf: &NewWorkflow) -> String {
    let canonical = match &wf.cluster {
        None => json!([wf.kind, wf.input, wf.priority, wf.labels]),
        Some(c) => json!([wf.kind, wf.input, wf.priority, wf.labels, c]),
    }
    .to_string();
    sha1_smol::Sha1::from(canonical.as_bytes())
        .digest()
        .to_string()
}

impl Store {
    /// With several shards, an Idempotency-Key already used on a shard other than `shard` (the
    /// one this submission goes to): the store checks a key atomically only on its own shard,
    /// and a request that names another cluster may go to another shard. The submission there
    /// had another fingerprint (the cluster is part of it), so this one is refused as a reuse.
    /// Two first uses of one key racing on two shards can still both be created.
    async fn key_elsewhere(&self, key: &str, shard: u16) -> Result<Option<Submitted>> {
        if key.is_empty() || self.shard_count() == 1 {
            return Ok(None);
        }
        for s in self.shards().into_iter().filter(|s| s.shard() != shard) {
            let mut conn = s.connection();
            let seen: Option<String> = redis::cmd("GET")
                .arg(s.key(&format!("idem:{key}")))
                .query_async(&mut conn)
                .await?;
            if let Some(seen) = seen {
                let id = seen.split(' ').next().unwrap_or_default().to_string();
                return Ok(Some(Submitted {
                    id,
                    created: false,
                    key_reused: true,
                }));
            }
        }
        Ok(None)
    }

    /// The one way to start a workflow: checks `submission` against `registry`
    /// ([`Registry::prepare`]: kind, input, priority, labels, descendant bound), builds its first
    /// task, and writes it under `id` unless the idempotency key (kept for its TTL) or the id already
    /// names one. A refused submission writes nothing.
    pub async fn submit_new(
        &self,
        registry: &Registry,
        id: String,
        submission: Submission,
        idempotency: Option<(&str, Duration)>,
        now_ms: u64,
    ) -> std::result::Result<Submitted, SubmitError> {
        let wf = registry.prepare(id, submission, now_ms)?;
        Ok(self.submit(&wf, idempotency, now_ms).await?)
    }

    /// Writes a prepared workflow unless the idempotency key (kept for `ttl`) or the id already exists.
    pub async fn submit(
        &self,
        wf: &NewWorkflow,
        idempotency: Option<(&str, Duration)>,
        now_ms: u64,
    ) -> Result<Submitted> {
        if !crate::plausible_id(&wf.id) {
            return Err(crate::Error::InvalidId(wf.id.clone()));
        }
        let shard = self.shard_for(wf.cluster.as_deref());
        if self.shard_of(&wf.id) != shard {
            return Err(crate::Error::Misplaced {
                id: wf.id.clone(),
                shard,
            });
        }
        let (key, ttl) = idempotency.unwrap_or(("", Duration::ZERO));
        if let Some(other) = self.key_elsewhere(key, shard).await? {
            return Ok(other);
        }
        let reply: (String, String) = self
            .wf_call("drover_submit", &wf.id)
            .arg(serde_json::to_string(&record(wf, None)?)?)
            .arg(key)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(now_ms)
            .arg(fingerprint(wf))
            .run()
            .await?;
        Ok(Submitted {
            id: reply.1,
            created: reply.0 == "created",
            key_reused: reply.0 == "conflict",
        })
    }
}
