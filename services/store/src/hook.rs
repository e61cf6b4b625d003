//! Ticketing webhooks and the write-back outbox in Redis (`lua/hook.lua`): a delivery's decision
//! applied with its bookkeeping (delivery ids remembered, tickets' versions kept, the workflow
//! started or signalled) in one call; the outbox read and taken one entry at a time, each entry
//! becoming its ticket-update workflow in the same call that removes it.

use std::collections::HashMap;
use std::time::Duration;

use drover_workflows::NewWorkflow;
use redis::AsyncCommands;
use serde_json::Value;

use crate::{Result, SignalLimits, Store};

/// What Drover remembers of a ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketMemo {
    /// The newest event version applied.
    pub version: Option<u64>,
    /// The status that event carried.
    pub status: Option<String>,
    /// The workflow the ticket started, and the rule that started it.
    pub workflow: Option<String>,
    pub rule: Option<String>,
}

/// What to do with a delivery.
#[derive(Debug, Clone)]
pub enum HookAction<'a> {
    Start {
        workflow: &'a NewWorkflow,
        /// Kept on the workflow record (`ticket`): where its write-back goes.
        ticket: &'a Value,
        /// Report the start to the outbox (a comment on the ticket).
        comments: bool,
    },
    Signal {
        name: &'a str,
        payload: &'a Value,
    },
    Ignore(String),
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// The delivery id was handled before (its outcome then).
    Duplicate(String),
    /// An event as old as or older than one applied for the ticket (that version).
    Stale(u64),
    /// Another event of the ticket was applied since the memo was read: decide again.
    Retry,
    Started(String),
    /// The workflow for this ticket version exists already (the same change delivered twice).
    Existing(String),
    Signalled {
        workflow: String,
        how: String,
    },
    Ignored(String),
}

/// One delivery, as the API decided it.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub source: &'a str,
    pub ticket: &'a str,
    pub id: &'a str,
    /// How long the delivery id is remembered.
    pub ttl: Duration,
    pub version: u64,
    /// The memo's version the decision was made against.
    pub expected: Option<u64>,
    pub status: &'a str,
    pub rule: &'a str,
}

impl Store {
    fn ticket_key(&self, source: &str, ticket: &str) -> String {
        self.key(&format!("hook:ticket:{source}:{ticket}"))
    }

    pub async fn ticket_memo(&self, source: &str, ticket: &str) -> Result<TicketMemo> {
        let mut conn = self.connection();
        let h: HashMap<String, String> = conn.hgetall(self.ticket_key(source, ticket)).await?;
        Ok(TicketMemo {
            version: h.get("version").and_then(|v| v.parse().ok()),
            status: h.get("status").cloned(),
            workflow: h.get("wf").cloned(),
            rule: h.get("rule").cloned(),
        })
    }

    /// Applies a delivery's decision (see `lua/hook.lua`).
    pub async fn hook_apply(
        &self,
        d: &Delivery<'_>,
        action: &HookAction<'_>,
        limits: SignalLimits,
        now_ms: u64,
    ) -> Result<HookOutcome> {
        let (kind, record, ticket, signal, payload, reason, comments) = match action {
            HookAction::Start {
                workflow,
                ticket,
                comments,
            } => (
                "start",
                crate::submit::record(workflow, None)?.to_string(),
                ticket.to_string(),
                String::new(),
                String::new(),
                String::new(),
                *comments,
            ),
            HookAction::Signal { name, payload } => (
                "signal",
                String::new(),
                String::new(),
                name.to_string(),
                payload.to_string(),
                String::new(),
                false,
            ),
            HookAction::Ignore(reason) => (
                "ignore",
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                reason.clone(),
                false,
            ),
        };
        let reply: Vec<String> = self
            .fcall("drover_hook", &self.ticket_key(d.source, d.ticket))
            .arg(d.source)
            .arg(d.id)
            .arg(d.ttl.as_millis().max(1) as u64)
            .arg(d.version)
            .arg(d.expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(d.status)
            .arg(now_ms)
            .arg(kind)
            .arg(record)
            .arg(ticket)
            .arg(signal)
            .arg(payload)
            .arg(reason)
            .arg(d.rule)
            .arg(if comments { "1" } else { "0" })
            .arg(limits.per_name)
            .arg(limits.per_workflow)
            .run()
            .await?;
        let arg = |i: usize| reply.get(i).cloned().unwrap_or_default();
        Ok(match reply.first().map(String::as_str) {
            Some("duplicate") => HookOutcome::Duplicate(arg(1)),
            Some("stale") => HookOutcome::Stale(arg(1).parse().unwrap_or(0)),
            Some("retry") => HookOutcome::Retry,
            Some("started") => HookOutcome::Started(arg(1)),
            Some("existing") => HookOutcome::Existing(arg(1)),
            Some("signalled") => HookOutcome::Signalled {
                workflow: arg(1),
                how: arg(2),
            },
            _ => HookOutcome::Ignored(arg(1)),
        })
    }

    /// The first `n` outbox entries, oldest first.
    pub async fn outbox_peek(&self, n: usize) -> Result<Vec<Value>> {
        let mut conn = self.connection();
        let rows: Vec<String> = conn
            .lrange(self.key("outbox"), 0, n.max(1) as isize - 1)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Takes the outbox's first entry if it is `seq`, creating `workflow` (if any) in the same
    /// call. False when another dispatcher took it.
    pub async fn outbox_take(
        &self,
        seq: u64,
        workflow: Option<&NewWorkflow>,
        now_ms: u64,
    ) -> Result<bool> {
        let record = match workflow {
            Some(wf) => crate::submit::record(wf, None)?.to_string(),
            None => String::new(),
        };
        let n: i64 = self
            .fcall("drover_outbox_take", &self.key("outbox"))
            .arg(seq)
            .arg(record)
            .arg(now_ms)
            .run()
            .await?;
        Ok(n == 1)
    }

    /// A dedicated connection on which outbox dispatchers wait for new entries.
    pub async fn outbox_waiter(&self, block: Duration) -> Result<crate::Waiter> {
        let mut w = self.waiter(block).await?;
        w.key = self.key("outbox:wake");
        Ok(w)
    }
}
