//! The first layer every request passes: limits on the request line and headers (414, 431), a JSON
//! `Content-Type` on any body (415), and the body read whole within its deadline (408) and size (413),
//! each refused with the API's JSON error before any handler runs. Handlers then see a complete body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::{ApiError, AppState};

/// Longest accepted request target (path and query).
const MAX_URI_BYTES: usize = 8 << 10;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;

pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, request).await {
        Ok(request) => next.run(request).await,
        Err((e, close)) => {
            let mut response = e.into_response();
            if close {
                // The rest of the body was not read: the connection cannot carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

async fn check(state: &AppState, request: Request) -> Result<Request, (ApiError, bool)> {
    let config = &state.config;
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err((
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri too long",
                format!(
                    "the request target is {target} bytes; at most {MAX_URI_BYTES} are accepted"
                ),
            ),
            true,
        ));
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > config.max_header_bytes {
        return Err((
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers too large",
                format!(
                    "the request has {} header lines in {header_bytes} bytes; at most {MAX_HEADERS} \
                     lines and {} bytes are accepted",
                    headers.len(),
                    config.max_header_bytes
                ),
            ),
            true,
        ));
    }
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    (
                        ApiError::bad_request("Content-Length is not a number"),
                        true,
                    )
                })?,
        ),
    };
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return Err((too_large(config.max_body_bytes), true));
    }
    let maybe_body = declared.map_or_else(
        || headers.contains_key(header::TRANSFER_ENCODING),
        |n| n > 0,
    );
    if maybe_body && !is_json(headers) {
        return Err((unsupported(headers), true));
    }
    let (parts, body) = request.into_parts();
    if !maybe_body {
        return Ok(Request::from_parts(parts, body));
    }
    let read = Limited::new(body, config.max_body_bytes).collect();
    let bytes =
        match tokio::time::timeout(Duration::from_millis(config.body_timeout_ms), read).await {
            Err(_) => {
                return Err((
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request timeout",
                        format!(
                            "the body did not arrive within {} ms of the headers; send it whole",
                            config.body_timeout_ms
                        ),
                    ),
                    true,
                ));
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err((too_large(config.max_body_bytes), true));
            }
            Ok(Err(e)) => {
                return Err((
                    ApiError::bad_request(format!("reading the body failed: {e}")),
                    true,
                ));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `application/json` or `application/<anything>+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
        format!("the body is larger than {limit} bytes; send a smaller input"),
    )
}

fn unsupported(headers: &HeaderMap) -> ApiError {
    let sent = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            format!("{:?}", text.chars().take(100).collect::<String>())
        })
        .unwrap_or_else(|| "none".to_string());
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        format!("request bodies are JSON: send Content-Type: application/json (got {sent})"),
    )
}
