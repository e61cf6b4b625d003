//! ServiceNow, the Table API on `change_request` (HTTP Basic with an integration user).
//!
//! - `read`: `GET /api/now/table/change_request/{sys_id}`; the state as its name, the version
//!   `sys_mod_count` (which every update of the record raises), the record as the fields.
//! - `has_marker`: the record's work notes in `sys_journal_field`, asked for one whose value
//!   contains `[drover:<marker>]`.
//! - `comment`: a work note (`PATCH` with `work_notes`), the marker on its last line.
//! - `transition`: nothing when the record is already in the state; else `PATCH` with `state`,
//!   whose answer must show the new state (a business rule may keep the old one and answer 200).

use drover_workflows::ports::tickets::{
    SERVICENOW_STATES, TicketError, TicketRef, TicketState, servicenow_state,
    servicenow_state_number,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::request::{Call, Endpoint};

const CHANGES: [&str; 4] = ["api", "now", "table", "change_request"];
const JOURNAL: [&str; 4] = ["api", "now", "table", "sys_journal_field"];

pub async fn read(sn: &Endpoint, t: &TicketRef) -> Result<TicketState, TicketError> {
    let what = format!("read {}", label(t));
    let record = record(sn, t, &what, None).await?;
    let state = value(&record["state"]);
    let status = servicenow_state(&state).map_or(state.clone(), str::to_string);
    Ok(TicketState {
        status,
        version: value(&record["sys_mod_count"]).parse().unwrap_or(0),
        labels: Vec::new(),
        fields: record,
    })
}

/// The change request's `result`, all fields or only `fields`.
async fn record(
    sn: &Endpoint,
    t: &TicketRef,
    what: &str,
    fields: Option<&str>,
) -> Result<Value, TicketError> {
    let path = path(&CHANGES, &t.key);
    let mut call = Call::get(what, &t.key, &path);
    if let Some(f) = fields {
        call = call.query("sysparm_fields", f);
    }
    let mut answer = sn.read(&call).await?;
    match answer.get_mut("result").map(Value::take) {
        Some(record @ Value::Object(_)) => Ok(record),
        _ => Err(TicketError::Permanent(format!(
            "servicenow: {what}: the answer has no result record"
        ))),
    }
}

pub async fn has_marker(sn: &Endpoint, t: &TicketRef, marker: &str) -> Result<bool, TicketError> {
    let what = format!("look for marker {marker:?} on {}", label(t));
    check_marker(&what, marker)?;
    let query = format!(
        "element_id={}^element=work_notes^valueLIKE{}",
        escape(&t.key),
        escape(&tag(marker))
    );
    let found = sn
        .read(
            &Call::get(&what, &t.key, &JOURNAL)
                .query("sysparm_query", query)
                .query("sysparm_fields", "sys_id")
                .query("sysparm_limit", "1"),
        )
        .await?;
    Ok(found["result"].as_array().is_some_and(|r| !r.is_empty()))
}

pub async fn comment(
    sn: &Endpoint,
    t: &TicketRef,
    text: &str,
    marker: &str,
) -> Result<(), TicketError> {
    let what = format!("add a work note to {}", label(t));
    check_marker(&what, marker)?;
    let note = format!("{}\n{}", text.trim_end(), tag(marker));
    let path = path(&CHANGES, &t.key);
    let call = Call::send(
        Method::PATCH,
        &what,
        &t.key,
        &path,
        json!({ "work_notes": note }),
    );
    sn.write(&call).await.map(|_| ())
}

pub async fn transition(sn: &Endpoint, t: &TicketRef, to: &str) -> Result<(), TicketError> {
    let what = format!("move {} to {to:?}", label(t));
    let Some(number) = servicenow_state_number(to) else {
        let states: Vec<String> = SERVICENOW_STATES
            .iter()
            .map(|(n, name)| format!("{name} ({n})"))
            .collect();
        return Err(TicketError::Permanent(format!(
            "servicenow: {what}: not a change_request state; the states are {}",
            states.join(", ")
        )));
    };
    let current = record(sn, t, &what, Some("state")).await?;
    if servicenow_state_number(&value(&current["state"])) == Some(number) {
        return Ok(());
    }
    let path = path(&CHANGES, &t.key);
    let call = Call::send(
        Method::PATCH,
        &what,
        &t.key,
        &path,
        json!({ "state": number }),
    );
    let answer = sn.write(&call).await?;
    match kept_state(&answer, number) {
        None => Ok(()),
        Some(kept) => Err(TicketError::Permanent(format!(
            "servicenow: {what}: the instance kept the state {kept} (a business rule or the \
             change model refused the move)"
        ))),
    }
}

/// The state an update's answer shows when it is not `number` (an instance may accept a write and
/// leave the state as it was); `None` when it moved, or when the answer does not say.
fn kept_state(answer: &Value, number: &str) -> Option<String> {
    let state = value(answer["result"].get("state")?);
    (servicenow_state_number(&state) != Some(number))
        .then(|| servicenow_state(&state).map_or(state.clone(), str::to_string))
}

/// How a work note carries a marker.
fn tag(marker: &str) -> String {
    format!("[drover:{marker}]")
}

/// A marker must survive being a `[drover:...]` tag on a line of its own.
fn check_marker(what: &str, marker: &str) -> Result<(), TicketError> {
    if marker.is_empty() || marker.contains([']', '\n', '\r']) {
        return Err(TicketError::Permanent(format!(
            "servicenow: {what}: a marker must be non-empty, without ']' or line breaks"
        )));
    }
    Ok(())
}

/// An encoded query's value: `^` is its separator, written `^^` inside a value.
fn escape(value: &str) -> String {
    value.replace('^', "^^")
}

/// A field's value: a string, or `{"value": ...}` for reference fields and display modes.
fn value(field: &Value) -> String {
    match field {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("value").map(value).unwrap_or_default(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn path<'a>(table: &[&'a str; 4], sys_id: &'a str) -> Vec<&'a str> {
    let mut p = table.to_vec();
    p.push(sys_id);
    p
}

/// `CHG0030001 (sys_id 1c7c...)`, or the sys_id alone.
fn label(t: &TicketRef) -> String {
    if t.display.is_empty() || t.display == t.key {
        t.key.clone()
    } else {
        format!("{} (sys_id {})", t.display, t.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_markers_and_labels() {
        assert_eq!(value(&json!("-1")), "-1");
        assert_eq!(
            value(&json!({"value": "3", "display_value": "Closed"})),
            "3"
        );
        assert_eq!(value(&json!(7)), "7");
        assert_eq!(value(&Value::Null), "");
        assert_eq!(escape("wf^1"), "wf^^1");
        assert_eq!(tag("wf-1/drain"), "[drover:wf-1/drain]");
        assert!(check_marker("x", "wf-1/drain").is_ok());
        for bad in ["", "a]b", "a\nb"] {
            assert!(matches!(
                check_marker("x", bad),
                Err(TicketError::Permanent(_))
            ));
        }
        let t = |display: &str| TicketRef {
            system: drover_workflows::ports::tickets::System::Servicenow,
            key: "c0ffee".into(),
            display: display.into(),
        };
        assert_eq!(label(&t("CHG0030001")), "CHG0030001 (sys_id c0ffee)");
        assert_eq!(label(&t("")), "c0ffee");
        let moved = json!({"result": {"state": "-1", "number": "CHG0030001"}});
        assert_eq!(kept_state(&moved, "-1"), None);
        assert_eq!(kept_state(&moved, "-2").as_deref(), Some("Implement"));
        assert_eq!(kept_state(&json!({"result": {}}), "-2"), None);
        assert_eq!(kept_state(&Value::Null, "-2"), None);
    }
}
