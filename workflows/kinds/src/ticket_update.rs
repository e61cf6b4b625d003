//! `ticket-update`: one write-back to a ticket (a comment or work note, then optionally a move to a
//! status), made exactly once however often it is retried or its worker dies. Started by the
//! outbox dispatcher, one per event of a workflow linked to a ticket (started, a milestone,
//! waiting for an approval, paused, ended), in the order of the events.
//!
//! 0 `comment`     holds the ticket's lock (`ticket/<system>/<key>`, capacity 1, for the whole
//!                 workflow: write-backs to one ticket happen one at a time, in the order they were
//!                 created), asks the ticketing system whether a comment carrying the marker is
//!                 there already (the worker may have died after posting it) and posts it only if
//!                 not. A 429 or 5xx is retried after the system's Retry-After or with backoff, for
//!                 up to about an hour.
//! 1 `transition`  moves the ticket (a ticket already there is left alone).

use std::time::Duration;

use drover_workflows::ports::tickets::{MAX_COMMENT_CHARS, TicketRef};
use drover_workflows::sdk::{Ctx, Kind, Step, StepResult};
use drover_workflows::{Outcome, Permit, RetryPolicy, Scope};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The `ticket-update` kind.
pub struct TicketUpdate;

/// Input of `ticket-update`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub ticket: TicketRef,
    /// Identifies this write-back on the ticket (a Jira comment property, a ServiceNow note's
    /// text), so it is posted once.
    pub marker: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub transition: Option<String>,
}

/// Write-backs keep trying through a ticketing outage of about an hour, in order.
fn writeback_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 80,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// The ticket's lock: one write-back at a time per ticket, in creation order.
pub fn ticket_lock(ticket: &TicketRef) -> String {
    format!("ticket/{}/{}", ticket.system.as_str(), ticket.key)
}

impl Kind for TicketUpdate {
    const NAME: &'static str = "ticket-update";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if !drover_workflows::is_name(&ticket_lock(&i.ticket)) {
            return Err(format!(
                "ticket.key must make the lock name {:?} valid: {}",
                ticket_lock(&i.ticket),
                drover_workflows::NAME_RULE
            ));
        }
        if i.marker.is_empty() || i.marker.len() > 200 {
            return Err("marker must be 1-200 characters".into());
        }
        if i.text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_COMMENT_CHARS)
        {
            return Err(format!("text is at most {MAX_COMMENT_CHARS} characters"));
        }
        if i.text.is_none() && i.transition.is_none() {
            return Err("give text, transition or both".into());
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        vec![
            Step::new("comment", |ctx| Box::pin(comment(ctx)))
                .permits(|i: &Input| {
                    vec![Permit {
                        name: ticket_lock(&i.ticket),
                        capacity: 1,
                        scope: Scope::Workflow,
                    }]
                })
                .retry(writeback_retry()),
            Step::new("transition", |ctx| Box::pin(transition(ctx))).retry(writeback_retry()),
        ]
    }
}

async fn comment(ctx: &Ctx<'_, TicketUpdate>) -> StepResult {
    let i = ctx.input;
    let Some(text) = &i.text else {
        return Ok(Outcome::Done(json!({"posted": false})));
    };
    let tickets = ctx.tickets()?;
    if tickets.has_marker(&i.ticket, &i.marker).await? {
        return Ok(Outcome::Done(json!({"posted": false, "already": true})));
    }
    tickets.comment(&i.ticket, text, &i.marker).await?;
    Ok(Outcome::Done(json!({"posted": true})))
}

async fn transition(ctx: &Ctx<'_, TicketUpdate>) -> StepResult {
    let i = ctx.input;
    let Some(to) = &i.transition else {
        return Ok(Outcome::Done(json!({"moved": false})));
    };
    ctx.tickets()?.transition(&i.ticket, to).await?;
    Ok(Outcome::Done(json!({"moved": true, "to": to})))
}
