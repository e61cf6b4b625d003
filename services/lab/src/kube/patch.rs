//! Patch application as the apiserver does it: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge patch (merge keys for the core lists kubectl touches, `$patch` directives) and
//! server-side apply (approximated as a merge that never deletes). Pure functions over JSON.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The patch flavours, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

/// Media types the lab accepts for PATCH, in the apiserver's error wording.
pub const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json";

impl PatchType {
    /// The patch type for a Content-Type header value.
    pub fn from_content_type(ct: &str) -> Result<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(Error::UnsupportedMediaType(ACCEPTED.into())),
        }
    }
}

/// Apply a patch body to `target`.
pub fn apply(kind: PatchType, target: &Value, body: &[u8]) -> Result<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "merge patch must be a JSON object".into(),
                ));
            }
            Ok(merge(target.clone(), &patch))
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "unable to find api field in struct for the patch: not a JSON object".into(),
                ));
            }
            Ok(strategic(target.clone(), &patch, ""))
        }
        PatchType::Apply => {
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "error decoding YAML: apply patch must be an object".into(),
                ));
            }
            Ok(apply_merge(target.clone(), &patch, ""))
        }
        PatchType::Json => json_patch(target.clone(), &patch),
    }
}

/// RFC 7386 merge: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let old = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge(old, v));
        }
    }
    Value::Object(t)
}

/// The merge key of list fields that strategic merge patch merges instead of replacing.
fn merge_key(path: &str) -> Option<&'static str> {
    let field = path.rsplit('.').next().unwrap_or(path);
    match field {
        "conditions" | "addresses" => Some("type"),
        "containers"
        | "initContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "ephemeralContainers" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        "tolerations" => None,
        _ => None,
    }
}

/// Strategic merge: like `merge`, but lists with a merge key merge item by item, `$patch: delete`
/// removes an item, `$patch: replace` replaces, `$setElementOrder`/`$retainKeys` are accepted and
/// `$deleteFromPrimitiveList/<field>` removes values; `finalizers` merges as a set.
pub fn strategic(target: Value, patch: &Value, path: &str) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        return Value::Object(p);
    }
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(del)) = (t.get_mut(field), v) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let old = t.remove(k).unwrap_or(Value::Null);
        let new = match (old, v) {
            (Value::Array(old), Value::Array(new)) if k == "finalizers" => {
                let mut out = old;
                for n in new {
                    if !out.contains(n) {
                        out.push(n.clone());
                    }
                }
                Value::Array(out)
            }
            (Value::Array(old), Value::Array(new)) => match merge_key(&child) {
                Some(key) => Value::Array(merge_list(old, new, key, &child)),
                None => Value::Array(new.clone()),
            },
            (old, v) => strategic(old, v, &child),
        };
        t.insert(k.clone(), new);
    }
    Value::Object(t)
}

fn merge_list(mut old: Vec<Value>, new: &[Value], key: &str, path: &str) -> Vec<Value> {
    for item in new {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| old.iter().position(|o| o.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                old.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = strategic(old[i].clone(), item, path);
                old[i] = merged;
            }
            (None, false) => old.push(strategic(Value::Null, item, path)),
        }
    }
    old
}

/// Server-side apply, approximated: the applied configuration merges into the live object (lists
/// with merge keys item by item) and nothing is deleted. Field ownership is not tracked.
pub fn apply_merge(target: Value, patch: &Value, path: &str) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() || k == "managedFields" {
            continue;
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let old = t.remove(k).unwrap_or(Value::Null);
        let new = match (old, v) {
            (Value::Array(old), Value::Array(new)) => match merge_key(&child) {
                Some(key) => Value::Array(merge_list(old, new, key, &child)),
                None => Value::Array(new.clone()),
            },
            (old, v) => apply_merge(old, v, &child),
        };
        t.insert(k.clone(), new);
    }
    Value::Object(t)
}

