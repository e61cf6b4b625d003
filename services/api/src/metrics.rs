//! `GET /metrics`: the process's Prometheus metrics, with the store's gauges (workflows by state
//! and kind, queue depths, permits per semaphore) read at each scrape. Open by default, as
//! Prometheus scrapes without credentials and nothing in it is secret (counts, kind, state and
//! semaphore names); `metrics_auth = true` asks for a viewer token, which Prometheus sends with
//! `authorization: {credentials: ...}` in its scrape config.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use drover_telemetry::metrics::{KindStateLabels, QueueLabels, SemaphoreLabels, StateLabels};
use tracing::warn;

use crate::auth::{Role, authorize};
use crate::{ApiError, AppState};

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "the metrics (OpenMetrics text, which Prometheus's text parser reads too)",
        content((String = "application/openmetrics-text"), (String = "text/plain"))),
    (status = "4XX", description = "no valid token, when metrics_auth is set", body = crate::openapi::ErrorBody),
    (status = 503, description = "the store does not answer", body = crate::openapi::ErrorBody)))]
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.config.metrics_auth {
        authorize(&headers, &state.config.tokens, Role::Viewer)?;
    }
    // One scrape at a time: gauges are cleared and set, so two at once could encode each other's
    // half-set families.
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = SCRAPE.lock().await;
    let kinds = state.registry.kinds();
    let stats = state.store.stats(&kinds).await.map_err(|e| {
        warn!(error = %e, "Cannot read the store's counts for /metrics.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            "the workflow store does not answer; the scrape can be retried",
        )
    })?;
    let m = drover_telemetry::metrics();
    let g = m.store();
    // Cleared first: a semaphore with no holders left, or a kind with no live workflow, is gone
    // rather than frozen at its last value.
    g.workflows.clear();
    for (s, n) in &stats.by_state {
        g.workflows
            .get_or_create(&StateLabels { state: s.as_str() })
            .set(*n as i64);
    }
    g.live.clear();
    for (kind, s, n) in &stats.live {
        g.live
            .get_or_create(&KindStateLabels {
                kind: kind.clone(),
                state: s.as_str(),
            })
            .set(*n as i64);
    }
    g.queue.clear();
    for (queue, n) in [
        ("ready", stats.ready),
        ("delayed", stats.delayed),
        ("leased", stats.leased),
        ("paused", stats.paused),
        ("semaphore", stats.waiting_for_permits),
    ] {
        g.queue.get_or_create(&QueueLabels { queue }).set(n as i64);
    }
    g.permits.clear();
    g.permit_waiters.clear();
    for s in &stats.semaphores {
        let labels = SemaphoreLabels {
            semaphore: s.name.clone(),
        };
        g.permits.get_or_create(&labels).set(s.held as i64);
        g.permit_waiters
            .get_or_create(&labels)
            .set(s.waiting as i64);
    }
    Ok(drover_telemetry::metrics::response(m.encode()))
}
