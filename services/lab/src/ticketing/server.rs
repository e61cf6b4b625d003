//! The HTTP entry of a ticketing system's listener: read the request, let the front decide
//! (down, injected faults, latency), authenticate (HTTP Basic), hand it to the system's routes
//! and log it with the status the client saw.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, Request, Response, header};
use base64::Engine;
use serde_json::json;

use super::front::Refusal;
use super::{System, TicketRequest, Ticketing, jira, servicenow};
use crate::http::{self, Req};

/// Largest request body accepted (bigger ones get 413).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// What a load balancer with no healthy server answers (HAProxy's page).
pub const DOWN_PAGE: &str = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";

/// Serve `system` on `listener` until `stopping` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ticketing: Arc<Ticketing>,
    system: System,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .fallback(entry)
        .with_state((ticketing, system));
    let shutdown = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, system = system.name(), "Lab ticketing server stopped.");
    }
}

async fn entry(
    State((ticketing, system)): State<(Arc<Ticketing>, System)>,
    request: Request<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let writes = matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let resp = too_large(system);
            log(
                &ticketing,
                system,
                &parts.method,
                &path_and_query,
                None,
                None,
                &resp,
            );
            return resp;
        }
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let req = Req {
        method: parts.method.clone(),
        path: percent_encoding::percent_decode_str(parts.uri.path())
            .decode_utf8_lossy()
            .into_owned(),
        query,
        client: header("user-agent"),
        host: header("host"),
        headers: parts.headers.clone(),
        body,
    };
    let logged_body = writes.then(|| String::from_utf8_lossy(&req.body).into_owned());
    let desk_front = match system {
        System::Jira => &ticketing.jira.front,
        System::ServiceNow => &ticketing.servicenow.front,
    };
    let (latency, refusal) = desk_front.admit(req.method.as_str(), &path_and_query);
    if let Some(delay) = latency {
        tokio::time::sleep(delay).await;
    }
    if let Some(refusal) = refusal {
        ticketing.log.count(|c| c.faulted += 1);
        let resp = refused(system, refusal);
        log(
            &ticketing,
            system,
            &req.method,
            &path_and_query,
            None,
            logged_body,
            &resp,
        );
        return resp;
    }
    let user = authenticate(&ticketing, system, &req);
    let handled = std::panic::AssertUnwindSafe(async {
        match system {
            System::Jira => jira::api::handle(&ticketing, &req, user.as_deref()),
            System::ServiceNow => servicenow::api::handle(&ticketing, &req, user.as_deref()),
        }
    });
    let resp = match futures::FutureExt::catch_unwind(handled).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!(path = %req.path, method = %req.method, "A lab ticketing handler panicked.");
            internal(system)
        }
    };
    if resp.status().as_u16() == 429 {
        ticketing.log.count(|c| c.rate_limited += 1);
    }
    if let Some(delay) = desk_front.response_delay(req.method.as_str(), &path_and_query) {
        tokio::time::sleep(delay).await;
    }
    log(
        &ticketing,
        system,
        &req.method,
        &path_and_query,
        user,
        logged_body,
        &resp,
    );
    resp
}

/// The user the request's HTTP Basic credentials name, when they are right.
fn authenticate(ticketing: &Ticketing, system: System, req: &Req) -> Option<String> {
    let given = req.header("authorization");
    let (scheme, encoded) = given.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, secret) = decoded.split_once(':')?;
    let (want_user, want_secret) = match system {
        System::Jira => (
            &ticketing.config.jira.email,
            &ticketing.config.jira.api_token,
        ),
        System::ServiceNow => (
            &ticketing.config.servicenow.user,
            &ticketing.config.servicenow.password,
        ),
    };
    (user == want_user && secret == want_secret).then(|| user.to_string())
}

fn log(
    ticketing: &Ticketing,
    system: System,
    method: &Method,
    path: &str,
    user: Option<String>,
    body: Option<String>,
    resp: &Response<Body>,
) {
    ticketing.log.record(TicketRequest {
        seq: 0,
        time: crate::clock::rfc3339(std::time::SystemTime::now()),
        system,
        method: method.to_string(),
        path: path.to_string(),
        status: resp.status().as_u16(),
        user,
        body,
    });
}

fn refused(system: System, refusal: Refusal) -> Response<Body> {
    let (status, retry_after) = match refusal {
        Refusal::Down => {
            return http::bytes_response(
                503,
                "text/html",
                bytes::Bytes::from_static(DOWN_PAGE.as_bytes()),
            );
        }
        Refusal::Injected {
            status,
            retry_after,
        } => (status, retry_after),
    };
    let resp = match system {
        System::Jira => {
            let message = match status {
                429 => "Rate limit exceeded.",
                503 => "Service Unavailable",
                _ => "Internal server error",
            };
            jira::api::error(status, &[message], json!({}))
        }
        System::ServiceNow => {
            let (message, detail) = match status {
                429 => (
                    "Rate limit exceeded",
                    "The request was rejected by a rate limit rule",
                ),
                503 => ("Service Unavailable", "The instance is not available"),
                _ => ("Internal server error", "An unexpected error occurred"),
            };
            servicenow::api::error(status, message, detail)
        }
    };
    let mut resp = http::with_retry_after(resp, retry_after);
    if status == 429
        && system == System::Jira
        && let Ok(v) = HeaderValue::from_str("jira-quota-global-based")
    {
        resp.headers_mut().insert("RateLimit-Reason", v);
    }
    resp
}

fn too_large(system: System) -> Response<Body> {
    match system {
        System::Jira => jira::api::error(413, &["Request entity too large"], json!({})),
        System::ServiceNow => {
            servicenow::api::error(413, "Request entity too large", "The payload is too large")
        }
    }
}

fn internal(system: System) -> Response<Body> {
    match system {
        System::Jira => jira::api::error(500, &["Internal server error"], json!({})),
        System::ServiceNow => {
            servicenow::api::error(500, "Internal server error", "An unexpected error occurred")
        }
    }
}

/// `Content-Type: application/json;charset=UTF-8` (what both systems send).
pub fn json_content_type(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}
