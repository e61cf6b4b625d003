//! The ticketing systems as tests and the benchmark reach them: [`JiraSite`] and
//! [`ServiceNowInstance`] read state, change tickets as a human would (webhooks fire), configure
//! webhooks and the outbound message, inject faults and read the request and delivery logs; and
//! the `LabHandle` methods that hand them out.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Account, Attempt, Delivery, DeliveryPolicy, OutboundMessage, RateLimit, System, TicketCounters,
    TicketFaults, TicketRequest, Ticketing, jira, servicenow,
};
use crate::error::{Error, Result};

/// The Jira site as tests and the benchmark see it: state, changes made as a human would make
/// them in Jira's UI (webhooks fire), faults and deliveries.
pub struct JiraSite<'a> {
    ticketing: &'a Ticketing,
    actor: Account,
}

/// The ServiceNow instance as tests and the benchmark see it.
pub struct ServiceNowInstance<'a> {
    ticketing: &'a Ticketing,
    actor: String,
}

/// A webhook to register (what `POST /rest/webhooks/1.0/webhook` takes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JiraWebhook {
    pub name: String,
    pub url: String,
    /// `jira:issue_created`, `jira:issue_updated`, `comment_created`, ...
    pub events: Vec<String>,
    /// A JQL filter (`project = OPS AND issuetype = Change`); every issue when empty.
    #[serde(default)]
    pub jql: String,
    /// Sign deliveries with this secret (`X-Hub-Signature`).
    #[serde(default)]
    pub secret: Option<String>,
    /// POST without a body.
    #[serde(default)]
    pub exclude_body: bool,
}

impl Ticketing {
    /// The Jira site acting as its configured human.
    pub fn jira_site(&self) -> JiraSite<'_> {
        JiraSite {
            ticketing: self,
            actor: self.config.jira.human.clone(),
        }
    }

    /// The ServiceNow instance acting as its configured human.
    pub fn servicenow_instance(&self) -> ServiceNowInstance<'_> {
        ServiceNowInstance {
            ticketing: self,
            actor: self.config.servicenow.human.clone(),
        }
    }
}

impl JiraWebhook {
    fn rest_body(&self) -> Value {
        let mut body = serde_json::json!({
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "filters": {"issue-related-events-section": self.jql},
            "excludeBody": self.exclude_body,
        });
        if let Some(s) = &self.secret {
            body["secret"] = Value::String(s.clone());
        }
        body
    }
}

pub(super) fn refused(r: jira::Refusal) -> Error {
    let mut parts = r.messages.clone();
    parts.extend(r.errors.iter().map(|(k, v)| {
        format!(
            "{k}: {}",
            v.as_str().map(str::to_string).unwrap_or(v.to_string())
        )
    }));
    let message = parts.join("; ");
    match r.status {
        404 => Error::NotFound {
            resource: "issue".into(),
            name: message,
        },
        429 => Error::TooManyRequests {
            message,
            retry_after: None,
        },
        _ => Error::BadRequest(message),
    }
}

fn sn_refused(r: servicenow::Refusal) -> Error {
    match r.status {
        404 => Error::NotFound {
            resource: "change_request".into(),
            name: r.detail,
        },
        _ => Error::BadRequest(format!("{}: {}", r.message, r.detail)),
    }
}

impl<'a> JiraSite<'a> {
    /// The same site, acting as another account.
    pub fn as_user(mut self, account_id: &str, display_name: &str) -> Self {
        self.actor = Account {
            account_id: account_id.into(),
            display_name: display_name.into(),
            email_address: None,
        };
        self
    }

    /// The base URL.
    pub fn url(&self) -> String {
        self.ticketing.jira.url.clone()
    }

    /// An issue as `GET /rest/api/3/issue/{key}` returns it (with `changelog` expanded).
    pub fn issue(&self, key: &str) -> Option<Value> {
        let site = self.ticketing.jira.lock();
        let issue = site.find(key)?;
        Some(site.issue_json(issue, jira::Version::V3, None, true))
    }

