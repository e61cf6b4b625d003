//! Jira Cloud, REST API v3 (HTTP Basic with the account's email and an API token).
//!
//! - `read`: `GET /rest/api/3/issue/{key}?expand=changelog`. The version is the largest changelog
//!   history id, the number Jira's webhooks carry as `changelog.id`, so an event can be ordered
//!   against a read. When the expanded changelog is a partial page, the last entry is fetched from
//!   `GET .../changelog`.
//! - `has_marker`: the issue's comments with their properties, newest first, page by page, looking
//!   for a `drover` property whose value is `{"marker": <marker>}`.
//! - `comment`: `POST .../comment` with an ADF body (a paragraph per blank-line-separated block,
//!   single line breaks as `hardBreak`) and the marker as the `drover` comment property.
//! - `transition`: nothing when the issue is already in the status; else the transition whose
//!   target status (or name) is `to`. When Jira refuses it, the status is read again: someone may
//!   have moved the issue there meanwhile.

use drover_workflows::ports::tickets::{TicketError, TicketRef, TicketState};
use reqwest::Method;
use serde_json::{Value, json};

use crate::request::{Call, Endpoint};

/// The comment property holding Drover's marker.
pub const MARKER_PROPERTY: &str = "drover";
/// Comments per page when looking for a marker.
const PAGE: usize = 100;

pub async fn read(jira: &Endpoint, t: &TicketRef) -> Result<TicketState, TicketError> {
    let what = format!("read {}", t.key);
    let issue = jira
        .read(
            &Call::get(&what, &t.key, &["rest", "api", "3", "issue", &t.key])
                .query("expand", "changelog"),
        )
        .await?;
    let mut version = newest_history(&issue["changelog"]["histories"]);
    let changelog = &issue["changelog"];
    let (total, listed) = (
        changelog["total"].as_u64().unwrap_or(0),
        changelog["histories"].as_array().map_or(0, Vec::len) as u64,
    );
    if total > listed {
        // A partial page: the newest entry is the last of the full changelog.
        let page = jira
            .read(
                &Call::get(
                    &what,
                    &t.key,
                    &["rest", "api", "3", "issue", &t.key, "changelog"],
                )
                .query("startAt", (total - 1).to_string())
                .query("maxResults", "1"),
            )
            .await?;
        version = version.max(newest_history(&page["values"]));
    }
    state(&issue, version).ok_or_else(|| {
        TicketError::Permanent(format!("jira: {what}: the issue has no fields.status.name"))
    })
}

/// The issue's state from `GET .../issue/{key}`'s answer and the changelog's newest id.
fn state(issue: &Value, version: u64) -> Option<TicketState> {
    let fields = &issue["fields"];
    let status = fields["status"]["name"].as_str()?.to_string();
    let labels = fields["labels"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(TicketState {
        status,
        version,
        labels,
        fields: fields.clone(),
    })
}

/// The largest numeric `id` of a list of changelog histories (ids are strings); 0 for none.
fn newest_history(histories: &Value) -> u64 {
    histories
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| match &h["id"] {
            Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        })
        .max()
        .unwrap_or(0)
}

pub async fn has_marker(jira: &Endpoint, t: &TicketRef, marker: &str) -> Result<bool, TicketError> {
    let what = format!("look for marker {marker:?} on {}", t.key);
    let mut start = 0usize;
    loop {
        let page = jira
            .read(
                &Call::get(
                    &what,
                    &t.key,
                    &["rest", "api", "3", "issue", &t.key, "comment"],
                )
                .query("expand", "properties")
                .query("orderBy", "-created")
                .query("startAt", start.to_string())
                .query("maxResults", PAGE.to_string()),
            )
            .await?;
        let comments = page["comments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if comments.iter().any(|c| carries(c, marker)) {
            return Ok(true);
        }
        start += comments.len();
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        if comments.is_empty() || start >= total {
            return Ok(false);
        }
    }
}

/// Whether a comment (with `expand=properties`) carries `marker`.
fn carries(comment: &Value, marker: &str) -> bool {
    comment["properties"].as_array().is_some_and(|props| {
        props
            .iter()
            .any(|p| p["key"] == MARKER_PROPERTY && p["value"]["marker"] == marker)
    })
}

pub async fn comment(
    jira: &Endpoint,
    t: &TicketRef,
    text: &str,
    marker: &str,
) -> Result<(), TicketError> {
    let body = json!({
        "body": adf(text),
        "properties": [{"key": MARKER_PROPERTY, "value": {"marker": marker}}],
    });
    let call = Call::send(
        Method::POST,
        format!("comment on {}", t.key),
        &t.key,
        &["rest", "api", "3", "issue", &t.key, "comment"],
        body,
    );
    jira.write(&call).await.map(|_| ())
}

