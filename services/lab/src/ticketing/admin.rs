//! The ticketing systems' admin endpoints on the lab's main port, for `drover lab` users: what
//! `LabHandle::jira()` and `LabHandle::servicenow()` do, over HTTP, under `/lab/jira/`,
//! `/lab/servicenow/` and `/lab/ticketing`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{DeliveryPolicy, OutboundMessage, RateLimit, System, TicketFaults, Ticketing};
use crate::error::{Error, Result};
use crate::http::{self, Req};

/// Whether a `/lab/...` path is the ticketing systems'.
pub fn owns(path: &str) -> bool {
    ["/lab/jira", "/lab/servicenow", "/lab/ticketing"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// Serve a ticketing admin request.
pub async fn handle(t: &Ticketing, req: &Req) -> Response<Body> {
    match route(t, req).await {
        Ok(r) => r,
        Err(e) => http::json(e.status_code(), &json!({"error": e.to_string()})),
    }
}

fn body<T: DeserializeOwned>(req: &Req, what: &str) -> Result<T> {
    serde_json::from_slice(&req.body).map_err(|e| Error::BadRequest(format!("invalid {what}: {e}")))
}

fn ok(v: Value) -> Result<Response<Body>> {
    Ok(http::json(200, &v))
}

async fn route(t: &Ticketing, req: &Req) -> Result<Response<Body>> {
    let segs: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(1)
        .collect();
    let m = req.method.clone();
    let jira = t.jira_site();
    let sn = t.servicenow_instance();
    let system = match segs.first() {
        Some(&"jira") => Some(System::Jira),
        Some(&"servicenow") => Some(System::ServiceNow),
        _ => None,
    };
    // What both systems share: faults, limits, requests, deliveries.
    if let Some(system) = system {
        let front = match system {
            System::Jira => &t.jira.front,
            System::ServiceNow => &t.servicenow.front,
        };
        let outbound = match system {
            System::Jira => &t.jira.outbound,
            System::ServiceNow => &t.servicenow.outbound,
        };
        match (m.clone(), &segs[1..]) {
            (Method::GET, ["faults"]) => return ok(json!(front.faults())),
            (Method::PUT, ["faults"]) => {
                front.set_faults(body::<TicketFaults>(req, "faults")?);
                return ok(json!(front.faults()));
            }
            (Method::DELETE, ["faults"]) => {
                front.set_faults(TicketFaults::default());
                return ok(json!(front.faults()));
            }
            (Method::PUT, ["down"]) => {
                let down: Value = body(req, "body")?;
                front.set_down(down["down"].as_bool().unwrap_or(true));
                return ok(json!(front.faults()));
            }
            (Method::GET, ["rate_limit"]) => return ok(json!(front.rate_limit())),
            (Method::PUT, ["rate_limit"]) => {
                front.set_rate_limit(body::<RateLimit>(req, "rate limit")?);
                return ok(json!(front.rate_limit()));
            }
            (Method::GET, ["delivery_policy"]) => return ok(json!(outbound.policy())),
            (Method::PUT, ["delivery_policy"]) => {
                let policy: DeliveryPolicy = body(req, "delivery policy")?;
                if policy.max_attempts == 0 || policy.timeout_ms == 0 {
                    return Err(Error::BadRequest(
                        "max_attempts and timeout_ms must be at least 1".into(),
                    ));
                }
                outbound.set_policy(policy);
                return ok(json!(outbound.policy()));
            }
            (Method::GET, ["requests"]) => {
                let list: Vec<_> = t
                    .log
                    .requests()
                    .into_iter()
                    .filter(|r| r.system == system)
                    .collect();
                return ok(json!(list));
            }
            (Method::GET, ["deliveries"]) => return ok(json!(outbound.deliveries())),
            (Method::POST, ["deliveries", "delay"]) => {
                let v: Value = body(req, "delay")?;
                let ms = v["ms"]
                    .as_u64()
                    .ok_or_else(|| Error::BadRequest("expected {\"ms\": <milliseconds>}".into()))?;
                outbound.delay_next(Duration::from_millis(ms));
                return ok(json!({"delay_ms": ms}));
            }
            (Method::POST, ["deliveries", id, "redeliver"]) => {
                return ok(json!(outbound.redeliver(id).await?));
            }
            _ => {}
        }
    }
    match (m, segs.as_slice()) {
        (Method::GET, ["ticketing"]) => ok(json!({
            "jira_url": t.jira.url,
            "servicenow_url": t.servicenow.url,
            "counters": t.log.counters(),
        })),
        (Method::GET, ["jira"]) => {
            let c = &t.config.jira;
            ok(json!({
                "url": t.jira.url,
                "email": c.email,
                "api_token": c.api_token,
                "api_account": c.api_account,
                "human": c.human,
                "projects": c.projects,
            }))
        }
        (Method::GET, ["jira", "webhooks"]) => ok(json!(jira.webhooks())),
        (Method::POST, ["jira", "webhooks"]) => {
            let v: Value = body(req, "webhook")?;
            let mut site = t.jira.lock();
            let id = site
                .add_webhook(&v, &t.config.jira.human, std::time::SystemTime::now())
                .map_err(super::handle::refused)?;
            Ok(http::json(201, &site.webhook_json(id).unwrap_or_default()))
        }
        (Method::DELETE, ["jira", "webhooks", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| Error::BadRequest(format!("bad webhook id {id}")))?;
            if jira.remove_webhook(id) {
                ok(json!({"removed": id}))
            } else {
                Err(Error::NotFound {
                    resource: "webhook".into(),
                    name: id.to_string(),
                })
            }
        }
        (Method::GET, ["jira", "issues", key]) => jira
            .issue(key)
            .map(ok)
            .unwrap_or_else(|| Err(not_found("issue", key))),
        (Method::POST, ["jira", "issues"]) => {
            let v: Value = body(req, "issue")?;
            let key = jira.create_issue(v["fields"].clone())?;
            Ok(http::json(201, &json!({ "key": key })))
        }
        (Method::PUT, ["jira", "issues", key]) => {
            let v: Value = body(req, "fields")?;
            jira.set_fields(key, v["fields"].clone())?;
            ok(jira.issue(key).unwrap_or_default())
        }
        (Method::POST, ["jira", "issues", key, "transitions"]) => {
            let v: Value = body(req, "transition")?;
            let name = v["transition"].as_str().ok_or_else(|| {
                Error::BadRequest("expected {\"transition\": \"Approve\"}".into())
            })?;
            jira.transition(key, name)?;
            ok(jira.issue(key).unwrap_or_default())
        }
        (Method::POST, ["jira", "issues", key, "comments"]) => {
            let v: Value = body(req, "comment")?;
            let text = v["text"]
                .as_str()
                .ok_or_else(|| Error::BadRequest("expected {\"text\": \"...\"}".into()))?;
            let id = jira.comment(key, text)?;
            Ok(http::json(201, &json!({ "id": id })))
        }
        (Method::GET, ["servicenow"]) => {
            let c = &t.config.servicenow;
            ok(json!({
                "url": t.servicenow.url,
                "user": c.user,
                "password": c.password,
                "human": c.human,
                "outbound": sn.outbound(),
            }))
        }
        (Method::GET, ["servicenow", "outbound"]) => ok(json!(sn.outbound())),
        (Method::PUT, ["servicenow", "outbound"]) => {
            let message: OutboundMessage = body(req, "outbound message")?;
            sn.set_outbound(Some(message));
            ok(json!(sn.outbound()))
        }
        (Method::DELETE, ["servicenow", "outbound"]) => {
            sn.set_outbound(None);
            ok(Value::Null)
        }
        (Method::GET, ["servicenow", "changes"]) => ok(json!(sn.changes())),
        (Method::GET, ["servicenow", "changes", id]) => sn
            .change(id)
            .map(ok)
            .unwrap_or_else(|| Err(not_found("change_request", id))),
        (Method::GET, ["servicenow", "changes", id, "journal"]) => ok(json!(sn.journal(id))),
        (Method::POST, ["servicenow", "changes"]) => {
            let v: Value = body(req, "change")?;
            Ok(http::json(201, &sn.create_change(v)?))
        }
        (Method::PATCH | Method::PUT, ["servicenow", "changes", id]) => {
            let v: Value = body(req, "change")?;
            ok(sn.update_change(id, v)?)
        }
        _ => Err(Error::NoRoute),
    }
}

fn not_found(resource: &str, name: &str) -> Error {
    Error::NotFound {
        resource: resource.into(),
        name: name.into(),
    }
}
