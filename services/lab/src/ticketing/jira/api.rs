//! Jira Cloud's REST API, the lab's subset: issues (create, get, edit), transitions, comments
//! and comment properties under `/rest/api/3/` (ADF) and `/rest/api/2/` (plain strings),
//! `serverInfo`, `myself`, `field`, and admin webhooks under `/rest/webhooks/1.0/webhook`.
//! Requests are HTTP Basic `email:api_token` (`serverInfo` also answers anonymously); writes to an
//! issue take a token from its per-issue bucket first (429 with `Retry-After` and `RateLimit-Reason:
//! jira-per-issue-on-write` when empty).

use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response};
use serde_json::{Value, json};

use super::{Refusal, Site, Version};
use crate::http::{self, Req};
use crate::ticketing::server::json_content_type;
use crate::ticketing::{Ticketing, jira_time};

/// An answer; errors boxed (a `Response` is large).
type Reply = Result<Response<Body>, Box<Response<Body>>>;

/// A JSON answer as Jira sends it.
pub fn json(status: u16, body: &Value) -> Response<Body> {
    json_content_type(http::json(status, body))
}

/// Jira's error body: `{"errorMessages": [...], "errors": {...}}`.
pub fn error(status: u16, messages: &[&str], errors: Value) -> Response<Body> {
    json(
        status,
        &json!({"errorMessages": messages, "errors": errors}),
    )
}

fn refuse(r: Refusal) -> Box<Response<Body>> {
    Box::new(json(r.status, &r.body()))
}

fn no_content() -> Response<Body> {
    http::bytes_response(204, "application/json;charset=UTF-8", Default::default())
}

