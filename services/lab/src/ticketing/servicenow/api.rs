//! ServiceNow's Table API, the lab's subset: `change_request` (list with `sysparm_query`, get,
//! insert, update with PATCH or PUT, delete) and `sys_journal_field` (read only). Requests are
//! HTTP Basic; answers are `{"result": ...}` with every value a string, reference fields as
//! `{"link", "value"}` (plain with `sysparm_exclude_reference_link=true`),
//! `sysparm_display_value=true|false|all`, `sysparm_fields`, `sysparm_limit`, `sysparm_offset`
//! and `X-Total-Count` on lists. Errors are `{"error": {"message", "detail"}, "status":
//! "failure"}`. Writes to a record take a token from its bucket first (429 with `Retry-After`).

use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response};
use serde_json::{Map, Value, json};

use super::query::{self, Query};
use super::{
    APPROVALS, Instance, JOURNAL_COLUMNS, JOURNALS, REFERENCES, Record, Refusal, STATES, TYPES,
};
use crate::http::{self, Req};
use crate::ticketing::Ticketing;
use crate::ticketing::server::json_content_type;

/// An answer; errors boxed (a `Response` is large).
type Reply = Result<Response<Body>, Box<Response<Body>>>;

/// A JSON answer as ServiceNow sends it.
pub fn json(status: u16, body: &Value) -> Response<Body> {
    json_content_type(http::json(status, body))
}

/// ServiceNow's error body.
pub fn error(status: u16, message: &str, detail: &str) -> Response<Body> {
    json(
        status,
        &json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

fn refuse(r: Refusal) -> Box<Response<Body>> {
    Box::new(error(r.status, &r.message, &r.detail))
}

/// Serve a request to the instance; `user` is the authenticated user name, if any.
pub fn handle(t: &Ticketing, req: &Req, user: Option<&str>) -> Response<Body> {
    match route(t, req, user) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

/// The tables the lab serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Change,
    Journal,
}

fn table(name: &str) -> Result<Table, Box<Response<Body>>> {
    match name {
        "change_request" => Ok(Table::Change),
        "sys_journal_field" => Ok(Table::Journal),
        other => Err(Box::new(json(
            400,
            &json!({"error": {"message": format!("Invalid table {other}"), "detail": null}, "status": "failure"}),
        ))),
    }
}

fn route(t: &Ticketing, req: &Req, user: Option<&str>) -> Reply {
    let Some(user) = user else {
        let mut resp = error(
            401,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
        resp.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("BASIC realm=\"Service-now\""),
        );
        return Err(Box::new(resp));
    };
    let segs: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let now = SystemTime::now();
    let opts = Render::from(req);
    match (req.method.clone(), segs.as_slice()) {
        (Method::GET, ["api", "now", "table", name])
        | (Method::GET, ["api", "now", "v2", "table", name]) => {
            let table = table(name)?;
            let instance = t.servicenow.lock();
            let q = query::parse(req.q("sysparm_query").unwrap_or(""));
            let offset: usize = req
                .q("sysparm_offset")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let limit: usize = req
                .q("sysparm_limit")
                .and_then(|s| s.parse().ok())
                .unwrap_or(10_000);
            let rows: &[Record] = match table {
                Table::Change => instance.changes(),
                Table::Journal => instance.journal(),
            };
            let mut hits: Vec<&Record> = rows
                .iter()
                .filter(|r| q.matches(|f| column(table, r, f)))
                .collect();
            sort(&q, &mut hits);
            let total = hits.len();
            let result: Vec<Value> = hits
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|r| render(&instance, table, r, &opts))
                .collect();
            let mut resp = json(200, &json!({ "result": result }));
            resp.headers_mut()
                .insert("X-Total-Count", HeaderValue::from(total as u64));
            Ok(resp)
        }
        (Method::GET, ["api", "now", "table", name, sys_id])
        | (Method::GET, ["api", "now", "v2", "table", name, sys_id]) => {
            let table = table(name)?;
            let instance = t.servicenow.lock();
            let rows: &[Record] = match table {
                Table::Change => instance.changes(),
                Table::Journal => instance.journal(),
            };
            let record = rows
                .iter()
                .find(|r| r.sys_id() == *sys_id)
                .ok_or_else(|| refuse(Refusal::not_found()))?;
            Ok(json(
                200,
                &json!({"result": render(&instance, table, record, &opts)}),
            ))
        }
        (Method::POST, ["api", "now", "table", name])
        | (Method::POST, ["api", "now", "v2", "table", name]) => {
            writable(table(name)?)?;
            let body = parse(req)?;
            let mut instance = t.servicenow.lock();
            let (sys_id, change) = instance.insert(&body, user, now).map_err(refuse)?;
            t.publish_servicenow(&instance, change);
            let record = instance
                .find(&sys_id)
                .ok_or_else(|| refuse(Refusal::not_found()))?;
            let mut resp = json(
                201,
                &json!({"result": render(&instance, Table::Change, record, &opts)}),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{}/api/now/table/change_request/{sys_id}",
                instance.base()
            )) {
                resp.headers_mut().insert("Location", v);
            }
            Ok(resp)
        }
        (Method::PATCH | Method::PUT, ["api", "now", "table", name, sys_id])
        | (Method::PATCH | Method::PUT, ["api", "now", "v2", "table", name, sys_id]) => {
            writable(table(name)?)?;
            let body = parse(req)?;
            let mut instance = t.servicenow.lock();
            if instance.changes().iter().all(|r| r.sys_id() != *sys_id) {
                return Err(refuse(Refusal::not_found()));
            }
            limit(t, sys_id)?;
            let change = instance.update(sys_id, &body, user, now).map_err(refuse)?;
            t.publish_servicenow(&instance, change);
            let record = instance
                .find(sys_id)
                .ok_or_else(|| refuse(Refusal::not_found()))?;
            Ok(json(
                200,
                &json!({"result": render(&instance, Table::Change, record, &opts)}),
            ))
        }
        (Method::DELETE, ["api", "now", "table", name, sys_id])
        | (Method::DELETE, ["api", "now", "v2", "table", name, sys_id]) => {
            writable(table(name)?)?;
            let mut instance = t.servicenow.lock();
            if instance.changes().iter().all(|r| r.sys_id() != *sys_id) {
                return Err(refuse(Refusal::not_found()));
            }
            limit(t, sys_id)?;
            let change = instance.delete(sys_id).map_err(refuse)?;
            t.publish_servicenow(&instance, change);
            Ok(http::bytes_response(
                204,
                "application/json;charset=UTF-8",
                Default::default(),
            ))
        }
        _ => Err(Box::new(error(
            400,
            "Requested URI does not represent any resource",
            &format!("{} {}", req.method, req.path),
        ))),
    }
}

