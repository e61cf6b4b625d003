//! The lab's ticketing systems: a simulated Jira Cloud site and a simulated ServiceNow instance,
//! each on its own loopback listener (real deployments are separate hosts, and ServiceNow's
//! `/api/now/...` would collide with Kubernetes's `/api`). Drover receives their signed webhooks
//! and writes back comments, work notes and transitions over the same REST APIs a client written
//! from Atlassian's and ServiceNow's documentation uses.
//!
//! Each system is a [`Desk`]: its model (pure, `now` passed in) behind its own mutex, a front
//! (faults, "down", per-ticket write rate limits) and an outbound queue that delivers webhooks in
//! the background with retries. Tests and the benchmark reach them through [`JiraSite`] and
//! [`ServiceNowInstance`] (`LabHandle::jira()`, `LabHandle::servicenow()`), which read state,
//! change tickets as a human would (firing the webhooks) and inject faults. Nothing here touches
//! the cluster simulation's `Shared` state or its locks. The `LabHandle`'s ticketing methods are in
//! `handle`.

pub mod admin;
pub mod front;
mod handle;
pub mod jira;
pub mod outbound;
pub mod server;
pub mod servicenow;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use front::Front;
use outbound::Outbound;

pub use front::{RateLimit, TicketFaults};
pub use handle::{JiraSite, JiraWebhook, ServiceNowInstance};
pub use jira::Account;
pub use outbound::{Attempt, Delivery, DeliveryPolicy, DeliveryState};
pub use servicenow::OutboundMessage;

/// The ticketing systems' settings (part of `LabConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketingConfig {
    pub jira: JiraConfig,
    pub servicenow: ServiceNowConfig,
    /// How webhooks and outbound messages are delivered (timeouts, retries).
    pub delivery: DeliveryPolicy,
}

/// The simulated Jira Cloud site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JiraConfig {
    /// The API user's email (HTTP Basic user name).
    pub email: String,
    /// The API user's API token (HTTP Basic password).
    pub api_token: String,
    /// The account requests with these credentials are attributed to.
    pub api_account: Account,
    /// The account changes made through `LabHandle::jira()` are attributed to (unless `as_user`).
    pub human: Account,
    /// Project keys that exist (issues elsewhere are refused).
    pub projects: Vec<String>,
    /// Writes per issue (Jira's per-issue write limit).
    pub rate_limit: RateLimit,
}

impl Default for JiraConfig {
    fn default() -> Self {
        JiraConfig {
            email: "drover-bot@example.com".into(),
            api_token: "lab-jira-api-token".into(),
            api_account: Account {
                account_id: "712020:5e8d6a3c-0d4f-4c1e-9a57-d20c0b07a11e".into(),
                display_name: "drover-bot".into(),
                email_address: Some("drover-bot@example.com".into()),
            },
            human: Account {
                account_id: "5b10ac8d82e05b22cc7d4ef5".into(),
                display_name: "Alice Example".into(),
                email_address: Some("alice@example.com".into()),
            },
            projects: vec!["OPS".into()],
            rate_limit: RateLimit::default(),
        }
    }
}

/// The simulated ServiceNow instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// The integration user (HTTP Basic user name); `sys_updated_by` of API writes.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The user changes made through `LabHandle::servicenow()` are attributed to (unless
    /// `as_user`).
    pub human: String,
    /// Writes per record.
    pub rate_limit: RateLimit,
}

impl Default for ServiceNowConfig {
    fn default() -> Self {
        ServiceNowConfig {
            user: "drover.integration".into(),
            password: "lab-servicenow-password".into(),
            human: "alice.example".into(),
            rate_limit: RateLimit::default(),
        }
    }
}

impl TicketingConfig {
    /// Check the settings before any port is bound.
    pub fn validate(&self) -> Result<()> {
        let d = &self.delivery;
        if d.max_attempts == 0 || d.timeout_ms == 0 {
            return Err(Error::Config(
                "ticketing.delivery needs max_attempts and timeout_ms of at least 1".into(),
            ));
        }
        for (name, limit) in [
            ("jira", &self.jira.rate_limit),
            ("servicenow", &self.servicenow.rate_limit),
        ] {
            if !(limit.writes_per_sec >= 0.0 && limit.writes_per_sec.is_finite()) {
                return Err(Error::Config(format!(
                    "ticketing.{name}.rate_limit.writes_per_sec must be a number of at least 0"
                )));
            }
        }
        if self.jira.projects.is_empty() {
            return Err(Error::Config(
                "ticketing.jira.projects needs at least one project".into(),
            ));
        }
        Ok(())
    }
}

/// Which system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Jira,
    ServiceNow,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Jira => "jira",
            System::ServiceNow => "servicenow",
        }
    }
}

/// One request to a ticketing system, as its access log would show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRequest {
    /// From 1, across both systems.
    pub seq: u64,
    /// Wall time (RFC 3339).
    pub time: String,
    pub system: System,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
    /// The authenticated user (Jira: the email; ServiceNow: the user name), if any.
    pub user: Option<String>,
    /// The body of a write (POST, PUT, PATCH, DELETE), at most 64 KiB of it.
    pub body: Option<String>,
}

