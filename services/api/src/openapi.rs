//! The OpenAPI 3.1 document at `GET /v1/openapi.json`, generated from the code: every route is
//! registered with utoipa-axum's `routes!` from its handler's `#[utoipa::path]` annotation (path,
//! parameters, request body, responses), so a route cannot be served without being documented; the
//! bodies' schemas are the types below and each kind's input schema comes from the kind's own
//! input type (schemars, `Registry::input_schemas`), so `POST /v1/workflows` documents a `oneOf`
//! over the kinds this build registers. schemathesis fuzzes the live server against it in CI
//! (`tests/openapi.rs`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use drover_workflows::Registry;

/// Every refusal and failure: `{"error", "detail"}` with the status.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A short name of the refusal (`invalid input`, `not found`).
    pub error: String,
    /// What to fix: a sentence, or an object for some refusals.
    #[schema(value_type = Value)]
    pub detail: Value,
}

/// `POST /v1/workflows`'s request: a kind and its input (the document lists each kind's input).
#[derive(Serialize, ToSchema)]
pub(crate) struct SubmitRequest {
    pub kind: String,
    #[schema(value_type = Object)]
    pub input: Value,
    /// Higher runs first (default 0).
    pub priority: Option<i32>,
    pub labels: Option<BTreeMap<String, String>>,
    /// The Kubernetes cluster it acts on, by its `[[clusters]]` name (default: the `[kube]`
    /// cluster); its children act on the same one.
    pub cluster: Option<String>,
}

/// A submission's answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Submitted {
    pub id: String,
    /// Present (true) when the Idempotency-Key named an existing workflow.
    pub existing: Option<bool>,
}

/// A control's answer (cancel, pause, resume, retry, signal).
#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    pub id: String,
    /// The action taken.
    pub accepted: String,
    #[schema(value_type = Value)]
    pub detail: Value,
}

/// A workflow as lists show it (the detail adds steps, outputs, history and children).
#[derive(Serialize, ToSchema)]
pub(crate) struct Workflow {
    pub id: String,
    pub kind: String,
    /// pending, running, waiting, compensating, succeeded, failed or cancelled.
    pub state: String,
    pub paused: bool,
    pub cancel_requested: bool,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// The `[[clusters]]` name it acts on; absent: the `[kube]` cluster.
    pub cluster: Option<String>,
    #[schema(value_type = Value)]
    pub input: Value,
    pub step: u64,
    pub attempt: u64,
    pub phase: String,
    pub waiting_on: Option<String>,
    pub lease_worker: Option<String>,
    #[schema(value_type = Value)]
    pub error: Value,
    #[schema(value_type = Value)]
    pub progress: Value,
    #[schema(value_type = Value)]
    pub result: Value,
    pub resume_from: Option<u64>,
    pub parent: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
}

/// A page of workflows, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkflowPage {
    pub items: Vec<Workflow>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A step's row in a workflow's detail.
#[derive(Serialize, ToSchema)]
pub(crate) struct StepRow {
    pub index: u64,
    pub name: String,
    /// pending, current, done, failed, compensating or compensated.
    pub status: String,
    #[schema(value_type = Value)]
    pub output: Value,
    pub attempts: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

/// A child's row in its parent's detail (`children` nested with `depth` in the event stream).
#[derive(Serialize, ToSchema)]
pub(crate) struct ChildRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub paused: bool,
    pub step: Option<String>,
    pub step_index: u64,
    pub steps_total: u64,
    pub waiting_on: Option<String>,
    #[schema(value_type = Value)]
    pub progress: Value,
    #[schema(value_type = Value)]
    pub error: Value,
    #[schema(value_type = Value)]
    pub input: Value,
    #[schema(value_type = Value)]
    pub result: Value,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    #[schema(no_recursion)]
    pub children: Option<Vec<ChildRow>>,
}

/// One workflow in detail.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkflowDetail {
    #[serde(flatten)]
    pub workflow: Workflow,
    pub steps: Vec<StepRow>,
    pub children: Vec<ChildRow>,
    /// Step outputs by step index.
    #[schema(value_type = Object)]
    pub outputs: Value,
    /// Every recorded attempt, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub history: Value,
}

/// One server-sent event of a workflow's stream.
#[derive(Serialize, ToSchema)]
pub(crate) struct StreamEvent {
    /// workflow (data: the workflow's detail, as GET /v1/workflows/{id}), end (data: {state}) or
    /// error (data: {detail}).
    pub event: String,
    /// Increases by one per event.
    pub id: Option<String>,
    /// JSON.
    pub data: String,
}

/// The token's holder and role.
#[derive(Serialize, ToSchema)]
pub(crate) struct Whoami {
    pub name: String,
    /// viewer or operator.
    pub role: String,
}

