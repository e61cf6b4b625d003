//! Events as the rules see them, read from each sender's JSON.

use drover_workflows::ports::tickets::{System, TicketRef, servicenow_state};
use serde_json::Value;

use super::config::Source;

/// One webhook event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source: Source,
    /// The ticket's key (Jira issue key, ServiceNow sys_id, the generic hook's `ticket`).
    pub key: String,
    /// What people call it (`OPS-12`, `CHG0030001`).
    pub display: String,
    /// Orders the ticket's events (Jira: the changelog id, 0 for a creation; ServiceNow:
    /// `sys_mod_count`; generic: `version`).
    pub version: u64,
    pub created: bool,
    /// The status (Jira), the state's name (ServiceNow), the generic hook's `status`.
    pub status: Option<String>,
    /// The status the event moved the ticket to, when it says so (Jira's changelog); for the
    /// others a move is a status that differs from the last one applied.
    pub moved_to: Option<String>,
    pub labels: Vec<String>,
    pub labels_added: Vec<String>,
    /// The generic hook's event name, Jira's `webhookEvent`.
    pub name: String,
    pub fields: Value,
    /// Who made the change (Jira accountId, ServiceNow user name) and their display name.
    pub actor: String,
    pub actor_name: String,
    /// When the sender says it happened (ms), if it does.
    pub at_ms: Option<i64>,
}

impl Event {
    pub fn ticket(&self) -> Option<TicketRef> {
        let system = match self.source {
            Source::Jira => System::Jira,
            Source::Servicenow => System::Servicenow,
            Source::Generic => return None,
        };
        Some(TicketRef {
            system,
            key: self.key.clone(),
            display: self.display.clone(),
        })
    }
}

/// What a ticket key may be: it becomes part of a Redis key and a permit name.
pub fn is_ticket_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn key_of(v: &Value, what: &str) -> Result<String, String> {
    let k = text(v).ok_or_else(|| format!("{what} is missing"))?;
    if !is_ticket_key(&k) {
        return Err(format!(
            "{what} must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(k)
}

/// A Jira Cloud webhook body.
pub fn jira(body: &Value) -> Result<Event, String> {
    let issue = &body["issue"];
    if !issue.is_object() {
        return Err("not an issue event: the body has no issue object".into());
    }
    let key = key_of(&issue["key"], "issue.key")?;
    let fields = issue["fields"].clone();
    let name = text(&body["webhookEvent"]).ok_or("webhookEvent is missing")?;
    let items = body["changelog"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let item = |field: &str| items.iter().find(|i| i["field"] == field);
    let moved_to = item("status").and_then(|i| text(&i["toString"]));
    let labels_added = item("labels")
        .map(|i| {
            let before: Vec<String> = text(&i["fromString"])
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
            text(&i["toString"])
                .unwrap_or_default()
                .split_whitespace()
                .filter(|l| !before.iter().any(|b| b == l))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Event {
        source: Source::Jira,
        display: key.clone(),
        key,
        version: number(&body["changelog"]["id"]).unwrap_or(0),
        created: name == "jira:issue_created",
        status: text(&fields["status"]["name"]),
        moved_to,
        labels: fields["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default(),
        labels_added,
        name,
        actor: text(&body["user"]["accountId"]).unwrap_or_default(),
        actor_name: text(&body["user"]["displayName"]).unwrap_or_default(),
        at_ms: body["timestamp"].as_i64(),
        fields,
    })
}

/// A ServiceNow outbound message (the business rule's JSON: the change_request's fields).
pub fn servicenow(body: &Value, timestamp_s: i64) -> Result<Event, String> {
    if !body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let key = key_of(&body["sys_id"], "sys_id")?;
    let state = text(&body["state"]).ok_or("state is missing")?;
    let status = servicenow_state(&state)
        .ok_or_else(|| format!("state {state:?} is no change_request state"))?;
    let version = number(&body["sys_mod_count"]).ok_or("sys_mod_count is missing")?;
    Ok(Event {
        source: Source::Servicenow,
        display: text(&body["number"]).unwrap_or_else(|| key.clone()),
        key,
        version,
        created: version == 0,
        status: Some(status.to_string()),
        moved_to: None,
        labels: Vec::new(),
        labels_added: Vec::new(),
        name: "change_request".into(),
        actor: text(&body["sys_updated_by"]).unwrap_or_default(),
        actor_name: text(&body["sys_updated_by"]).unwrap_or_default(),
        at_ms: Some(timestamp_s * 1000),
        fields: body.clone(),
    })
}

/// The generic hook: `{ticket, version, event, status?, labels?, fields?, actor?}`.
pub fn generic(body: &Value, timestamp_s: i64) -> Result<Event, String> {
    if !body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let key = key_of(&body["ticket"], "ticket")?;
    let version = number(&body["version"]).ok_or("version (a number) is missing")?;
    let name = text(&body["event"]).ok_or("event is missing")?;
    Ok(Event {
        source: Source::Generic,
        display: key.clone(),
        key,
        version,
        created: name == "created",
        status: text(&body["status"]),
        moved_to: None,
        labels: body["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default(),
        labels_added: Vec::new(),
        name,
        actor: text(&body["actor"]).unwrap_or_default(),
        actor_name: text(&body["actor"]).unwrap_or_default(),
        at_ms: Some(timestamp_s * 1000),
        fields: body["fields"].clone(),
    })
}
