//! The request and response shapes every handler family shares: a fully read request (method,
//! path, query pairs, headers, body, client) and JSON/text response builders.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;

/// A request read in full (bodies are small; watches have none).
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `user-agent@address`, for the audit log.
    pub client: String,
    /// The `Host` header, so MAAS's `describe/` can point back at the address the client used.
    pub host: String,
}

impl Req {
    /// First value of a query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A query flag (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.q(key), Some("true" | "1" | "True"))
    }

    /// A header as a string ("" when missing or not UTF-8).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A JSON response.
pub fn json(code: u16, body: &Value) -> Response<Body> {
    bytes_response(code, "application/json", Bytes::from(body.to_string()))
}

/// A text/plain response (MAAS errors).
pub fn text(code: u16, body: &str) -> Response<Body> {
    bytes_response(
        code,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}

/// A response with a body and content type.
pub fn bytes_response(code: u16, content_type: &str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Add `Retry-After` when the error carries one.
pub fn with_retry_after(mut resp: Response<Body>, secs: Option<u64>) -> Response<Body> {
    if let Some(s) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}
