//! A ServiceNow instance's `change_request` table and its journal (`sys_journal_field`): the model
//! behind the Table API (`api`), pure (time comes in as `now`). Values are stored as ServiceNow
//! stores them, as strings; `work_notes` and `comments` are journal fields: a write appends an
//! entry and the field itself stays empty. A change that inserts a record or changes its `state`,
//! `approval`, `start_date` or `end_date` returns the body of the customer's outbound REST
//! message (what a business rule "after insert or update, when state or approval or the window
//! changes" would send), which the caller queues before it lets go of the instance's lock.

pub mod api;
pub mod query;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{glide_time, text_markers};

/// The outbound REST message the customer's business rule sends on a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundMessage {
    pub url: String,
    /// The HMAC-SHA256 key: the signature is over `<timestamp>.<raw body>`.
    pub secret: String,
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    #[serde(default = "default_delivery_header")]
    pub delivery_header: String,
}

fn default_signature_header() -> String {
    "X-ServiceNow-Signature".into()
}
fn default_timestamp_header() -> String {
    "X-ServiceNow-Timestamp".into()
}
fn default_delivery_header() -> String {
    "X-ServiceNow-Delivery".into()
}

impl OutboundMessage {
    /// A message to `url` signed with `secret`, with the default header names.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        OutboundMessage {
            url: url.into(),
            secret: secret.into(),
            signature_header: default_signature_header(),
            timestamp_header: default_timestamp_header(),
            delivery_header: default_delivery_header(),
        }
    }
}

/// A refused request: status, `error.message`, `error.detail`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    pub detail: String,
}

impl Refusal {
    fn bad(message: &str, detail: String) -> Self {
        Refusal {
            status: 400,
            message: message.into(),
            detail,
        }
    }

    /// The 404 of a record.
    pub fn not_found() -> Self {
        Refusal {
            status: 404,
            message: "No Record found".into(),
            detail: "Record doesn't exist or ACL restricts the record retrieval".into(),
        }
    }
}

/// What a change did.
#[derive(Debug, Default)]
pub struct Change {
    /// `insert`, `update` or `delete`.
    pub operation: &'static str,
    pub number: String,
    /// The outbound message's body, when the business rule fires.
    pub notify: Option<Value>,
    pub work_notes: u64,
    pub comments: u64,
    /// Journal entries carrying a `[drover:<key>]` marker an earlier entry of the record carried.
    pub duplicate_markers: u64,
}

/// `change_request.state` values and labels.
pub const STATES: &[(&str, &str)] = &[
    ("-5", "New"),
    ("-4", "Assess"),
    ("-3", "Authorize"),
    ("-2", "Scheduled"),
    ("-1", "Implement"),
    ("0", "Review"),
    ("3", "Closed"),
    ("4", "Canceled"),
];

/// `approval` values and labels.
pub const APPROVALS: &[(&str, &str)] = &[
    ("not requested", "Not Yet Requested"),
    ("requested", "Requested"),
    ("approved", "Approved"),
    ("rejected", "Rejected"),
    ("cancelled", "Cancelled"),
];

/// `type` values and labels.
pub const TYPES: &[(&str, &str)] = &[
    ("normal", "Normal"),
    ("standard", "Standard"),
    ("emergency", "Emergency"),
];

/// Reference fields and the tables they point at.
pub const REFERENCES: &[(&str, &str)] = &[
    ("assigned_to", "sys_user"),
    ("assignment_group", "sys_user_group"),
    ("business_service", "cmdb_ci_service"),
    ("cmdb_ci", "cmdb_ci"),
    ("opened_by", "sys_user"),
    ("requested_by", "sys_user"),
];

/// Journal fields.
pub const JOURNALS: &[&str] = &["work_notes", "comments"];

/// The `change_request` columns and their defaults (besides `u_*` custom fields).
const COLUMNS: &[(&str, &str)] = &[
    ("active", "true"),
    ("approval", "not requested"),
    ("assigned_to", ""),
    ("assignment_group", ""),
    ("backout_plan", ""),
    ("business_service", ""),
    ("category", "Other"),
    ("close_code", ""),
    ("close_notes", ""),
    ("closed_at", ""),
    ("cmdb_ci", ""),
    ("comments", ""),
    ("description", ""),
    ("end_date", ""),
    ("impact", "3"),
    ("implementation_plan", ""),
    ("justification", ""),
    ("number", ""),
    ("opened_at", ""),
    ("opened_by", ""),
    ("phase", "requested"),
    ("priority", "4"),
    ("requested_by", ""),
    ("risk", "3"),
    ("short_description", ""),
    ("start_date", ""),
    ("state", "-5"),
    ("sys_class_name", "change_request"),
    ("sys_created_by", ""),
    ("sys_created_on", ""),
    ("sys_domain", "global"),
    ("sys_id", ""),
    ("sys_mod_count", "0"),
    ("sys_updated_by", ""),
    ("sys_updated_on", ""),
    ("test_plan", ""),
    ("type", "normal"),
    ("urgency", "3"),
    ("work_notes", ""),
];