    /// An issue's comments as `GET .../comment?expand=properties` returns them, oldest first.
    pub fn comments(&self, key: &str) -> Vec<Value> {
        let site = self.ticketing.jira.lock();
        site.find(key)
            .map(|issue| {
                issue
                    .comments
                    .iter()
                    .map(|c| site.comment_json(issue, c, jira::Version::V3, true))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Create an issue (`fields` as in `POST /rest/api/3/issue`); returns its key.
    pub fn create_issue(&self, fields: Value) -> Result<String> {
        let body = serde_json::json!({ "fields": fields });
        let mut site = self.ticketing.jira.lock();
        let (id, change) = site
            .create(&body, jira::Version::V3, &self.actor, SystemTime::now())
            .map_err(refused)?;
        let key = site.find(&id.to_string()).map(|i| i.key.clone());
        self.ticketing.publish_jira(&site, change);
        key.ok_or_else(|| Error::Internal("created issue vanished".into()))
    }

    /// Move an issue through a transition, named by its id (`21`), its name (`Approve`) or its
    /// target status (`Approved`).
    pub fn transition(&self, key: &str, transition: &str) -> Result<()> {
        let mut site = self.ticketing.jira.lock();
        let id = site.resolve_transition(key, transition).map_err(refused)?;
        let body = serde_json::json!({"transition": {"id": id}});
        let change = site
            .transition(
                key,
                &body,
                jira::Version::V3,
                &self.actor,
                SystemTime::now(),
            )
            .map_err(refused)?;
        self.ticketing.publish_jira(&site, change);
        Ok(())
    }

    /// Set fields (`{"labels": [...], "customfield_10050": "..."}`, as in `PUT .../issue/{key}`).
    pub fn set_fields(&self, key: &str, fields: Value) -> Result<()> {
        let body = serde_json::json!({ "fields": fields });
        let mut site = self.ticketing.jira.lock();
        let change = site
            .edit(
                key,
                &body,
                jira::Version::V3,
                &self.actor,
                SystemTime::now(),
            )
            .map_err(refused)?;
        self.ticketing.publish_jira(&site, change);
        Ok(())
    }

    /// Set one field.
    pub fn set_field(&self, key: &str, field: &str, value: Value) -> Result<()> {
        let mut fields = Map::new();
        fields.insert(field.into(), value);
        self.set_fields(key, Value::Object(fields))
    }

    /// Add a plain-text comment; returns its id.
    pub fn comment(&self, key: &str, text: &str) -> Result<String> {
        let body = serde_json::json!({ "body": jira::adf_from_text(text) });
        let mut site = self.ticketing.jira.lock();
        let (id, change) = site
            .add_comment(
                key,
                &body,
                jira::Version::V3,
                &self.actor,
                SystemTime::now(),
            )
            .map_err(refused)?;
        self.ticketing.publish_jira(&site, change);
        Ok(id.to_string())
    }

    /// Register a webhook as an administrator would; returns its id.
    pub fn add_webhook(&self, hook: JiraWebhook) -> Result<u64> {
        let mut site = self.ticketing.jira.lock();
        site.add_webhook(&hook.rest_body(), &self.actor, SystemTime::now())
            .map_err(refused)
    }

    /// The registered webhooks as `GET /rest/webhooks/1.0/webhook` lists them.
    pub fn webhooks(&self) -> Vec<Value> {
        self.ticketing.jira.lock().webhooks_json()
    }

    /// Remove a webhook; false when there was none.
    pub fn remove_webhook(&self, id: u64) -> bool {
        self.ticketing.jira.lock().remove_webhook(id)
    }

    /// Replace the injected faults.
    pub fn faults(&self, faults: TicketFaults) {
        self.ticketing.jira.front.set_faults(faults);
    }

    /// The injected faults.
    pub fn current_faults(&self) -> TicketFaults {
        self.ticketing.jira.front.faults()
    }

    /// Take the site down (every request answered 503 by its load balancer) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.ticketing.jira.front.set_down(down);
    }

    /// Replace the per-issue write limit.
    pub fn set_rate_limit(&self, limit: RateLimit) {
        self.ticketing.jira.front.set_rate_limit(limit);
    }

    /// Every request to the site.
    pub fn requests(&self) -> Vec<TicketRequest> {
        let all = self.ticketing.log.requests();
        all.into_iter()
            .filter(|r| r.system == System::Jira)
            .collect()
    }

    /// Every webhook delivery, with its attempts.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.ticketing.jira.outbound.deliveries()
    }

    /// Send a delivery again exactly as first sent (same body, identifier and signature): a
    /// replay. Returns the attempt.
    pub async fn redeliver(&self, id: &str) -> Result<Attempt> {
        self.ticketing.jira.outbound.redeliver(id).await
    }

    /// Hold the next delivery back by `by` while later ones go ahead (an older event arrives
    /// late).
    pub fn delay_next_delivery(&self, by: Duration) {
        self.ticketing.jira.outbound.delay_next(by);
    }

    /// Replace the delivery policy (timeout, backoff, attempts) for deliveries from now on.
    pub fn set_delivery_policy(&self, policy: DeliveryPolicy) {
        self.ticketing.jira.outbound.set_policy(policy);
    }
}

impl<'a> ServiceNowInstance<'a> {
    /// The same instance, acting as another user.
    pub fn as_user(mut self, user: &str) -> Self {
        self.actor = user.into();
        self
    }

    /// The base URL.
    pub fn url(&self) -> String {
        self.ticketing.servicenow.url.clone()
    }

    /// A change request's stored values (all strings; reference fields as sys_ids), by sys_id or
    /// number.
    pub fn change(&self, id: &str) -> Option<Value> {
        let instance = self.ticketing.servicenow.lock();
        instance.find(id).map(|r| Value::Object(r.raw()))
    }

    /// Every change request.
    pub fn changes(&self) -> Vec<Value> {
        let instance = self.ticketing.servicenow.lock();
        instance
            .changes()
            .iter()
            .map(|r| Value::Object(r.raw()))
            .collect()
    }

    /// A change request's journal (work notes and comments), oldest first, as
    /// `sys_journal_field` rows.
    pub fn journal(&self, id: &str) -> Vec<Value> {
        let instance = self.ticketing.servicenow.lock();
        instance.journal_of(id)
    }