fn parse(req: &Req) -> Result<Value, Box<Response<Body>>> {
    serde_json::from_slice::<Value>(&req.body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            Box::new(error(
                400,
                "Exception while reading request",
                "The payload is not valid JSON.",
            ))
        })
}

fn writable(table: Table) -> Result<(), Box<Response<Body>>> {
    match table {
        Table::Change => Ok(()),
        Table::Journal => Err(Box::new(error(
            403,
            "Operation Failed",
            "ACL Exception Insert Failed due to security constraints",
        ))),
    }
}

/// Take a write token from the record's bucket.
fn limit(t: &Ticketing, sys_id: &str) -> Result<(), Box<Response<Body>>> {
    t.servicenow
        .front
        .take_write(sys_id, Instant::now())
        .map_err(|secs| {
            Box::new(http::with_retry_after(
                error(
                    429,
                    "Rate limit exceeded",
                    &format!("Too many updates to record {sys_id}; retry in {secs} seconds"),
                ),
                Some(secs),
            ))
        })
}

/// A row's column, `None` when the table has no such column.
fn column<'a>(table: Table, r: &'a Record, field: &str) -> Option<&'a str> {
    match table {
        Table::Change => r.column(field),
        Table::Journal => JOURNAL_COLUMNS.contains(&field).then(|| r.get(field)),
    }
}

fn sort(q: &Query, rows: &mut [&Record]) {
    q.sort(rows, |r, f| r.get(f).to_string());
}

/// How to render records.
#[derive(Debug, Clone, Default)]
struct Render {
    /// `sysparm_display_value`: false, true or all.
    display: Display,
    exclude_reference_link: bool,
    fields: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Display {
    #[default]
    Value,
    Label,
    Both,
}

impl From<&Req> for Render {
    fn from(req: &Req) -> Self {
        Render {
            display: match req.q("sysparm_display_value") {
                Some(v) if v.eq_ignore_ascii_case("true") => Display::Label,
                Some(v) if v.eq_ignore_ascii_case("all") => Display::Both,
                _ => Display::Value,
            },
            exclude_reference_link: req.flag("sysparm_exclude_reference_link"),
            fields: req.q("sysparm_fields").map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
        }
    }
}

fn label(field: &str, value: &str) -> Option<&'static str> {
    let table = match field {
        "state" => STATES,
        "approval" => APPROVALS,
        "type" => TYPES,
        _ => return None,
    };
    table.iter().find(|(v, _)| *v == value).map(|(_, l)| *l)
}

fn render(instance: &Instance, table: Table, r: &Record, opts: &Render) -> Value {
    let mut out = Map::new();
    for (k, v) in r.columns() {
        if opts.fields.as_ref().is_some_and(|f| !f.contains(k)) {
            continue;
        }
        let value = match table {
            Table::Journal => Value::String(v.clone()),
            Table::Change => change_field(instance, k, v, opts),
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

fn change_field(instance: &Instance, field: &str, value: &str, opts: &Render) -> Value {
    let reference = REFERENCES
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, t)| *t);
    let link = reference
        .filter(|_| !value.is_empty() && !opts.exclude_reference_link)
        .map(|t| format!("{}/api/now/table/{t}/{value}", instance.base()));
    let shown = if JOURNALS.contains(&field) {
        String::new()
    } else {
        label(field, value).map_or_else(|| value.to_string(), str::to_string)
    };
    match opts.display {
        Display::Value => match link {
            Some(link) => json!({"link": link, "value": value}),
            None => Value::String(value.to_string()),
        },
        Display::Label => Value::String(shown),
        Display::Both => {
            let mut v = json!({"display_value": shown, "value": value});
            if let Some(link) = link {
                v["link"] = json!(link);
            }
            v
        }
    }
}
