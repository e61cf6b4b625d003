//! How MAAS's answers become the port's [`MaasError`], and which failures a retry may repeat.
//!
//! MAAS answers errors as `text/plain` (JSON `{"field": ["message"]}` for form validation); both
//! are kept verbatim as the message. The classes:
//! - 503 (no rack controller, power or IP trouble) and a 409 carrying Retry-After (MAAS's database
//!   serialisation retries, LP#2034014): MAAS refused before acting, so any call is retried.
//! - Other 5xx (the 502 and 504 of a proxy in front of MAAS, 500), timeouts and connections cut
//!   mid-request: the call may have been applied. Reads are retried; writes are not (a repeated
//!   allocate would take a second machine, a repeated deploy would meet its own "Deploying" as a
//!   409) and come back Transient at once, saying the caller should read the machine's state.
//! - A connection that could not be opened: nothing was sent, any call is retried.
//! - 409 "No ... available" (`NodesNotAvailable`): `NoMatch`; other 409s: `Conflict`, which is
//!   permanent for the call (the same call against the same state gets the same answer).
//! - 404 `NotFound`; every other 4xx `Permanent`.

use std::time::Duration;

use drover_workflows::ports::maas::MaasError;

/// Errors of the adapter itself (not of a call).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MAAS adapter configuration: {0}")]
    Config(String),
}

/// Whether a call may be sent again after a failure that leaves its outcome unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Reads and idempotent writes: repeat after any transient failure.
    Safe,
    /// Other writes: repeat only when MAAS surely did not act.
    IfRefused,
}

/// A failed attempt: the error, and whether another attempt may follow.
#[derive(Debug)]
pub struct Failure {
    pub error: MaasError,
    pub retry: bool,
}

/// Longest MAAS message kept (a proxy's HTML error page can be long).
const MAX_MESSAGE: usize = 1000;

fn clip(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

/// Classifies a non-2xx answer to `what` (`deploy machine abc123`).
pub fn classify(
    what: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    replay: Replay,
) -> Failure {
    let message = clip(body);
    let permanent = |error| Failure {
        error,
        retry: false,
    };
    match status {
        409 if retry_after.is_some() => Failure {
            error: MaasError::Transient {
                message: format!("{what}: MAAS asked to retry (409 {message})"),
                retry_after,
            },
            retry: true,
        },
        409 if message.starts_with("No ") && message.contains("available") => {
            permanent(MaasError::NoMatch(message))
        }
        409 => permanent(MaasError::Conflict(format!("{what}: {message}"))),
        404 => permanent(MaasError::NotFound(format!("{what}: {message}"))),
        500..=599 => Failure {
            error: MaasError::Transient {
                message: if status == 503 || replay == Replay::Safe {
                    format!("{what}: MAAS is unavailable ({status} {message})")
                } else {
                    format!(
                        "{what}: MAAS answered {status} {message}; it may have applied the \
                         request, read the machine's state"
                    )
                },
                retry_after,
            },
            retry: status == 503 || replay == Replay::Safe,
        },
        401 => permanent(MaasError::Permanent(format!(
            "{what}: MAAS refused the API key (401 {message})"
        ))),
        _ => permanent(MaasError::Permanent(format!("{what}: {status} {message}"))),
    }
}

/// Classifies a transport failure (no HTTP answer).
pub fn transport(what: &str, e: &reqwest::Error, replay: Replay) -> Failure {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        return Failure {
            error: MaasError::Permanent(format!("{what}: {detail}")),
            retry: false,
        };
    }
    // A connection that was never opened carried nothing: safe to send again.
    let sent = !e.is_connect();
    let message = if !sent {
        format!("{what}: cannot reach MAAS ({detail})")
    } else if e.is_timeout() {
        format!(
            "{what}: MAAS did not answer in time; the request may have been applied, read the machine's state ({detail})"
        )
    } else {
        format!(
            "{what}: the connection to MAAS failed mid-request; the request may have been applied, read the machine's state ({detail})"
        )
    };
    Failure {
        error: MaasError::Transient {
            message,
            retry_after: None,
        },
        retry: !sent || replay == Replay::Safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let s = Some(Duration::from_secs(5));
        let f = classify(
            "allocate",
            409,
            None,
            "No machine available.",
            Replay::IfRefused,
        );
        assert_eq!(f.error, MaasError::NoMatch("No machine available.".into()));
        assert!(!f.retry);
        let f = classify(
            "deploy machine x",
            409,
            None,
            "Can't deploy a machine that is in the 'Deploying' state",
            Replay::IfRefused,
        );
        assert!(
            matches!(&f.error, MaasError::Conflict(m) if m == "deploy machine x: Can't deploy a machine that is in the 'Deploying' state")
        );
        let f = classify(
            "deploy machine x",
            409,
            s,
            "Conflict error.",
            Replay::IfRefused,
        );
        assert!(
            f.retry
                && matches!(f.error, MaasError::Transient { retry_after, .. } if retry_after == s)
        );
        assert!(classify("deploy", 503, None, "", Replay::IfRefused).retry);
        assert!(!classify("deploy", 504, None, "", Replay::IfRefused).retry);
        assert!(classify("get", 504, None, "", Replay::Safe).retry);
        let f = classify(
            "allocate",
            400,
            None,
            r#"{"tags": ["No such tag(s): 'x'."]}"#,
            Replay::IfRefused,
        );
        assert_eq!(
            f.error,
            MaasError::Permanent(r#"allocate: 400 {"tags": ["No such tag(s): 'x'."]}"#.into())
        );
        assert!(matches!(
            classify(
                "get machine x",
                404,
                None,
                "No Machine matches the given query.",
                Replay::Safe
            )
            .error,
            MaasError::NotFound(_)
        ));
        let long = "x".repeat(5000);
        let f = classify("list", 400, None, &long, Replay::Safe);
        assert!(f.error.to_string().len() < 1100);
    }
}
