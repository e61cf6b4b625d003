//! Routes and handlers. Each handler authorizes first, validates everything it was sent, and only then
//! calls the store, so a refused request writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use drover_store::{ControlResult, Filter, SignalLimits, Submission, now_ms};
use drover_workflows::registry::{Error as Refused, Refusal};
use drover_workflows::{
    NAME_RULE, NewWorkflow, Phase, State as WfState, Versioned, is_name, is_workflow_id,
    resume_task,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, info, warn};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Role, authorize};
use crate::status::{Position, step_status};
use crate::{ApiError, AppState};

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    let (router, api) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(crate::metrics::metrics))
        .routes(routes!(submit, list))
        .routes(routes!(get_one))
        .routes(routes!(crate::events::events))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(signal))
        .routes(routes!(openapi_json))
        .merge(crate::schedules::routes())
        .merge(crate::dashboard::routes())
        .merge(crate::hooks::routes())
        .split_for_parts();
    let document = Arc::new(crate::openapi::document(api, &state.registry));
    router
        .layer(axum::Extension(document))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                "no such route; GET /v1/openapi.json lists the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                "this route does not take that method; GET /v1/openapi.json lists the API",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::guard::guard,
        ))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// This document (OpenAPI 3.1), with each kind's input schema.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<Arc<Value>>) -> Response {
    Json(doc.as_ref().clone()).into_response()
}

pub(crate) fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            format!("the body is larger than {limit} bytes; send a smaller input"),
        )
    } else {
        ApiError::bad_request(e.body_text())
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Readiness: Redis answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", content_type = "text/plain", body = String),
    (status = 503, description = "Redis does not answer", body = crate::openapi::ErrorBody)))]
async fn readyz(State(state): Shared) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready",
            "the workflow store does not answer",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    kind: String,
    input: Value,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    cluster: Option<String>,
}

/// Refuses, as not found, anything that is not the form workflow ids take: ids become parts of key
/// names, so `<id>:out` must never reach the store. A malformed id is not echoed (it may be huge).
pub(crate) fn workflow_id(id: &str) -> Result<&str, ApiError> {
    if is_workflow_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            "no such workflow: workflow ids are UUIDs as returned by POST /v1/workflows \
             (0192f0c1-7d2e-7a4b-9c3d-0123456789ab), children's ids add .s<step>t<token>.<n> per level",
        ))
    }
}

/// The request's Idempotency-Key: at most one, of 1-200 visible ASCII characters (no spaces, tabs
/// or control characters, which a key that names a Redis key must not carry).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "send one Idempotency-Key header, not several",
        ));
    }
    let bytes = v.as_bytes();
    if bytes.is_empty() || bytes.len() > 200 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-200 visible ASCII characters (no spaces, tabs or control characters)",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Submits a workflow. Nothing is written when it is refused.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body = crate::openapi::SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "a repeat with the same key and request returns the same workflow")),
    responses(
        (status = 201, description = "created", body = crate::openapi::Submitted),
        (status = 200, description = "the workflow this Idempotency-Key created", body = crate::openapi::Submitted),
        (status = "4XX", description = "refused; nothing written", body = crate::openapi::ErrorBody),
        (status = 503, description = "the admission check could not be made; retry after Retry-After", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn submit(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let req: SubmitBody = parse_json(&body)?;
    let idempotency = idempotency_key(&headers)?;
    let submission = Submission {
        kind: req.kind,
        input: req.input,
        priority: req.priority,
        labels: req.labels,
        trace: None,
        cluster: req.cluster,
    };
    let kind = submission.kind.clone();
    let now = now_ms();
    let id = state
        .store
        .workflow_id(uuid::Uuid::now_v7(), submission.cluster.as_deref());
    let mut wf = state
        .registry
        .prepare(id, submission, now)
        .map_err(refused)?;
    // The workflow's trace starts here: every attempt of every step joins it.
    let span = drover_telemetry::trace::submit_span("api", &kind, &wf.id);
    wf.trace = drover_telemetry::trace::of(&span);
    let submitted = async {
        admit(&state, &wf).await?;
        Ok::<_, ApiError>(
            state
                .store
                .submit(
                    &wf,
                    idempotency.as_deref().map(|k| (k, state.idempotency_ttl())),
                    now,
                )
                .await?,
        )
    }
    .instrument(span)
    .await?;
    if submitted.key_reused {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency key reused",
            format!(
                "Idempotency-Key was used for workflow {} with a different request (kind, input, \
                 priority, labels or cluster); send the same request to get that workflow back, or use a new key",
                submitted.id
            ),
        ));
    }
    if submitted.created {
        info!(workflow_id = %submitted.id, kind = %kind, by = %who.name, "Workflow submitted.");
        Ok((StatusCode::CREATED, Json(json!({ "id": submitted.id }))).into_response())
    } else {
        Ok((
            StatusCode::OK,
            Json(json!({ "id": submitted.id, "existing": true })),
        )
            .into_response())
    }
}