/// RFC 6902 JSON patch.
pub fn json_patch(mut doc: Value, patch: &Value) -> Result<Value> {
    let Value::Array(ops) = patch else {
        return Err(Error::BadRequest(
            "json patch must be a JSON array of operations".into(),
        ));
    };
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| {
            Error::BadRequest(format!("json patch operation is missing 'path': {op}"))
        })?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                Error::BadRequest(format!("json patch operation '{name}' is missing 'value'"))
            })
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" | "copy" => {
                let from = op.get("from").and_then(Value::as_str).ok_or_else(|| {
                    Error::BadRequest(format!("json patch operation '{name}' is missing 'from'"))
                })?;
                let v = if name == "move" {
                    remove(&mut doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| missing(from))?
                };
                add(&mut doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(Error::Unprocessable(format!(
                        "the server rejected our request due to an error in our request: testing value {path} failed"
                    )));
                }
            }
            other => {
                return Err(Error::BadRequest(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(doc)
}

fn missing(path: &str) -> Error {
    Error::Unprocessable(format!(
        "the server rejected our request due to an error in our request: doc is missing path: \"{path}\": missing value"
    ))
}

fn split_pointer(path: &str) -> Result<(String, String)> {
    if path.is_empty() {
        return Err(Error::BadRequest(
            "json patch path must not be empty".into(),
        ));
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| Error::BadRequest(format!("json patch path must start with '/': {path}")))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i > a.len() {
                return Err(missing(path));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i >= a.len() {
                return Err(missing(path));
            }
            Ok(a.remove(i))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordon_and_uncordon_patches() {
        let node = json!({"metadata": {"name": "w1"}, "spec": {"podCIDR": "10.0.0.0/24"}});
        let cordoned = apply(
            PatchType::Strategic,
            &node,
            br#"{"spec":{"unschedulable":true}}"#,
        )
        .unwrap();
        assert_eq!(cordoned["spec"]["unschedulable"], json!(true));
        assert_eq!(cordoned["spec"]["podCIDR"], json!("10.0.0.0/24"));
        let back = apply(
            PatchType::Strategic,
            &cordoned,
            br#"{"spec":{"unschedulable":null}}"#,
        )
        .unwrap();
        assert!(back["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn strategic_merges_conditions_by_type() {
        let obj = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        let out = strategic(
            obj,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X", "$patch": "delete"}], "$setElementOrder/conditions": [{"type": "Ready"}]}}),
            "",
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}])
        );
    }

    #[test]
    fn json_patch_table() {
        let doc = json!({"a": {"b": [1, 2]}});
        let ok = [
            (
                json!([{"op": "add", "path": "/a/c", "value": 3}]),
                json!({"a": {"b": [1, 2], "c": 3}}),
            ),
            (
                json!([{"op": "add", "path": "/a/b/-", "value": 3}]),
                json!({"a": {"b": [1, 2, 3]}}),
            ),
            (
                json!([{"op": "remove", "path": "/a/b/0"}]),
                json!({"a": {"b": [2]}}),
            ),
            (
                json!([{"op": "replace", "path": "/a/b", "value": []}]),
                json!({"a": {"b": []}}),
            ),
            (
                json!([{"op": "move", "from": "/a/b", "path": "/b"}]),
                json!({"a": {}, "b": [1, 2]}),
            ),
            (
                json!([{"op": "test", "path": "/a/b/1", "value": 2}]),
                json!({"a": {"b": [1, 2]}}),
            ),
        ];
        for (p, want) in ok {
            assert_eq!(json_patch(doc.clone(), &p).unwrap(), want, "{p}");
        }
        for bad in [
            json!({"op": "add"}),
            json!([{"op": "remove", "path": "/x"}]),
            json!([{"op": "frob", "path": "/a"}]),
            json!([{"op": "test", "path": "/a/b/1", "value": 9}]),
        ] {
            assert!(json_patch(doc.clone(), &bad).is_err(), "{bad}");
        }
        assert!(apply(PatchType::Merge, &doc, b"{not json").is_err());
    }
}
