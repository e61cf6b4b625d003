//! How an edit changes an issue's fields: `fields` (set) and `update` (`set`, and `add` and
//! `remove` for labels), validated as Jira validates them, returning the changelog items of what
//! really changed; and a comment body's validation.

use serde_json::{Map, Value, json};

use super::adf::{adf_from_text, adf_text, adf_valid};
use super::{Issue, MAX_COMMENT_CHARS, Refusal, Version};

/// A comment's body as ADF, validated (v3: an ADF document; v2: a non-empty string).
pub(super) fn comment_body(body: &Value, v: Version) -> Result<Value, Refusal> {
    let adf = match (v, &body["body"]) {
        (Version::V3, doc) if adf_valid(doc) => doc.clone(),
        (Version::V3, _) => return Err(Refusal::field("comment", "Comment body is not valid!")),
        (Version::V2, Value::String(s)) if !s.trim().is_empty() => adf_from_text(s),
        (Version::V2, _) => {
            return Err(Refusal::field("comment", "Comment body can not be empty!"));
        }
    };
    if adf_text(&adf).chars().count() > MAX_COMMENT_CHARS {
        return Err(Refusal::field(
            "comment",
            "The entered text is too long. It exceeds the allowed limit of 32,767 characters.",
        ));
    }
    Ok(adf)
}

/// One changelog item.
pub(super) fn item(
    field: &str,
    fieldtype: &str,
    from: Option<&str>,
    from_string: Option<&str>,
    to: Option<&str>,
    to_string: Option<&str>,
) -> Value {
    json!({
        "field": field,
        "fieldtype": fieldtype,
        "fieldId": field,
        "from": from,
        "fromString": from_string,
        "to": to,
        "toString": to_string,
    })
}

/// How the changelog shows a value.
fn display(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(display)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("doc") {
                return Some(adf_text(v));
            }
            ["value", "name", "displayName", "key", "accountId", "id"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_string))
                .or_else(|| Some(v.to_string()))
        }
    }
}

fn cannot_set(field: &str) -> String {
    format!("Field '{field}' cannot be set. It is not on the appropriate screen, or unknown.")
}

/// Apply `fields` (set) and `update` (operations) to an issue; the changelog items, or the
/// errors by field.
pub(super) fn apply(
    issue: &mut Issue,
    fields: &Map<String, Value>,
    update: &Map<String, Value>,
    v: Version,
    creating: bool,
) -> Result<Vec<Value>, Map<String, Value>> {
    let mut errors = Map::new();
    let mut ops: Vec<(String, String, Value)> = fields
        .iter()
        .map(|(k, v)| (k.clone(), "set".to_string(), v.clone()))
        .collect();
    for (field, list) in update {
        let Some(list) = list.as_array() else {
            errors.insert(field.clone(), json!("Operation value must be an array."));
            continue;
        };
        for op in list {
            match op.as_object().map(|o| o.iter().next()) {
                Some(Some((name, value))) => ops.push((field.clone(), name.clone(), value.clone())),
                _ => {
                    errors.insert(field.clone(), json!("Operation value must be an object."));
                }
            }
        }
    }
    let mut items = Vec::new();
    for (field, op, value) in ops {
        let name = field.as_str();
        if op != "set" && !(name == "labels" && matches!(op.as_str(), "add" | "remove")) {
            errors.insert(
                field.clone(),
                json!(format!(
                    "Operation '{op}' is not supported for field '{field}'."
                )),
            );
            continue;
        }
        match name {
            "project" | "issuetype" if creating => {}
            "project" => {
                let same = value["key"]
                    .as_str()
                    .is_some_and(|k| k.eq_ignore_ascii_case(&issue.project));
                if !same {
                    errors.insert(field.clone(), json!(cannot_set(name)));
                }
            }
            "issuetype" => {
                let same = value["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(issue.issuetype));
                if !same {
                    errors.insert(field.clone(), json!(cannot_set(name)));
                }
            }
            "summary" => match value.as_str().map(str::trim) {
                Some("") => {
                    errors.insert(
                        field.clone(),
                        json!("You must specify a summary of the issue."),
                    );
                }
                Some(s) if s.chars().count() > 255 => {
                    errors.insert(
                        field.clone(),
                        json!("Summary must be less than 255 characters."),
                    );
                }
                Some(s) => {
                    if issue.summary != s {
                        if !creating {
                            items.push(item(
                                "summary",
                                "jira",
                                None,
                                Some(&issue.summary),
                                None,
                                Some(s),
                            ));
                        }
                        issue.summary = s.to_string();
                    }
                }
                None => {
                    errors.insert(field.clone(), json!("Operation value must be a string"));
                }
            },
            "labels" => {
                let mut labels = issue.labels.clone();
                let given: Vec<&Value> = match (&op[..], &value) {
                    ("set", Value::Array(list)) => {
                        labels.clear();
                        list.iter().collect()
                    }
                    ("set", Value::Null) => {
                        labels.clear();
                        Vec::new()
                    }
                    ("add" | "remove", v) if v.is_string() => vec![v],
                    _ => {
                        errors.insert(
                            field.clone(),
                            json!("Operation value must be an array of strings."),
                        );
                        continue;
                    }
                };
                for label in given {
                    match label.as_str() {
                        Some(l) if l.is_empty() || l.contains(char::is_whitespace) => {
                            errors.insert(
                                field.clone(),
                                json!(format!("The label '{l}' contains spaces which is invalid.")),
                            );
                        }
                        Some(l) if op == "remove" => labels.retain(|x| x != l),
                        Some(l) => {
                            if !labels.iter().any(|x| x == l) {
                                labels.push(l.to_string());
                            }
                        }
                        None => {
                            errors.insert(
                                field.clone(),
                                json!("Operation value must be an array of strings."),
                            );
                        }
                    }
                }
                if labels != issue.labels {
                    if !creating {
                        items.push(item(
                            "labels",
                            "jira",
                            None,
                            Some(&issue.labels.join(" ")),
                            None,
                            Some(&labels.join(" ")),
                        ));
                    }
                    issue.labels = labels;
                }
            }
            "description" | "environment" => {
                let stored = match (v, &value) {
                    (_, Value::Null) => Value::Null,
                    (Version::V3, doc) if adf_valid(doc) => doc.clone(),
                    (Version::V2, Value::String(s)) => adf_from_text(s),
                    _ => {
                        errors.insert(
                            field.clone(),
                            json!("Operation value must be an Atlassian Document (see the Atlassian Document Format)"),
                        );
                        continue;
                    }
                };
                set_other(issue, name, stored, "jira", creating, &mut items);
            }
            "priority" | "assignee" | "duedate" => {
                set_other(issue, name, value, "jira", creating, &mut items);
            }
            f if f
                .strip_prefix("customfield_")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                set_other(issue, name, value, "custom", creating, &mut items);
            }
            _ => {
                errors.insert(field.clone(), json!(cannot_set(name)));
            }
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

fn set_other(
    issue: &mut Issue,
    name: &str,
    value: Value,
    fieldtype: &str,
    creating: bool,
    items: &mut Vec<Value>,
) {
    let old = issue.other.get(name).cloned().unwrap_or(Value::Null);
    if old == value {
        return;
    }
    if !creating {
        let (from, to) = (display(&old), display(&value));
        items.push(item(
            name,
            fieldtype,
            None,
            from.as_deref(),
            None,
            to.as_deref(),
        ));
    }
    if value.is_null() {
        issue.other.remove(name);
    } else {
        issue.other.insert(name.to_string(), value);
    }
}
