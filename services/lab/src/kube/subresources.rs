//! KubeVirt's virt-api subresources (`subresources.kubevirt.io/v1`): start, stop, restart, migrate,
//! addvolume, removevolume, pause and unpause, answering 202 Accepted with an empty body, or the
//! 404/409/400 Status objects virt-api writes.

use axum::body::Body;
use axum::http::{Method, Response};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, Req};
use crate::kube::resources::{self, keys};
use crate::sim;
use crate::state::Shared;

/// Handle `PUT .../namespaces/<ns>/<plural>/<name>/<action>`.
pub fn handle(
    shared: &Shared,
    req: &Req,
    ns: &str,
    plural: &str,
    name: &str,
    action: &str,
) -> Result<Response<Body>> {
    if !resources::KUBEVIRT_SUBRESOURCES.contains(&(plural, action)) {
        return Err(Error::NoRoute);
    }
    if req.method != Method::PUT {
        return Err(Error::MethodNotAllowed);
    }
    let opts: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            Error::BadRequest(format!(
                "Can not unmarshal Request body to struct, error: {e}"
            ))
        })?
    };
    if opts
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty())
    {
        return Ok(http::bytes_response(
            202,
            "application/json",
            bytes::Bytes::new(),
        ));
    }
    let vmi = shared.store.get(keys::VMIS, ns, name);
    let vmi_running = vmi
        .as_ref()
        .is_some_and(|v| v.pointer("/status/phase").and_then(Value::as_str) == Some("Running"));
    if plural == "virtualmachines" {
        let vm = shared
            .store
            .get(keys::VMS, ns, name)
            .ok_or_else(|| Error::NotFound {
                resource: keys::VMS.into(),
                name: name.into(),
            })?;
        let strategy = sim::vms::run_strategy(&vm);
        match action {
            "start" => {
                if vmi.is_some() && strategy != "Halted" {
                    return Err(Error::StateConflict("VM is already running".into()));
                }
                if strategy == "Once" || strategy == "WaitAsReceiver" {
                    return Err(Error::StateConflict(format!(
                        "{strategy} does not support manual start requests"
                    )));
                }
                set_running(shared, ns, name, &vm, true)?;
            }
            "stop" => {
                if vmi.is_none() {
                    return Err(Error::StateConflict("VM is not running".into()));
                }
                set_running(shared, ns, name, &vm, false)?;
            }
            "restart" => {
                if strategy == "Halted" {
                    return Err(Error::StateConflict(
                        "RunStategy Halted does not support manual restart requests".into(),
                    ));
                }
                if vmi.is_none() {
                    return Err(Error::StateConflict("VM is not running".into()));
                }
                let _ = shared.store.delete(keys::VMIS, ns, name);
            }
            "migrate" => {
                if !vmi_running {
                    return Err(Error::StateConflict("VM is not running".into()));
                }
                create_migration(shared, ns, name, opts.get("addedNodeSelector").cloned())?;
            }
            "addvolume" => sim::volumes::add(shared, ns, name, &opts, true)?,
            "removevolume" => sim::volumes::remove(shared, ns, name, &opts, true)?,
            _ => return Err(Error::NoRoute),
        }
    } else {
        let Some(_) = vmi else {
            return Err(Error::NotFound {
                resource: keys::VMIS.into(),
                name: name.into(),
            });
        };
        match action {
            "pause" | "unpause" => {
                if !vmi_running {
                    return Err(Error::StateConflict("VMI is not running".into()));
                }
                let pause = action == "pause";
                shared.store.modify(keys::VMIS, ns, name, |v| {
                    sim::vms::set_condition(
                        v,
                        "Paused",
                        pause,
                        if pause { "PausedByUser" } else { "" },
                        "",
                    );
                    Ok(())
                })?;
            }
            "addvolume" => sim::volumes::add(shared, ns, name, &opts, false)?,
            "removevolume" => sim::volumes::remove(shared, ns, name, &opts, false)?,
            _ => return Err(Error::NoRoute),
        }
    }
    Ok(http::bytes_response(
        202,
        "application/json",
        bytes::Bytes::new(),
    ))
}

fn set_running(shared: &Shared, ns: &str, name: &str, vm: &Value, running: bool) -> Result<()> {
    let uses_running = vm.pointer("/spec/running").is_some();
    shared.store.modify(keys::VMS, ns, name, |v| {
        if uses_running {
            v["spec"]["running"] = json!(running);
        } else {
            v["spec"]["runStrategy"] = json!(if running { "Always" } else { "Halted" });
        }
        Ok(())
    })?;
    Ok(())
}

/// Create a VMIM as `virtctl migrate` does (`kubevirt-migrate-vm-` names).
fn create_migration(shared: &Shared, ns: &str, vmi: &str, added: Option<Value>) -> Result<()> {
    let mut spec = json!({"vmiName": vmi});
    if let Some(sel) = added.filter(Value::is_object) {
        spec["addedNodeSelector"] = sel;
    }
    let obj = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": ns},
        "spec": spec
    });
    let def = resources::find("kubevirt.io", "v1", "virtualmachineinstancemigrations")
        .ok_or(Error::NoRoute)?;
    sim::admission::validate_create(shared, def, &obj)?;
    shared.store.create(keys::VMIMS, obj)?;
    Ok(())
}
