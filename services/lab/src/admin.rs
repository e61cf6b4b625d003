//! The lab's admin endpoints under `/lab/`: status, audit, migration and CDI counters, fault
//! injection and a kubeconfig for the address the caller used. `/lab/jira/`, `/lab/servicenow/`
//! and `/lab/ticketing` belong to the ticketing systems (`ticketing::admin`).

use axum::body::Body;
use axum::http::{Method, Response};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::faults::Fault;
use crate::http::{self, Req};
use crate::kube::resources::keys;
use crate::scenario::FaultRates;
use crate::sim::nodes;
use crate::state::Shared;

/// Serve a `/lab/...` request.
pub async fn handle(shared: &Shared, req: &Req) -> Response<Body> {
    if crate::ticketing::admin::owns(req.path.trim_end_matches('/')) {
        return crate::ticketing::admin::handle(&shared.ticketing, req).await;
    }
    match route(shared, req) {
        Ok(r) => r,
        Err(e) => http::json(e.status_code(), &json!({"error": e.to_string()})),
    }
}

fn route(shared: &Shared, req: &Req) -> Result<Response<Body>> {
    let get = req.method == Method::GET;
    match (req.method.clone(), req.path.trim_end_matches('/')) {
        (_, "/lab/status") if get => Ok(http::json(200, &status(shared))),
        (_, "/lab/audit") if get => {
            let entries: Vec<_> = shared
                .audit
                .entries()
                .into_iter()
                .filter(|e| req.q("api").is_none_or(|a| e.api == a))
                .filter(|e| req.q("verb").is_none_or(|v| e.verb == v))
                .filter(|e| req.q("object").is_none_or(|o| e.object.contains(o)))
                .collect();
            Ok(http::json(200, &json!(entries)))
        }
        (_, "/lab/counters") if get => {
            let mut counters = json!(shared.audit.counters());
            merge(&mut counters, json!(shared.cdi.counters()));
            Ok(http::json(200, &counters))
        }
        (_, "/lab/faults") if get => Ok(http::json(
            200,
            &json!({"rates": shared.faults.rates(), "targeted": shared.faults.list()}),
        )),
        (Method::POST, "/lab/faults") => {
            let fault: Fault = serde_json::from_slice(&req.body)
                .map_err(|e| Error::BadRequest(format!("invalid fault: {e}")))?;
            inject(shared, fault)?;
            Ok(http::json(201, &json!({"armed": shared.faults.list()})))
        }
        (Method::DELETE, "/lab/faults") => {
            shared.faults.clear();
            Ok(http::json(200, &json!({"armed": []})))
        }
        (Method::PUT, "/lab/faults/rates") => {
            let rates: FaultRates = serde_json::from_slice(&req.body)
                .map_err(|e| Error::BadRequest(format!("invalid fault rates: {e}")))?;
            shared.faults.set_rates(rates);
            Ok(http::json(200, &json!(shared.faults.rates())))
        }
        (_, "/lab/kubeconfig") if get => Ok(http::text(
            200,
            &kubeconfig(&format!("http://{}", req.host)),
        )),
        _ => Err(Error::NoRoute),
    }
}

/// Arm a fault, or apply it at once when it is immediate (node readiness, broken machines,
/// machines losing power).
pub fn inject(shared: &Shared, fault: Fault) -> Result<()> {
    match fault {
        Fault::NodeNotReady { node } => nodes::set_ready(shared, &node, false).map(|_| ()),
        Fault::NodeReady { node } => nodes::set_ready(shared, &node, true).map(|_| ()),
        Fault::NodeReboot { node } => {
            let times = nodes::start_reboot(shared, &node)?;
            shared
                .sim
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rebooting(&node, times);
            Ok(())
        }
        Fault::MaasMachineBroken { machine } => crate::maas::sim::break_machine(shared, &machine),
        Fault::MaasPowerLoss { machine } => crate::maas::sim::lose_power(shared, &machine),
        other => {
            shared.faults.add(other);
            Ok(())
        }
    }
}

/// A kubeconfig for a lab served at `server`.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: drover-lab\n  cluster:\n    server: {server}\ncontexts:\n- name: drover-lab\n  context:\n    cluster: drover-lab\n    user: drover-lab\n    namespace: default\ncurrent-context: drover-lab\nusers:\n- name: drover-lab\n  user:\n    token: drover-lab\n"
    )
}

/// Add `extra`'s keys to `into` (both objects).
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

fn status(shared: &Shared) -> Value {
    let s = &shared.store;
    let mut status = json!({
        "scenario": shared.scenario.name,
        "time_scale": shared.clock.scale(),
        "sim_time": shared.clock.now(),
        "sim_wall": shared.clock.rfc3339(),
        "resource_version": s.resource_version(),
        "counts": {
            "nodes": s.count(keys::NODES),
            "pods": s.count(keys::PODS),
            "virtualmachines": s.count(keys::VMS),
            "virtualmachineinstances": s.count(keys::VMIS),
            "virtualmachineinstancemigrations": s.count(keys::VMIMS),
            "maas_machines": shared.maas.lock().map(|m| m.machine_count()).unwrap_or(0),
        },
        "migrations": shared.audit.counters().current_cluster,
        "jira_url": shared.ticketing.jira.url,
        "servicenow_url": shared.ticketing.servicenow.url,
    });
    merge(&mut status, json!(shared.cdi.counters()));
    status
}
