//! `/v1/schedules`: cron schedules that start workflows (operators change them, viewers read them).
//! A schedule is checked whole before anything is written: its spec compiles (cron, time zone,
//! dates, window, freezes) and the workflow it would start passes the registry and the admission
//! check, so a schedule cannot be created that would only fail at its first fire time.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drover_store::now_ms;
use drover_store::schedule::{
    Fire, FireMode, Fired, Put, PutMode, ScheduleRecord, Verdict, fire_workflow, is_schedule_id,
    next_fire,
};
use drover_workflows::schedule::{
    Compiled, MAX_NOTE_CHARS, Overlap, ScheduleSpec, parse_instant, rfc3339,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Role, authorize};
use crate::routes::{admit, body_error, parse_json, refused};
use crate::{ApiError, AppState};

type Shared = State<Arc<AppState>>;

/// Fire times a backfill may cover in one request.
const MAX_BACKFILL: usize = 1000;
/// Log entries shown with a schedule.
const LOG_SHOWN: usize = 50;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, replace, delete))
        .routes(routes!(pause))
        .routes(routes!(unpause))
        .routes(routes!(trigger))
        .routes(routes!(backfill))
}

fn schedule_id(id: &str) -> Result<&str, ApiError> {
    if is_schedule_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            "no such schedule: schedule ids are 1-63 letters, digits, '-', '_' and '.', starting \
             with a letter or digit",
        ))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found",
        format!("no schedule with id {id:?}"),
    )
}

/// A spec read from JSON; an error names the field it is in.
fn spec_from(v: Value) -> Result<ScheduleSpec, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            invalid(e.into_inner())
        } else {
            invalid(format!("{path}: {}", e.into_inner()))
        }
    })
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid schedule", e.to_string())
}

/// The handle on the shard a schedule lives on: its cluster's.
fn home(state: &AppState, compiled: &Compiled) -> drover_store::Store {
    let store = &state.store;
    store.on(store.shard_for(compiled.spec().cluster.as_deref()))
}

/// Compiles a spec and checks the workflow it starts (registry, then admission) at its first fire
/// time (or now when it has none left).
async fn check(state: &AppState, id: &str, spec: &ScheduleSpec) -> Result<Compiled, ApiError> {
    let compiled = Compiled::compile(spec).map_err(invalid)?;
    let now = now_ms();
    let at = compiled
        .next_after(now as i64)
        .map_or(now as i64, |f| f.at_ms);
    let wf = fire_workflow(
        &state.registry,
        &home(state, &compiled),
        id,
        &compiled,
        at,
        "",
        now,
    )
    .map_err(refused)?;
    admit(state, &wf).await?;
    Ok(compiled)
}

/// A schedule as the API shows it: the record, its next fire times (with how daylight-saving
/// changes were handled), and its log.
async fn view(state: &AppState, rec: &ScheduleRecord, preview: usize) -> Result<Value, ApiError> {
    let compiled = serde_json::from_value::<ScheduleSpec>(rec.spec.clone())
        .ok()
        .and_then(|s| Compiled::compile(&s).ok());
    let mut body = serde_json::to_value(rec).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(c) = &compiled {
        let next: Vec<Value> = match rec.next_ms {
            Some(n) if !rec.paused => c
                .preview(n - 1, preview)
                .into_iter()
                .map(|f| {
                    let due = f.at_ms + c.jitter_ms(&rec.id, f.at_ms);
                    let mut v = json!(f);
                    v["due_ms"] = json!(due);
                    if let Some(fr) = c.freeze_at(f.at_ms) {
                        v["skipped_by_freeze"] = json!(fr.name);
                    }
                    v
                })
                .collect(),
            _ => Vec::new(),
        };
        body["next"] = Value::Array(next);
    }
    if let Some(ms) = rec.last_fire_ms {
        body["last_fire"] = json!(rfc3339(ms));
    }
    let log = state.store.schedule_log(&rec.id, LOG_SHOWN).await?;
    body["skipped"] = Value::Array(
        log.iter()
            .filter(|e| e["action"] == "skipped")
            .cloned()
            .collect(),
    );
    body["log"] = Value::Array(log);
    Ok(body)
}

#[derive(Deserialize)]
struct CreateBody {
    id: String,
    #[serde(flatten)]
    spec: Value,
}

