//! Error classification and short in-adapter retries. 409 (conflict), 429 and 5xx are retried a few
//! times with the server's Retry-After (or a short backoff); what is still failing then is handed to
//! the engine as transient, with the server's delay, so the step's retry policy takes over.

use std::future::Future;
use std::time::Duration;

use drover_workflows::ports::kube::KubeError;
use tracing::debug;

/// Errors of the adapter itself (not of a call).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes client configuration: {0}")]
    Config(String),
}

/// Classifies a kube-rs error.
pub fn classify(e: kube::Error) -> KubeError {
    match e {
        kube::Error::Api(status) => {
            let retry_after = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                404 => KubeError::NotFound(message),
                409 | 429 | 500..=599 => KubeError::Transient {
                    message: format!("{} {message}", status.code),
                    retry_after,
                },
                code => KubeError::Permanent(format!("{code} {message}")),
            }
        }
        other => KubeError::Transient {
            message: other.to_string(),
            retry_after: None,
        },
    }
}

/// Runs `call` up to 4 times while it fails transiently, waiting Retry-After (capped at 5 s) or
/// 100/200/400 ms between tries.
pub async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await.map_err(classify) {
            Err(KubeError::Transient {
                message,
                retry_after,
            }) if attempt < 4 => {
                let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(5));
                debug!(what, attempt, error = %message, wait_ms = wait.as_millis() as u64, "Kubernetes call failed; retrying.");
                tokio::time::sleep(wait).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}
