//! Ticketing systems (Jira Cloud, ServiceNow) as workflows and the API see them: read a ticket,
//! comment on it idempotently (a marker the system can be asked about before posting) and move it
//! to a status. Adapters live in `services/tickets`.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which ticketing system.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Jira,
    Servicenow,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Jira => "jira",
            System::Servicenow => "servicenow",
        }
    }
}

/// One ticket: its system, the key the API addresses it by (a Jira issue key such as `OPS-12`, a
/// ServiceNow record's `sys_id`) and what people call it (`OPS-12`, `CHG0030001`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRef {
    pub system: System,
    pub key: String,
    pub display: String,
}

/// A ticket as read now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketState {
    /// Jira's status name; ServiceNow's state as its name (`Implement`, see [`servicenow_state`]).
    pub status: String,
    /// Grows with every change of the ticket (Jira: the newest changelog id; ServiceNow:
    /// `sys_mod_count`), so events can be ordered against it.
    pub version: u64,
    pub labels: Vec<String>,
    /// Every field as the system returns it (Jira's `fields`, ServiceNow's record).
    pub fields: Value,
}

/// Why a ticketing call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TicketError {
    /// Worth retrying: 429, 5xx, no connection; `retry_after` is the system's own when it sent one.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: the system's own message (400, 401, 403, 404).
    #[error("{0}")]
    Permanent(String),
}

/// The longest comment Drover writes, in characters (Jira's limit is 32,767).
pub const MAX_COMMENT_CHARS: usize = 30_000;

/// The ticketing port.
#[async_trait]
pub trait Tickets: Send + Sync {
    async fn read(&self, ticket: &TicketRef) -> Result<TicketState, TicketError>;
    /// Whether a comment (work note) carrying `marker` is already on the ticket.
    async fn has_marker(&self, ticket: &TicketRef, marker: &str) -> Result<bool, TicketError>;
    /// Adds a comment (Jira; an ADF paragraph with the marker as a comment property) or a work
    /// note (ServiceNow; the marker in the text) to the ticket.
    async fn comment(
        &self,
        ticket: &TicketRef,
        text: &str,
        marker: &str,
    ) -> Result<(), TicketError>;
    /// Moves the ticket to `to` (a Jira status name reached by one of its transitions; a
    /// ServiceNow state name or number). A ticket already there is left alone.
    async fn transition(&self, ticket: &TicketRef, to: &str) -> Result<(), TicketError>;
}

/// ServiceNow change_request states: (number, name).
pub const SERVICENOW_STATES: [(&str, &str); 8] = [
    ("-5", "New"),
    ("-4", "Assess"),
    ("-3", "Authorize"),
    ("-2", "Scheduled"),
    ("-1", "Implement"),
    ("0", "Review"),
    ("3", "Closed"),
    ("4", "Canceled"),
];

/// A ServiceNow state, given as its number or its name (any case), as its name.
pub fn servicenow_state(s: &str) -> Option<&'static str> {
    SERVICENOW_STATES
        .iter()
        .find(|(n, name)| *n == s || name.eq_ignore_ascii_case(s))
        .map(|(_, name)| *name)
}

/// A ServiceNow state name or number as its number.
pub fn servicenow_state_number(s: &str) -> Option<&'static str> {
    SERVICENOW_STATES
        .iter()
        .find(|(n, name)| *n == s || name.eq_ignore_ascii_case(s))
        .map(|(n, _)| *n)
}