/// A submission the registry refused, as the client sees it.
pub(crate) fn refused(e: Refused) -> ApiError {
    match e {
        e @ Refused::UnknownKind { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown kind",
            e.to_string(),
        ),
        e @ Refused::InvalidInput { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid input",
            e.to_string(),
        ),
        e @ Refused::InvalidRequest(_) => ApiError::bad_request(e.to_string()),
    }
}

/// Seconds a client is asked to wait when the admission check could not be made and the system it
/// asked gave no Retry-After (MAAS's own for its 503s).
const ADMISSION_RETRY_SECS: u64 = 10;

/// The registry's admission check of a prepared workflow (none: it passes), within
/// `admission_timeout_ms`. A check that cannot be made refuses the submission with 503 and
/// Retry-After rather than accepting an input nobody checked: the client retries (with its
/// Idempotency-Key) and bad input always gets its 4xx before anything is written.
pub(crate) async fn admit(state: &AppState, wf: &NewWorkflow) -> Result<(), ApiError> {
    if !state.registry.admits() {
        return Ok(());
    }
    let limit = Duration::from_millis(state.config.admission_timeout_ms);
    let checked = tokio::time::timeout(limit, state.registry.admit(&wf.kind, &wf.input)).await;
    let (message, retry_after) = match checked {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(Refusal::Invalid(reason))) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid input",
                format!("invalid input for {}: {reason}", wf.kind),
            ));
        }
        Ok(Err(Refusal::Unavailable {
            message,
            retry_after,
        })) => (message, retry_after),
        Err(_) => (format!("no answer within {} ms", limit.as_millis()), None),
    };
    let secs = retry_after
        .map_or(ADMISSION_RETRY_SECS, |d| {
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        })
        .clamp(1, 3600);
    warn!(kind = %wf.kind, error = %message, retry_after_secs = secs,
        "Admission check could not be made; submission refused with 503.");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "admission unavailable",
        format!(
            "the {} input cannot be checked against MAAS now (MAAS is unreachable, failing or too \
             slow); nothing was written, retry in {secs} s",
            wf.kind
        ),
    )
    .retry_after(secs))
}

/// A workflow with its steps, history, outputs and children.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id")),
    responses(
        (status = 200, description = "the workflow", body = crate::openapi::WorkflowDetail),
        (status = "4XX", description = "no such workflow, or no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let id = workflow_id(&id)?;
    let body = detail(&state, id, 1)
        .await?
        .ok_or_else(|| ApiError::not_found(id))?;
    Ok(Json(body).into_response())
}

/// Most levels of children a detail (`depth`) nests: a rollout, its drains, their migrations.
pub(crate) const MAX_DEPTH: usize = 3;

/// A workflow's detail as `GET /v1/workflows/{id}` shows it: the record with its step rows (status,
/// attempts, timings, output) and its children's rows, nested `depth` levels deep (1: children
/// only; their rows then carry no `children`). None: no such workflow.
pub(crate) async fn detail(
    state: &AppState,
    id: &str,
    depth: usize,
) -> Result<Option<Value>, ApiError> {
    let Some(view) = state.store.get(id).await? else {
        return Ok(None);
    };
    // The steps it was submitted with, as this build knows them.
    let loaded = state.registry.load(&view.kind, &view.input).ok();
    let steps: Vec<String> = match &loaded {
        Some(l) => Versioned::new(l.as_ref(), view.step_names.as_deref()).names(),
        None => view.step_names.clone().unwrap_or_default(),
    };
    let outputs = view.outputs.clone().unwrap_or_default();
    let history = view.history.clone().unwrap_or_default();
    let at = Position {
        state: view.state,
        step: view.step,
        phase: if view.phase == "compensate" {
            Phase::Compensate
        } else {
            Phase::Forward
        },
    };
    let step_rows: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let attempts: Vec<&Value> = history.iter().filter(|h| h["step"] == json!(i)).collect();
            json!({
                "index": i,
                "name": name,
                "status": step_status(at, i, outputs.contains_key(&i)),
                "output": outputs.get(&i),
                "attempts": attempts.len(),
                "started_ms": attempts.first().map(|h| h["start_ms"].clone()),
                "ended_ms": attempts.last().map(|h| h["end_ms"].clone()),
            })
        })
        .collect();
    let child_rows = child_rows(
        state,
        view.children.clone().unwrap_or_default(),
        depth.clamp(1, MAX_DEPTH) - 1,
    )
    .await?;
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::bad_request(e.to_string()))?;
    body["steps"] = Value::Array(step_rows);
    body["children"] = Value::Array(child_rows);
    Ok(Some(body))
}

