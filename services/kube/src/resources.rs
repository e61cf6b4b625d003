//! Typed KubeVirt resources (kubevirt.io/v1) and CDI's DataVolume (cdi.kubevirt.io/v1beta1): only the
//! fields Drover reads are typed; everything else is kept as JSON, so objects from newer KubeVirt and
//! CDI versions still decode.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! kubevirt_resource {
    ($ty:ident, $kind:literal, $plural:literal) => {
        custom_resource!($ty, "kubevirt.io", "v1", $kind, $plural);
    };
}

macro_rules! custom_resource {
    ($ty:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(concat!($group, "/", $version))
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A condition as KubeVirt writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// kubevirt.io/v1 VirtualMachineInstance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VirtualMachineInstance {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default)]
    pub status: Option<VmiStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub migration_state: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_status: Vec<VolumeStatus>,
}

/// One entry of a VMI's `status.volumeStatus` (virt-handler's view of a volume; hotplugged ones
/// walk Pending, Bound, AttachedToNode, MountedToPod, Ready).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Present (an object, possibly empty) on hotplugged volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_volume: Option<Value>,
}

/// kubevirt.io/v1 VirtualMachineInstanceMigration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VirtualMachineInstanceMigration {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: MigrationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MigrationStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    pub vmi_name: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub added_node_selector: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub migration_state: Option<MigrationState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationState {
    #[serde(default)]
    pub target_node: Option<String>,
    #[serde(default)]
    pub source_node: Option<String>,
    #[serde(default)]
    pub failed: Option<bool>,
    #[serde(default)]
    pub failure_reason: Option<String>,
}

/// kubevirt.io/v1 VirtualMachine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VirtualMachine {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// cdi.kubevirt.io/v1beta1 DataVolume: the spec as JSON, the status fields the import reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataVolume {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DataVolumeStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStatus {
    #[serde(default)]
    pub phase: Option<String>,
    /// `"45.23%"`, `"N/A"`.
    #[serde(default)]
    pub progress: Option<String>,
    /// How often the importer (or upload, clone) pod restarted.
    #[serde(default)]
    pub restart_count: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

kubevirt_resource!(
    VirtualMachineInstance,
    "VirtualMachineInstance",
    "virtualmachineinstances"
);
kubevirt_resource!(
    VirtualMachineInstanceMigration,
    "VirtualMachineInstanceMigration",
    "virtualmachineinstancemigrations"
);
kubevirt_resource!(VirtualMachine, "VirtualMachine", "virtualmachines");
custom_resource!(
    DataVolume,
    "cdi.kubevirt.io",
    "v1beta1",
    "DataVolume",
    "datavolumes"
);

/// Parses a Kubernetes quantity ("8Gi", "500m", "2", "1.5G") into base units (x1000 for millis).
pub fn quantity(q: &str, millis: bool) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * factor * if millis { 1000.0 } else { 1.0 };
    Some(v.round() as u64)
}

/// Bytes as a Kubernetes quantity, in the largest binary unit that divides them ("4Gi", "1536Mi",
/// "1000").
pub fn bytes_quantity(bytes: u64) -> String {
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities_round_trip() {
        for (bytes, q) in [
            (4u64 << 30, "4Gi"),
            (1536 << 20, "1536Mi"),
            (1000, "1000"),
            (0, "0"),
        ] {
            assert_eq!(bytes_quantity(bytes), q);
            assert_eq!(quantity(q, false), Some(bytes));
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("8Gi", false), Some(8 << 30));
        assert_eq!(quantity("500m", true), Some(500));
        assert_eq!(quantity("2", true), Some(2000));
        assert_eq!(quantity("1.5G", false), Some(1_500_000_000));
        assert_eq!(quantity("12x", false), None);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"domain": {"future": true}},
            "status": {"phase": "Running", "nodeName": "n1", "newField": [1, 2],
                       "conditions": [{"type": "LiveMigratable", "status": "False", "reason": "DisksNotLiveMigratable", "extra": 1}]}
        }))
        .unwrap();
        assert_eq!(
            vmi.status.unwrap().conditions[0].reason.as_deref(),
            Some("DisksNotLiveMigratable")
        );
    }
}
