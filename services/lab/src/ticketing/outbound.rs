//! Outbound deliveries: Jira's webhooks and ServiceNow's outbound REST message, POSTed in the
//! background by the lab. Each subscription (a webhook, the outbound message) has a queue served
//! by one task, so its events go out in the order they happened; a delivery that fails (429, 5xx,
//! a connection error or a timeout) is retried with doubling backoff before the next one goes,
//! and every attempt is logged (status or error, latency). A delivery keeps its identifier across
//! retries; a "delayed" delivery waits on a task of its own while later ones go ahead (an older
//! event arriving late); a redelivery replays the first attempt byte for byte.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{System, hmac_sha256_hex};
use crate::error::{Error, Result};

/// How deliveries are attempted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// One attempt's deadline, in milliseconds.
    pub timeout_ms: u64,
    /// Wait before the first retry, in milliseconds; doubles with each retry.
    pub backoff_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            timeout_ms: 5_000,
            backoff_ms: 500,
            max_attempts: 5,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its turn (or its delay).
    Queued,
    /// Being attempted, or waiting to retry.
    Delivering,
    /// A 2xx answer.
    Delivered,
    /// Given up: a 4xx other than 429, or every attempt failed.
    Failed,
}

/// One POST of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// From 1, replays included.
    pub attempt: u32,
    /// A redelivery (a replay of the first attempt) rather than a retry.
    pub replay: bool,
    /// Wall time it was sent (RFC 3339).
    pub time: String,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, timeout).
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Attempt {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Worth retrying: 429, 5xx or no answer.
    fn retryable(&self) -> bool {
        match self.status {
            Some(s) => s == 429 || s >= 500,
            None => true,
        }
    }
}

/// One event sent to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery identifier (`X-Atlassian-Webhook-Identifier`, ServiceNow's delivery header):
    /// the same on every retry.
    pub id: String,
    pub system: System,
    /// `webhook-<id>` (Jira) or `outbound-message` (ServiceNow).
    pub subscription: String,
    pub url: String,
    /// `jira:issue_updated`, `comment_created`, ... (Jira); `insert` or `update` (ServiceNow).
    pub event: String,
    /// The issue key or change number.
    pub ticket: String,
    /// The raw body.
    pub body: String,
    /// The headers of the first attempt (empty until it is sent); a redelivery sends these.
    pub headers: Vec<(String, String)>,
    /// How long it was held back before its first attempt, in milliseconds.
    pub delay_ms: u64,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
}

/// How a subscription signs its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub enum Signing {
    /// Jira admin webhooks: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>` when the
    /// webhook has a secret.
    Jira { secret: Option<String> },
    /// The outbound message's scheme: `<signature_header>: <hex HMAC-SHA256(secret,
    /// "<timestamp>.<body>")>` with the Unix seconds in `<timestamp_header>`.
    ServiceNow {
        secret: String,
        signature_header: String,
        timestamp_header: String,
        delivery_header: String,
    },
}

/// A delivery to queue.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub subscription: String,
    pub url: String,
    pub event: String,
    pub ticket: String,
    pub body: String,
    pub signing: Signing,
}

/// The headers of an attempt: `retry` is 0 for the first one; `now` the Unix seconds.
pub fn headers(
    signing: &Signing,
    id: &str,
    body: &str,
    retry: u32,
    now: u64,
) -> Vec<(String, String)> {
    let mut h = vec![(
        "Content-Type".to_string(),
        "application/json; charset=utf-8".to_string(),
    )];
    match signing {
        Signing::Jira { secret } => {
            h.push(("User-Agent".into(), "Atlassian Webhook HTTP Client".into()));
            h.push(("X-Atlassian-Webhook-Identifier".into(), id.into()));
            h.push(("X-Atlassian-Webhook-Flow".into(), "Primary".into()));
            if retry > 0 {
                h.push(("X-Atlassian-Webhook-Retry".into(), retry.to_string()));
            }
            if let Some(secret) = secret {
                let sig = hmac_sha256_hex(secret.as_bytes(), body.as_bytes());
                h.push(("X-Hub-Signature".into(), format!("sha256={sig}")));
            }
        }
        Signing::ServiceNow {
            secret,
            signature_header,
            timestamp_header,
            delivery_header,
        } => {
            let signed = format!("{now}.{body}");
            h.push(("User-Agent".into(), "ServiceNow/1.0".into()));
            h.push((timestamp_header.clone(), now.to_string()));
            h.push((
                signature_header.clone(),
                hmac_sha256_hex(secret.as_bytes(), signed.as_bytes()),
            ));
            h.push((delivery_header.clone(), id.into()));
        }
    }
    h
}

