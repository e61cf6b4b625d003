//! `POST /v1/hooks/{jira,servicenow,generic}`: ticketing webhooks. Each delivery is authenticated
//! by its HMAC signature (secrets by reference, compared in constant time, the sender's timestamp
//! within a window where it sends one) before anything is read from it; then decided by the rules
//! against what Drover remembers of the ticket, and the decision written in one store call that
//! also remembers the delivery id (24 h) and the ticket's version. The answer is 2xx only once
//! that call returned: 201 a workflow started, 200 a signal delivered or a duplicate, 202 ignored
//! with the reason; 401 for a bad signature (nothing written), 503 with Retry-After when the store
//! cannot be written (the sender retries).

pub mod config;
pub mod event;
pub mod rules;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drover_store::SignalLimits;
use drover_store::hook::{Delivery, HookAction, HookOutcome};
use drover_store::now_ms;
use drover_workflows::ports::secrets::{SecretRef, Secrets};
use drover_workflows::ports::tickets::Tickets;
use drover_workflows::{NewWorkflow, Submission};
use serde_json::{Value, json};
use tracing::{info, warn};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{admit, body_error, parse_json};
use crate::{ApiError, AppState};
pub use config::Config;
use event::Event;
use rules::Decision;

/// Label every workflow a ticket started carries (value: the ticket's key).
pub const TICKET_LABEL: &str = "drover.io/ticket";
/// Seconds a sender is asked to wait when the store cannot be written.
const RETRY_SECS: u64 = 5;

/// What the hooks need beside the store: their settings, the secrets their signatures use, and
/// (optionally) the ticketing systems, to re-read a ticket before acting on a stale event.
pub struct Hooks {
    pub config: Config,
    pub secrets: Arc<dyn Secrets>,
    pub tickets: Option<Arc<dyn Tickets>>,
}

/// A webhook handler with its OpenAPI operation: the three hooks answer alike.
macro_rules! hook_route {
    ($path:literal, $doc:literal, $handler:item) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "hooks",
            request_body(content = Object, description = "the system's own event body, signed"),
            responses(
                (status = 201, description = "a workflow started", body = Object),
                (status = 200, description = "signalled, or a duplicate delivery", body = Object),
                (status = 202, description = "ignored, with the reason", body = Object),
                (status = "4XX", description = "bad signature, stale, not configured or malformed; nothing written", body = crate::openapi::ErrorBody),
                (status = 503, description = "cannot be written now; retry after Retry-After", body = crate::openapi::ErrorBody)))]
        $handler
    };
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(jira))
        .routes(routes!(servicenow))
        .routes(routes!(generic))
}

fn unavailable(detail: impl Into<Value>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail).retry_after(RETRY_SECS)
}

fn not_configured(source: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found",
        format!("the {source} hook is not configured on this server ([hooks.{source}])"),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn secret(hooks: &Hooks, r: &SecretRef) -> Result<Vec<u8>, ApiError> {
    match hooks.secrets.get(r.name()).await {
        Ok(s) => Ok(s.expose().as_bytes().to_vec()),
        Err(e) => {
            warn!(secret = %r.name(), error = %e, "Webhook secret could not be read.");
            Err(unavailable(
                "the webhook's secret cannot be read now; nothing was written",
            ))
        }
    }
}

fn unauthorized(e: verify::Refused) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad signature", e.to_string())
}

