//! The API's one error type, rendered as `{"error": ..., "detail": ...}` with its status. 4xx are the
//! caller's to fix and are not logged as errors; 5xx never carry internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::error;

/// A refusal or failure, as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: Value,
    /// Seconds to send as `Retry-After` (with a 503 the client may retry).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<Value>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Asks the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(detail: impl Into<Value>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }

    pub fn not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("no workflow with id {id:?}"),
        )
    }

    pub fn conflict(detail: impl Into<Value>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", detail)
    }
}

impl From<drover_store::Error> for ApiError {
    fn from(e: drover_store::Error) -> ApiError {
        if let drover_store::Error::InvalidId(_) = e {
            return ApiError::new(StatusCode::NOT_FOUND, "not found", "no such workflow");
        }
        error!(error = %e, "Store call failed.");
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(
            status,
            "store unavailable",
            "the workflow store did not answer; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
