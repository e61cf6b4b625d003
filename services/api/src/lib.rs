//! Drover's REST API (axum, JSON, under `/v1`): submit, inspect, list, cancel, retry, pause, resume and
//! signal workflows. Bearer tokens carry a role: viewers read, operators change. Every refusal is a
//! 4xx with `{"error": ..., "detail": ...}` and writes nothing.

mod auth;
mod error;
mod routes;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_string(),
            tokens: Vec::new(),
            idempotency_ttl_secs: 24 * 3600,
            max_body_bytes: 1 << 20,
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

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub registry: Registry,
    pub config: Config,
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

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