/// The delivery id: at most 200 letters, digits, '-', '_', '.' (it becomes part of a key).
fn delivery_id(value: Option<&str>, name: &str) -> Result<String, ApiError> {
    let v = value.ok_or_else(|| ApiError::bad_request(format!("the {name} header is missing")))?;
    if v.is_empty()
        || v.len() > 200
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::bad_request(format!(
            "the {name} header must be 1-200 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(v.to_string())
}

/// The hooks and the settings of one source, or 404 when that source is not configured.
fn configured<'a, T>(
    state: &'a AppState,
    source: &str,
    pick: impl FnOnce(&'a Config) -> Option<&'a T>,
) -> Result<(&'a Hooks, &'a T), ApiError> {
    let hooks = state
        .hooks
        .as_deref()
        .ok_or_else(|| not_configured(source))?;
    let cfg = pick(&hooks.config).ok_or_else(|| not_configured(source))?;
    Ok((hooks, cfg))
}

hook_route!(
    "/v1/hooks/jira",
    "Jira Cloud's webhook (X-Hub-Signature HMAC-SHA256): starts, signals or ignores per `[[hooks.rules]]`; 404 when not configured.",
    async fn jira(
        State(state): State<Arc<AppState>>,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, ApiError> {
        let (hooks, cfg) = configured(&state, "jira", |c| c.jira.as_ref())?;
        let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
        let key = secret(hooks, &cfg.secret).await?;
        verify::check(
            &key,
            &body,
            header(&headers, "x-hub-signature"),
            "X-Hub-Signature",
            false,
        )
        .map_err(unauthorized)?;
        let delivery = delivery_id(
            header(&headers, "x-atlassian-webhook-identifier"),
            "X-Atlassian-Webhook-Identifier",
        )?;
        let value: Value = parse_json(&body)?;
        let event = event::jira(&value).map_err(ApiError::bad_request)?;
        // Jira signs its body, timestamp included, and keeps it on retries: a delivery older than
        // the delivery ids are remembered could be a replay nothing else would catch.
        if let Some(at) = event.at_ms {
            let age_s = (now_ms() as i64 - at) / 1000;
            if age_s > hooks.config.delivery_ttl_secs as i64 {
                return Err(unauthorized(verify::Refused::Timestamp(format!(
                    "the delivery's timestamp is {age_s} s old, past the {} s replays are \
                 remembered; a replay",
                    hooks.config.delivery_ttl_secs
                ))));
            }
        }
        let own = cfg.account_id.as_deref();
        handle(&state, hooks, event, &delivery, own)
            .await
            .map_err(retry_later)
    }
);

hook_route!(
    "/v1/hooks/servicenow",
    "ServiceNow's outbound message (HMAC of timestamp and body): starts, signals or ignores per `[[hooks.rules]]`; 404 when not configured.",
    async fn servicenow(
        State(state): State<Arc<AppState>>,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, ApiError> {
        let (hooks, cfg) = configured(&state, "servicenow", |c| c.servicenow.as_ref())?;
        let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
        let key = secret(hooks, &cfg.secret).await?;
        let ts = verify::check_timestamped(
            &key,
            &body,
            header(&headers, &cfg.signature_header),
            "signature",
            true,
            header(&headers, &cfg.timestamp_header),
            "timestamp",
            now_ms(),
            cfg.tolerance_secs,
        )
        .map_err(unauthorized)?;
        let delivery = delivery_id(header(&headers, &cfg.delivery_header), &cfg.delivery_header)?;
        let value: Value = parse_json(&body)?;
        let event = event::servicenow(&value, ts).map_err(ApiError::bad_request)?;
        let own = cfg.user.as_deref();
        handle(&state, hooks, event, &delivery, own)
            .await
            .map_err(retry_later)
    }
);

hook_route!(
    "/v1/hooks/generic",
    "a generic signed hook: starts, signals or ignores per `[[hooks.rules]]`; 404 when not configured.",
    async fn generic(
        State(state): State<Arc<AppState>>,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, ApiError> {
        let (hooks, cfg) = configured(&state, "generic", |c| c.generic.as_ref())?;
        let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
        let key = secret(hooks, &cfg.secret).await?;
        let ts = verify::check_timestamped(
            &key,
            &body,
            header(&headers, "x-drover-signature"),
            "X-Drover-Signature",
            false,
            header(&headers, "x-drover-timestamp"),
            "X-Drover-Timestamp",
            now_ms(),
            cfg.tolerance_secs,
        )
        .map_err(unauthorized)?;
        let delivery = delivery_id(header(&headers, "x-drover-delivery"), "X-Drover-Delivery")?;
        let value: Value = parse_json(&body)?;
        let event = event::generic(&value, ts).map_err(ApiError::bad_request)?;
        handle(&state, hooks, event, &delivery, None)
            .await
            .map_err(retry_later)
    }
);

/// A delivery that could not be decided or written is answered 503 with Retry-After, so the
/// sender retries it.
fn retry_later(e: ApiError) -> ApiError {
    if e.status == StatusCode::SERVICE_UNAVAILABLE && e.retry_after.is_none() {
        e.retry_after(RETRY_SECS)
    } else {
        e
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The shard that holds `source`'s ticket state: the shard of the clusters its rules name (a
/// ticket's memo and the workflow a delivery starts are written in one call, so they share a
/// shard). Rules of one source that name clusters on different shards are refused at start
/// ([`check_shards`]).
pub fn ticket_home(
    store: &drover_store::Store,
    config: &Config,
    source: &str,
) -> drover_store::Store {
    let shard = config
        .rules
        .iter()
        .find(|r| r.source.as_str() == source)
        .map_or(store.shard_for(None), |r| {
            store.shard_for(r.cluster.as_deref())
        });
    store.on(shard)
}

/// Refuses rules of one source that name clusters on different shards (see [`ticket_home`]).
pub fn check_shards(store: &drover_store::Store, config: &Config) -> Result<(), String> {
    for rule in &config.rules {
        let home = ticket_home(store, config, rule.source.as_str()).shard();
        let shard = store.shard_for(rule.cluster.as_deref());
        if shard != home {
            return Err(format!(
                "hooks: rule {:?} names a cluster on shard {shard}, but the {} rules before it \
                 name clusters on shard {home}; a source's tickets live on one shard: place the \
                 clusters together with [[clusters]] shard",
                rule.name,
                rule.source.as_str()
            ));
        }
    }
    Ok(())
}

/// The workflow a rule starts for a ticket version: its id derives from the rule, the ticket and
/// the version, so the same change delivered twice (under two delivery ids) is one workflow.
fn workflow_for(
    state: &AppState,
    rule: &config::Rule,
    event: &Event,
    input: Value,
    now: u64,
) -> Result<NewWorkflow, drover_workflows::registry::Error> {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x4f3c_9e21_77ab_4d5e_8c0f_b1d2_a3e4_f5a6);
    let name = format!(
        "{}\n{}\n{}\n{}",
        rule.name,
        event.source.as_str(),
        event.key,
        event.version
    );
    let id = state.store.workflow_id(
        uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()),
        rule.cluster.as_deref(),
    );
    let mut submission =
        Submission::new(rule.kind.clone(), input).label(TICKET_LABEL, event.key.clone());
    submission = submission
        .label("drover.io/rule", rule.name.clone())
        .cluster(rule.cluster.clone());
    state.registry.prepare(id, submission, now).map(|mut wf| {
        wf.trace = drover_telemetry::trace::start("webhook", &wf.kind, &wf.id);
        wf
    })
}

/// Whether the event is too old to act on as sent; then the ticket is read as it is now.
async fn refresh(hooks: &Hooks, event: &mut Event, now: u64) -> Option<String> {
    let old = event
        .at_ms
        .is_some_and(|at| now as i64 - at > hooks.config.stale_after_secs as i64 * 1000);
    let (Some(tickets), Some(ticket), true) = (&hooks.tickets, event.ticket(), old) else {
        return None;
    };
    match tickets.read(&ticket).await {
        Ok(current) if current.version > event.version => {
            let moved_on = event
                .moved_to
                .as_ref()
                .or(event.status.as_ref())
                .filter(|m| !m.eq_ignore_ascii_case(&current.status))
                .map(|m| {
                    format!(
                        "stale event: the ticket moved to {m:?} but is {:?} now",
                        current.status
                    )
                });
            event.fields = current.fields;
            event.labels = current.labels;
            moved_on
        }
        Ok(_) => None,
        Err(e) => {
            // Acting on the event as sent is what a sender that never goes stale gets.
            warn!(ticket = %ticket.display, error = %e, "Could not re-read a stale event's ticket.");
            None
        }
    }
}

async fn handle(
    state: &AppState,
    hooks: &Hooks,
    mut event: Event,
    delivery: &str,
    own: Option<&str>,
) -> Result<Response, ApiError> {
    let source = event.source.as_str();
    if own.is_some_and(|o| !o.is_empty() && o == event.actor) {
        return Ok(reply(
            StatusCode::ACCEPTED,
            json!({"ignored": "caused by Drover's own write-back"}),
        ));
    }
    let now = now_ms();
    let stale = refresh(hooks, &mut event, now).await;
    let ticket = event.ticket();
    let home = ticket_home(&state.store, &hooks.config, source);
    for _ in 0..5 {
        let memo = home.ticket_memo(source, &event.key).await?;
        let decision = match &stale {
            Some(why) => Decision::Ignore(why.clone()),
            None => rules::decide(&hooks.config.rules, &event, &memo),
        };
        let mut rule_name = String::new();
        let workflow;
        let ticket_json;
        let action = match &decision {
            Decision::Start { rule, input } => {
                rule_name = rule.name.clone();
                match workflow_for(state, rule, &event, input.clone(), now) {
                    Ok(wf) => {
                        admit(state, &wf).await?;
                        workflow = wf;
                        ticket_json = json!({
                            "system": ticket.as_ref().map(|t| t.system),
                            "key": event.key, "display": event.display, "source": source,
                            "rule": rule.name, "comments": rule.comments && ticket.is_some(),
                            "approval": rule.approval.as_ref().map(|a| json!({"to": a.to, "signal": a.signal})),
                            "on_success": rule.on_success, "on_failure": rule.on_failure,
                        });
                        HookAction::Start {
                            workflow: &workflow,
                            ticket: &ticket_json,
                            comments: rule.comments && ticket.is_some(),
                        }
                    }
                    Err(e) => HookAction::Ignore(format!(
                        "rule {:?}: the workflow was refused: {e}",
                        rule.name
                    )),
                }
            }
            Decision::Signal {
                rule,
                signal,
                payload,
            } => {
                rule_name = rule.name.clone();
                HookAction::Signal {
                    name: signal,
                    payload,
                }
            }
            Decision::Ignore(reason) => HookAction::Ignore(reason.clone()),
        };
        let d = Delivery {
            source,
            ticket: &event.key,
            id: delivery,
            ttl: Duration::from_secs(hooks.config.delivery_ttl_secs),
            version: event.version,
            expected: memo.version,
            status: event.status.as_deref().unwrap_or(""),
            rule: &rule_name,
        };
        let outcome = home
            .hook_apply(&d, &action, SignalLimits::default(), now)
            .await?;
        return Ok(match outcome {
            HookOutcome::Retry => continue,
            HookOutcome::Started(id) => {
                info!(workflow_id = %id, ticket = %event.display, rule = %rule_name, source,
                    "Webhook started a workflow.");
                reply(
                    StatusCode::CREATED,
                    json!({"started": id, "rule": rule_name}),
                )
            }
            HookOutcome::Existing(id) => reply(
                StatusCode::OK,
                json!({"existing": id, "detail": "this ticket change started it already"}),
            ),
            HookOutcome::Signalled { workflow, how } => {
                info!(workflow_id = %workflow, ticket = %event.display, source,
                    "Webhook approval signalled a workflow.");
                reply(
                    StatusCode::OK,
                    json!({"signalled": workflow, "delivery": how}),
                )
            }
            HookOutcome::Duplicate(outcome) => reply(
                StatusCode::OK,
                json!({"duplicate": true, "detail": format!("delivery {delivery} was handled before ({outcome})")}),
            ),
            HookOutcome::Stale(v) => reply(
                StatusCode::ACCEPTED,
                json!({"ignored": format!("an event of version {} is not newer than version {v} already applied for {}", event.version, event.display)}),
            ),
            HookOutcome::Ignored(reason) => reply(StatusCode::ACCEPTED, json!({"ignored": reason})),
        });
    }
    Err(unavailable(
        "the ticket changes too fast to decide this event now; retry",
    ))
}