/// One system's outbound deliveries.
pub struct Outbound {
    system: System,
    client: reqwest::Client,
    /// Where delivery tasks run; without one (unit tests outside a runtime) deliveries fail.
    runtime: Option<tokio::runtime::Handle>,
    stopping: watch::Receiver<bool>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    policy: DeliveryPolicy,
    deliveries: Vec<Delivery>,
    signings: Vec<Signing>,
    index: HashMap<String, usize>,
    queues: HashMap<String, mpsc::UnboundedSender<usize>>,
    delays: VecDeque<Duration>,
}

impl Outbound {
    /// Deliveries for `system`, sent with `client` on tasks of `runtime` until `stopping`.
    pub fn new(
        system: System,
        policy: DeliveryPolicy,
        client: reqwest::Client,
        runtime: Option<tokio::runtime::Handle>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Outbound {
            system,
            client,
            runtime,
            stopping,
            inner: Mutex::new(Inner {
                policy,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the policy (for deliveries from now on).
    pub fn set_policy(&self, policy: DeliveryPolicy) {
        self.lock().policy = policy;
    }

    /// The policy.
    pub fn policy(&self) -> DeliveryPolicy {
        self.lock().policy.clone()
    }

    /// Hold the next queued delivery back by `by`.
    pub fn delay_next(&self, by: Duration) {
        self.lock().delays.push_back(by);
    }

    /// Every delivery so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Queue a delivery on its subscription's queue; returns its id.
    pub fn enqueue(self: &Arc<Self>, p: Prepared) -> String {
        let mut inner = self.lock();
        let id = uuid::Uuid::now_v7().to_string();
        let delay = inner.delays.pop_front().unwrap_or_default();
        let idx = inner.deliveries.len();
        inner.deliveries.push(Delivery {
            id: id.clone(),
            system: self.system,
            subscription: p.subscription.clone(),
            url: p.url,
            event: p.event,
            ticket: p.ticket,
            body: p.body,
            headers: Vec::new(),
            delay_ms: delay.as_millis() as u64,
            state: DeliveryState::Queued,
            attempts: Vec::new(),
        });
        inner.signings.push(p.signing);
        inner.index.insert(id.clone(), idx);
        let Some(runtime) = self.runtime.clone() else {
            inner.deliveries[idx].state = DeliveryState::Failed;
            return id;
        };
        let queue = inner.queues.entry(p.subscription).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(self.clone().serve(rx));
            tx
        });
        if queue.send(idx).is_err() {
            inner.deliveries[idx].state = DeliveryState::Failed;
        }
        id
    }

    /// Serve one subscription's queue until the lab stops.
    async fn serve(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<usize>) {
        let mut stopping = self.stopping.clone();
        loop {
            let idx = tokio::select! {
                next = queue.recv() => match next {
                    Some(idx) => idx,
                    None => return,
                },
                _ = stopping.wait_for(|s| *s) => return,
            };
            let delay = Duration::from_millis(self.lock().deliveries[idx].delay_ms);
            if delay.is_zero() {
                tokio::select! {
                    _ = self.deliver(idx) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            } else {
                let me = self.clone();
                tokio::spawn(async move {
                    let mut stopping = me.stopping.clone();
                    tokio::select! {
                        _ = async {
                            tokio::time::sleep(delay).await;
                            me.deliver(idx).await;
                        } => {}
                        _ = stopping.wait_for(|s| *s) => {}
                    }
                });
            }
        }
    }

    /// Attempt a delivery until it succeeds, fails for good or runs out of attempts.
    async fn deliver(&self, idx: usize) {
        let policy = self.policy();
        let mut backoff = Duration::from_millis(policy.backoff_ms);
        for n in 1..=policy.max_attempts {
            let (url, headers, body) = {
                let mut inner = self.lock();
                let d = &inner.deliveries[idx];
                let h = headers(&inner.signings[idx], &d.id, &d.body, n - 1, unix_now());
                let (url, body) = (d.url.clone(), d.body.clone());
                let d = &mut inner.deliveries[idx];
                if n == 1 {
                    d.headers = h.clone();
                }
                d.state = DeliveryState::Delivering;
                (url, h, body)
            };
            let timeout = Duration::from_millis(policy.timeout_ms);
            let attempt = self.send(&url, &headers, body, timeout).await;
            let (ok, retry) = (attempt.ok(), attempt.retryable());
            {
                let mut inner = self.lock();
                let d = &mut inner.deliveries[idx];
                let mut attempt = attempt;
                attempt.attempt = d.attempts.len() as u32 + 1;
                d.attempts.push(attempt);
                if ok {
                    d.state = DeliveryState::Delivered;
                    return;
                }
                if !retry || n == policy.max_attempts {
                    d.state = DeliveryState::Failed;
                    tracing::info!(delivery = %d.id, url = %d.url, "Lab delivery given up.");
                    return;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    /// Send a delivery again as first sent (its first attempt's headers, or the first attempt's
    /// headers computed now when it was never sent).
    pub async fn redeliver(&self, id: &str) -> Result<Attempt> {
        let (idx, url, headers, body) = {
            let inner = self.lock();
            let idx = *inner.index.get(id).ok_or_else(|| Error::NotFound {
                resource: "delivery".into(),
                name: id.into(),
            })?;
            let d = &inner.deliveries[idx];
            let h = if d.headers.is_empty() {
                headers(&inner.signings[idx], &d.id, &d.body, 0, unix_now())
            } else {
                d.headers.clone()
            };
            (idx, d.url.clone(), h, d.body.clone())
        };
        let timeout = Duration::from_millis(self.policy().timeout_ms);
        let mut attempt = self.send(&url, &headers, body, timeout).await;
        attempt.replay = true;
        let mut inner = self.lock();
        let d = &mut inner.deliveries[idx];
        attempt.attempt = d.attempts.len() as u32 + 1;
        d.attempts.push(attempt.clone());
        Ok(attempt)
    }

    async fn send(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: String,
        timeout: Duration,
    ) -> Attempt {
        let mut req = self.client.post(url).timeout(timeout).body(body);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let time = crate::clock::rfc3339(SystemTime::now());
        let started = Instant::now();
        let (status, error) = match req.send().await {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) if e.is_timeout() => (None, Some(format!("timed out after {timeout:?}"))),
            Err(e) => (None, Some(error_chain(&e))),
        };
        Attempt {
            attempt: 0,
            replay: false,
            time,
            status,
            error,
            latency_ms: started.elapsed().as_millis() as u64,
        }
    }
}

fn unix_now() -> u64 {
    crate::clock::unix(SystemTime::now())
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn jira_and_servicenow_headers() {
        let jira = Signing::Jira {
            secret: Some("s3cret".into()),
        };
        let first = headers(&jira, "d-1", "{}", 0, 100);
        let retry = headers(&jira, "d-1", "{}", 2, 200);
        assert_eq!(get(&first, "X-Atlassian-Webhook-Identifier"), Some("d-1"));
        assert_eq!(get(&first, "X-Atlassian-Webhook-Retry"), None);
        assert_eq!(get(&retry, "X-Atlassian-Webhook-Retry"), Some("2"));
        let sig = format!("sha256={}", hmac_sha256_hex(b"s3cret", b"{}"));
        assert_eq!(get(&first, "X-Hub-Signature"), Some(sig.as_str()));
        assert_eq!(get(&retry, "X-Hub-Signature"), Some(sig.as_str()));
        let unsigned = headers(&Signing::Jira { secret: None }, "d-2", "{}", 0, 0);
        assert_eq!(get(&unsigned, "X-Hub-Signature"), None);
        let sn = Signing::ServiceNow {
            secret: "k".into(),
            signature_header: "X-Sig".into(),
            timestamp_header: "X-Ts".into(),
            delivery_header: "X-Id".into(),
        };
        let h = headers(&sn, "d-3", "{\"a\":1}", 0, 1_700_000_000);
        assert_eq!(get(&h, "X-Ts"), Some("1700000000"));
        assert_eq!(get(&h, "X-Id"), Some("d-3"));
        let want = hmac_sha256_hex(b"k", b"1700000000.{\"a\":1}");
        assert_eq!(get(&h, "X-Sig"), Some(want.as_str()));
    }
}
