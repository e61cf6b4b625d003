//! `[hooks]`: which ticketing webhooks the API takes, their secrets (by reference), and the rules
//! that turn events into workflows.

use std::collections::BTreeMap;

use drover_workflows::ports::secrets::SecretRef;
use serde::Deserialize;
use serde_json::Value;

/// Webhook settings (`[hooks]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub jira: Option<Jira>,
    pub servicenow: Option<ServiceNow>,
    pub generic: Option<Generic>,
    pub rules: Vec<Rule>,
    /// How long a delivery id is remembered (replays within it are acknowledged and ignored).
    pub delivery_ttl_secs: u64,
    /// An event older than this (by its own timestamp) is checked against the ticket as it is now
    /// (read through `[tickets]`) before it starts anything.
    pub stale_after_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            jira: None,
            servicenow: None,
            generic: None,
            rules: Vec::new(),
            delivery_ttl_secs: 24 * 3600,
            stale_after_secs: 60,
        }
    }
}

/// Jira Cloud admin webhooks: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, the
/// delivery id in `X-Atlassian-Webhook-Identifier`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jira {
    pub secret: SecretRef,
    /// Drover's own Jira account: events it caused (its write-back) never start work.
    #[serde(default)]
    pub account_id: Option<String>,
}

/// ServiceNow outbound REST messages: an HMAC-SHA256 of `<timestamp>.<body>` in a configured
/// header, the timestamp (Unix seconds) and a delivery id in two more.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNow {
    pub secret: SecretRef,
    #[serde(default = "sn_signature")]
    pub signature_header: String,
    #[serde(default = "sn_timestamp")]
    pub timestamp_header: String,
    #[serde(default = "sn_delivery")]
    pub delivery_header: String,
    /// Largest accepted difference between the timestamp and the API's clock, in seconds.
    #[serde(default = "tolerance")]
    pub tolerance_secs: u64,
    /// Drover's own ServiceNow user (`sys_updated_by` of its write-back): never starts work.
    #[serde(default)]
    pub user: Option<String>,
}

/// The generic signed JSON hook: `X-Drover-Signature: sha256=<hex HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`, `X-Drover-Timestamp` (Unix seconds), `X-Drover-Delivery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generic {
    pub secret: SecretRef,
    #[serde(default = "tolerance")]
    pub tolerance_secs: u64,
}

fn sn_signature() -> String {
    "X-ServiceNow-Signature".into()
}
fn sn_timestamp() -> String {
    "X-ServiceNow-Timestamp".into()
}
fn sn_delivery() -> String {
    "X-ServiceNow-Delivery".into()
}
fn tolerance() -> u64 {
    300
}
fn yes() -> bool {
    true
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Jira,
    Servicenow,
    Generic,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Jira => "jira",
            Source::Servicenow => "servicenow",
            Source::Generic => "generic",
        }
    }
}

/// What about an event starts a rule's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    /// A new ticket.
    Created,
    /// The ticket moves to the status (Jira) or state (ServiceNow) `to`.
    Status,
    /// The label `label` is added (Jira).
    Label,
    /// The generic hook's `event` is `event`.
    Event,
}

/// A rule: which events start which kind, with input from the ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub source: Source,
    pub on: On,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    /// Only tickets whose fields have these values (dotted paths into the ticket's fields, such
    /// as `issuetype.name` or `project.key`; ServiceNow: the record's field names).
    #[serde(default)]
    pub only: BTreeMap<String, String>,
    pub kind: String,
    /// The cluster the workflow acts on (a `[[clusters]]` name); absent: the `[kube]` cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The input's fixed part.
    #[serde(default)]
    pub input: Value,
    /// Input fields taken from the ticket: input key -> dotted field path; a path ending in `[]`
    /// makes a list (of a list field, or of a string split at commas and spaces).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// A later move of the ticket to `to` signals the workflow it started (`signal`), with who
    /// moved it.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Comment on the ticket when the workflow starts, at milestones, when it waits for the
    /// approval and when it ends.
    #[serde(default = "yes")]
    pub comments: bool,
    /// Move the ticket to this status (state) when the workflow succeeds, or fails.
    #[serde(default)]
    pub on_success: Option<String>,
    #[serde(default)]
    pub on_failure: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub to: String,
    pub signal: String,
}

impl Config {
    /// Checks the rules can ever match and name what they need.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for r in &self.rules {
            let at = format!("hooks.rules {:?}", r.name);
            if !drover_workflows::is_name(&r.name) || !names.insert(r.name.as_str()) {
                return Err(format!(
                    "{at}: a rule needs a unique name of {}",
                    drover_workflows::NAME_RULE
                ));
            }
            let configured = match r.source {
                Source::Jira => self.jira.is_some(),
                Source::Servicenow => self.servicenow.is_some(),
                Source::Generic => self.generic.is_some(),
            };
            if !configured {
                return Err(format!(
                    "{at}: source {} has no [hooks.{}] section (its secret)",
                    r.source.as_str(),
                    r.source.as_str()
                ));
            }
            match r.on {
                On::Status if r.to.is_none() => {
                    return Err(format!("{at}: on = \"status\" needs to = \"<status>\""));
                }
                On::Label if r.label.is_none() || r.source != Source::Jira => {
                    return Err(format!(
                        "{at}: on = \"label\" needs label = \"<label>\" and source jira"
                    ));
                }
                On::Event if r.event.is_none() || r.source != Source::Generic => {
                    return Err(format!(
                        "{at}: on = \"event\" needs event = \"<name>\" and source generic"
                    ));
                }
                _ => {}
            }
            if let (Source::Servicenow, Some(to)) = (r.source, &r.to)
                && drover_workflows::ports::tickets::servicenow_state(to).is_none()
            {
                return Err(format!(
                    "{at}: {to:?} is no change_request state (New, Assess, Authorize, Scheduled, \
                     Implement, Review, Closed, Canceled or their numbers)"
                ));
            }
            if !(r.input.is_null() || r.input.is_object()) {
                return Err(format!("{at}: input must be a table"));
            }
            if let Some(a) = &r.approval
                && !drover_workflows::is_name(&a.signal)
            {
                return Err(format!(
                    "{at}: approval.signal must be {}",
                    drover_workflows::NAME_RULE
                ));
            }
        }
        Ok(())
    }
}