/// Creates a schedule (its `id` names it) after checking its spec and the workflow it would start.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body(content = Object, description = "{id, cron, timezone?, kind, input, ...}: see README, Schedules"),
    responses(
        (status = 201, description = "created", body = crate::openapi::Schedule),
        (status = "4XX", description = "refused (invalid spec or input, id taken); nothing written", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn create(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let req: CreateBody = parse_json(&body)?;
    if !is_schedule_id(&req.id) {
        return Err(ApiError::bad_request(
            "id: a schedule id is 1-63 letters, digits, '-', '_' and '.', starting with a letter or digit",
        ));
    }
    let spec = spec_from(req.spec)?;
    let compiled = check(&state, &req.id, &spec).await?;
    let now = now_ms();
    let next = next_fire(&req.id, &compiled, now as i64);
    let put = state
        .store
        .schedule_put(
            &req.id,
            &serde_json::to_value(&spec).map_err(invalid)?,
            overlap_name(spec.overlap),
            next,
            PutMode::Create,
            spec.paused,
            spec.note.as_deref(),
            now,
        )
        .await?;
    if put == Put::Exists || matches!(put, Put::OtherShard(_)) {
        return Err(ApiError::conflict(format!(
            "a schedule with id {:?} exists; PUT /v1/schedules/{} replaces it",
            req.id, req.id
        )));
    }
    info!(schedule = %req.id, kind = %spec.kind, by = %who.name, "Schedule created.");
    let rec = state
        .store
        .schedule_get(&req.id)
        .await?
        .ok_or_else(|| not_found(&req.id))?;
    Ok((StatusCode::CREATED, Json(view(&state, &rec, 5).await?)).into_response())
}

/// Replaces a schedule's spec (its pause state and log stay).
#[utoipa::path(put, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    request_body(content = Object, description = "the spec, as for POST /v1/schedules"),
    responses(
        (status = 200, description = "replaced", body = crate::openapi::Schedule),
        (status = "4XX", description = "refused; nothing written", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn replace(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = schedule_id(&id)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let mut raw: Value = parse_json(&body)?;
    if let Some(obj) = raw.as_object_mut()
        && let Some(given) = obj.remove("id")
        && given != json!(id)
    {
        return Err(ApiError::bad_request(format!(
            "id: the body names {given} but the path {id:?}; a schedule's id cannot change"
        )));
    }
    let spec = spec_from(raw)?;
    let compiled = check(&state, id, &spec).await?;
    let now = now_ms();
    let existing = state
        .store
        .schedule_get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let put = state
        .store
        .schedule_put(
            id,
            &serde_json::to_value(&spec).map_err(invalid)?,
            overlap_name(spec.overlap),
            next_fire(id, &compiled, now as i64),
            PutMode::Replace,
            existing.paused,
            existing.note.as_deref(),
            now,
        )
        .await?;
    if put == Put::NotFound {
        return Err(not_found(id));
    }
    if let Put::OtherShard(shard) = put {
        return Err(ApiError::conflict(format!(
            "schedule {id:?} lives on shard {shard}, and its new cluster's shard is another: \
             delete it and create it again to move it"
        )));
    }
    info!(schedule = %id, by = %who.name, "Schedule replaced.");
    let rec = state
        .store
        .schedule_get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(view(&state, &rec, 5).await?).into_response())
}

/// Deletes a schedule (the workflows it started stay).
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    responses(
        (status = 200, description = "deleted", body = Object),
        (status = "4XX", description = "refused or not found", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn delete(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = schedule_id(&id)?;
    if !state.store.schedule_delete(id).await? {
        return Err(not_found(id));
    }
    info!(schedule = %id, by = %who.name, "Schedule deleted.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Schedules, oldest first.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "a page", body = crate::openapi::SchedulePage),
        (status = "4XX", description = "a bad query or no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(state): Shared,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be within 1..=500"));
    }
    if let Some(c) = &q.cursor
        && !is_schedule_id(c)
    {
        return Err(ApiError::bad_request(
            "cursor: pass the next_cursor of the previous page",
        ));
    }
    let (items, next) = state
        .store
        .schedule_list(limit, q.cursor.as_deref())
        .await?;
    let items: Vec<Value> = items
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "kind": r.spec["kind"], "cron": r.spec["cron"],
                "timezone": r.spec["timezone"], "paused": r.paused, "note": r.note,
                "next_ms": r.next_ms, "next": r.next_ms.map(rfc3339),
                "last_fire_ms": r.last_fire_ms, "last_workflow": r.last_workflow,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": next })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    preview: Option<usize>,
}

/// A schedule with its next fire times.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "a schedule id"), ("preview" = Option<usize>, Query, description = "how many next fire times")),
    responses(
        (status = 200, description = "the schedule", body = crate::openapi::Schedule),
        (status = "4XX", description = "not found, a bad query or no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let id = schedule_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let preview = q.preview.unwrap_or(5);
    if preview > 100 {
        return Err(ApiError::bad_request("preview must be within 0..=100"));
    }
    let rec = state
        .store
        .schedule_get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(view(&state, &rec, preview).await?).into_response())
}

/// A body that may be empty (no options) or a JSON object.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    note: Option<String>,
}

/// Pauses a schedule: no fire time starts.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    request_body(content = Option<Object>, description = "{note?}"),
    responses(
        (status = 200, description = "done", body = crate::openapi::Schedule),
        (status = "4XX", description = "refused or not found", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn pause(
    state: Shared,
    headers: HeaderMap,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    set_paused(state, headers, id, body, true).await
}

/// Unpauses a schedule from its next fire time after now.
#[utoipa::path(post, path = "/v1/schedules/{id}/unpause", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    request_body(content = Option<Object>, description = "{note?}"),
    responses(
        (status = 200, description = "done", body = crate::openapi::Schedule),
        (status = "4XX", description = "refused or not found", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn unpause(
    state: Shared,
    headers: HeaderMap,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    set_paused(state, headers, id, body, false).await
}

async fn set_paused(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    paused: bool,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = schedule_id(&id)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let req: NoteBody = optional_body(&body)?;
    if req
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "note: at most {MAX_NOTE_CHARS} characters"
        )));
    }
    let now = now_ms();
    // Unpausing starts from the next fire time after now (a missing schedule is 404 either way).
    let next = if paused {
        None
    } else {
        let (_, compiled) = load(&state, id).await?;
        next_fire(id, &compiled, now as i64)
    };
    if !state
        .store
        .schedule_pause(id, paused, req.note.as_deref(), next, now)
        .await?
    {
        return Err(not_found(id));
    }
    info!(schedule = %id, paused, by = %who.name, "Schedule paused or unpaused.");
    let rec = state
        .store
        .schedule_get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(view(&state, &rec, 5).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    overlap: Option<Overlap>,
}

fn overlap_name(o: Overlap) -> &'static str {
    match o {
        Overlap::Skip => "skip",
        Overlap::BufferOne => "buffer-one",
        Overlap::CancelOther => "cancel-other",
        Overlap::AllowAll => "allow-all",
    }
}

fn fired_json(fire_ms: i64, fired: &Fired) -> Value {
    let mut v = match fired {
        Fired::Started { id, cancelled } => {
            json!({"action": "started", "workflow": id, "cancelled": cancelled})
        }
        Fired::Buffered { id } => json!({"action": "buffered", "workflow": id}),
        Fired::Skipped { reason } => json!({"action": "skipped", "reason": reason}),
        Fired::Existing { id } => json!({"action": "existing", "workflow": id}),
        Fired::Stale | Fired::Paused | Fired::NotFound => json!({"action": "none"}),
    };
    v["fire_ms"] = json!(fire_ms);
    v["fire"] = json!(rfc3339(fire_ms));
    v
}

/// Loads and compiles a stored schedule.
async fn load(state: &AppState, id: &str) -> Result<(ScheduleRecord, Compiled), ApiError> {
    let rec = state
        .store
        .schedule_get(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let spec: ScheduleSpec = serde_json::from_value(rec.spec.clone()).map_err(invalid)?;
    let compiled = Compiled::compile(&spec).map_err(invalid)?;
    Ok((rec, compiled))
}

/// Trigger now: starts the schedule's workflow at once (subject to the overlap policy, the
/// schedule's unless the body gives one), whether or not the schedule is paused.
/// Starts the schedule's workflow now, under its overlap policy (or the one given).
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    request_body(content = Option<Object>, description = "{overlap?}"),
    responses(
        (status = 200, description = "what it did", body = crate::openapi::Fired),
        (status = "4XX", description = "refused or not found", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn trigger(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = schedule_id(&id)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let req: TriggerBody = optional_body(&body)?;
    let (_, compiled) = load(&state, id).await?;
    let now = now_ms();
    let at = now as i64;
    let mut wf = fire_workflow(
        &state.registry,
        &home(&state, &compiled),
        id,
        &compiled,
        at,
        "trigger",
        now,
    )
    .map_err(refused)?;
    wf.trace = drover_telemetry::trace::start("schedule-trigger", &wf.kind, &wf.id);
    admit(&state, &wf).await?;
    let fire = Fire {
        mode: FireMode::Trigger,
        fire_ms: at,
        due_ms: at,
        next: None,
        verdict: Verdict::Start(&wf),
        overlap: req.overlap.map(overlap_name),
        actor: Some(&who.name),
    };
    let fired = state.store.schedule_fire(id, &fire, now).await?;
    if fired == Fired::NotFound {
        return Err(not_found(id));
    }
    info!(schedule = %id, by = %who.name, "Schedule triggered.");
    let status = if matches!(fired, Fired::Started { .. }) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(fired_json(at, &fired))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    from: String,
    to: String,
    overlap: Option<Overlap>,
}

/// Backfill: every fire time in [from, to] (past ones), oldest first, each as the schedule's own
/// fire time would be (same workflow id, so a time that already fired is reported as existing),
/// with the overlap policy given (default allow-all: a backfill asks for every time in its range).
/// Starts every fire time of a past range, oldest first (at most 1,000).
#[utoipa::path(post, path = "/v1/schedules/{id}/backfill", tag = "schedules", params(("id" = String, Path, description = "a schedule id")),
    request_body(content = Object, description = "{from, to, overlap?} (RFC 3339 times)"),
    responses(
        (status = 200, description = "each fire time's result", body = crate::openapi::Backfilled),
        (status = "4XX", description = "refused or not found", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn backfill(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Operator)?;
    let id = schedule_id(&id)?;
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let req: BackfillBody = parse_json(&body)?;
    let from = parse_instant(&req.from).map_err(|e| ApiError::bad_request(format!("from: {e}")))?;
    let to = parse_instant(&req.to).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    let now = now_ms();
    if to < from {
        return Err(ApiError::bad_request("to: the range ends before it starts"));
    }
    if to > now as i64 {
        return Err(ApiError::bad_request(
            "to: a backfill covers past fire times only; the range ends in the future",
        ));
    }
    let (_, compiled) = load(&state, id).await?;
    let mut times = Vec::new();
    let mut after = from - 1;
    while let Some(f) = compiled.next_after(after) {
        if f.at_ms > to {
            break;
        }
        if times.len() == MAX_BACKFILL {
            return Err(ApiError::bad_request(format!(
                "the range holds more than {MAX_BACKFILL} fire times; backfill a shorter range"
            )));
        }
        times.push(f.at_ms);
        after = f.at_ms;
    }
    // Every workflow is checked before any is started.
    let mut wfs = Vec::with_capacity(times.len());
    for &t in &times {
        let wf = fire_workflow(
            &state.registry,
            &home(&state, &compiled),
            id,
            &compiled,
            t,
            "",
            now,
        )
        .map_err(refused)?;
        wfs.push(wf);
    }
    if let Some(wf) = wfs.first() {
        admit(&state, wf).await?;
    }
    let overlap = overlap_name(req.overlap.unwrap_or(Overlap::AllowAll));
    let mut results = Vec::with_capacity(times.len());
    for (t, wf) in times.iter().zip(&wfs) {
        let verdict = match compiled.freeze_at(*t) {
            Some(fr) => Verdict::Skip {
                reason: fr.skip_reason(),
                count: 1,
                until_ms: *t,
            },
            None => Verdict::Start(wf),
        };
        let fire = Fire {
            mode: FireMode::Backfill,
            fire_ms: *t,
            due_ms: *t,
            next: None,
            verdict,
            overlap: Some(overlap),
            actor: Some(&who.name),
        };
        let fired = state.store.schedule_fire(id, &fire, now_ms()).await?;
        if fired == Fired::NotFound {
            return Err(not_found(id));
        }
        results.push(fired_json(*t, &fired));
    }
    info!(schedule = %id, fire_times = times.len(), by = %who.name, "Schedule backfilled.");
    Ok(Json(json!({ "fire_times": times.len(), "results": results })).into_response())
}
