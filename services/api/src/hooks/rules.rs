//! What an event does, by the rules: start a workflow, signal the one its ticket started (an
//! approval), or nothing (with the reason). Pure: the caller supplies what Drover remembers of
//! the ticket.

use drover_store::hook::TicketMemo;
use serde_json::{Map, Value, json};

use super::config::{On, Rule};
use super::event::Event;

/// The decision about one event.
#[derive(Debug, Clone)]
pub enum Decision<'a> {
    Start {
        rule: &'a Rule,
        input: Value,
    },
    Signal {
        rule: &'a Rule,
        signal: String,
        payload: Value,
    },
    Ignore(String),
}

/// The status the event moved the ticket to, if it moved it: Jira's changelog says so; for the
/// others, a status other than the last one applied for the ticket.
fn moved_to(event: &Event, memo: &TicketMemo) -> Option<String> {
    if event.moved_to.is_some() {
        return event.moved_to.clone();
    }
    match (&event.status, &memo.status) {
        (Some(now), Some(before)) if now == before => None,
        (Some(now), _) if event.source != super::config::Source::Jira => Some(now.clone()),
        _ => None,
    }
}

fn same_status(a: &str, b: &str, rule: &Rule) -> bool {
    match rule.source {
        super::config::Source::Servicenow => {
            drover_workflows::ports::tickets::servicenow_state(a)
                == drover_workflows::ports::tickets::servicenow_state(b)
        }
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// A dotted path into the ticket's fields.
pub fn field<'v>(fields: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(fields, |v, part| v.get(part))
        .filter(|v| !v.is_null())
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // Jira's option fields ({"value": ...}) and users ({"displayName": ...}).
        Value::Object(o) => o.get("value").or_else(|| o.get("name")).and_then(as_text),
        _ => None,
    }
}