    /// Create a change request (values as the Table API takes them); returns the record.
    pub fn create_change(&self, fields: Value) -> Result<Value> {
        let mut instance = self.ticketing.servicenow.lock();
        let (sys_id, change) = instance
            .insert(&fields, &self.actor, SystemTime::now())
            .map_err(sn_refused)?;
        let record = instance.find(&sys_id).map(|r| Value::Object(r.raw()));
        self.ticketing.publish_servicenow(&instance, change);
        record.ok_or_else(|| Error::Internal("created change vanished".into()))
    }

    /// Update a change request (by sys_id or number); returns the record.
    pub fn update_change(&self, id: &str, fields: Value) -> Result<Value> {
        let mut instance = self.ticketing.servicenow.lock();
        let sys_id = instance
            .find(id)
            .map(|r| r.sys_id().to_string())
            .ok_or_else(|| Error::NotFound {
                resource: "change_request".into(),
                name: id.into(),
            })?;
        let change = instance
            .update(&sys_id, &fields, &self.actor, SystemTime::now())
            .map_err(sn_refused)?;
        let record = instance.find(&sys_id).map(|r| Value::Object(r.raw()));
        self.ticketing.publish_servicenow(&instance, change);
        record.ok_or_else(|| Error::Internal("updated change vanished".into()))
    }

    /// Configure the outbound REST message the customer's business rule sends (None: none).
    pub fn set_outbound(&self, message: Option<OutboundMessage>) {
        self.ticketing.servicenow.lock().set_outbound(message);
    }

    /// The outbound REST message, if configured.
    pub fn outbound(&self) -> Option<OutboundMessage> {
        self.ticketing.servicenow.lock().outbound().cloned()
    }

    /// Replace the injected faults.
    pub fn faults(&self, faults: TicketFaults) {
        self.ticketing.servicenow.front.set_faults(faults);
    }

    /// The injected faults.
    pub fn current_faults(&self) -> TicketFaults {
        self.ticketing.servicenow.front.faults()
    }

    /// Take the instance down (503 from its load balancer) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.ticketing.servicenow.front.set_down(down);
    }

    /// Replace the per-record write limit.
    pub fn set_rate_limit(&self, limit: RateLimit) {
        self.ticketing.servicenow.front.set_rate_limit(limit);
    }

    /// Every request to the instance.
    pub fn requests(&self) -> Vec<TicketRequest> {
        let all = self.ticketing.log.requests();
        all.into_iter()
            .filter(|r| r.system == System::ServiceNow)
            .collect()
    }

    /// Every outbound message delivery, with its attempts.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.ticketing.servicenow.outbound.deliveries()
    }

    /// Send a delivery again exactly as first sent (same body, timestamp, signature and delivery
    /// id): a replay. Returns the attempt.
    pub async fn redeliver(&self, id: &str) -> Result<Attempt> {
        self.ticketing.servicenow.outbound.redeliver(id).await
    }

    /// Hold the next delivery back by `by` while later ones go ahead.
    pub fn delay_next_delivery(&self, by: Duration) {
        self.ticketing.servicenow.outbound.delay_next(by);
    }

    /// Replace the delivery policy (timeout, backoff, attempts) for deliveries from now on.
    pub fn set_delivery_policy(&self, policy: DeliveryPolicy) {
        self.ticketing.servicenow.outbound.set_policy(policy);
    }
}

impl crate::LabHandle {
    /// The Jira site's base URL (`http://127.0.0.1:PORT`, a listener of its own).
    pub fn jira_url(&self) -> String {
        self.shared.ticketing.jira.url.clone()
    }

    /// The ServiceNow instance's base URL (`http://127.0.0.1:PORT`, a listener of its own).
    pub fn servicenow_url(&self) -> String {
        self.shared.ticketing.servicenow.url.clone()
    }

    /// Jira's HTTP Basic credentials: (email, API token).
    pub fn jira_credentials(&self) -> (String, String) {
        let c = &self.shared.ticketing.config.jira;
        (c.email.clone(), c.api_token.clone())
    }

    /// ServiceNow's HTTP Basic credentials: (user, password).
    pub fn servicenow_credentials(&self) -> (String, String) {
        let c = &self.shared.ticketing.config.servicenow;
        (c.user.clone(), c.password.clone())
    }

    /// The Jira site: state, human changes, webhooks, faults, deliveries.
    pub fn jira(&self) -> JiraSite<'_> {
        self.shared.ticketing.jira_site()
    }

    /// The ServiceNow instance: state, human changes, outbound message, faults, deliveries.
    pub fn servicenow(&self) -> ServiceNowInstance<'_> {
        self.shared.ticketing.servicenow_instance()
    }

    /// Both systems' counters (requests, comments, work notes, duplicate markers).
    pub fn ticket_counters(&self) -> TicketCounters {
        self.shared.ticketing.log.counters()
    }

    /// Every request to either system.
    pub fn ticket_requests(&self) -> Vec<TicketRequest> {
        self.shared.ticketing.log.requests()
    }
}
