//! One MAAS call: the URL below `api/2.0/` (path segments escaped, `op` in the query as the official
//! clients send it), a form-encoded body for writes, a freshly signed header per attempt, and the
//! bounded retry loop. Waits honour Retry-After; a delay longer than `Retry::max_wait` is not
//! slept here but handed to the engine with the Transient error, so no worker is held for it.

use std::time::Duration;

use drover_telemetry::calls::{Outgoing, System, TRACEPARENT};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tracing::debug;

use drover_workflows::ports::maas::MaasError;

use crate::Client;
use crate::error::{self, Failure, Replay};

/// A call, described before it is sent.
pub struct Call {
    /// What the call does, for messages: `deploy machine abc123`.
    pub what: String,
    pub method: Method,
    /// Path segments below `api/2.0/`; the trailing slash MAAS wants is added.
    pub path: Vec<String>,
    pub op: Option<&'static str>,
    /// Query parameters (filters of reads) or form fields (writes), in order; keys may repeat.
    pub params: Vec<(String, String)>,
    pub replay: Replay,
}

impl Call {
    /// A read: `GET` and safe to repeat.
    pub fn get(what: impl Into<String>, path: &[&str], op: Option<&'static str>) -> Call {
        Call {
            what: what.into(),
            method: Method::GET,
            path: path.iter().map(|s| s.to_string()).collect(),
            op,
            params: Vec::new(),
            replay: Replay::Safe,
        }
    }

    /// A write: `POST ?op=<op>`, repeated only when MAAS surely did not act.
    pub fn post(what: impl Into<String>, path: &[&str], op: &'static str) -> Call {
        Call {
            method: Method::POST,
            op: Some(op),
            replay: Replay::IfRefused,
            ..Call::get(what, path, None)
        }
    }

    pub fn param(mut self, key: &str, value: impl ToString) -> Call {
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    pub fn param_opt(self, key: &str, value: Option<impl ToString>) -> Call {
        match value {
            Some(v) => self.param(key, v),
            None => self,
        }
    }

    pub fn params<T: ToString>(mut self, key: &str, values: impl IntoIterator<Item = T>) -> Call {
        for v in values {
            self.params.push((key.to_string(), v.to_string()));
        }
        self
    }

    /// `key=true` when set (MAAS reads absent booleans as false).
    pub fn flag(self, key: &str, on: bool) -> Call {
        if on { self.param(key, "true") } else { self }
    }

    pub fn replay(mut self, replay: Replay) -> Call {
        self.replay = replay;
        self
    }
}

impl Client {
    /// Sends a call (retrying as its class allows) and decodes the JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(&self, call: Call) -> Result<T, MaasError> {
        let body = self.send(&call).await?;
        serde_json::from_str(&body).map_err(|e| {
            MaasError::Permanent(format!(
                "{}: MAAS's answer does not decode ({e})",
                call.what
            ))
        })
    }

    async fn send(&self, call: &Call) -> Result<String, MaasError> {
        let retry = &self.retry;
        let mut backoff = retry.backoff;
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(call).await {
                Ok(body) => return Ok(body),
                Err(f) => f,
            };
            let Failure {
                error,
                retry: again,
            } = failure;
            let after = match &error {
                MaasError::Transient { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = after.unwrap_or(backoff);
            if !again || attempt >= retry.attempts || wait > retry.max_wait {
                return Err(match error {
                    MaasError::Transient {
                        message,
                        retry_after,
                    } if attempt > 1 => MaasError::Transient {
                        message: format!("{message} (after {attempt} attempts)"),
                        retry_after,
                    },
                    e => e,
                });
            }
            debug!(what = %call.what, attempt, error = %error, wait_ms = wait.as_millis() as u64, "MAAS call failed; retrying.");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(retry.max_wait);
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call) -> Result<String, Failure> {
        let mut url = self.api.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&call.path).push("");
        }
        let mut body = None;
        {
            let mut query = url.query_pairs_mut();
            if let Some(op) = call.op {
                query.append_pair("op", op);
            }
            if call.method == Method::GET {
                query.extend_pairs(&call.params);
            } else {
                body = Some(
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&call.params)
                        .finish(),
                );
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let outgoing = Outgoing::start(System::Maas, &call.method, url.path());
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, self.key.header());
        if let Some(tp) = outgoing.traceparent() {
            request = request.header(&TRACEPARENT, tp);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body);
        }
        let transport = |e: reqwest::Error| error::transport(&call.what, &e, call.replay);
        let response = outgoing
            .run(request.send(), |r| r.status().as_u16())
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(error::classify(
                &call.what,
                status,
                retry_after,
                &text,
                call.replay,
            ))
        }
    }
}