/// Plain text as an ADF document: a paragraph per block of lines separated by blank lines, line
/// breaks inside a block as `hardBreak` nodes (ADF text nodes must not be empty).
pub fn adf(text: &str) -> Value {
    let mut paragraphs = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    let flush = |lines: &mut Vec<&str>, paragraphs: &mut Vec<Value>| {
        if lines.is_empty() {
            return;
        }
        let mut content = Vec::new();
        for (i, line) in lines.drain(..).enumerate() {
            if i > 0 {
                content.push(json!({"type": "hardBreak"}));
            }
            if !line.is_empty() {
                content.push(json!({"type": "text", "text": line}));
            }
        }
        paragraphs.push(json!({"type": "paragraph", "content": content}));
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut lines, &mut paragraphs);
        } else {
            lines.push(line);
        }
    }
    flush(&mut lines, &mut paragraphs);
    if paragraphs.is_empty() {
        paragraphs.push(json!({"type": "paragraph", "content": []}));
    }
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

pub async fn transition(jira: &Endpoint, t: &TicketRef, to: &str) -> Result<(), TicketError> {
    let what = format!("move {} to {to:?}", t.key);
    let current = status(jira, t, &what).await?;
    if current.eq_ignore_ascii_case(to) {
        return Ok(());
    }
    let listed = jira
        .read(&Call::get(
            &what,
            &t.key,
            &["rest", "api", "3", "issue", &t.key, "transitions"],
        ))
        .await?;
    let transitions = listed["transitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(id) = pick(transitions, to) else {
        return Err(TicketError::Permanent(format!(
            "jira: {what}: no transition from {current:?} leads there; available: {}",
            available(transitions)
        )));
    };
    let call = Call::send(
        Method::POST,
        &what,
        &t.key,
        &["rest", "api", "3", "issue", &t.key, "transitions"],
        json!({"transition": {"id": id}}),
    );
    match jira.write(&call).await {
        Ok(_) => Ok(()),
        // Someone else may have moved it there between our read and our request.
        Err(e @ TicketError::Permanent(_)) => match status(jira, t, &what).await {
            Ok(now) if now.eq_ignore_ascii_case(to) => Ok(()),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The issue's status name, read alone.
async fn status(jira: &Endpoint, t: &TicketRef, what: &str) -> Result<String, TicketError> {
    let issue = jira
        .read(
            &Call::get(what, &t.key, &["rest", "api", "3", "issue", &t.key])
                .query("fields", "status"),
        )
        .await?;
    issue["fields"]["status"]["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            TicketError::Permanent(format!("jira: {what}: the issue has no fields.status.name"))
        })
}

/// The id of the transition whose target status is `to`, else the one named `to`.
fn pick(transitions: &[Value], to: &str) -> Option<String> {
    let id = |t: &Value| match &t["id"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let named = |field: &Value| field.as_str().is_some_and(|n| n.eq_ignore_ascii_case(to));
    transitions
        .iter()
        .find(|t| named(&t["to"]["name"]))
        .or_else(|| transitions.iter().find(|t| named(&t["name"])))
        .and_then(id)
}

/// `Approve (to Approved), Reject (to Rejected)`, or `none`.
fn available(transitions: &[Value]) -> String {
    let listed: Vec<String> = transitions
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap_or("?");
            match t["to"]["name"].as_str() {
                Some(to) => format!("{name} (to {to})"),
                None => name.to_string(),
            }
        })
        .collect();
    if listed.is_empty() {
        "none".into()
    } else {
        listed.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_paragraphs_and_breaks() {
        assert_eq!(
            adf("Drained node-a.\nNext: node-b\n\n\nDone [x]\r\n"),
            json!({"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "Drained node-a."},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "Next: node-b"},
                ]},
                {"type": "paragraph", "content": [{"type": "text", "text": "Done [x]"}]},
            ]})
        );
        assert_eq!(
            adf("  \n"),
            json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": []}]})
        );
    }

    #[test]
    fn versions_markers_and_transitions() {
        let issue = json!({"fields": {"status": {"name": "To Do"}, "labels": ["drover", 3]},
            "changelog": {"histories": [{"id": "10100"}, {"id": "10999"}, {"id": "9999"}]}});
        let s = state(&issue, newest_history(&issue["changelog"]["histories"])).unwrap();
        assert_eq!(
            (s.status.as_str(), s.version, s.labels),
            ("To Do", 10999, vec!["drover".to_string()])
        );
        assert_eq!(newest_history(&Value::Null), 0);
        assert!(state(&json!({"fields": {}}), 0).is_none());

        let c = json!({"properties": [{"key": "other", "value": {"marker": "m"}}, {"key": "drover", "value": {"marker": "wf-1/note"}}]});
        assert!(carries(&c, "wf-1/note"));
        assert!(!carries(&c, "m") && !carries(&c, "wf-1"));
        assert!(!carries(&json!({}), "m"));

        let ts = [
            json!({"id": "21", "name": "Approve", "to": {"name": "Approved"}}),
            json!({"id": "41", "name": "Reject", "to": {"name": "Rejected"}}),
            json!({"id": "31", "name": "Approved", "to": {"name": "Done"}}),
        ];
        // The target status wins over a transition's name.
        assert_eq!(pick(&ts, "approved").as_deref(), Some("21"));
        assert_eq!(pick(&ts, "Reject").as_deref(), Some("41"));
        assert_eq!(pick(&ts, "Closed"), None);
        assert_eq!(
            available(&ts),
            "Approve (to Approved), Reject (to Rejected), Approved (to Done)"
        );
        assert_eq!(available(&[]), "none");
    }
}
