//! How Jira's and ServiceNow's answers become the port's [`TicketError`].
//!
//! - 429: Transient, with the system's `Retry-After` (seconds or an HTTP date).
//! - 408, 5xx (500, 502, 503, 504 and the rest), timeouts, connections refused or cut: Transient
//!   (with `Retry-After` when sent). A write's outcome is then unknown; the engine retries the step,
//!   which asks `has_marker` (or reads the status) before writing again.
//! - Every other status (400, 401, 403, 404, 413, ...): Permanent, with the HTTP status and the
//!   system's own message (Jira's `errorMessages` and `errors`, ServiceNow's `error.message` and
//!   `error.detail`). A 401 names the configuration to check, never a credential.
//!
//! Messages start with the system and the operation, `jira: comment on OPS-12: ...`.

use std::time::{Duration, SystemTime};

use drover_workflows::ports::tickets::{System, TicketError};
use serde_json::Value;

/// Errors of the adapter itself (not of a call).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("tickets configuration: {0}")]
    Config(String),
}

/// Longest piece of a system's answer kept in a message (a proxy's HTML page can be long).
const MAX_MESSAGE: usize = 500;

/// A `Retry-After` value: delay-seconds or an HTTP date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The system's own message in an error body, or the body itself (trimmed, whitespace collapsed,
/// clipped) when it is not the system's JSON.
pub fn system_message(system: System, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.and_then(|v| match system {
        System::Jira => jira_message(&v),
        System::Servicenow => servicenow_message(&v),
    });
    clip(&message.unwrap_or_else(|| body.split_whitespace().collect::<Vec<_>>().join(" ")))
}

/// Jira: `{"errorMessages": ["..."], "errors": {"field": "..."}}`, joined with `; `.
fn jira_message(v: &Value) -> Option<String> {
    let mut parts: Vec<String> = v["errorMessages"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(errors) = v["errors"].as_object() {
        for (field, message) in errors {
            let text = message
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| message.to_string());
            parts.push(format!("{field}: {text}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// ServiceNow: `{"error": {"message": "...", "detail": "..."}, "status": "failure"}`.
fn servicenow_message(v: &Value) -> Option<String> {
    let text = |k: &str| v["error"][k].as_str().filter(|s| !s.trim().is_empty());
    match (text("message"), text("detail")) {
        (Some(m), Some(d)) => Some(format!("{m}: {d}")),
        (Some(m), None) => Some(m.to_string()),
        (None, Some(d)) => Some(d.to_string()),
        (None, None) => None,
    }
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// What a failed call was, for messages and for deciding what a retry may do.
pub struct Context<'a> {
    pub system: System,
    /// `comment on OPS-12`.
    pub what: &'a str,
    /// A write whose outcome a failure may leave unknown.
    pub write: bool,
    /// Where to look when the credentials are refused: `tickets.jira.email and the secret
    /// "jira-token"`.
    pub credentials: &'a str,
}

impl Context<'_> {
    fn prefix(&self) -> String {
        format!("{}: {}", self.system.as_str(), self.what)
    }

    fn unknown_outcome(&self) -> &'static str {
        if self.write {
            "; it may have been applied"
        } else {
            ""
        }
    }
}

/// Classifies a non-2xx answer.
pub fn classify(
    cx: &Context<'_>,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> TicketError {
    let message = system_message(cx.system, body);
    let prefix = cx.prefix();
    match status {
        429 => TicketError::Transient {
            message: format!("{prefix}: rate limited (429 {message})"),
            retry_after,
        },
        408 | 500..=599 => TicketError::Transient {
            message: format!(
                "{prefix}: unavailable ({status} {message}){}",
                if status == 503 {
                    ""
                } else {
                    cx.unknown_outcome()
                }
            ),
            retry_after,
        },
        401 => TicketError::Permanent(format!(
            "{prefix}: the credentials were refused (401 {message}); check {}",
            cx.credentials
        )),
        _ => TicketError::Permanent(format!("{prefix}: {status} {message}")),
    }
}

/// Classifies a transport failure (no HTTP answer). reqwest's messages carry the URL, which holds
/// no credentials (they go in the Authorization header).
pub fn transport(cx: &Context<'_>, e: &reqwest::Error) -> TicketError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let prefix = cx.prefix();
    if e.is_builder() {
        return TicketError::Permanent(format!("{prefix}: {detail}"));
    }
    let message = if e.is_connect() {
        format!("{prefix}: cannot reach {} ({detail})", cx.system.as_str())
    } else if e.is_timeout() {
        format!(
            "{prefix}: no answer in time{} ({detail})",
            cx.unknown_outcome()
        )
    } else {
        format!(
            "{prefix}: the connection failed mid-request{} ({detail})",
            cx.unknown_outcome()
        )
    };
    TicketError::Transient {
        message,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(system: System, write: bool) -> Context<'static> {
        Context {
            system,
            what: "comment on OPS-1",
            write,
            credentials: "tickets.jira.email and the secret \"jira-token\"",
        }
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // RFC 9110's example date, 120 s after `now`.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(
                "Wed, 21 Oct 2015 07:00:00 GMT",
                now + Duration::from_secs(99_999)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn classes_and_messages() {
        let s = Some(Duration::from_secs(3));
        let jira_404 = r#"{"errorMessages":["Issue does not exist or you do not have permission to see it."],"errors":{}}"#;
        assert_eq!(
            classify(&cx(System::Jira, false), 404, None, jira_404),
            TicketError::Permanent(
                "jira: comment on OPS-1: 404 Issue does not exist or you do not have permission to see it."
                    .into()
            )
        );
        let fields =
            r#"{"errorMessages":[],"errors":{"comment":"Comment body can not be empty!"}}"#;
        assert_eq!(
            classify(&cx(System::Jira, true), 400, None, fields).to_string(),
            "jira: comment on OPS-1: 400 comment: Comment body can not be empty!"
        );
        let sn = r#"{"error":{"message":"No Record found","detail":"Record doesn't exist"},"status":"failure"}"#;
        assert_eq!(
            classify(&cx(System::Servicenow, false), 404, None, sn).to_string(),
            "servicenow: comment on OPS-1: 404 No Record found: Record doesn't exist"
        );
        assert_eq!(
            classify(&cx(System::Jira, true), 429, s, "{}"),
            TicketError::Transient {
                message: "jira: comment on OPS-1: rate limited (429 {})".into(),
                retry_after: s
            }
        );
        let html = "<html><body><h1>503 Service Unavailable</h1>\nNo server.\n</body></html>";
        match classify(&cx(System::Jira, true), 503, None, html) {
            TicketError::Transient { message, .. } => {
                assert_eq!(
                    message,
                    "jira: comment on OPS-1: unavailable (503 <html><body><h1>503 Service \
                     Unavailable</h1> No server. </body></html>)"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(
            classify(&cx(System::Jira, true), 502, None, "")
                .to_string()
                .ends_with("it may have been applied")
        );
        let e = classify(&cx(System::Jira, false), 401, None, "{}").to_string();
        assert!(
            e.contains("credentials were refused (401") && e.contains("jira-token"),
            "{e}"
        );
        for status in [400, 403, 404, 413] {
            assert!(matches!(
                classify(&cx(System::Servicenow, false), status, None, ""),
                TicketError::Permanent(_)
            ));
        }
        let long = "x".repeat(5000);
        assert!(
            classify(&cx(System::Jira, false), 400, None, &long)
                .to_string()
                .len()
                < 600
        );
    }
}
