//! The simulated MAAS region API 2.0 under `/MAAS/api/2.0/`: OAuth1 authentication, `describe/` for
//! python-libmaas, machines and their ops, events, pools, zones, tags, fabrics, VLANs, subnets
//! and interfaces. Ops arrive as `?op=<name>` (query or form field) or as a `/op-<name>` path
//! suffix. Errors are MAAS's text/plain bodies (JSON for form validation; the HTML page of the
//! proxy in front of the region for an injected 504).

pub mod auth;
pub mod describe;
pub mod events;
pub mod form;
pub mod interfaces;
pub mod lifecycle;
pub mod machines;
pub mod model;
pub mod network;
pub mod ops;
pub mod sim;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::state::Shared;
pub use model::Region;
use model::Status;

/// What a MAAS handler answers: JSON, or 204 for a delete.
enum Reply {
    Json(Value),
    Deleted,
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        Reply::Json(v)
    }
}

/// Serve a MAAS request.
pub async fn handle(shared: &Shared, req: &Req) -> Response<Body> {
    match route(shared, req) {
        Ok(Reply::Json(v)) => http::json(200, &v),
        Ok(Reply::Deleted) => {
            http::bytes_response(204, "text/plain; charset=utf-8", Default::default())
        }
        Err(e) => error_response(&e),
    }
}

/// A MAAS error response: text/plain, except JSON for validation errors and the proxy's HTML
/// page for a 504.
pub fn error_response(err: &Error) -> Response<Body> {
    let resp = match err {
        Error::Validation(v) => http::json(400, v),
        Error::Injected {
            code: 504, message, ..
        } => http::bytes_response(504, "text/html", bytes::Bytes::from(message.clone())),
        Error::NotFound { resource, .. } => {
            http::text(404, &format!("No {resource} matches the given query."))
        }
        Error::NoRoute => http::text(404, "Not Found"),
        other => http::text(other.status_code(), &other.to_string()),
    };
    let mut resp = http::with_retry_after(resp, err.retry_after());
    if matches!(err, Error::Unauthorized(_)) {
        resp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("OAuth realm=\"OAuth\""),
        );
    }
    resp
}

/// Split the path below the API root into segments and an `op-<name>` suffix.
fn split_path(path: &str) -> Option<(Vec<String>, Option<String>)> {
    let rest = path
        .strip_prefix(model::ROOT)
        .or_else(|| (path == "/MAAS/api/2.0").then_some(""))?;
    let mut segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let op = segs
        .last()
        .and_then(|l| l.strip_prefix("op-"))
        .map(|op| op.to_string());
    if op.is_some() {
        segs.pop();
    }
    Some((segs, op))
}

/// (verb, object) of a mutating MAAS request, for the audit.
pub fn audit_verb(req: &Req) -> Option<(String, String)> {
    if req.method == Method::GET {
        return None;
    }
    let (segs, path_op) = split_path(&req.path)?;
    let verb = path_op
        .or_else(|| req.q("op").map(String::from))
        .or_else(|| {
            form::params(req)
                .ok()
                .and_then(|p| p.get("op").map(String::from))
        })
        .unwrap_or_else(|| {
            match req.method {
                Method::POST => "create",
                Method::PUT => "update",
                Method::DELETE => "delete",
                _ => "other",
            }
            .to_string()
        });
    Some((verb, format!("{}/", segs.join("/"))))
}

fn unrecognised(method: &Method, op: Option<&str>) -> Error {
    Error::BadRequest(format!(
        "Unrecognised signature: method={} op={}",
        method,
        op.unwrap_or("None")
    ))
}

