//! Admission the lab enforces on create: KubeVirt's webhook refuses (422) a migration of a VMI that
//! does not exist or is not live-migratable; the apiserver's quota admission refuses (403) a claim
//! over a ResourceQuota, and the lab refuses a DataVolume whose claim would be (CDI would create
//! the DataVolume and fail on the claim).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::kube::resources::{ResourceDef, keys};
use crate::sim::{quota, storage};
use crate::state::Shared;

const MIGRATION_WEBHOOK: &str =
    "admission webhook \"migration-create-validator.kubevirt.io\" denied the request";

/// Validate an object about to be created.
pub fn validate_create(shared: &Shared, def: &ResourceDef, obj: &Value) -> Result<()> {
    let key = def.qualified();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if key == keys::PVCS {
        return quota::admit(shared, obj).map_err(|m| {
            Error::Forbidden(format!(
                "persistentvolumeclaims \"{name}\" is forbidden: {m}"
            ))
        });
    }
    if key == keys::DATAVOLUMES {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        if shared.store.get_shared(keys::PVCS, ns, name).is_some() {
            return Ok(());
        }
        return quota::admit(shared, &storage::pvc_for_dv(obj)).map_err(|m| {
            Error::Forbidden(format!(
                "datavolumes.cdi.kubevirt.io \"{name}\" is forbidden: {m}"
            ))
        });
    }
    if key != keys::VMIMS {
        return Ok(());
    }
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let vmi_name = obj
        .pointer("/spec/vmiName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if vmi_name.is_empty() {
        return Err(Error::Unprocessable(format!(
            "{MIGRATION_WEBHOOK}: spec.vmiName is a required field"
        )));
    }
    let Some(vmi) = shared.store.get(keys::VMIS, ns, vmi_name) else {
        return Err(Error::Unprocessable(format!(
            "{MIGRATION_WEBHOOK}: the VMI \"{ns}/{vmi_name}\" does not exist"
        )));
    };
    let cond = vmi["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "LiveMigratable"))
        .cloned();
    if let Some(c) = cond.filter(|c| c["status"] == "False") {
        return Err(Error::Unprocessable(format!(
            "{MIGRATION_WEBHOOK}: Cannot migrate VMI, Reason: {}, Message: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )));
    }
    Ok(())
}