/// Serve a request to the site; `user` is the authenticated email, if any.
pub fn handle(t: &Ticketing, req: &Req, user: Option<&str>) -> Response<Body> {
    match route(t, req, user) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn route(t: &Ticketing, req: &Req, user: Option<&str>) -> Reply {
    let segs: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let m = &req.method;
    if let ["rest", "api", "2" | "3", "serverInfo"] = segs.as_slice()
        && *m == Method::GET
    {
        return Ok(json(200, &server_info(&t.jira.url)));
    }
    if user.is_none() {
        let mut resp = error(
            401,
            &["You are not authenticated. Authentication required to perform this operation."],
            json!({}),
        );
        resp.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("Basic realm=\"protected-area\""),
        );
        return Err(Box::new(resp));
    }
    let actor = &t.config.jira.api_account;
    let now = SystemTime::now();
    let v = match segs.get(2) {
        Some(&"2") => Version::V2,
        _ => Version::V3,
    };
    match (m.clone(), segs.as_slice()) {
        (Method::GET, ["rest", "api", "2" | "3", "myself"]) => {
            let site = t.jira.lock();
            Ok(json(200, &site.account_json(actor)))
        }
        (Method::GET, ["rest", "api", "2" | "3", "field"]) => {
            let site = t.jira.lock();
            Ok(json(200, &fields_list(&site)))
        }
        (Method::GET, ["rest", "api", "2" | "3", "project"]) => {
            let site = t.jira.lock();
            Ok(json(200, &Value::Array(site.projects_json(v))))
        }
        (Method::GET, ["rest", "api", "2" | "3", "project", key]) => {
            let site = t.jira.lock();
            site.project_json(key, v)
                .map(|p| json(200, &p))
                .ok_or_else(|| {
                    Box::new(error(
                        404,
                        &[&format!("No project could be found with key '{key}'.")],
                        json!({}),
                    ))
                })
        }
        (Method::POST, ["rest", "api", "2" | "3", "issue"]) => {
            let body = parse(req)?;
            let mut site = t.jira.lock();
            let (id, change) = site.create(&body, v, actor, now).map_err(refuse)?;
            let key = site.find(&id.to_string()).map(|i| i.key.clone());
            t.publish_jira(&site, change);
            Ok(json(
                201,
                &json!({
                    "id": id.to_string(),
                    "key": key,
                    "self": format!("{}/rest/api/{}/issue/{id}", site.base(), v_n(v)),
                }),
            ))
        }
        (Method::GET, ["rest", "api", "2" | "3", "issue", key]) => {
            let site = t.jira.lock();
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            let only: Option<Vec<String>> = req.q("fields").map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            });
            let changelog = req
                .q("expand")
                .is_some_and(|e| e.split(',').any(|x| x.trim() == "changelog"));
            Ok(json(
                200,
                &site.issue_json(issue, v, only.as_deref(), changelog),
            ))
        }
        (Method::PUT, ["rest", "api", "2" | "3", "issue", key]) => {
            let body = parse(req)?;
            let mut site = t.jira.lock();
            let id = issue_id(&site, key)?;
            limit(t, id)?;
            let change = site.edit(key, &body, v, actor, now).map_err(refuse)?;
            t.publish_jira(&site, change);
            if req.flag("returnIssue") {
                let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
                return Ok(json(200, &site.issue_json(issue, v, None, false)));
            }
            Ok(no_content())
        }
        (Method::GET, ["rest", "api", "2" | "3", "issue", key, "transitions"]) => {
            let site = t.jira.lock();
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            Ok(json(200, &site.transitions_json(issue, v)))
        }
        (Method::POST, ["rest", "api", "2" | "3", "issue", key, "transitions"]) => {
            let body = parse(req)?;
            let mut site = t.jira.lock();
            let id = issue_id(&site, key)?;
            limit(t, id)?;
            let change = site.transition(key, &body, v, actor, now).map_err(refuse)?;
            t.publish_jira(&site, change);
            Ok(no_content())
        }
        (Method::GET, ["rest", "api", "2" | "3", "issue", key, "comment"]) => {
            let site = t.jira.lock();
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            Ok(json(200, &comment_page(&site, issue, v, req)))
        }
        (Method::POST, ["rest", "api", "2" | "3", "issue", key, "comment"]) => {
            let body = parse(req)?;
            let mut site = t.jira.lock();
            let id = issue_id(&site, key)?;
            limit(t, id)?;
            let (cid, change) = site
                .add_comment(key, &body, v, actor, now)
                .map_err(refuse)?;
            t.publish_jira(&site, change);
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            let comment = issue
                .comments
                .iter()
                .find(|c| c.id == cid)
                .ok_or_else(|| refuse(super::no_comment(cid)))?;
            let with_props = !comment.properties.is_empty();
            Ok(json(201, &site.comment_json(issue, comment, v, with_props)))
        }
        (Method::GET, ["rest", "api", "2" | "3", "issue", key, "comment", cid]) => {
            let site = t.jira.lock();
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            let cid = comment_id(cid)?;
            let comment = issue
                .comments
                .iter()
                .find(|c| c.id == cid)
                .ok_or_else(|| refuse(super::no_comment(cid)))?;
            Ok(json(
                200,
                &site.comment_json(issue, comment, v, expands_properties(req)),
            ))
        }
        (Method::PUT, ["rest", "api", "2" | "3", "issue", key, "comment", cid]) => {
            let body = parse(req)?;
            let cid = comment_id(cid)?;
            let mut site = t.jira.lock();
            let id = issue_id(&site, key)?;
            limit(t, id)?;
            let change = site
                .update_comment(key, cid, &body, v, actor, now)
                .map_err(refuse)?;
            t.publish_jira(&site, change);
            let issue = site.find(key).ok_or_else(|| refuse(Refusal::no_issue()))?;
            let comment = issue
                .comments
                .iter()
                .find(|c| c.id == cid)
                .ok_or_else(|| refuse(super::no_comment(cid)))?;
            Ok(json(200, &site.comment_json(issue, comment, v, false)))
        }
        (Method::DELETE, ["rest", "api", "2" | "3", "issue", key, "comment", cid]) => {
            let cid = comment_id(cid)?;
            let mut site = t.jira.lock();
            let id = issue_id(&site, key)?;
            limit(t, id)?;
            let change = site.delete_comment(key, cid, actor, now).map_err(refuse)?;
            t.publish_jira(&site, change);
            Ok(no_content())
        }
        (Method::GET, ["rest", "api", "2" | "3", "comment", cid, "properties"]) => {
            let cid = comment_id(cid)?;
            let site = t.jira.lock();
            let (issue, comment) = comment_of(&site, cid)?;
            let keys: Vec<Value> = comment
                .properties
                .keys()
                .map(|k| {
                    json!({
                        "self": format!("{}/rest/api/{}/comment/{cid}/properties/{k}", site.base(), v_n(v)),
                        "key": k,
                    })
                })
                .collect();
            let _ = issue;
            Ok(json(200, &json!({ "keys": keys })))
        }
        (Method::GET, ["rest", "api", "2" | "3", "comment", cid, "properties", pkey]) => {
            let cid = comment_id(cid)?;
            let site = t.jira.lock();
            let (_, comment) = comment_of(&site, cid)?;
            let value = comment
                .properties
                .get(*pkey)
                .ok_or_else(|| refuse(no_property(pkey)))?;
            Ok(json(200, &json!({"key": pkey, "value": value})))
        }
        (Method::PUT, ["rest", "api", "2" | "3", "comment", cid, "properties", pkey]) => {
            let value = parse(req)?;
            let cid = comment_id(cid)?;
            let mut site = t.jira.lock();
            let (issue, _) = comment_of(&site, cid)?;
            let id = issue.id;
            limit(t, id)?;
            let (created, change) = site
                .set_comment_property(cid, pkey, value)
                .map_err(refuse)?;
            t.publish_jira(&site, change);
            Ok(if created {
                json(201, &json!({}))
            } else {
                json(200, &json!({}))
            })
        }
        (Method::DELETE, ["rest", "api", "2" | "3", "comment", cid, "properties", pkey]) => {
            let cid = comment_id(cid)?;
            let mut site = t.jira.lock();
            let (issue, _) = comment_of(&site, cid)?;
            let id = issue.id;
            limit(t, id)?;
            if site.delete_comment_property(cid, pkey).map_err(refuse)? {
                Ok(no_content())
            } else {
                Err(refuse(no_property(pkey)))
            }
        }
        (Method::GET, ["rest", "webhooks", "1.0", "webhook"]) => {
            let site = t.jira.lock();
            Ok(json(200, &Value::Array(site.webhooks_json())))
        }
        (Method::POST, ["rest", "webhooks", "1.0", "webhook"]) => {
            let body = parse(req)?;
            let mut site = t.jira.lock();
            let id = site.add_webhook(&body, actor, now).map_err(refuse)?;
            Ok(json(201, &site.webhook_json(id).unwrap_or_default()))
        }
        (Method::GET, ["rest", "webhooks", "1.0", "webhook", id]) => {
            let site = t.jira.lock();
            id.parse()
                .ok()
                .and_then(|id| site.webhook_json(id))
                .map(|w| json(200, &w))
                .ok_or_else(|| Box::new(error(404, &["Webhook not found."], json!({}))))
        }
        (Method::DELETE, ["rest", "webhooks", "1.0", "webhook", id]) => {
            let mut site = t.jira.lock();
            if id.parse().is_ok_and(|id| site.remove_webhook(id)) {
                Ok(no_content())
            } else {
                Err(Box::new(error(404, &["Webhook not found."], json!({}))))
            }
        }
        (_, ["rest", ..]) => Err(Box::new(error(
            404,
            &[&format!("null for uri: {}{}", t.jira.url, req.path)],
            json!({}),
        ))),
        _ => Err(Box::new(error(404, &["Not Found"], json!({})))),
    }
}

