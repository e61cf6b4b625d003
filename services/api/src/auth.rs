//! Bearer-token authentication with two roles. Tokens come from the config; comparison does not stop
//! at the first differing byte, and tokens never appear in logs or errors.

use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads workflows.
    Viewer,
    /// Also submits, cancels, retries, pauses, resumes and signals.
    Operator,
}

/// A configured API token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who holds it (shown in logs instead of the token).
    pub name: String,
    pub token: String,
    pub role: Role,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// The credentials of a `Bearer` authorization: the scheme is case-insensitive (RFC 7235 2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's bearer token against `tokens` and the role the route needs.
pub fn authorize<'a>(
    headers: &HeaderMap,
    tokens: &'a [Token],
    needed: Role,
) -> Result<&'a Token, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an Authorization: Bearer <token> header",
            )
        })?;
    let token = tokens
        .iter()
        .find(|t| same(t.token.as_bytes(), presented.as_bytes()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not valid",
            )
        })?;
    if token.role < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has the viewer role; this needs operator",
                token.name
            ),
        ));
    }
    Ok(token)
}
