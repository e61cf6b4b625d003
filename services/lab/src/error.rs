//! The lab's one error type. Kubernetes handlers render it as an apiserver `Status` object and MAAS
//! handlers as MAAS's text/plain (or JSON validation) bodies, so each variant carries what both need.

use serde_json::Value;

/// Everything that can go wrong in the lab, from a bad scenario file to a request a real server
/// would refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario file could not be read or parsed.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// The configuration is inconsistent (checked before any port is bound).
    #[error("invalid lab configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("lab i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// 404: the object (or path) does not exist. `resource` is `plural[.group]`.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// 404 for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409 on create.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// 409 on a stale resourceVersion.
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    /// 409 with a free-form message (KubeVirt subresources, MAAS state violations).
    #[error("{0}")]
    StateConflict(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 422: the object is invalid. `kind` is the object's Kind.
    #[error("{kind} \"{name}\" is invalid: {detail}")]
    Invalid {
        kind: String,
        name: String,
        detail: String,
    },
    /// 422 with a ready message (failed JSON patch application).
    #[error("{0}")]
    Unprocessable(String),
    /// 405.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 415.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 410: a watch or list asked for a resourceVersion that was compacted away.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    /// 429, with an optional Retry-After in seconds.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Option<u64>,
    },
    /// 500.
    #[error("{0}")]
    Internal(String),
    /// 503, with an optional Retry-After in seconds.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<u64>,
    },
    /// 401 (MAAS OAuth, Kubernetes never: the lab's apiserver is open).
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// An injected fault: any status, message and Retry-After.
    #[error("{message}")]
    Injected {
        code: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// MAAS form validation failure: 400 with a JSON `{"field": ["message"]}` body.
    #[error("validation failed: {0}")]
    Validation(Value),
}

impl Error {
    /// The HTTP status code a real server answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::NotFound { .. } | Error::NoRoute => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::StateConflict(_) => 409,
            Error::BadRequest(_) | Error::Validation(_) => 400,
            Error::Invalid { .. } | Error::Unprocessable(_) => 422,
            Error::MethodNotAllowed => 405,
            Error::UnsupportedMediaType(_) => 415,
            Error::Gone { .. } => 410,
            Error::TooManyRequests { .. } => 429,
            Error::Unavailable { .. } => 503,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::Injected { code, .. } => *code,
            Error::Scenario(_) | Error::Config(_) | Error::Io(_) | Error::Internal(_) => 500,
        }
    }

    /// The apiserver `reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } | Error::NoRoute => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } | Error::StateConflict(_) => "Conflict",
            Error::BadRequest(_) | Error::Validation(_) => "BadRequest",
            Error::Invalid { .. } | Error::Unprocessable(_) => "Invalid",
            Error::MethodNotAllowed => "MethodNotAllowed",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::Gone { .. } => "Expired",
            Error::TooManyRequests { .. } => "TooManyRequests",
            Error::Unavailable { .. } => "ServiceUnavailable",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Forbidden(_) => "Forbidden",
            Error::Injected { code, .. } => match code {
                409 => "Conflict",
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                404 => "NotFound",
                400 => "BadRequest",
                _ => "InternalError",
            },
            Error::Scenario(_) | Error::Config(_) | Error::Io(_) | Error::Internal(_) => {
                "InternalError"
            }
        }
    }

    /// Seconds a client should wait before retrying, when the server says so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests { retry_after, .. }
            | Error::Unavailable { retry_after, .. }
            | Error::Injected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Result alias for the lab.
pub type Result<T, E = Error> = std::result::Result<T, E>;