/// Rows for the children `ids` with where each one is (a rollout shows its nodes, a drain its VMs),
/// each with its own children's rows `nested` more levels down.
fn child_rows(
    state: &AppState,
    ids: Vec<String>,
    nested: usize,
) -> futures::future::BoxFuture<'_, Result<Vec<Value>, ApiError>> {
    Box::pin(async move {
        let children = state.store.summaries(&ids).await?;
        let grandchildren = if nested > 0 {
            state.store.kids(&ids).await?
        } else {
            Vec::new()
        };
        let mut rows = Vec::with_capacity(children.len());
        for c in children {
            let names: Vec<String> = match &c.step_names {
                Some(names) => names.clone(),
                None => state
                    .registry
                    .load(&c.kind, &c.input)
                    .map(|l| l.steps().iter().map(|s| s.name.clone()).collect())
                    .unwrap_or_default(),
            };
            let mut row = json!({
                "id": c.id, "kind": c.kind, "state": c.state, "paused": c.paused,
                "step": names.get(c.step), "step_index": c.step, "steps_total": names.len(),
                "waiting_on": c.waiting_on, "progress": c.progress, "error": c.error,
                "input": c.input, "result": c.result, "created_ms": c.created_ms,
                "updated_ms": c.updated_ms, "finished_ms": c.finished_ms,
            });
            if nested > 0 {
                let kids = ids
                    .iter()
                    .position(|i| *i == c.id)
                    .and_then(|i| grandchildren.get(i).cloned())
                    .unwrap_or_default();
                row["children"] = Value::Array(child_rows(state, kids, nested - 1).await?);
            }
            rows.push(row);
        }
        Ok(rows)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    label: Option<String>,
    cluster: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    /// Children too (by default only top-level workflows are listed).
    all: Option<bool>,
}

/// Top-level workflows (children too with all=true), newest first.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(
        ("state" = Option<String>, Query, description = "pending, running, waiting, compensating, succeeded, failed, cancelled or paused"),
        ("kind" = Option<String>, Query),
        ("label" = Option<String>, Query, description = "key=value"),
        ("cluster" = Option<String>, Query, description = "workflows acting on this [[clusters]] name"),
        ("all" = Option<bool>, Query, description = "children too"),
        ("limit" = Option<usize>, Query, description = "1-500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "a page", body = crate::openapi::WorkflowPage),
        (status = "4XX", description = "a bad query or no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(state): Shared,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut filter = Filter {
        top_level: !q.all.unwrap_or(false),
        ..Filter::default()
    };
    match q.state.as_deref() {
        None => {}
        Some("paused") => filter.paused = Some(true),
        Some(s) => {
            filter.state = Some(WfState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown state {s:?}; use one of pending, running, waiting, compensating, succeeded, failed, cancelled, paused"
                ))
            })?)
        }
    }
    filter.kind = q.kind;
    if let Some(c) = q.cluster {
        // Cluster names are parts of index keys: refuse anything a cluster cannot be named.
        if !drover_workflows::is_name(&c) || c.contains('/') {
            return Err(ApiError::bad_request(
                "cluster must be a cluster's name: 1-63 letters, digits, '-', '_' or '.'",
            ));
        }
        filter.cluster = Some(c);
    }
    if let Some(label) = q.label {
        let (k, v) = label.split_once('=').ok_or_else(|| {
            ApiError::bad_request(format!("label {label:?} must look like key=value"))
        })?;
        filter.label = Some((k.to_string(), v.to_string()));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be within 1..=500, got {limit}"
        )));
    }
    if let Some(c) = &q.cursor
        && c.split_once(':')
            .is_none_or(|(s, _)| s.parse::<u64>().is_err())
    {
        return Err(ApiError::bad_request("cursor is not one this API returned"));
    }
    let page = state
        .store
        .list(&filter, limit, q.cursor.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

fn control_response(id: &str, result: ControlResult, action: &str) -> Result<Response, ApiError> {
    match result {
        ControlResult::Ok(detail) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "accepted": action, "detail": detail })),
        )
            .into_response()),
        ControlResult::NotFound => Err(ApiError::not_found(id)),
        ControlResult::Terminal(s) => Err(ApiError::conflict(format!(
            "workflow {id} has already ended ({}); cannot {action}",
            s.as_str()
        ))),
        ControlResult::WrongState(s) => Err(ApiError::conflict(format!(
            "workflow {id} is {s}; only a failed workflow can be retried"
        ))),
        ControlResult::QueueFull { per_name, limit } => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many queued signals",
            if per_name {
                format!(
                    "workflow {id} already holds {limit} queued signals with this name (the most \
                     per name); it takes one each time it waits on the name"
                )
            } else {
                format!(
                    "workflow {id} already holds {limit} queued signals (the most per workflow); \
                     it takes them as it waits on their names"
                )
            },
        )),
    }
}

