//! The generic verbs over the object store: get, list (label and field selectors, limit/continue),
//! create, update, patch (merge, JSON, strategic, apply), delete and deletecollection, with the
//! apiserver's validation and status-subresource rules.

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::kube::patch::{self, PatchType};
use crate::kube::resources::{ResourceDef, keys};
use crate::kube::selectors::{FieldSelector, LabelSelector};
use crate::kube::{Target, table};
use crate::sim;
use crate::state::Shared;

/// GET one object (or its status subresource, which is the whole object).
pub fn get(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let obj = fetch(shared, t)?;
    if table::wants_table(req) {
        return Ok(http::json(
            200,
            &table::render(t.def, &[&obj], shared.store.resource_version(), shared),
        ));
    }
    Ok(http::json(200, &obj))
}

/// GET a collection.
pub fn list(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), t.def)?;
    let (mut items, rv) =
        shared
            .store
            .list_shared(&t.def.qualified(), t.namespace.as_deref(), |o| {
                labels.matches(o) && fields.matches(o)
            });
    let offset: usize = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(token) => token
            .strip_prefix("lab:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::BadRequest("continue key is not valid: illegal base64 data".into())
            })?,
        None => 0,
    };
    let limit: usize = req
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    let mut cont = String::new();
    if offset > 0 || limit < total {
        let end = offset.saturating_add(limit).min(total);
        items = items.drain(offset.min(total)..end).collect();
        if end < total {
            cont = format!("lab:{end}");
        }
    }
    let items: Vec<&Value> = items.iter().map(|i| &**i).collect();
    if table::wants_table(req) {
        let mut tbl = table::render(t.def, &items, rv, shared);
        if !cont.is_empty() {
            tbl["metadata"]["continue"] = json!(cont);
        }
        return Ok(http::json(200, &tbl));
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if !cont.is_empty() {
        meta["continue"] = json!(cont);
        meta["remainingItemCount"] = json!(total - offset - items.len());
    }
    // Serialized from shared objects: a list never deep-copies what it returns.
    let list = ListBody {
        api_version: t.def.api_version(),
        kind: format!("{}List", t.def.kind),
        metadata: meta,
        items,
    };
    let body = serde_json::to_vec(&list).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(http::bytes_response(200, "application/json", body.into()))
}

#[derive(serde::Serialize)]
struct ListBody<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

/// POST a new object.
pub fn create(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let mut obj = decode(t.def, &req.body)?;
    prepare(shared, t, &mut obj, None)?;
    sim::admission::validate_create(shared, t.def, &obj)?;
    if t.def.kind == "UploadTokenRequest" {
        crate::kube::upload::issue_token(&mut obj);
    }
    if req.q("dryRun") == Some("All") {
        return Ok(http::json(201, &obj));
    }
    let created = shared.store.create(&t.def.qualified(), obj)?;
    Ok(http::json(201, &created))
}

/// PUT an object or its status.
pub fn update(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let obj = decode(t.def, &req.body)?;
    let name = t.name.clone().unwrap_or_default();
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(Error::BadRequest(
            "the name of the object (".to_string()
                + body_name
                + ") does not match the name on the URL ("
                + &name
                + ")",
        ));
    }
    let old = fetch(shared, t)?;
    let merged = scope_change(t, &old, obj);
    write(shared, req, t, merged, true, 200)
}

/// PATCH an object or its status.
pub fn patch(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let kind = PatchType::from_content_type(req.header("content-type"))?;
    let old = match fetch(shared, t) {
        Ok(o) => o,
        Err(Error::NotFound { .. }) if kind == PatchType::Apply && t.subresource.is_none() => {
            // Server-side apply creates what does not exist yet.
            let mut obj = decode(t.def, &req.body)?;
            prepare(shared, t, &mut obj, t.name.as_deref())?;
            sim::admission::validate_create(shared, t.def, &obj)?;
            let created = shared.store.create(&t.def.qualified(), obj)?;
            return Ok(http::json(201, &created));
        }
        Err(e) => return Err(e),
    };
    if kind == PatchType::Apply && req.q("fieldManager").is_none_or(str::is_empty) {
        return Err(Error::BadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into()));
    }
    let mut patched = patch::apply(kind, &old, &req.body)?;
    if !patched.is_object() {
        return Err(Error::Unprocessable(
            "the patched object is not a JSON object".into(),
        ));
    }
    check_shape(t.def, &patched).map_err(|e| Error::Unprocessable(e.to_string()))?;
    if !patched.get("metadata").is_some_and(Value::is_object) {
        patched["metadata"] = json!({});
    }
    // A patch never renames or moves an object.
    patched["metadata"]["name"] = old["metadata"]["name"].clone();
    if let Some(ns) = old.pointer("/metadata/namespace") {
        patched["metadata"]["namespace"] = ns.clone();
    }
    let merged = scope_change(t, &old, patched);
    // A resourceVersion inside the patch is a precondition; otherwise the stored one carries over.
    write(shared, req, t, merged, true, 200)
}

