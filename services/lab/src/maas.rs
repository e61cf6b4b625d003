//! The simulated MAAS region API 2.0 under `/MAAS/api/2.0/`.

pub mod sim;

use axum::body::Body;
use axum::http::Response;

use crate::error::Error;
use crate::http::{self, Req};
use crate::scenario::MaasSettings;
use crate::state::Shared;

/// The region's state.
#[derive(Debug, Default)]
pub struct Region {
    machines: Vec<()>,
}

impl Region {
    /// Build from the scenario.
    pub fn new(_settings: &MaasSettings) -> Self {
        Region::default()
    }

    /// Number of machines.
    pub fn machine_count(&self) -> usize {
        self.machines.len()
    }
}

/// Serve a MAAS request.
pub async fn handle(_shared: &Shared, _req: &Req) -> Response<Body> {
    http::text(404, "Not Found")
}

/// A MAAS error response.
pub fn error_response(err: &Error) -> Response<Body> {
    http::with_retry_after(
        http::text(err.status_code(), &err.to_string()),
        err.retry_after(),
    )
}

/// (verb, object) of a mutating MAAS request.
pub fn audit_verb(_req: &Req) -> Option<(String, String)> {
    None
}
