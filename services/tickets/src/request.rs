//! One system's HTTP side: the base URL, HTTP Basic credentials (the password or API token read
//! through the `Secrets` port at each attempt, so a rotated secret is used without a restart), the
//! per-ticket write pacing, and the two ways a call is sent. A read is retried a little here (3 tries
//! within about 2 s, honouring a short `Retry-After`); a write is sent once, after waiting for its
//! ticket's token, because the engine retries the step durably and checks `has_marker` (or the
//! status) before writing again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use drover_telemetry::calls;
use drover_workflows::ports::secrets::{SecretError, SecretRef, Secrets};
use drover_workflows::ports::tickets::{System, TicketError};
use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;
use tracing::debug;

use crate::error::{self, Context, Error};
use crate::limit::Limiter;

/// Tries of a read, the first included.
const READ_TRIES: u32 = 3;
/// First wait between read tries without `Retry-After`, doubled after each.
const READ_BACKOFF: Duration = Duration::from_millis(200);
/// Most time a read sleeps between tries; a longer `Retry-After` goes to the engine instead.
const READ_RETRY_BUDGET: Duration = Duration::from_secs(2);
/// Longest a write waits here for its ticket's token; a longer wait goes to the engine.
pub const MAX_WRITE_WAIT: Duration = Duration::from_secs(5);

/// How one system is reached.
pub struct Endpoint {
    pub system: System,
    http: reqwest::Client,
    /// The site's base URL, ending in `/`.
    base: Url,
    user: String,
    password: SecretRef,
    secrets: Arc<dyn Secrets>,
    limiter: Limiter,
    /// Where to look when the credentials are refused.
    credentials: String,
}

/// The settings an [`Endpoint`] is built from.
pub struct Settings<'a> {
    pub system: System,
    /// `tickets.jira`, for messages.
    pub section: &'static str,
    pub url: &'a str,
    /// The HTTP Basic user name, and the config field it came from.
    pub user: (&'static str, &'a str),
    pub password: &'a SecretRef,
    pub writes_per_second: f64,
    pub timeout: Duration,
}