/// What the ticketing systems counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TicketCounters {
    pub jira_requests: u64,
    pub servicenow_requests: u64,
    /// Jira comments created (by anyone).
    pub jira_comments: u64,
    /// ServiceNow work notes created (by anyone).
    pub servicenow_work_notes: u64,
    /// ServiceNow additional comments (the `comments` journal) created.
    pub servicenow_comments: u64,
    /// Jira comments carrying a Drover marker (a `drover` property's `key`, or `[drover:<key>]` in
    /// the text) that an earlier comment of the same issue already carried. Should stay 0.
    pub jira_duplicate_markers: u64,
    /// ServiceNow journal entries carrying a `[drover:<key>]` marker an earlier entry of the same
    /// record already carried. Should stay 0.
    pub servicenow_duplicate_markers: u64,
    /// Requests refused by a per-ticket rate limit (429).
    pub rate_limited: u64,
    /// Requests answered by an injected fault (including "down").
    pub faulted: u64,
}

/// The request log and counters of both systems.
#[derive(Debug, Default)]
pub struct Log {
    requests: Mutex<Vec<TicketRequest>>,
    counters: Mutex<TicketCounters>,
}

/// Most of a write's body kept in the request log.
const MAX_LOGGED_BODY: usize = 64 * 1024;

impl Log {
    /// Append a request (its `seq` is assigned here).
    pub fn record(&self, mut r: TicketRequest) {
        if let Some(b) = &mut r.body
            && b.len() > MAX_LOGGED_BODY
        {
            let mut cut = MAX_LOGGED_BODY;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            b.truncate(cut);
        }
        {
            let mut c = lock(&self.counters);
            match r.system {
                System::Jira => c.jira_requests += 1,
                System::ServiceNow => c.servicenow_requests += 1,
            }
        }
        let mut requests = lock(&self.requests);
        r.seq = requests.len() as u64 + 1;
        requests.push(r);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TicketRequest> {
        lock(&self.requests).clone()
    }

    /// Change the counters.
    pub fn count(&self, f: impl FnOnce(&mut TicketCounters)) {
        f(&mut lock(&self.counters));
    }

    /// The counters.
    pub fn counters(&self) -> TicketCounters {
        lock(&self.counters).clone()
    }
}

/// One system: its model, its front and its outbound deliveries.
pub struct Desk<M> {
    pub system: System,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    pub model: Mutex<M>,
    pub front: Front,
    pub outbound: Arc<Outbound>,
}

impl<M> Desk<M> {
    /// The model, locked. Callers publish the events of a change before unlocking, so that
    /// deliveries are queued in the order the changes happened.
    pub fn lock(&self) -> MutexGuard<'_, M> {
        lock(&self.model)
    }
}

/// Both ticketing systems, shared by their servers, the admin endpoints and the `LabHandle`.
pub struct Ticketing {
    pub config: TicketingConfig,
    pub jira: Desk<jira::Site>,
    pub servicenow: Desk<servicenow::Instance>,
    pub log: Log,
}

/// The two running servers.
pub struct Servers {
    jira: tokio::task::JoinHandle<()>,
    servicenow: tokio::task::JoinHandle<()>,
}

