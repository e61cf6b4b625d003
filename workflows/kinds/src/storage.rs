//! What the storage kinds share: Kubernetes quantities, names, and the label that marks what a
//! workflow created (the ledger its compensation deletes by, never anything else).

use drover_workflows::ports::kube::{Kube, KubeError, VmInfo};
use drover_workflows::sdk::StepError;

/// Label on every object a storage workflow creates: the workflow's id (made a label value).
pub const CREATED_BY: &str = "drover.io/created-by";

pub const DNS_LABEL_RULE: &str =
    "1-63 lowercase letters, digits and '-', starting and ending with a letter or digit";

/// A Kubernetes DNS-1123 label (names of claims, VMs, volumes).
pub fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks each `(field, name)` is a DNS label; the error names the first field that is not.
pub fn check_names(names: &[(&str, &String)]) -> Result<(), String> {
    match names.iter().find(|(_, v)| !dns_label(v)) {
        Some((what, _)) => Err(format!("{what}: {DNS_LABEL_RULE}")),
        None => Ok(()),
    }
}

/// The VM, or a failure saying it does not exist.
pub async fn existing_vm(kube: &dyn Kube, namespace: &str, vm: &str) -> Result<VmInfo, StepError> {
    match kube.get_vm(namespace, vm).await {
        Ok(vm) => Ok(vm),
        Err(KubeError::NotFound(_)) => Err(StepError::fail(format!(
            "VirtualMachine {namespace}/{vm} does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A workflow id as a label value (at most 63 characters of `[A-Za-z0-9._-]`): child ids are
/// longer, so long ones keep their start and a hash of the whole.
pub fn label_value(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= 63 {
        return clean;
    }
    format!("{}-{:012x}", &clean[..50], fnv(id) & 0xffff_ffff_ffff)
}

/// A name for an object this workflow makes from `base`: `base` (cut) and a hash of the workflow
/// id, so every workflow has its own and a re-run finds the one it made.
pub fn owned_name(base: &str, workflow_id: &str) -> String {
    let prefix: String = base.chars().take(40).collect();
    format!(
        "{}-drover-{:012x}",
        prefix.trim_end_matches('-'),
        fnv(workflow_id) & 0xffff_ffff_ffff
    )
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A quantity (`20Gi`, `500M`, `1073741824`) in bytes; None when it is not one.
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
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
    let bytes = n * mult;
    (bytes.is_finite() && (0.0..1.8e19).contains(&bytes)).then(|| bytes.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("20Gi"), Some(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1.5Gi"), Some(1_610_612_736));
        assert_eq!(parse_quantity("4096"), Some(4096));
        assert_eq!(parse_quantity("20GB"), None);
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("-1Gi"), None);
    }

    #[test]
    fn names_are_labels_and_owned_names_differ_per_workflow() {
        assert!(dns_label("vm-01-00"));
        assert!(!dns_label("VM"));
        assert!(!dns_label("-a"));
        let a = owned_name("rootdisk", "wf-a");
        assert_ne!(a, owned_name("rootdisk", "wf-b"));
        assert_eq!(a, owned_name("rootdisk", "wf-a"));
        assert!(dns_label(&a), "{a}");
        let long = label_value(&"x".repeat(100));
        assert!(long.len() <= 63);
    }
}