/// A call, described before it is sent.
pub struct Call {
    /// What it does, for messages: `comment on OPS-12`.
    pub what: String,
    /// The ticket it concerns: its bucket paces writes and keeps a 429's `Retry-After`.
    pub ticket: String,
    pub method: Method,
    /// Path segments below the base URL (escaped when sent).
    pub path: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Call {
    /// A `GET`.
    pub fn get(what: impl Into<String>, ticket: &str, path: &[&str]) -> Call {
        Call {
            what: what.into(),
            ticket: ticket.to_string(),
            method: Method::GET,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    /// A write with a JSON body.
    pub fn send(
        method: Method,
        what: impl Into<String>,
        ticket: &str,
        path: &[&str],
        body: Value,
    ) -> Call {
        Call {
            method,
            body: Some(body),
            ..Call::get(what, ticket, path)
        }
    }

    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Call {
        self.query.push((key, value.into()));
        self
    }
}

impl Endpoint {
    /// Checks the URL (plain http, a base without query or credentials) and builds the client.
    pub fn new(s: Settings<'_>, secrets: Arc<dyn Secrets>) -> Result<Endpoint, Error> {
        let base = base_url(s.section, s.url)?;
        let (user_field, user) = s.user;
        if user.trim().is_empty() {
            return Err(Error::Config(format!(
                "{}.{user_field} is empty",
                s.section
            )));
        }
        let rate = s.writes_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::Config(format!(
                "{}.writes_per_second_per_ticket must be a number above 0",
                s.section
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("drover-tickets/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("{}: HTTP client: {e}", s.section)))?;
        Ok(Endpoint {
            system: s.system,
            http,
            base,
            user: user.to_string(),
            password: s.password.clone(),
            secrets,
            limiter: Limiter::new(rate),
            credentials: format!(
                "{}.{user_field} and the secret {:?}",
                s.section,
                s.password.name()
            ),
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password_ref(&self) -> &SecretRef {
        &self.password
    }

    pub fn writes_per_second(&self) -> f64 {
        self.limiter.rate()
    }

    /// Sends a read, retrying transient failures a little, and decodes the JSON answer.
    pub async fn read(&self, call: &Call) -> Result<Value, TicketError> {
        let mut backoff = READ_BACKOFF;
        let mut slept = Duration::ZERO;
        let mut tries = 1;
        loop {
            let error = match self.attempt(call, false).await {
                Ok(body) => return decode(self.system, &call.what, &body),
                Err(e @ TicketError::Permanent(_)) => return Err(e),
                Err(e) => e,
            };
            let after = match &error {
                TicketError::Transient { retry_after, .. } => *retry_after,
                TicketError::Permanent(_) => None,
            };
            let wait = after.unwrap_or(backoff);
            if tries >= READ_TRIES || slept + wait > READ_RETRY_BUDGET {
                return Err(match error {
                    TicketError::Transient {
                        message,
                        retry_after,
                    } if tries > 1 => TicketError::Transient {
                        message: format!("{message} (after {tries} tries)"),
                        retry_after,
                    },
                    e => e,
                });
            }
            debug!(system = self.system.as_str(), what = %call.what, tries, error = %error, wait_ms = wait.as_millis() as u64, "Ticketing read failed; retrying.");
            tokio::time::sleep(wait).await;
            slept += wait;
            backoff *= 2;
            tries += 1;
        }
    }

    /// Sends a write once, after waiting for its ticket's token, and returns the JSON answer
    /// (`null` when there is none).
    pub async fn write(&self, call: &Call) -> Result<Value, TicketError> {
        if let Err(wait) = self.limiter.acquire(&call.ticket, MAX_WRITE_WAIT).await {
            return Err(TicketError::Transient {
                message: format!(
                    "{}: {}: writes to one ticket are paced at {}/s and the next may go in {:.1} s",
                    self.system.as_str(),
                    call.what,
                    self.limiter.rate(),
                    wait.as_secs_f64()
                ),
                retry_after: Some(wait),
            });
        }
        let body = self.attempt(call, true).await?;
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// One attempt: the body of a 2xx answer, or the classified failure.
    async fn attempt(&self, call: &Call, write: bool) -> Result<String, TicketError> {
        let cx = Context {
            system: self.system,
            what: &call.what,
            write,
            credentials: &self.credentials,
        };
        let password = self
            .secrets
            .get(self.password.name())
            .await
            .map_err(|e| secret_error(&cx, &e))?;
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&call.path);
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let system = match self.system {
            System::Jira => calls::System::Jira,
            System::Servicenow => calls::System::ServiceNow,
        };
        let outgoing = calls::Outgoing::start(system, &call.method, url.path());
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .basic_auth(&self.user, Some(password.expose()))
            .header(ACCEPT, "application/json");
        if let Some(tp) = outgoing.traceparent() {
            request = request.header(&calls::TRACEPARENT, tp);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = outgoing
            .run(request.send(), |r| r.status().as_u16())
            .await
            .map_err(|e| error::transport(&cx, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| error::parse_retry_after(v, SystemTime::now()));
        let text = response
            .text()
            .await
            .map_err(|e| error::transport(&cx, &e))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        if status == 429
            && let Some(after) = retry_after
        {
            let now = Instant::now();
            self.limiter.block(&call.ticket, now, now + after);
        }
        Err(error::classify(&cx, status, retry_after, &text))
    }
}

/// A site's base URL: http only (this build has no TLS), no query, no credentials; ends in `/`.
fn base_url(section: &str, given: &str) -> Result<Url, Error> {
    let mut url = Url::parse(given.trim())
        .map_err(|e| Error::Config(format!("{section}.url {given:?}: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(Error::Config(format!(
                "{section}.url {given:?}: https needs TLS, which this build does not have \
                 (reqwest is built without a TLS backend); use http (a TLS-terminating proxy) \
                 or add a TLS feature"
            )));
        }
        other => {
            return Err(Error::Config(format!(
                "{section}.url {given:?}: scheme {other} is not http"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the URL holds a credential.
        return Err(Error::Config(format!(
            "{section}.url must not carry credentials; give the user and a secret reference \
             in {section} instead"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(Error::Config(format!(
            "{section}.url {given:?} must be a plain base URL such as http://tickets.example:8080/"
        )));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// A 2xx answer's JSON.
fn decode(system: System, what: &str, body: &str) -> Result<Value, TicketError> {
    serde_json::from_str(body).map_err(|e| {
        TicketError::Permanent(format!(
            "{}: {what}: the answer is not JSON ({e})",
            system.as_str()
        ))
    })
}

/// A secret that cannot be read: worth retrying only when its source did not answer.
fn secret_error(cx: &Context<'_>, e: &SecretError) -> TicketError {
    let message = format!("{}: {}: {e}", cx.system.as_str(), cx.what);
    match e {
        SecretError::Unavailable(_) => TicketError::Transient {
            message,
            retry_after: None,
        },
        SecretError::Unknown(_) | SecretError::Invalid(_) => TicketError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for (given, want) in [
            ("http://jira:8080", "http://jira:8080/"),
            ("http://proxy/jira", "http://proxy/jira/"),
            (" http://sn.example/ ", "http://sn.example/"),
        ] {
            assert_eq!(base_url("tickets.jira", given).unwrap().as_str(), want);
        }
        let e = base_url("tickets.jira", "https://x.atlassian.net").unwrap_err();
        assert!(e.to_string().contains("https needs TLS"), "{e}");
        let e = base_url("tickets.jira", "http://bot:hunter2@jira/").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(base_url("tickets.jira", "http://jira/?a=b").is_err());
        assert!(base_url("tickets.jira", "jira:8080").is_err());
    }
}
