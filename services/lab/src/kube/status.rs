//! apiserver `Status` objects: errors are rendered exactly as kube-apiserver writes them
//! (`kind: Status`, `status: Failure`, message, reason, details, code) so clients classify them.

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use crate::error::Error;
use crate::http;

/// The Status body for an error. `kind` is the resource plural for details (when known).
pub fn body(err: &Error) -> Value {
    let mut details = serde_json::Map::new();
    match err {
        Error::NotFound { resource, name }
        | Error::AlreadyExists { resource, name }
        | Error::Conflict { resource, name } => {
            let (kind, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
            details.insert("name".into(), json!(name));
            if !group.is_empty() {
                details.insert("group".into(), json!(group));
            }
            details.insert("kind".into(), json!(kind));
        }
        Error::Invalid { kind, name, .. } => {
            details.insert("name".into(), json!(name));
            details.insert("kind".into(), json!(kind));
        }
        Error::TooManyRequests {
            retry_after: Some(s),
            ..
        }
        | Error::Unavailable {
            retry_after: Some(s),
            ..
        } => {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        _ => {}
    }
    let message = match err {
        Error::Internal(_) | Error::Io(_) | Error::Scenario(_) | Error::Config(_) => {
            "an error on the server (\"internal error\") has prevented the request from succeeding"
                .to_string()
        }
        other => other.to_string(),
    };
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": err.reason(),
        "code": err.status_code(),
    });
    if !details.is_empty() {
        status["details"] = Value::Object(details);
    }
    if matches!(err, Error::Internal(_) | Error::Io(_)) {
        tracing::warn!(error = %err, "Kubernetes request failed inside the lab.");
    }
    status
}

/// The HTTP response for an error.
pub fn response(err: &Error) -> Response<Body> {
    http::with_retry_after(http::json(err.status_code(), &body(err)), err.retry_after())
}

/// A `Status` of success (eviction, delete-collection answers).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