fn v_n(v: Version) -> u8 {
    v.n()
}

fn parse(req: &Req) -> Result<Value, Box<Response<Body>>> {
    serde_json::from_slice(&req.body).map_err(|_| refuse(super::invalid_payload()))
}

fn issue_id(site: &Site, key: &str) -> Result<u64, Box<Response<Body>>> {
    site.find(key)
        .map(|i| i.id)
        .ok_or_else(|| refuse(Refusal::no_issue()))
}

fn comment_id(text: &str) -> Result<u64, Box<Response<Body>>> {
    text.parse().map_err(|_| {
        refuse(Refusal::message(
            404,
            format!("Can not find a comment for the id: {text}."),
        ))
    })
}

fn comment_of(
    site: &Site,
    cid: u64,
) -> Result<(&super::Issue, &super::Comment), Box<Response<Body>>> {
    let issue = site
        .comment_issue(cid)
        .ok_or_else(|| refuse(super::no_comment(cid)))?;
    let comment = issue
        .comments
        .iter()
        .find(|c| c.id == cid)
        .ok_or_else(|| refuse(super::no_comment(cid)))?;
    Ok((issue, comment))
}

fn no_property(key: &str) -> Refusal {
    Refusal::message(
        404,
        format!("The property with key '{key}' does not exist."),
    )
}

