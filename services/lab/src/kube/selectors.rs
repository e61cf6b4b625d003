//! Label and field selectors as the apiserver parses them (`a=b,c!=d,e in (f,g),!h`), as pure
//! functions over JSON objects. Bad selectors are 400s with the apiserver's wording.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::kube::resources::ResourceDef;

/// One parsed label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// A parsed field selector: (field, wanted value, equal?) terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<(String, String, bool)>);

impl LabelSelector {
    /// Parse `labelSelector`.
    pub fn parse(input: &str) -> Result<Self> {
        let mut reqs = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(term)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

impl FieldSelector {
    /// Parse `fieldSelector`, refusing fields the resource does not index.
    pub fn parse(input: &str, def: &ResourceDef) -> Result<Self> {
        let mut terms = Vec::new();
        for term in input.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, eq) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(Error::BadRequest(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !def.supports_field(field) {
                return Err(Error::BadRequest(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_string(), value.trim().to_string(), eq));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether an object's fields match. A missing field reads as "" (as in the apiserver).
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, want, eq)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

/// The string value of a dotted field path, "" when missing; booleans as `true`/`false`.
pub fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => {
                return if field == "spec.unschedulable" {
                    "false".into()
                } else {
                    String::new()
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Split on commas that are not inside parentheses.
fn split_terms(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

fn parse_requirement(term: &str) -> Result<Requirement> {
    let bad = |why: &str| Error::BadRequest(format!("unable to parse requirement: {why}"));
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|e| bad(&e))?;
        return Ok(Requirement::NotExists(key.to_string()));
    }
    for (op, neg) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = term.split_once(op) {
            let key = key.trim();
            check_key(key).map_err(|e| bad(&e))?;
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad(&format!("found '{rest}', expected: '('")))?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            for v in &values {
                check_value(v).map_err(|e| bad(&e))?;
            }
            return Ok(if neg {
                Requirement::NotIn(key.into(), values)
            } else {
                Requirement::In(key.into(), values)
            });
        }
    }
    let (key, value, eq) = if let Some((k, v)) = term.split_once("!=") {
        (k, Some(v), false)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, Some(v), true)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, Some(v), true)
    } else {
        (term, None, true)
    };
    let key = key.trim();
    check_key(key).map_err(|e| bad(&e))?;
    match value {
        None => Ok(Requirement::Exists(key.to_string())),
        Some(v) => {
            let v = v.trim();
            check_value(v).map_err(|e| bad(&e))?;
            Ok(if eq {
                Requirement::Equals(key.into(), v.into())
            } else {
                Requirement::NotEquals(key.into(), v.into())
            })
        }
    }
}

fn check_key(key: &str) -> std::result::Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "invalid label key \"{key}\": name part must be non-empty and at most 63 characters"
        ));
    }
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Err(format!(
            "invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn check_value(v: &str) -> std::result::Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources;
    use serde_json::json;

    #[test]
    fn label_selector_table() {
        let obj = json!({"metadata": {"labels": {"kubevirt.io": "virt-launcher", "tier": "db"}}});
        let cases = [
            ("", true),
            ("kubevirt.io=virt-launcher", true),
            ("kubevirt.io==virt-launcher,tier=db", true),
            ("kubevirt.io!=virt-launcher", false),
            ("tier in (db,web)", true),
            ("tier notin (db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing notin (x)", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        for bad in ["=x", "a=b=c!", "tier in db", "-a=b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_table() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let obj = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "w1"}});
        assert!(
            FieldSelector::parse("spec.nodeName=w1", pods)
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName!=w1", pods)
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.name==p,spec.nodeName=w1", pods)
                .unwrap()
                .matches(&obj)
        );
        assert!(
            matches!(FieldSelector::parse("spec.bogus=1", pods), Err(Error::BadRequest(m)) if m == "field label not supported: spec.bogus")
        );
        assert!(FieldSelector::parse("nonsense", pods).is_err());
    }
}