/// The `sys_journal_field` columns.
pub const JOURNAL_COLUMNS: &[&str] = &[
    "element",
    "element_id",
    "name",
    "sys_created_by",
    "sys_created_on",
    "sys_id",
    "sys_mod_count",
    "sys_tags",
    "sys_updated_by",
    "sys_updated_on",
    "value",
];

/// Fields a change to which makes the business rule send the outbound message.
const NOTIFYING: &[&str] = &["state", "approval", "start_date", "end_date"];

/// The fields the outbound message carries (besides every `u_*`).
const MESSAGE_FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "state",
    "approval",
    "start_date",
    "end_date",
    "cmdb_ci",
    "short_description",
    "sys_mod_count",
    "sys_updated_on",
    "sys_updated_by",
];

/// A row: every value a string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    fields: BTreeMap<String, String>,
}

impl Record {
    /// A field's value (`""` when unset).
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map(String::as_str).unwrap_or("")
    }

    /// A field's value, `None` when the row has no such column.
    pub fn column(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    pub fn sys_id(&self) -> &str {
        self.get("sys_id")
    }

    /// Every column as stored (strings).
    pub fn raw(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    }

    /// The columns, in name order.
    pub fn columns(&self) -> impl Iterator<Item = (&String, &String)> {
        self.fields.iter()
    }

    fn set(&mut self, field: &str, value: impl Into<String>) {
        self.fields.insert(field.to_string(), value.into());
    }
}

/// The instance.
#[derive(Debug)]
pub struct Instance {
    base: String,
    changes: Vec<Record>,
    journal: Vec<Record>,
    next_number: u64,
    outbound: Option<OutboundMessage>,
}

/// A value as ServiceNow stores it: strings as given, numbers and booleans as text, a reference
/// object by its `value`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        Value::Array(_) => v.to_string(),
    }
}

/// Whether a glide date-time is well formed (`YYYY-MM-DD HH:MM:SS`, a real month, day and time).
pub fn valid_glide_time(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    shape
        && num(5..7).is_some_and(|m| (1..=12).contains(&m))
        && num(8..10).is_some_and(|d| (1..=31).contains(&d))
        && num(11..13).is_some_and(|h| h < 24)
        && num(14..16).is_some_and(|m| m < 60)
        && num(17..19).is_some_and(|x| x < 60)
}