/// DELETE one object.
pub fn delete(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let old = fetch(shared, t)?;
    if let Ok(opts) = serde_json::from_slice::<Value>(&req.body) {
        let want = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str);
        let have = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(want) = want.filter(|w| *w != have) {
            return Err(Error::StateConflict(format!(
                "Operation cannot be fulfilled on {} \"{}\": the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({have}). The object might have been modified",
                t.def.qualified(),
                t.name.as_deref().unwrap_or("")
            )));
        }
    }
    if req.q("dryRun") == Some("All") {
        return Ok(http::json(200, &old));
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    let name = t.name.as_deref().unwrap_or("");
    // Deleting an in-flight migration aborts it: the simulator notices the object is gone.
    let gone = shared.store.delete(&t.def.qualified(), ns, name)?;
    after_delete(shared, t, ns, name);
    Ok(http::json(200, &gone))
}

/// DELETE a collection (label and field selectors apply).
pub fn delete_collection(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), t.def)?;
    let key = t.def.qualified();
    let (items, _) = shared.store.list(&key, t.namespace.as_deref(), |o| {
        labels.matches(o) && fields.matches(o)
    });
    let mut gone = Vec::new();
    for o in items {
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Ok(g) = shared.store.delete(&key, ns, name) {
            after_delete(shared, t, ns, name);
            gone.push(g);
        }
    }
    Ok(http::json(
        200,
        &json!({"apiVersion": t.def.api_version(), "kind": format!("{}List", t.def.kind), "metadata": {"resourceVersion": shared.store.resource_version().to_string()}, "items": gone}),
    ))
}

/// What goes with a deleted object: a Node's DaemonSet pods (the pod garbage collector's work), a
/// DataVolume's importer.
fn after_delete(shared: &Shared, t: &Target, ns: &str, name: &str) {
    if t.def.group.is_empty() && t.def.plural == "nodes" {
        sim::nodes::delete_daemon_pods(shared, name);
    }
    if t.def.qualified() == keys::DATAVOLUMES {
        sim::import::stop(shared, ns, name);
    }
}

fn fetch(shared: &Shared, t: &Target) -> Result<Value> {
    let name = t.name.as_deref().unwrap_or("");
    shared
        .store
        .get(
            &t.def.qualified(),
            t.namespace.as_deref().unwrap_or(""),
            name,
        )
        .ok_or_else(|| Error::NotFound {
            resource: t.def.qualified(),
            name: name.to_string(),
        })
}

/// Parse a request body as an object of `def`'s kind.
pub fn decode(def: &ResourceDef, body: &[u8]) -> Result<Value> {
    let obj: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e}",
            def.kind
        ))
    })?;
    if !obj.is_object() {
        return Err(Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: expected an object",
            def.kind
        )));
    }
    check_shape(def, &obj)?;
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != def.kind
    {
        return Err(Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): no kind \"{kind}\" is registered for version \"{}\"",
            def.kind,
            def.api_version()
        )));
    }
    Ok(obj)
}

