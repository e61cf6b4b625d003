//! Drover's REST API (axum, JSON, under `/v1`): submit, inspect, list, cancel, retry, pause, resume and
//! signal workflows. Bearer tokens carry a role: viewers read, operators change. Every refusal is a
//! 4xx with `{"error": ..., "detail": ...}` and writes nothing, and so does a submission whose
//! admission check could not be made (503 with Retry-After).

mod auth;
mod dashboard;
mod error;
mod events;
mod guard;
pub mod hooks;
mod metrics;
mod openapi;
mod routes;
mod schedules;
mod serve;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use drover_store::Store;
use drover_workflows::Registry;
use serde::Deserialize;

pub use auth::{Role, Token};
pub use error::ApiError;

/// API settings (`[api]` in the config file, `DROVER_API_*` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Accepted bearer tokens and their roles.
    pub tokens: Vec<Token>,
    /// How long an Idempotency-Key keeps returning the same workflow, in seconds.
    pub idempotency_ttl_secs: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// A client must send a request's headers within this many ms of starting it (or of the end of
    /// its previous request on a kept-alive connection), or the connection is closed.
    pub header_timeout_ms: u64,
    /// A client must send the whole body within this many ms of its headers, or gets 408.
    pub body_timeout_ms: u64,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Largest accepted request headers, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Largest accepted signal payload, in bytes of JSON.
    pub max_signal_bytes: usize,
    /// Signals a workflow may hold queued (sent before it waits on them), all names together.
    pub max_queued_signals: u64,
    /// Signals a workflow may hold queued under one name.
    pub max_queued_signals_per_name: u64,
    /// How long a submission's admission check (the registry's, e.g. asking MAAS about a
    /// provisioning's constraints) may take, in ms; past it the submission is answered 503 with
    /// Retry-After and nothing is written.
    pub admission_timeout_ms: u64,
    /// Whether `GET /metrics` asks for a viewer token (default: open, as Prometheus scrapes
    /// without one; counts and names only, nothing secret). Also DROVER_API_METRICS_AUTH.
    pub metrics_auth: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_string(),
            tokens: Vec::new(),
            idempotency_ttl_secs: 24 * 3600,
            max_body_bytes: 1 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            max_header_bytes: 32 << 10,
            max_signal_bytes: 64 << 10,
            max_queued_signals: 64,
            max_queued_signals_per_name: 16,
            admission_timeout_ms: 10_000,
            metrics_auth: false,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("api.listen {:?} is not an address: {e}", self.listen))?;
        if self.tokens.is_empty() {
            return Err("api.tokens is empty: add at least one {name, token, role} (or set DROVER_API_TOKEN)".into());
        }
        let positive = [
            ("header_timeout_ms", self.header_timeout_ms as usize),
            ("body_timeout_ms", self.body_timeout_ms as usize),
            ("admission_timeout_ms", self.admission_timeout_ms as usize),
            ("max_connections", self.max_connections),
            ("max_body_bytes", self.max_body_bytes),
            ("max_signal_bytes", self.max_signal_bytes),
            ("max_queued_signals", self.max_queued_signals as usize),
            (
                "max_queued_signals_per_name",
                self.max_queued_signals_per_name as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("api.{name} must be above 0"));
        }
        if !(1024..=MAX_HEADER_BUFFER / 2).contains(&self.max_header_bytes) {
            return Err(format!(
                "api.max_header_bytes must be within 1024..={}, got {}",
                MAX_HEADER_BUFFER / 2,
                self.max_header_bytes
            ));
        }
        for t in &self.tokens {
            if t.token.len() < 16 {
                return Err(format!(
                    "api token {:?} is shorter than 16 characters",
                    t.name
                ));
            }
        }
        Ok(())
    }
}

/// What every handler shares. Submissions pass `registry`'s admission check, when it has one
/// (`drover_kinds::admission` with a MAAS port, in `drover api` with `[maas]` configured), before
/// anything is written; without one, inputs are checked by their kinds alone and MAAS constraints
/// are first checked by the workflow's own steps.
pub struct AppState {
    pub store: Store,
    pub registry: Registry,
    pub config: Config,
    /// Ticketing webhooks (`[hooks]`); none: the hook routes answer 404.
    pub hooks: Option<Arc<hooks::Hooks>>,
}

impl AppState {
    fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.config.idempotency_ttl_secs)
    }
}

/// The whole API as a router (tests call it with `oneshot` or serve it on 127.0.0.1:0).
pub fn app(state: Arc<AppState>) -> Router {
    routes::router(state)
}

pub use serve::serve;

/// What hyper itself buffers for a request's head (request line and headers). Past it hyper answers
/// 431 with an empty body; below it, [`guard`] answers with the API's JSON error, so the configured
/// `max_header_bytes` must stay well under it.
pub(crate) const MAX_HEADER_BUFFER: usize = 256 << 10;