fn random_sys_id() -> String {
    (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Instance {
    /// An empty instance at `base`.
    pub fn new(base: String) -> Self {
        Instance {
            base,
            changes: Vec::new(),
            journal: Vec::new(),
            next_number: 30001,
            outbound: None,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The outbound message, if configured.
    pub fn outbound(&self) -> Option<&OutboundMessage> {
        self.outbound.as_ref()
    }

    /// Configure (or remove) the outbound message.
    pub fn set_outbound(&mut self, message: Option<OutboundMessage>) {
        self.outbound = message;
    }

    /// Every change request, oldest first.
    pub fn changes(&self) -> &[Record] {
        &self.changes
    }

    /// Every journal entry, oldest first.
    pub fn journal(&self) -> &[Record] {
        &self.journal
    }

    /// A change request by sys_id or number.
    pub fn find(&self, id: &str) -> Option<&Record> {
        self.changes
            .iter()
            .find(|r| r.sys_id() == id || r.get("number").eq_ignore_ascii_case(id))
    }

    /// A change request's journal entries as rows.
    pub fn journal_of(&self, id: &str) -> Vec<Value> {
        let Some(sys_id) = self.find(id).map(|r| r.sys_id().to_string()) else {
            return Vec::new();
        };
        self.journal
            .iter()
            .filter(|j| j.get("element_id") == sys_id)
            .map(|j| Value::Object(j.raw()))
            .collect()
    }

    /// Insert a change request; returns its sys_id.
    pub fn insert(
        &mut self,
        body: &Value,
        actor: &str,
        now: SystemTime,
    ) -> Result<(String, Change), Refusal> {
        let values = body.as_object().ok_or_else(not_an_object)?;
        let mut record = Record::default();
        for (k, v) in COLUMNS {
            record.set(k, *v);
        }
        let sys_id = random_sys_id();
        let number = format!("CHG{:07}", self.next_number);
        let when = glide_time(now);
        record.set("sys_id", sys_id.clone());
        record.set("number", number.clone());
        record.set("opened_at", when.clone());
        record.set("sys_created_on", when.clone());
        record.set("sys_created_by", actor);
        record.set("sys_updated_on", when);
        record.set("sys_updated_by", actor);
        let notes = assign(&mut record, values)?;
        self.next_number += 1;
        self.changes.push(record);
        let mut change = Change {
            operation: "insert",
            number,
            ..Change::default()
        };
        self.journalize(&sys_id, notes, actor, now, &mut change);
        change.notify = self.find(&sys_id).map(message_body);
        Ok((sys_id, change))
    }

    /// Update a change request by sys_id.
    pub fn update(
        &mut self,
        sys_id: &str,
        body: &Value,
        actor: &str,
        now: SystemTime,
    ) -> Result<Change, Refusal> {
        let values = body.as_object().ok_or_else(not_an_object)?;
        let pos = self
            .changes
            .iter()
            .position(|r| r.sys_id() == sys_id)
            .ok_or_else(Refusal::not_found)?;
        let before = self.changes[pos].clone();
        let mut record = before.clone();
        let notes = assign(&mut record, values)?;
        let mut change = Change {
            operation: "update",
            number: record.get("number").to_string(),
            ..Change::default()
        };
        if record == before && notes.is_empty() {
            return Ok(change);
        }
        let count: u64 = record.get("sys_mod_count").parse().unwrap_or(0);
        record.set("sys_mod_count", (count + 1).to_string());
        record.set("sys_updated_on", glide_time(now));
        record.set("sys_updated_by", actor);
        let notify = NOTIFYING.iter().any(|f| record.get(f) != before.get(f));
        if notify {
            change.notify = Some(message_body(&record));
        }
        self.changes[pos] = record;
        self.journalize(sys_id, notes, actor, now, &mut change);
        Ok(change)
    }

    /// Delete a change request (and its journal).
    pub fn delete(&mut self, sys_id: &str) -> Result<Change, Refusal> {
        let pos = self
            .changes
            .iter()
            .position(|r| r.sys_id() == sys_id)
            .ok_or_else(Refusal::not_found)?;
        let record = self.changes.remove(pos);
        self.journal.retain(|j| j.get("element_id") != sys_id);
        Ok(Change {
            operation: "delete",
            number: record.get("number").to_string(),
            ..Change::default()
        })
    }

    fn journalize(
        &mut self,
        sys_id: &str,
        notes: Vec<(&'static str, String)>,
        actor: &str,
        now: SystemTime,
        change: &mut Change,
    ) {
        for (element, value) in notes {
            let earlier: Vec<String> = self
                .journal
                .iter()
                .filter(|j| j.get("element_id") == sys_id)
                .flat_map(|j| text_markers(j.get("value")))
                .collect();
            if text_markers(&value).iter().any(|m| earlier.contains(m)) {
                change.duplicate_markers += 1;
            }
            match element {
                "work_notes" => change.work_notes += 1,
                _ => change.comments += 1,
            }
            let when = glide_time(now);
            let mut entry = Record::default();
            entry.set("sys_id", random_sys_id());
            entry.set("element_id", sys_id);
            entry.set("element", element);
            entry.set("name", "change_request");
            entry.set("value", value);
            entry.set("sys_created_on", when.clone());
            entry.set("sys_created_by", actor);
            entry.set("sys_updated_on", when);
            entry.set("sys_updated_by", actor);
            entry.set("sys_mod_count", "0");
            entry.set("sys_tags", "");
            self.journal.push(entry);
        }
    }
}

fn not_an_object() -> Refusal {
    Refusal::bad(
        "Exception while reading request",
        "The payload is not valid JSON.".into(),
    )
}

/// Write a request's values into a record: known columns and `u_*` are set (validated),
/// `sys_*` and unknown fields ignored, journal fields returned as entries to append.
fn assign(
    record: &mut Record,
    values: &Map<String, Value>,
) -> Result<Vec<(&'static str, String)>, Refusal> {
    let mut notes = Vec::new();
    for (field, value) in values {
        let v = text(value);
        let f = field.as_str();
        if let Some(j) = JOURNALS.iter().find(|j| **j == f) {
            if !v.trim().is_empty() {
                notes.push((*j, v));
            }
            continue;
        }
        if f.starts_with("sys_") || f == "number" {
            continue;
        }
        let known = COLUMNS.iter().any(|(c, _)| *c == f);
        let custom = f.starts_with("u_") && f.len() > 2;
        if !known && !custom {
            continue;
        }
        let choice = |table: &[(&str, &str)]| table.iter().any(|(val, _)| *val == v);
        let ok = match f {
            "state" => choice(STATES),
            "approval" => choice(APPROVALS),
            "type" => choice(TYPES),
            "start_date" | "end_date" => v.is_empty() || valid_glide_time(&v),
            _ => true,
        };
        if !ok {
            let detail = match f {
                "start_date" | "end_date" => {
                    format!("{f}: '{v}' is not a valid date-time (yyyy-MM-dd HH:mm:ss)")
                }
                _ => format!("{f}: '{v}' is not a valid choice for change_request.{f}"),
            };
            return Err(Refusal::bad(&format!("Invalid {f} value"), detail));
        }
        record.set(f, v);
    }
    let closed = matches!(record.get("state"), "3" | "4");
    record.set("active", if closed { "false" } else { "true" });
    Ok(notes)
}

/// The outbound message's body for a record.
pub fn message_body(r: &Record) -> Value {
    let mut body = Map::new();
    for f in MESSAGE_FIELDS {
        body.insert((*f).to_string(), Value::String(r.get(f).to_string()));
    }
    for (k, v) in r.columns().filter(|(k, _)| k.starts_with("u_")) {
        body.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn inserts_updates_and_journals() {
        let mut sn = Instance::new("http://sn".into());
        let (sys_id, created) = sn
            .insert(
                &json!({"short_description": "Patch", "u_nodes": "node-a,node-b", "work_notes": "opened", "sys_mod_count": "9", "bogus": 1}),
                "drover.integration",
                at(0),
            )
            .expect("insert");
        assert_eq!(sys_id.len(), 32);
        assert_eq!(created.number, "CHG0030001");
        assert_eq!(created.work_notes, 1);
        let body = created.notify.expect("insert notifies");
        assert_eq!(body["u_nodes"], "node-a,node-b");
        assert_eq!(body["state"], "-5");
        let r = sn.find("CHG0030001").expect("by number");
        assert_eq!((r.get("sys_mod_count"), r.get("work_notes")), ("0", ""));
        assert_eq!(r.column("bogus"), None);
        let notes_only = sn
            .update(
                &sys_id,
                &json!({"work_notes": "[drover:wf-1] drained"}),
                "drover.integration",
                at(1),
            )
            .expect("note");
        assert!(notes_only.notify.is_none());
        assert_eq!(sn.find(&sys_id).map(|r| r.get("sys_mod_count")), Some("1"));
        let scheduled = sn
            .update(
                &sys_id,
                &json!({"state": -2, "start_date": "2026-03-01 02:00:00"}),
                "alice",
                at(2),
            )
            .expect("schedule");
        let body = scheduled.notify.expect("state change notifies");
        assert_eq!(
            (body["state"].as_str(), body["sys_updated_by"].as_str()),
            (Some("-2"), Some("alice"))
        );
        assert_eq!(body["sys_mod_count"], "2");
        let dup = sn
            .update(
                &sys_id,
                &json!({"work_notes": "again [drover:wf-1]"}),
                "drover.integration",
                at(3),
            )
            .expect("note");
        assert_eq!(dup.duplicate_markers, 1);
        let same = sn
            .update(&sys_id, &json!({"state": "-2"}), "x", at(4))
            .expect("no-op");
        assert!(same.notify.is_none());
        assert_eq!(sn.find(&sys_id).map(|r| r.get("sys_mod_count")), Some("3"));
        assert_eq!(sn.journal_of(&sys_id).len(), 3);
    }

    #[test]
    fn refuses_bad_choices_and_dates() {
        let mut sn = Instance::new("http://sn".into());
        let (sys_id, _) = sn.insert(&json!({}), "a", at(0)).expect("insert");
        for body in [
            json!({"state": "-9"}),
            json!({"approval": "maybe"}),
            json!({"type": "risky"}),
            json!({"end_date": "2026-13-01 00:00:00"}),
            json!({"start_date": "2026-03-01T02:00:00Z"}),
        ] {
            let err = sn.update(&sys_id, &body, "a", at(1)).expect_err("refused");
            assert_eq!(err.status, 400, "{body}");
        }
        assert!(valid_glide_time("2026-03-01 02:00:00"));
    }
}
