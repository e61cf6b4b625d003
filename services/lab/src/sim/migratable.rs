//! KubeVirt's `LiveMigratable` condition, computed as virt-handler does
//! (`calculateLiveMigrationCondition`): the pod-network interface binding first, then the disks.
//! Pure: the caller passes a lookup for PVC access modes.

use serde_json::Value;

/// The outcome: migratable, or the reason and message KubeVirt reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Migratable {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Migratable {
    fn yes() -> Self {
        Migratable {
            ok: true,
            reason: "",
            message: String::new(),
        }
    }
    fn no(reason: &'static str, message: String) -> Self {
        Migratable {
            ok: false,
            reason,
            message,
        }
    }
}

/// Annotation that allows a bridge binding on the pod network to migrate.
pub const ALLOW_POD_BRIDGE: &str = "kubevirt.io/allow-pod-bridge-network-live-migration";

/// Compute `LiveMigratable` for a VMI. `pvc_access_modes(name)` returns the claim's access modes,
/// `None` when the claim does not exist.
pub fn live_migratable(
    vmi: &Value,
    pvc_access_modes: impl Fn(&str) -> Option<Vec<String>>,
) -> Migratable {
    let spec = &vmi["spec"];
    let empty = Vec::new();
    let networks = spec["networks"].as_array().unwrap_or(&empty);
    let interfaces = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap_or(&empty);
    let bridge_allowed = vmi
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ALLOW_POD_BRIDGE))
        .is_some();
    for net in networks {
        if net.get("pod").is_none() {
            continue;
        }
        let name = net["name"].as_str().unwrap_or("");
        let iface = interfaces.iter().find(|i| i["name"].as_str() == Some(name));
        if iface.is_some_and(|i| i.get("bridge").is_some()) && !bridge_allowed {
            return Migratable::no(
                "InterfaceNotLiveMigratable",
                "cannot migrate VMI which does not use masquerade or a migratable plugin to connect to the pod network".into(),
            );
        }
    }
    for vol in spec["volumes"].as_array().unwrap_or(&empty) {
        if vol.get("hostDisk").is_some() {
            return Migratable::no(
                "DisksNotLiveMigratable",
                "cannot migrate VMI with non-shared HostDisk".into(),
            );
        }
        let claim = vol
            .pointer("/persistentVolumeClaim/claimName")
            .or_else(|| vol.pointer("/dataVolume/name"))
            .and_then(Value::as_str);
        let Some(claim) = claim else { continue };
        match pvc_access_modes(claim) {
            None => {
                return Migratable::no(
                    "DisksNotLiveMigratable",
                    format!(
                        "cannot migrate VMI: Unable to determine if PVC {claim} is shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
                    ),
                );
            }
            Some(modes) if !modes.iter().any(|m| m == "ReadWriteMany") => {
                return Migratable::no(
                    "DisksNotLiveMigratable",
                    format!(
                        "cannot migrate VMI: PVC {claim} is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
                    ),
                );
            }
            Some(_) => {}
        }
    }
    Migratable::yes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(binding: &str, claim: &str, annotations: Value) -> Value {
        json!({
            "metadata": {"annotations": annotations},
            "spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", binding: {}}, {"name": "vlan20", "bridge": {}}]}},
                "networks": [{"name": "default", "pod": {}}, {"name": "vlan20", "multus": {"networkName": "vlan20"}}],
                "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": claim}}, {"name": "ci", "cloudInitNoCloud": {}}]
            }
        })
    }

    #[test]
    fn reasons_in_kubevirt_order() {
        let modes = |c: &str| match c {
            "rwx" => Some(vec!["ReadWriteMany".to_string()]),
            "rwo" => Some(vec!["ReadWriteOnce".to_string()]),
            _ => None,
        };
        let cases = [
            (vmi("masquerade", "rwx", json!({})), true, ""),
            (
                vmi("masquerade", "rwo", json!({})),
                false,
                "DisksNotLiveMigratable",
            ),
            (
                vmi("masquerade", "gone", json!({})),
                false,
                "DisksNotLiveMigratable",
            ),
            (
                vmi("bridge", "rwo", json!({})),
                false,
                "InterfaceNotLiveMigratable",
            ),
            (
                vmi("bridge", "rwx", json!({ALLOW_POD_BRIDGE: ""})),
                true,
                "",
            ),
        ];
        for (v, ok, reason) in cases {
            let m = live_migratable(&v, modes);
            assert_eq!((m.ok, m.reason), (ok, reason), "{v}");
        }
        let m = live_migratable(&vmi("masquerade", "rwo", json!({})), modes);
        assert_eq!(
            m.message,
            "cannot migrate VMI: PVC rwo is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
        );
    }
}