/// Take a write token from the issue's bucket.
fn limit(t: &Ticketing, issue_id: u64) -> Result<(), Box<Response<Body>>> {
    t.jira
        .front
        .take_write(&issue_id.to_string(), Instant::now())
        .map_err(|secs| {
            let mut resp = http::with_retry_after(
                error(429, &["Rate limit exceeded."], json!({})),
                Some(secs),
            );
            resp.headers_mut().insert(
                "RateLimit-Reason",
                HeaderValue::from_static("jira-per-issue-on-write"),
            );
            Box::new(resp)
        })
}

fn expands_properties(req: &Req) -> bool {
    req.q("expand")
        .is_some_and(|e| e.split(',').any(|x| x.trim() == "properties"))
}

/// `GET .../comment`: `startAt`, `maxResults` (5000 at most), `orderBy` (`created`, `-created`),
/// `expand=properties`.
fn comment_page(site: &Site, issue: &super::Issue, v: Version, req: &Req) -> Value {
    let start: usize = req.q("startAt").and_then(|s| s.parse().ok()).unwrap_or(0);
    let max: usize = req
        .q("maxResults")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000)
        .min(5000);
    let mut comments: Vec<&super::Comment> = issue.comments.iter().collect();
    if req.q("orderBy").is_some_and(|o| o.trim() == "-created") {
        comments.reverse();
    }
    let props = expands_properties(req);
    let page: Vec<Value> = comments
        .iter()
        .skip(start)
        .take(max)
        .map(|c| site.comment_json(issue, c, v, props))
        .collect();
    json!({
        "startAt": start,
        "maxResults": max,
        "total": comments.len(),
        "comments": page,
    })
}

fn server_info(base: &str) -> Value {
    json!({
        "baseUrl": base,
        "displayUrl": base,
        "version": "1001.0.0-SNAPSHOT",
        "versionNumbers": [1001, 0, 0],
        "deploymentType": "Cloud",
        "buildNumber": 100285,
        "buildDate": "2026-01-01T00:00:00.000+0000",
        "serverTime": jira_time(SystemTime::now()),
        "scmInfo": "drover-lab",
        "serverTitle": "Jira",
        "defaultLocale": {"locale": "en_US"},
        "serverTimeZone": "Etc/UTC",
    })
}

/// `GET /rest/api/{2,3}/field`: the system fields the lab knows and the custom fields in use.
fn fields_list(site: &Site) -> Value {
    let system = [
        ("summary", "Summary", "string"),
        ("status", "Status", "status"),
        ("issuetype", "Issue Type", "issuetype"),
        ("project", "Project", "project"),
        ("labels", "Labels", "array"),
        ("description", "Description", "string"),
        ("environment", "Environment", "string"),
        ("priority", "Priority", "priority"),
        ("assignee", "Assignee", "user"),
        ("reporter", "Reporter", "user"),
        ("duedate", "Due date", "date"),
        ("resolution", "Resolution", "resolution"),
        ("created", "Created", "datetime"),
        ("updated", "Updated", "datetime"),
        ("comment", "Comment", "comments-page"),
    ];
    let mut out: Vec<Value> = system
        .iter()
        .map(|(id, name, kind)| {
            json!({
                "id": id, "key": id, "name": name, "custom": false, "orderable": true,
                "navigable": true, "searchable": true, "clauseNames": [id],
                "schema": {"type": kind, "system": id},
            })
        })
        .collect();
    let mut custom: Vec<String> = Vec::new();
    for key in site.custom_fields() {
        if !custom.contains(&key) {
            custom.push(key);
        }
    }
    custom.sort();
    for id in custom {
        let n = id.trim_start_matches("customfield_").to_string();
        out.push(json!({
            "id": id, "key": id, "name": id, "custom": true, "orderable": true,
            "navigable": true, "searchable": true, "clauseNames": [format!("cf[{n}]")],
            "schema": {"type": "any", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textfield", "customId": n.parse::<u64>().unwrap_or(0)},
        }));
    }
    Value::Array(out)
}