/// Cancels a workflow: completed steps are compensated in reverse.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id")),
    responses(
        (status = 202, description = "accepted", body = crate::openapi::Accepted),
        (status = "4XX", description = "refused (not found, ended, not an operator)", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn cancel(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = workflow_id(&id)?;
    let result = state.store.cancel(id, now_ms()).await?;
    let response = control_response(id, result, "cancel")?;
    info!(workflow_id = %id, by = %who.name, "Cancellation requested.");
    Ok(response)
}

/// Pauses a workflow: no new step starts.
#[utoipa::path(post, path = "/v1/workflows/{id}/pause", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id")),
    responses(
        (status = 202, description = "accepted", body = crate::openapi::Accepted),
        (status = "4XX", description = "refused (not found, ended, not an operator)", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn pause(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = workflow_id(&id)?;
    let result = state.store.pause(id, now_ms()).await?;
    let response = control_response(id, result, "pause")?;
    info!(workflow_id = %id, by = %who.name, "Workflow paused.");
    Ok(response)
}

/// Resumes a paused workflow.
#[utoipa::path(post, path = "/v1/workflows/{id}/resume", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id")),
    responses(
        (status = 202, description = "accepted", body = crate::openapi::Accepted),
        (status = "4XX", description = "refused (not found, ended, not an operator)", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn resume(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = workflow_id(&id)?;
    let result = state.store.resume(id, now_ms()).await?;
    let response = control_response(id, result, "resume")?;
    info!(workflow_id = %id, by = %who.name, "Workflow resumed.");
    Ok(response)
}

/// Retries a failed workflow from its failed step.
#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id")),
    responses(
        (status = 202, description = "accepted", body = crate::openapi::Accepted),
        (status = "4XX", description = "refused (not found, ended, not an operator)", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn retry(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = workflow_id(&id)?;
    let view = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(id))?;
    if view.state != WfState::Failed {
        return control_response(
            id,
            ControlResult::WrongState(view.state.as_str().to_string()),
            "retry",
        );
    }
    let loaded = state
        .registry
        .load(&view.kind, &view.input)
        .map_err(|e| ApiError::conflict(format!("cannot retry: {e}")))?;
    let workflow = Versioned::new(loaded.as_ref(), view.step_names.as_deref())
        .in_cluster(view.cluster.as_deref());
    let step = view.resume_from.unwrap_or(view.step);
    let task = resume_task(step, now_ms(), workflow.permits(step, Phase::Forward));
    let result = state.store.retry(id, &task, now_ms()).await?;
    let response = control_response(id, result, "retry")?;
    info!(workflow_id = %id, step, by = %who.name, "Workflow retried.");
    Ok(response)
}

/// Sends a signal (a JSON payload, or none); delivered exactly once, even before the wait.
#[utoipa::path(post, path = "/v1/workflows/{id}/signals/{name}", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id"), ("name" = String, Path, description = "the signal's name")),
    request_body(content = Option<Value>, description = "the payload (JSON); optional"),
    responses(
        (status = 202, description = "accepted", body = crate::openapi::Accepted),
        (status = "4XX", description = "refused (not found, ended, too large, too many queued)", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn signal(
    State(state): Shared,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let id = workflow_id(&id)?;
    if !is_name(&name) {
        return Err(ApiError::bad_request(format!(
            "signal names are {NAME_RULE}"
        )));
    }
    let max = state.config.max_signal_bytes;
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            format!(
                "the signal payload is {} bytes; at most {max} bytes are accepted",
                body.len()
            ),
        ));
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_json(&body)?
    };
    let limits = SignalLimits {
        per_name: state.config.max_queued_signals_per_name,
        per_workflow: state.config.max_queued_signals,
    };
    let result = state
        .store
        .signal(id, &name, &payload, limits, now_ms())
        .await?;
    let response = control_response(id, result, "signal")?;
    info!(workflow_id = %id, signal = %name, by = %who.name, "Signal sent.");
    Ok(response)
}