impl Servers {
    /// Wait for both servers to stop (the lab's shutdown signal stops them), aborting them after
    /// `grace`.
    pub async fn stop(self, grace: Duration) {
        for task in [self.jira, self.servicenow] {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Bind both systems on `ip` (free ports) and serve them until `stopping` turns true.
pub async fn start(
    config: TicketingConfig,
    ip: std::net::IpAddr,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(Arc<Ticketing>, Servers)> {
    config.validate()?;
    let jira_listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let servicenow_listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let ticketing = Ticketing::new(
        config,
        format!("http://{}", jira_listener.local_addr()?),
        format!("http://{}", servicenow_listener.local_addr()?),
        stopping.clone(),
    )?;
    let jira = tokio::spawn(server::serve(
        jira_listener,
        ticketing.clone(),
        System::Jira,
        stopping.clone(),
    ));
    let servicenow = tokio::spawn(server::serve(
        servicenow_listener,
        ticketing.clone(),
        System::ServiceNow,
        stopping,
    ));
    Ok((ticketing, Servers { jira, servicenow }))
}

impl Ticketing {
    /// Both systems at these base URLs, delivering on the current tokio runtime (if any) until
    /// `stopping`. `start` serves them; unit tests use them without listeners.
    pub fn new(
        config: TicketingConfig,
        jira_url: String,
        servicenow_url: String,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {e}")))?;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let outbound = |system| {
            Arc::new(Outbound::new(
                system,
                config.delivery.clone(),
                client.clone(),
                runtime.clone(),
                stopping.clone(),
            ))
        };
        Ok(Arc::new(Ticketing {
            jira: Desk {
                system: System::Jira,
                model: Mutex::new(jira::Site::new(
                    jira_url.clone(),
                    config.jira.projects.clone(),
                )),
                front: Front::new(config.jira.rate_limit.clone()),
                outbound: outbound(System::Jira),
                url: jira_url,
            },
            servicenow: Desk {
                system: System::ServiceNow,
                model: Mutex::new(servicenow::Instance::new(servicenow_url.clone())),
                front: Front::new(config.servicenow.rate_limit.clone()),
                outbound: outbound(System::ServiceNow),
                url: servicenow_url,
            },
            log: Log::default(),
            config,
        }))
    }

    /// Every delivery attempt log of both systems.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let mut all = self.jira.outbound.deliveries();
        all.extend(self.servicenow.outbound.deliveries());
        all
    }

    /// Apply a Jira change's outcome: queue its webhooks (the model is still locked, so in
    /// order) and count comments and duplicate markers.
    pub(crate) fn publish_jira(&self, site: &jira::Site, change: jira::Change) {
        for event in &change.events {
            let body = event.payload.to_string();
            for hook in site.subscribers(event) {
                self.jira.outbound.enqueue(outbound::Prepared {
                    subscription: format!("webhook-{}", hook.id),
                    url: hook.url.clone(),
                    event: event.name.to_string(),
                    ticket: event.issue_key.clone(),
                    body: if hook.exclude_body {
                        String::new()
                    } else {
                        body.clone()
                    },
                    signing: outbound::Signing::Jira {
                        secret: hook.secret.clone(),
                    },
                });
            }
        }
        if change.comments_created > 0 || change.duplicate_markers > 0 {
            self.log.count(|c| {
                c.jira_comments += change.comments_created;
                c.jira_duplicate_markers += change.duplicate_markers;
            });
        }
    }

    /// Apply a ServiceNow change's outcome: queue the outbound message (the model is still
    /// locked) and count journal entries and duplicate markers.
    pub(crate) fn publish_servicenow(
        &self,
        instance: &servicenow::Instance,
        change: servicenow::Change,
    ) {
        if let (Some(message), Some(body)) = (instance.outbound(), &change.notify) {
            self.servicenow.outbound.enqueue(outbound::Prepared {
                subscription: "outbound-message".into(),
                url: message.url.clone(),
                event: change.operation.to_string(),
                ticket: change.number.clone(),
                body: body.to_string(),
                signing: outbound::Signing::ServiceNow {
                    secret: message.secret.clone(),
                    signature_header: message.signature_header.clone(),
                    timestamp_header: message.timestamp_header.clone(),
                    delivery_header: message.delivery_header.clone(),
                },
            });
        }
        if change.work_notes + change.comments + change.duplicate_markers > 0 {
            self.log.count(|c| {
                c.servicenow_work_notes += change.work_notes;
                c.servicenow_comments += change.comments;
                c.servicenow_duplicate_markers += change.duplicate_markers;
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Jira's timestamp format: `2026-01-05T10:11:12.345+0000`.
pub fn jira_time(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    format!(
        "{}.{ms:03}+0000",
        crate::clock::rfc3339(t).trim_end_matches('Z')
    )
}

/// ServiceNow's (glide) date-time format in UTC: `2026-01-05 10:11:12`.
pub fn glide_time(t: SystemTime) -> String {
    crate::clock::rfc3339(t)
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

/// Every `<key>` of `[drover:<key>]` in a text.
pub fn text_markers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("[drover:") {
        rest = &rest[i + "[drover:".len()..];
        if let Some(end) = rest.find(']') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// Lowercase hex HMAC-SHA256 of `data` with `secret`.
pub fn hmac_sha256_hex(secret: &[u8], data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, data);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_the_defaults_and_are_checked() {
        let text = "[ticketing.jira]\napi_token = \"t0k3n\"\n[ticketing.servicenow.rate_limit]\nwrites_per_sec = 0.0\n";
        let s: crate::LabSettings = toml::from_str(text).expect("settings");
        let c = s.into_config().expect("valid").ticketing;
        assert_eq!(c.jira.api_token, "t0k3n");
        assert_eq!(c.jira.email, JiraConfig::default().email);
        assert_eq!(c.servicenow.rate_limit.writes_per_sec, 0.0);
        let bad: crate::LabSettings =
            toml::from_str("[ticketing.delivery]\nmax_attempts = 0\n").expect("parses");
        assert!(bad.into_config().is_err());
        assert!(toml::from_str::<crate::LabSettings>("[ticketing.jira]\nnope = 1\n").is_err());
    }

    #[test]
    fn formats_times_and_signs() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_131_521_042);
        assert_eq!(jira_time(t), "2026-12-01T13:25:21.042+0000");
        assert_eq!(glide_time(t), "2026-12-01 13:25:21");
        // GitHub's documented test vector (domain-apis.md, section 6).
        assert_eq!(
            hmac_sha256_hex(b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
