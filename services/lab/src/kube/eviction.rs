//! `POST pods/<name>/eviction` (policy/v1 Eviction), including KubeVirt's eviction webhook
//! (`virt-launcher-eviction-interceptor.kubevirt.io`): evicting a virt-launcher pod is refused with
//! 429 and, for a migratable VMI, marks it for evacuation so the simulator migrates it away. This is
//! what lets a real `kubectl drain` finish on a node full of VMs.

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::kube::resources::keys;
use crate::kube::{Target, status};
use crate::state::Shared;

const WEBHOOK: &str =
    "admission webhook \"virt-launcher-eviction-interceptor.kubevirt.io\" denied the request";

/// Handle an eviction.
pub fn handle(shared: &Shared, req: &Req, t: &Target) -> Result<Response<Body>> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type Eviction): couldn't get version/kind; json parse error: {e}"
        ))
    })?;
    if let Some(kind) = body
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| *k != "Eviction")
    {
        return Err(Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type Eviction): no kind \"{kind}\" is registered"
        )));
    }
    if let Some(body_name) = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| *n != name)
    {
        return Err(Error::BadRequest(format!(
            "name in URL does not match name in Eviction object: {body_name}"
        )));
    }
    let pod = shared
        .store
        .get(keys::PODS, &ns, &name)
        .ok_or_else(|| Error::NotFound {
            resource: "pods".into(),
            name: name.clone(),
        })?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let is_launcher = pod
        .pointer("/metadata/labels/kubevirt.io")
        .and_then(Value::as_str)
        == Some("virt-launcher");
    if is_launcher
        && phase != "Succeeded"
        && phase != "Failed"
        && let Some(denied) = kubevirt_webhook(shared, &pod, &ns)?
    {
        return Err(Error::TooManyRequests {
            message: format!("{WEBHOOK}: {denied}"),
            retry_after: None,
        });
    }
    if req.q("dryRun") != Some("All") {
        shared.store.delete(keys::PODS, &ns, &name)?;
    }
    Ok(http::json(201, &status::success(201)))
}

/// KubeVirt's decision: `Some(message)` to deny with 429, `None` to let the eviction delete the pod.
fn kubevirt_webhook(shared: &Shared, pod: &Value, ns: &str) -> Result<Option<String>> {
    let vmi_name = pod
        .pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(vmi) = shared.store.get(keys::VMIS, ns, &vmi_name) else {
        return Ok(None);
    };
    if pod
        .pointer("/metadata/labels/kubevirt.io~1migrationTarget")
        .is_some()
    {
        return Ok(Some("Eviction request for target Pod".into()));
    }
    let strategy = vmi
        .pointer("/spec/evictionStrategy")
        .and_then(Value::as_str)
        .unwrap_or(&shared.scenario.default_eviction_strategy)
        .to_string();
    let migratable = vmi["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "LiveMigratable"))
        .is_some_and(|c| c["status"] == "True");
    let evacuate = match strategy.as_str() {
        "None" => false,
        "LiveMigrateIfPossible" => migratable,
        "External" => true,
        _ if !migratable => {
            return Ok(Some(format!(
                "VMI {vmi_name} is configured with an eviction strategy but is not live-migratable"
            )));
        }
        _ => true,
    };
    if !evacuate {
        return Ok(None);
    }
    let triggered = format!("Eviction triggered evacuation of VMI \"{ns}/{vmi_name}\"");
    if vmi
        .pointer("/status/evacuationNodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return Ok(Some(format!("Evacuation in progress: {triggered}")));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    shared.store.modify(keys::VMIS, ns, &vmi_name, |v| {
        v["status"]["evacuationNodeName"] = json!(node);
        Ok(())
    })?;
    Ok(Some(triggered))
}
