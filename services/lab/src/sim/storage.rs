//! Storage, simulated: PVCs bind by StorageClass (Portworx sharedv4 RWX, Pure FlashArray block),
//! CDI DataVolumes go through their phases with `progress` as CDI formats it ("45.23%"), and CSI
//! VolumeSnapshots become `readyToUse`.

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::kube::resources::keys;
use crate::state::Shared;

/// Simulated seconds an HTTP import takes per GiB.
pub const IMPORT_SECS_PER_GIB: f64 = 6.0;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// CDI's progress string for a fraction.
pub fn progress(fraction: f64) -> String {
    if fraction >= 1.0 {
        "100.0%".into()
    } else {
        format!("{:.2}%", (fraction * 100.0).max(0.0))
    }
}

/// One pass. Returns whether timed work is pending.
pub fn reconcile(shared: &Shared, now: SimTime) -> bool {
    let mut busy = false;
    let (pvcs, _) = shared
        .store
        .list(keys::PVCS, None, |p| s(p, "/status/phase") != "Bound");
    for pvc in pvcs {
        let (ns, name) = (
            s(&pvc, "/metadata/namespace").to_string(),
            s(&pvc, "/metadata/name").to_string(),
        );
        let class = s(&pvc, "/spec/storageClassName").to_string();
        let known = class.is_empty()
            || shared
                .store
                .get(keys::STORAGE_CLASSES, "", &class)
                .is_some();
        let _ = shared.store.modify(keys::PVCS, &ns, &name, |p| {
            if known {
                bind(p);
            } else {
                p["status"] = json!({"phase": "Pending"});
            }
            Ok(())
        });
    }
    let (dvs, _) = shared.store.list(keys::DATAVOLUMES, None, |d| {
        s(d, "/status/phase") != "Succeeded"
    });
    for dv in dvs {
        busy = true;
        let (ns, name) = (
            s(&dv, "/metadata/namespace").to_string(),
            s(&dv, "/metadata/name").to_string(),
        );
        if shared.store.get(keys::PVCS, &ns, &name).is_none() {
            let _ = shared.store.create(keys::PVCS, pvc_for_dv(&dv));
        }
        let started: f64 = s(&dv, "/metadata/annotations/lab.drover.dev~1started")
            .parse()
            .unwrap_or(f64::NAN);
        let size = crate::sim::quantity::from_json(
            dv.pointer("/spec/storage/resources/requests/storage")
                .or_else(|| dv.pointer("/spec/pvc/resources/requests/storage")),
        )
        .unwrap_or(10.0 * 1073741824.0);
        let uploaded = dv
            .pointer("/metadata/annotations/lab.drover.dev~1uploaded-bytes")
            .is_some();
        let source = dv["spec"]["source"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_else(|| "blank".into());
        let _ = shared.store.modify(keys::DATAVOLUMES, &ns, &name, |d| {
            if started.is_nan() {
                d["metadata"]["annotations"]["lab.drover.dev/started"] = json!(now.to_string());
                d["status"] = json!({"phase": "Pending", "progress": "N/A", "claimName": name});
                return Ok(());
            }
            let elapsed = now - started;
            let (phase, prog) = match source.as_str() {
                "upload" if uploaded => ("Succeeded", progress(1.0)),
                "upload" => (if elapsed < 2.0 { "UploadScheduled" } else { "UploadReady" }, "N/A".to_string()),
                "blank" => if elapsed < 1.0 { ("ImportScheduled", "N/A".into()) } else { ("Succeeded", progress(1.0)) },
                "pvc" => {
                    let total = size / 1073741824.0 * IMPORT_SECS_PER_GIB / 2.0;
                    if elapsed < 1.0 { ("CloneScheduled", "N/A".into()) } else if elapsed - 1.0 < total { ("CloneInProgress", progress((elapsed - 1.0) / total)) } else { ("Succeeded", progress(1.0)) }
                }
                _ => {
                    let total = size / 1073741824.0 * IMPORT_SECS_PER_GIB;
                    if elapsed < 2.0 { ("ImportScheduled", "N/A".into()) } else if elapsed - 2.0 < total { ("ImportInProgress", progress((elapsed - 2.0) / total)) } else { ("Succeeded", progress(1.0)) }
                }
            };
            d["status"]["phase"] = json!(phase);
            d["status"]["progress"] = json!(prog);
            d["status"]["claimName"] = json!(name);
            let done = phase == "Succeeded";
            d["status"]["conditions"] = json!([
                {"type": "Bound", "status": "True", "reason": "Bound", "message": format!("PVC {name} Bound")},
                {"type": "Running", "status": if done { "False" } else { "True" }, "reason": if done { "Completed" } else { "Pod is running" }},
                {"type": "Ready", "status": if done { "True" } else { "False" }}
            ]);
            Ok(())
        });
    }
    let (snaps, _) = shared.store.list(keys::SNAPSHOTS, None, |v| {
        v.pointer("/status/readyToUse") != Some(&json!(true))
    });
    for snap in snaps {
        busy = true;
        let (ns, name) = (
            s(&snap, "/metadata/namespace").to_string(),
            s(&snap, "/metadata/name").to_string(),
        );
        let claim = s(&snap, "/spec/source/persistentVolumeClaimName").to_string();
        let pvc = shared.store.get(keys::PVCS, &ns, &claim);
        let wall = shared.clock.rfc3339();
        let _ = shared.store.modify(keys::SNAPSHOTS, &ns, &name, |v| {
            match &pvc {
                None => {
                    v["status"] = json!({"readyToUse": false, "error": {"time": wall, "message": format!("failed to get input parameters to create snapshot {name}: \"persistentvolumeclaims \\\"{claim}\\\" not found\"")}});
                }
                Some(pvc) => {
                    let uid = s(v, "/metadata/uid").to_string();
                    v["status"] = json!({
                        "boundVolumeSnapshotContentName": format!("snapcontent-{uid}"),
                        "creationTime": wall,
                        "readyToUse": true,
                        "restoreSize": pvc["status"]["capacity"]["storage"].clone()
                    });
                }
            }
            Ok(())
        });
    }
    busy
}

/// Bind a PVC: volume name, capacity, phase.
pub fn bind(p: &mut Value) {
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if p["spec"]["volumeName"].as_str().unwrap_or("").is_empty() {
        p["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
    }
    let size = p
        .pointer("/spec/resources/requests/storage")
        .cloned()
        .unwrap_or(json!("10Gi"));
    p["status"] = json!({"phase": "Bound", "accessModes": p["spec"]["accessModes"].clone(), "capacity": {"storage": size}});
}

/// The PVC CDI creates for a DataVolume.
pub fn pvc_for_dv(dv: &Value) -> Value {
    let spec = dv["spec"]
        .get("storage")
        .or_else(|| dv["spec"].get("pvc"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut pvc_spec = json!({
        "accessModes": spec.get("accessModes").cloned().unwrap_or(json!(["ReadWriteMany"])),
        "volumeMode": spec.get("volumeMode").cloned().unwrap_or(json!("Filesystem")),
        "resources": spec.get("resources").cloned().unwrap_or(json!({"requests": {"storage": "10Gi"}})),
    });
    if let Some(sc) = spec.get("storageClassName") {
        pvc_spec["storageClassName"] = sc.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": dv["metadata"]["name"],
            "namespace": dv["metadata"]["namespace"],
            "labels": {"app": "containerized-data-importer"},
            "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": dv["metadata"]["name"], "uid": dv["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": pvc_spec
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_formats_like_cdi() {
        assert_eq!(super::progress(0.4523), "45.23%");
        assert_eq!(super::progress(1.0), "100.0%");
        assert_eq!(super::progress(0.0), "0.00%");
    }
}