/// A schedule: its spec as written, state, next fire times (local time and daylight-saving
/// decisions), last fire, skipped fire times and log.
#[derive(Serialize, ToSchema)]
pub(crate) struct Schedule {
    pub id: String,
    #[schema(value_type = Object)]
    pub spec: Value,
    pub overlap: String,
    pub paused: bool,
    pub note: Option<String>,
    pub next_ms: Option<i64>,
    pub last_fire_ms: Option<i64>,
    pub last_workflow: Option<String>,
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A schedule in a listing.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleRow {
    pub id: String,
    #[schema(value_type = Value)]
    pub kind: Value,
    #[schema(value_type = Value)]
    pub cron: Value,
    #[schema(value_type = Value)]
    pub timezone: Value,
    pub paused: bool,
    pub note: Option<String>,
    pub next_ms: Option<i64>,
    pub next: Option<String>,
    pub last_fire_ms: Option<i64>,
    pub last_workflow: Option<String>,
}

/// A page of schedules.
#[derive(Serialize, ToSchema)]
pub(crate) struct SchedulePage {
    pub items: Vec<ScheduleRow>,
    pub next_cursor: Option<String>,
}

/// What a trigger (or one backfilled fire time) did.
#[derive(Serialize, ToSchema)]
pub(crate) struct Fired {
    /// started, buffered, skipped, existing or none.
    pub action: String,
    pub fire_ms: i64,
    pub fire: String,
    pub workflow: Option<String>,
    pub reason: Option<String>,
}

/// A backfill's results, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct Backfilled {
    pub fire_times: u64,
    pub results: Vec<Fired>,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drover",
        description = "Durable workflows for KubeVirt-on-bare-metal operations. Bearer tokens carry \
                       a role: viewers read, operators change. Every refusal is a 4xx with \
                       {\"error\", \"detail\"} and writes nothing."
    ),
    components(schemas(ErrorBody, SubmitRequest)),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

/// The document as JSON, with each kind's input schema: `components.schemas.Input.<kind>` and the
/// submit body a `oneOf` discriminated by `kind`.
pub(crate) fn document(api: utoipa::openapi::OpenApi, registry: &Registry) -> Value {
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    // Operation ids from method and path (handlers in different modules share names).
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for (method, op) in item.as_object_mut().into_iter().flatten() {
                let words: Vec<&str> = path
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                let slash = if path.ends_with('/') && path.len() > 1 {
                    "_index"
                } else {
                    ""
                };
                op["operationId"] = json!(format!("{method}_{}{slash}", words.join("_")));
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    let mut variants = Vec::new();
    for (kind, schema) in registry.input_schemas() {
        let name = format!("Input.{kind}");
        let (schema, defs) = relocate(schema, &name);
        for (def, s) in defs {
            schemas[def] = s;
        }
        schemas[&name] = schema;
        variants.push(json!({
            "type": "object",
            "required": ["kind", "input"],
            "properties": {
                "kind": {"type": "string", "const": kind},
                "input": {"$ref": format!("#/components/schemas/{name}")},
                "priority": {"type": "integer", "format": "int32"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": false,
        }));
    }
    schemas["SubmitRequest"] = json!({
        "description": "A kind and its input; each kind's input schema is Input.<kind>.",
        "oneOf": variants,
    });
    doc
}

/// Moves a schemars schema's `$defs` to `components.schemas` (as `<name>.<def>`) and points its
/// references there.
fn relocate(mut schema: Value, name: &str) -> (Value, Vec<(String, Value)>) {
    let defs: Vec<(String, Value)> = schema
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .and_then(|d| d.as_object().cloned())
        .map(|d| d.into_iter().collect())
        .unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
    }
    let rename = |v: &mut Value| rewrite_refs(v, name);
    let mut schema = schema;
    rename(&mut schema);
    let defs = defs
        .into_iter()
        .map(|(d, mut s)| {
            rename(&mut s);
            (format!("{name}.{d}"), s)
        })
        .collect();
    (schema, defs)
}

fn rewrite_refs(v: &mut Value, name: &str) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(def) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{name}.{def}");
            }
            for child in o.values_mut() {
                rewrite_refs(child, name);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, name)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_definitions_move_under_its_name() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"policy": {"$ref": "#/$defs/Policy"}},
            "$defs": {"Policy": {"enum": ["skip", "fail"], "x": {"$ref": "#/$defs/Policy"}}}
        });
        let (s, defs) = relocate(schema, "Input.drain-node");
        assert_eq!(
            s["properties"]["policy"]["$ref"],
            "#/components/schemas/Input.drain-node.Policy"
        );
        assert!(s.get("$schema").is_none() && s.get("$defs").is_none());
        assert_eq!(defs[0].0, "Input.drain-node.Policy");
        assert_eq!(
            defs[0].1["x"]["$ref"],
            "#/components/schemas/Input.drain-node.Policy"
        );
    }
}