/// Reject bodies whose well-known fields have the wrong JSON type, as Go's decoder would (and so
/// that nothing downstream ever meets, say, a string where metadata must be an object).
pub fn check_shape(def: &ResourceDef, obj: &Value) -> Result<()> {
    let bad = |field: &str, want: &str, got: &Value| {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): json: cannot unmarshal {got} into Go struct field {field} of type {want}",
            def.kind
        ))
    };
    for (field, want) in [("apiVersion", "string"), ("kind", "string")] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_string()) {
            return Err(bad(field, want, v));
        }
    }
    for field in ["spec", "status"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_object() && !v.is_null()) {
            return Err(bad(&format!("{}.{field}", def.kind), "object", v));
        }
    }
    let Some(meta) = obj.get("metadata") else {
        return Ok(());
    };
    let Some(meta) = meta.as_object() else {
        return Err(bad("ObjectMeta.metadata", "v1.ObjectMeta", meta));
    };
    for field in [
        "name",
        "namespace",
        "generateName",
        "resourceVersion",
        "uid",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            return Err(bad(&format!("ObjectMeta.metadata.{field}"), "string", v));
        }
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some(v) = m.values().find(|v| !v.is_string()) {
                    return Err(bad(&format!("ObjectMeta.metadata.{field}"), "string", v));
                }
            }
            Some(v) => {
                return Err(bad(
                    &format!("ObjectMeta.metadata.{field}"),
                    "map[string]string",
                    v,
                ));
            }
        }
    }
    for field in ["finalizers", "ownerReferences"] {
        if let Some(v) = meta.get(field).filter(|v| !v.is_array() && !v.is_null()) {
            return Err(bad(&format!("ObjectMeta.metadata.{field}"), "[]", v));
        }
    }
    Ok(())
}

/// Fill apiVersion/kind/namespace and validate name and namespace before a create.
fn prepare(shared: &Shared, t: &Target, obj: &mut Value, url_name: Option<&str>) -> Result<()> {
    obj["apiVersion"] = json!(t.def.api_version());
    obj["kind"] = json!(t.def.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if let Some(n) = url_name {
        obj["metadata"]["name"] = json!(n);
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let generate = obj["metadata"]["generateName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() && generate.is_empty() {
        return Err(Error::Invalid {
            kind: t.def.kind.into(),
            name: String::new(),
            detail: "metadata.name: Required value: name or generateName is required".into(),
        });
    }
    if !name.is_empty() {
        validate_name(t.def, &name)?;
    }
    if t.def.namespaced {
        let ns = t.namespace.clone().unwrap_or_default();
        let body_ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if ns.is_empty() {
            return Err(Error::NoRoute);
        }
        if !body_ns.is_empty() && body_ns != ns {
            return Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        if shared.store.get(keys::NAMESPACES, "", &ns).is_none() {
            return Err(Error::NotFound {
                resource: "namespaces".into(),
                name: ns,
            });
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    // The status of a type with a status subresource is not settable on create.
    if t.def.subresources.contains(&"status")
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if t.def.plural == "namespaces" {
        obj["status"] = json!({"phase": "Active"});
    }
    Ok(())
}

/// RFC 1123 subdomain names, as the apiserver validates most names.
fn validate_name(def: &ResourceDef, name: &str) -> Result<()> {
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(Error::Invalid {
        kind: def.kind.into(),
        name: name.into(),
        detail: format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ),
    })
}

/// Main-resource writes keep the stored status; status writes change only the status.
fn scope_change(t: &Target, old: &Value, mut new: Value) -> Value {
    let has_status = t.def.subresources.contains(&"status");
    match t.subresource.as_deref() {
        Some("status") => {
            let mut out = old.clone();
            out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if let Some(rv) = new.pointer("/metadata/resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            out
        }
        _ if has_status => {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new["apiVersion"] = json!(t.def.api_version());
            new["kind"] = json!(t.def.kind);
            new
        }
        _ => {
            new["apiVersion"] = json!(t.def.api_version());
            new["kind"] = json!(t.def.kind);
            new
        }
    }
}

fn write(
    shared: &Shared,
    req: &Req,
    t: &Target,
    mut obj: Value,
    check_rv: bool,
    code: u16,
) -> Result<Response<Body>> {
    obj["metadata"]["name"] = json!(t.name.as_deref().unwrap_or(""));
    if let Some(ns) = &t.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    if req.q("dryRun") == Some("All") {
        return Ok(http::json(code, &obj));
    }
    let updated = shared.store.update(&t.def.qualified(), obj, check_rv)?;
    Ok(http::json(code, &updated))
}