/// The rule's input: its fixed part plus the fields taken from the ticket.
fn input_for(rule: &Rule, event: &Event) -> Result<Value, String> {
    let mut input = match &rule.input {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (key, path) in &rule.fields {
        let (path, list) = match path.strip_suffix("[]") {
            Some(p) => (p, true),
            None => (path.as_str(), false),
        };
        let v = field(&event.fields, path).ok_or_else(|| {
            format!(
                "rule {:?} matched but the ticket's field {path} (for the input's {key}) is empty",
                rule.name
            )
        })?;
        let value = if list {
            let items: Vec<String> = match v {
                Value::Array(a) => a.iter().filter_map(as_text).collect(),
                other => as_text(other)
                    .unwrap_or_default()
                    .split([',', ' ', '\n'])
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            };
            json!(items)
        } else if v.is_number() || v.is_boolean() {
            // Numbers and booleans keep their type (a Jira number field, say).
            v.clone()
        } else {
            json!(as_text(v).ok_or_else(|| format!(
                "rule {:?}: the ticket's field {path} is not text",
                rule.name
            ))?)
        };
        input.insert(key.clone(), value);
    }
    Ok(Value::Object(input))
}

fn matches(rule: &Rule, event: &Event, moved: Option<&str>) -> bool {
    if rule.source != event.source {
        return false;
    }
    let when = match rule.on {
        On::Created => event.created,
        On::Status => match (moved, &rule.to) {
            (Some(m), Some(to)) => same_status(m, to, rule),
            _ => false,
        },
        On::Label => rule
            .label
            .as_ref()
            .is_some_and(|l| event.labels_added.iter().any(|a| a == l)),
        On::Event => rule.event.as_deref() == Some(event.name.as_str()),
    };
    when && rule.only.iter().all(|(path, want)| {
        field(&event.fields, path)
            .and_then(as_text)
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    })
}

/// Decides an event against the rules and what is remembered of its ticket.
pub fn decide<'a>(rules: &'a [Rule], event: &Event, memo: &TicketMemo) -> Decision<'a> {
    let moved = moved_to(event, memo);
    // An approval of the workflow this ticket started.
    if let (Some(to), Some(rule_name), Some(_)) = (&moved, &memo.rule, &memo.workflow)
        && let Some(rule) = rules.iter().find(|r| &r.name == rule_name)
        && let Some(approval) = &rule.approval
        && same_status(to, &approval.to, rule)
    {
        return Decision::Signal {
            rule,
            signal: approval.signal.clone(),
            payload: json!({
                "approved_by": event.actor_name,
                "account": event.actor,
                "ticket": event.display,
                "status": to,
                "version": event.version,
            }),
        };
    }
    for rule in rules {
        if matches(rule, event, moved.as_deref()) {
            return match input_for(rule, event) {
                Ok(input) => Decision::Start { rule, input },
                Err(why) => Decision::Ignore(why),
            };
        }
    }
    let what = match (&moved, &event.status) {
        (Some(to), _) => format!("moved to {to:?}"),
        (None, Some(s)) => format!("status {s:?}, not a move"),
        _ => event.name.clone(),
    };
    Decision::Ignore(format!(
        "no rule matches this {} event ({what})",
        event.source.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::config::Source;

    fn rule(toml_text: &str) -> Rule {
        toml::from_str(toml_text).unwrap()
    }

    fn jira_event(moved: Option<&str>, fields: Value) -> Event {
        Event {
            source: Source::Jira,
            key: "OPS-1".into(),
            display: "OPS-1".into(),
            version: 7,
            created: false,
            status: moved.map(String::from),
            moved_to: moved.map(String::from),
            labels: vec![],
            labels_added: vec![],
            name: "jira:issue_updated".into(),
            fields,
            actor: "acc-1".into(),
            actor_name: "Alice".into(),
            at_ms: None,
        }
    }

    #[test]
    fn a_move_starts_its_rule_with_fields_and_an_approval_signals() {
        let rules = vec![rule(
            r#"
            name = "drain"
            source = "jira"
            on = "status"
            to = "Ready"
            kind = "drain-node"
            input = { maintenance = "wait-for-signal" }
            fields = { node = "customfield_10050", targets = "customfield_10051[]" }
            only = { "issuetype.name" = "Change" }
            approval = { to = "Approved", signal = "maintenance-done" }
            "#,
        )];
        let fields = json!({"customfield_10050": "node-a", "customfield_10051": "vm-1, vm-2",
                            "issuetype": {"name": "Change"}});
        let memo = TicketMemo::default();
        match decide(&rules, &jira_event(Some("Ready"), fields.clone()), &memo) {
            Decision::Start { input, .. } => assert_eq!(
                input,
                json!({"maintenance": "wait-for-signal", "node": "node-a", "targets": ["vm-1", "vm-2"]})
            ),
            other => panic!("{other:?}"),
        }
        // Another issue type: no rule.
        let bug = json!({"customfield_10050": "node-a", "issuetype": {"name": "Bug"}});
        assert!(matches!(
            decide(&rules, &jira_event(Some("Ready"), bug), &memo),
            Decision::Ignore(r) if r.contains("no rule matches")
        ));
        // A missing field: ignored with the reason.
        let empty = json!({"issuetype": {"name": "Change"}});
        assert!(matches!(
            decide(&rules, &jira_event(Some("Ready"), empty), &memo),
            Decision::Ignore(r) if r.contains("customfield_10050")
        ));
        // The approval of the ticket's workflow.
        let started = TicketMemo {
            version: Some(5),
            status: Some("Ready".into()),
            workflow: Some("w".into()),
            rule: Some("drain".into()),
        };
        match decide(&rules, &jira_event(Some("Approved"), fields), &started) {
            Decision::Signal {
                signal, payload, ..
            } => {
                assert_eq!(signal, "maintenance-done");
                assert_eq!(payload["approved_by"], "Alice");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn servicenow_moves_are_told_by_the_last_state_applied() {
        let rules = vec![rule(
            r#"
            name = "chg"
            source = "servicenow"
            on = "status"
            to = "-1"
            kind = "rolling-maintenance"
            fields = { "nodes" = "u_nodes[]" }
            "#,
        )];
        let ev = Event {
            source: Source::Servicenow,
            key: "abc".into(),
            display: "CHG0030001".into(),
            version: 3,
            created: false,
            status: Some("Implement".into()),
            moved_to: None,
            labels: vec![],
            labels_added: vec![],
            name: "change_request".into(),
            fields: json!({"u_nodes": "node-a,node-b"}),
            actor: "bob".into(),
            actor_name: "bob".into(),
            at_ms: None,
        };
        let before = TicketMemo {
            status: Some("Scheduled".into()),
            version: Some(2),
            ..TicketMemo::default()
        };
        assert!(
            matches!(decide(&rules, &ev, &before), Decision::Start { input, .. }
            if input == json!({"nodes": ["node-a", "node-b"]}))
        );
        let same = TicketMemo {
            status: Some("Implement".into()),
            ..before
        };
        assert!(matches!(decide(&rules, &ev, &same), Decision::Ignore(_)));
    }
}
