//! The web dashboard, served by the API itself: three static files built into the binary
//! (`assets/`: no second server, no build step, nothing fetched from elsewhere) at `/ui/`, and
//! `GET /v1/whoami`, which tells the page (and any client) the token's name and role so it shows
//! controls to operators only. The page signs in with a bearer token kept in the tab's
//! sessionStorage and reads the same REST API and event stream as the CLI. Its responses carry a
//! Content-Security-Policy that allows only its own script and style (no inline code), so a value
//! from a workflow can never run as script in an operator's browser.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Role, authorize};
use crate::{ApiError, AppState};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(ui_bare))
        .routes(routes!(index))
        .routes(routes!(file))
        .routes(routes!(whoami))
}

/// The dashboard's address.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 303, description = "to /ui/")))]
async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// The dashboard's address, without its slash.
#[utoipa::path(get, path = "/ui", tag = "dashboard",
    responses((status = 303, description = "to /ui/")))]
async fn ui_bare() -> Redirect {
    Redirect::to("/ui/")
}

/// The dashboard (sign-in happens in the page).
#[utoipa::path(get, path = "/ui/", tag = "dashboard",
    responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// The dashboard's script and stylesheet.
#[utoipa::path(get, path = "/ui/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "app.js, app.css or index.html")),
    responses(
        (status = 200, description = "the file", content_type = "text/javascript", body = String),
        (status = 404, description = "no such file", body = crate::openapi::ErrorBody)))]
async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => asset(STYLE, "text/css; charset=utf-8"),
        "index.html" => asset(INDEX, "text/html; charset=utf-8"),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            "the dashboard has index.html, app.js and app.css under /ui/",
        )
        .into_response(),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary; revalidating costs little and never serves a stale page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The token's holder and role (viewers read, operators also change).
#[utoipa::path(get, path = "/v1/whoami", tag = "meta",
    responses(
        (status = 200, description = "the token's holder", body = crate::openapi::Whoami),
        (status = "4XX", description = "no valid token", body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn whoami(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = authorize(&headers, &state.config.tokens, Role::Viewer)?;
    let role = match who.role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    };
    Ok(Json(json!({ "name": who.name, "role": role })).into_response())
}