fn route(shared: &Shared, req: &Req) -> Result<Reply> {
    let (segs, path_op) = split_path(&req.path).ok_or(Error::NoRoute)?;
    let params = form::params(req)?;
    let op = path_op.or_else(|| params.get("op").map(String::from));
    let op = op.as_deref();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = &req.method;
    let get = *method == Method::GET;
    match seg.as_slice() {
        ["describe"] if get => return Ok(describe::describe(&req.host).into()),
        ["version"] if get => {
            return Ok(json!({
                "capabilities": ["networks-management", "static-ipaddresses", "ipv6-deployment-ubuntu", "devices-management", "storage-deployment-ubuntu", "network-deployment-ubuntu", "bridging-interface-ubuntu", "bridging-automatic-ubuntu", "authenticate-api"],
                "version": "3.5.4",
                "subversion": "drover-lab"
            }).into());
        }
        _ => {}
    }
    // Everything else needs a valid OAuth signature.
    let mut signed_params = req.query.clone();
    if req
        .header("content-type")
        .starts_with("application/x-www-form-urlencoded")
    {
        signed_params.extend(form_urlencoded::parse(&req.body).into_owned());
    }
    let api_key = shared.scenario.maas.api_key.clone();
    auth::verify(
        req.header("authorization"),
        &api_key,
        &auth::Signed {
            method: method.as_str(),
            base_url: format!("http://{}{}", req.host, req.path),
            params: signed_params,
        },
    )?;
    let user = shared.scenario.maas.user.clone();
    let user = user.as_str();
    let now = shared.clock.now();
    let mut r = shared
        .maas
        .lock()
        .map_err(|_| Error::Internal("maas state poisoned".into()))?;
    let r = &mut *r;
    let release_faults =
        |host: &str, sid: &str, erasing: bool| shared.faults.maas_release(host, sid, erasing);
    let reply: Value = match (method.clone(), seg.as_slice(), op) {
        (Method::GET, ["users"], Some("whoami")) => {
            json!({"username": user, "email": format!("{user}@lab.drover.dev"), "is_superuser": true, "is_local": true, "resource_uri": format!("{}users/{user}/", model::ROOT)})
        }
        (Method::GET, ["users"], None) => {
            json!([{"username": user, "email": format!("{user}@lab.drover.dev"), "is_superuser": true, "is_local": true}])
        }
        (Method::GET, ["maas"], Some("get_config")) => match params.get("name").unwrap_or("") {
            "default_distro_series" => json!("jammy"),
            "default_osystem" => json!("ubuntu"),
            "maas_name" => json!("drover-lab"),
            "node_timeout" => json!(r.settings.node_timeout_minutes),
            "commissioning_distro_series" => json!("jammy"),
            "enable_disk_erasing_on_release" => json!(false),
            _ => Value::Null,
        },
        (Method::GET, ["events"], Some("query")) => {
            let q = events::Query::parse(&params)?;
            let filter = form::Params(
                params
                    .0
                    .iter()
                    .filter(|(k, _)| {
                        matches!(
                            k.as_str(),
                            "hostname" | "id" | "zone" | "agent_name" | "mac_address" | "domain"
                        )
                    })
                    .cloned()
                    .collect(),
            );
            let nodes: Vec<String> = machines::select(r, &filter, user)?
                .into_iter()
                .map(|m| m.system_id.clone())
                .collect();
            events::query(&r.events, &q, &params, |sid| nodes.iter().any(|n| n == sid))
        }
        (Method::GET, ["machines"] | ["nodes"], None) => machines::list(r, &params, user)?,
        (Method::GET, ["machines"], Some("list_allocated")) => {
            let mine = form::Params(vec![("owner".into(), user.to_string())]);
            machines::list(r, &mine, user)?
        }
        (Method::GET, ["machines"], Some("power_parameters")) => json!({}),
        (Method::POST, ["machines"], Some("allocate")) => {
            machines::allocate(r, &params, user, now)?
        }
        (Method::POST, ["machines"], Some("release")) => {
            machines::release_many(r, &params, user, now, &release_faults)?
        }
        (Method::POST, ["machines"], None) => {
            return Err(Error::Validation(
                json!({"power_type": ["This field is required."]}),
            ));
        }
        (Method::GET, ["machines", id], None) => {
            let i = r.index(id)?;
            r.machine_json(&r.machines[i])
        }
        (Method::PUT, ["machines", id], None) => machines::update(r, id, &params)?,
        (Method::DELETE, ["machines", id], None) => {
            let i = r.index(id)?;
            r.machines.remove(i);
            return Ok(Reply::Deleted);
        }
        (Method::GET, ["machines", id], Some("query_power_state")) => {
            ops::power(r, id, "query_power_state", &params, user, now)?
        }
        (Method::GET, ["machines", id], Some("details")) => {
            r.index(id)?;
            json!({"lshw": "", "lldp": ""})
        }
        (Method::GET, ["machines", id], Some("power_parameters")) => {
            r.index(id)?;
            json!({"power_address": "10.0.0.1", "power_user": "admin"})
        }
        (Method::POST, ["machines", id], Some(op)) => match op {
            "deploy" => {
                let i = r.index(id)?;
                let (host, sid) = (
                    r.machines[i].hostname.clone(),
                    r.machines[i].system_id.clone(),
                );
                let fault = if r.machines[i].status == Status::Allocated
                    || r.machines[i].status == Status::Ready
                {
                    shared.faults.maas_deploy(&host, &sid)
                } else {
                    lifecycle::DeployFault::None
                };
                ops::deploy(r, id, &params, user, now, fault)?
            }
            "release" => ops::release(r, id, &params, user, now, &release_faults)?,
            "abort" => ops::abort(r, id, &params, user, now)?,
            "mark_broken" => ops::mark_broken(r, id, &params, user, now)?,
            "mark_fixed" => ops::mark_fixed(r, id, &params, user, now)?,
            "power_on" | "power_off" => ops::power(r, id, op, &params, user, now)?,
            "lock" => ops::lock(r, id, true)?,
            "unlock" => ops::lock(r, id, false)?,
            "set_owner_data" | "set_workload_annotations" => {
                ops::set_owner_data(r, id, &params, user)?
            }
            "clear_default_gateways"
            | "restore_default_configuration"
            | "restore_networking_configuration"
            | "restore_storage_configuration" => {
                let i = r.index(id)?;
                r.machine_json(&r.machines[i])
            }
            other => return Err(unrecognised(method, Some(other))),
        },
        (
            Method::GET,
            [what @ ("resourcepools" | "zones" | "tags" | "fabrics" | "subnets")],
            None,
        ) => network::list(r, what),
        (Method::POST, [what @ ("resourcepools" | "zones" | "tags")], None) => {
            network::create_named(r, what, &params)?
        }
        (Method::GET, ["resourcepool", id], None) => network::pool(r, id)?,
        (Method::GET, ["zones", name], None) => network::zone(r, name)?,
        (Method::GET, ["tags", name], op) => network::tag(r, name, op, &params)?,
        (Method::POST, ["tags", name], Some("update_nodes")) => {
            network::tag(r, name, Some("update_nodes"), &params)?
        }
        (Method::GET, ["fabrics", id], None) => network::fabric(r, id)?,
        (Method::GET, ["fabrics", id, "vlans"], None) => network::vlans(r, id, None)?,
        (Method::POST, ["fabrics", id, "vlans"], None) => network::vlans(r, id, Some(&params))?,
        (Method::GET, ["fabrics", id, "vlans", vid], None) => network::vlan(r, id, vid, None)?,
        (Method::PUT, ["fabrics", id, "vlans", vid], None) => {
            network::vlan(r, id, vid, Some(&params))?
        }
        (Method::GET, ["subnets", id], None) => network::subnet(r, id)?,
        (Method::GET, ["nodes", sid, "interfaces"], None) => interfaces::list(r, sid)?,
        (Method::POST, ["nodes", sid, "interfaces"], Some(op)) => {
            interfaces::create(r, sid, op, &params)?
        }
        (Method::DELETE, ["nodes", sid, "interfaces", iid], None) => {
            interfaces::delete(r, sid, iid)?;
            return Ok(Reply::Deleted);
        }
        (m, ["nodes", sid, "interfaces", iid], op) => {
            interfaces::interface(r, sid, iid, m.as_str(), op, &params)?
        }
        (m, ["machines" | "tags" | "users" | "maas" | "events", ..], op) => {
            return Err(unrecognised(&m, op));
        }
        _ => return Err(Error::NoRoute),
    };
    Ok(Reply::Json(reply))
}
