//! The API's one error type, rendered as `{"error": ..., "detail": ...}` with its status. 4xx are the
//! caller's to fix and are not logged as errors; 5xx never carry internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::error;

/// A refusal or failure, as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<Value>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
        }
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
        (
            self.status,
            axum::Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}
