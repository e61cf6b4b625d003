//! The hand-back of a claim at shutdown: a worker whose grace period ended mid-step gives the task
//! back (fenced by the token) instead of leaving it to its lease, so another worker resumes it at once
//! and the cut-off run costs no attempt.

use crate::{Result, Store};

/// What a hand-back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handback {
    /// The lease and the step's permits were released and the task queued for any worker.
    Released,
    /// The token no longer holds the lease (the attempt committed, or its lease expired and moved
    /// on): nothing changed.
    Stale,
    /// No such workflow.
    Gone,
}

impl Store {
    /// Hands the task of the attempt holding `token` back to the queue, without counting an attempt.
    pub async fn handback(&self, id: &str, token: u64, now_ms: u64) -> Result<Handback> {
        let reply: Vec<String> = self
            .wf_call("drover_handback", id)
            .arg(id)
            .arg(token)
            .arg(now_ms)
            .arg(self.history_max())
            .run()
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Handback::Released,
            Some("stale") => Handback::Stale,
            _ => Handback::Gone,
        })
    }
}
