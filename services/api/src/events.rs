//! `GET /v1/workflows/{id}/events`: a workflow's changes as server-sent events, for `drover watch`
//! and the dashboard. The handler reads the workflow's detail (with `depth` levels of children)
//! every [`POLL`] and sends it as an `event: workflow` when anything in it changed (its state, a
//! step, a child's progress); once the workflow has ended, the last detail is followed by an
//! `event: end` and the stream closes. Reading the detail again instead of subscribing to changes
//! keeps Redis untouched by watchers (no pub/sub in the Lua functions) and survives a Redis
//! restart or failover: a read that fails sends one `event: error` and the stream keeps trying.

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Role, authorize};
use crate::routes::{MAX_DEPTH, detail, workflow_id};
use crate::{ApiError, AppState};

/// How often a stream reads the workflow again.
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// How often an idle stream sends a comment, so proxies and clients keep the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Levels of children nested in each event's detail (1: children; 2: their children too).
    depth: Option<usize>,
}

/// The workflow's changes as server-sent events: `workflow` (its detail) at once and at each
/// change, then `end` once it has ended.
#[utoipa::path(get, path = "/v1/workflows/{id}/events", tag = "workflows",
    params(("id" = String, Path, description = "a workflow id"),
        ("depth" = Option<usize>, Query, description = "levels of children nested, 1-3")),
    responses(
        (status = 200, description = "the event stream", content_type = "text/event-stream", body = crate::openapi::StreamEvent),
        (status = "4XX", description = "no such workflow, a bad depth or no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let id = workflow_id(&id)?.to_string();
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let depth = q.depth.unwrap_or(1);
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(ApiError::bad_request(format!(
            "depth must be within 1..={MAX_DEPTH}, got {depth}"
        )));
    }
    let first = detail(&state, &id, depth)
        .await?
        .ok_or_else(|| ApiError::not_found(&id))?;
    let watch = Watch {
        state,
        id,
        depth,
        next: Some(first),
        last: None,
        seq: 0,
        failing: false,
        end: None,
        done: false,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let event = w.next_event().await?;
        Some((Ok::<Event, Infallible>(event), w))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// One stream's position.
struct Watch {
    state: Arc<AppState>,
    id: String,
    depth: usize,
    /// A detail read but not yet compared (the first one, read before the response started).
    next: Option<Value>,
    /// Hash of the last detail sent.
    last: Option<u64>,
    seq: u64,
    /// The last read failed (one `error` event per outage).
    failing: bool,
    /// The workflow ended in this state: `end` comes next.
    end: Option<Value>,
    done: bool,
}

impl Watch {
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if let Some(state) = self.end.take() {
            self.done = true;
            return Some(self.event("end", &json!({ "state": state })));
        }
        loop {
            let body = match self.next.take() {
                Some(body) => body,
                None => {
                    tokio::time::sleep(POLL).await;
                    match detail(&self.state, &self.id, self.depth).await {
                        Ok(Some(body)) => {
                            self.failing = false;
                            body
                        }
                        Ok(None) => {
                            // Deleted under the stream (retention trimmed it).
                            self.done = true;
                            return Some(
                                self.event("end", &json!({ "state": null, "deleted": true })),
                            );
                        }
                        Err(_) if self.failing => continue,
                        Err(_) => {
                            self.failing = true;
                            return Some(self.event(
                                "error",
                                &json!({ "detail": "the workflow store does not answer; the stream keeps trying" }),
                            ));
                        }
                    }
                }
            };
            let hash = digest(&body);
            if self.last == Some(hash) {
                continue;
            }
            self.last = Some(hash);
            if matches!(
                body["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                self.end = Some(body["state"].clone());
            }
            return Some(self.event("workflow", &body));
        }
    }

    fn event(&mut self, name: &str, data: &Value) -> Event {
        self.seq += 1;
        Event::default()
            .event(name)
            .id(self.seq.to_string())
            .data(data.to_string())
    }
}

fn digest(body: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    body.to_string().hash(&mut h);
    h.finish()
}
