//! Storage, simulated: PVCs bind by StorageClass (Portworx sharedv4 RWX, Pure FlashArray block),
//! CDI DataVolumes go through their phases with `progress` as CDI formats it ("45.23%") once their
//! claim is bound (http imports are then `sim::import`'s, uploads the upload proxy's), CSI
//! VolumeSnapshots become `readyToUse`, ResourceQuota status follows the claims (`quota`), and
//! what the garbage collector would delete (a DataVolume of a deleted VM, a claim of a deleted
//! DataVolume) goes.

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::kube::resources::keys;
use crate::sim::quota;
use crate::state::Shared;

/// Simulated seconds a simulated import (s3, registry, ... sources) takes per GiB.
pub const IMPORT_SECS_PER_GIB: f64 = 6.0;
/// Simulated seconds from a DataVolume's claim being bound to its importer (or upload server) pod
/// running.
pub const SCHEDULE_SECS: f64 = 2.0;
/// The size of a DataVolume that asks for none.
pub const DEFAULT_SIZE: f64 = 10.0 * GIB;
const GIB: f64 = 1073741824.0;

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
        let pvc = shared.store.get_shared(keys::PVCS, &ns, &name);
        if pvc.is_none() {
            // CDI creates the claim; the apiserver's quota admission may refuse it.
            let claim = pvc_for_dv(&dv);
            let refused = quota::admit(shared, &claim).err();
            match refused {
                Some(message) => {
                    let _ = shared.store.modify(keys::DATAVOLUMES, &ns, &name, |d| {
                        d["status"]["phase"] = json!("Pending");
                        d["status"]["progress"] = json!("N/A");
                        d["status"]["claimName"] = json!(name);
                        d["status"]["conditions"] = conditions(
                            (
                                "False",
                                "ErrExceededQuota",
                                &format!(
                                    "persistentvolumeclaims \"{name}\" is forbidden: {message}"
                                ),
                            ),
                            ("False", "", ""),
                            false,
                        );
                        Ok(())
                    });
                }
                None => {
                    let _ = shared.store.create(keys::PVCS, claim);
                }
            }
        }
        let bound = pvc.is_some_and(|p| s(&p, "/status/phase") == "Bound");
        let started: f64 = s(&dv, "/metadata/annotations/lab.drover.dev~1started")
            .parse()
            .unwrap_or(f64::NAN);
        if !bound || started.is_nan() {
            // Nothing runs before the claim is bound; the clock starts then.
            let _ = shared.store.modify(keys::DATAVOLUMES, &ns, &name, |d| {
                if bound {
                    d["metadata"]["annotations"]["lab.drover.dev/started"] = json!(now.to_string());
                }
                if d["status"]["conditions"][0]["reason"] == "ErrExceededQuota" && !bound {
                    return Ok(());
                }
                d["status"]["phase"] = json!("Pending");
                d["status"]["progress"] = json!("N/A");
                d["status"]["claimName"] = json!(name);
                let bound_msg = format!("PVC {name} Pending");
                d["status"]["conditions"] =
                    conditions(("False", "Pending", &bound_msg), ("False", "", ""), false);
                Ok(())
            });
            continue;
        }
        let size = requested_bytes(&dv).unwrap_or(DEFAULT_SIZE);
        let uploaded = dv
            .pointer("/metadata/annotations/lab.drover.dev~1uploaded-bytes")
            .is_some();
        let source = source_kind(&dv);
        let elapsed = now - started;
        if source == "http" && elapsed >= SCHEDULE_SECS {
            // The importer (sim::import) fetches the URL and writes the status from here on.
            continue;
        }
        let (phase, prog) = match source.as_str() {
            "upload" if uploaded => ("Succeeded", progress(1.0)),
            "upload" => (
                if elapsed < SCHEDULE_SECS {
                    "UploadScheduled"
                } else {
                    "UploadReady"
                },
                "N/A".to_string(),
            ),
            "http" => ("ImportScheduled", "N/A".to_string()),
            "blank" => {
                if elapsed < 1.0 {
                    ("ImportScheduled", "N/A".into())
                } else {
                    ("Succeeded", progress(1.0))
                }
            }
            "pvc" => {
                let total = size / GIB * IMPORT_SECS_PER_GIB / 2.0;
                if elapsed < 1.0 {
                    ("CloneScheduled", "N/A".into())
                } else if elapsed - 1.0 < total {
                    ("CloneInProgress", progress((elapsed - 1.0) / total))
                } else {
                    ("Succeeded", progress(1.0))
                }
            }
            _ => {
                let total = size / GIB * IMPORT_SECS_PER_GIB;
                if elapsed < SCHEDULE_SECS {
                    ("ImportScheduled", "N/A".into())
                } else if elapsed - SCHEDULE_SECS < total {
                    (
                        "ImportInProgress",
                        progress((elapsed - SCHEDULE_SECS) / total),
                    )
                } else {
                    ("Succeeded", progress(1.0))
                }
            }
        };
        let _ = shared.store.modify(keys::DATAVOLUMES, &ns, &name, |d| {
            if phase == "Succeeded" {
                set_succeeded(d);
                return Ok(());
            }
            d["status"]["phase"] = json!(phase);
            d["status"]["progress"] = json!(prog);
            d["status"]["claimName"] = json!(name);
            let scheduled = phase.ends_with("Scheduled");
            d["status"]["conditions"] = conditions(
                ("True", "Bound", &format!("PVC {name} Bound")),
                if scheduled {
                    ("False", "", "")
                } else {
                    ("True", "Pod is running", "")
                },
                false,
            );
            Ok(())
        });
    }
    collect_garbage(shared);
    quota::refresh(shared);
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

/// The storage a DataVolume asks for, in bytes.
pub fn requested_bytes(dv: &Value) -> Option<f64> {
    crate::sim::quantity::from_json(
        dv.pointer("/spec/storage/resources/requests/storage")
            .or_else(|| dv.pointer("/spec/pvc/resources/requests/storage")),
    )
}

/// The kind of a DataVolume's source (`http`, `upload`, `blank`, `pvc`, `registry`...).
pub fn source_kind(dv: &Value) -> String {
    dv["spec"]["source"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_else(|| "blank".into())
}

/// A DataVolume's conditions: `Bound` and `Running` as (status, reason, message), and `Ready`.
pub fn conditions(bound: (&str, &str, &str), running: (&str, &str, &str), ready: bool) -> Value {
    let cond = |kind: &str, (status, reason, message): (&str, &str, &str)| {
        let mut c = json!({"type": kind, "status": status});
        if !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        if !message.is_empty() {
            c["message"] = json!(message);
        }
        c
    };
    json!([
        cond("Bound", bound),
        cond("Running", running),
        {"type": "Ready", "status": if ready { "True" } else { "False" }}
    ])
}

/// Mark a DataVolume Succeeded (its data is in place).
pub fn set_succeeded(d: &mut Value) {
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !d["status"].is_object() {
        d["status"] = json!({});
    }
    d["status"]["phase"] = json!("Succeeded");
    d["status"]["progress"] = json!(progress(1.0));
    d["status"]["claimName"] = json!(name);
    d["status"]["conditions"] = conditions(
        ("True", "Bound", &format!("PVC {name} Bound")),
        ("False", "Completed", ""),
        true,
    );
}

/// The garbage collector's part the simulation needs: a DataVolume owned by a VirtualMachine that
/// is gone (by uid) goes, and so does a claim owned by a DataVolume that is gone (quota follows).
fn collect_garbage(shared: &Shared) {
    let owner = |o: &Value, kind: &str| -> Option<(String, String)> {
        o.pointer("/metadata/ownerReferences")?
            .as_array()?
            .iter()
            .find(|r| r["kind"] == kind && r["controller"] == true)
            .map(|r| (s(r, "/name").to_string(), s(r, "/uid").to_string()))
    };
    let alive = |resource: &str, ns: &str, (name, uid): &(String, String)| {
        shared
            .store
            .get_shared(resource, ns, name)
            .is_some_and(|o| s(&o, "/metadata/uid") == uid)
    };
    let (dvs, _) = shared.store.list_shared(keys::DATAVOLUMES, None, |d| {
        owner(d, "VirtualMachine").is_some()
    });
    for dv in dvs {
        let ns = s(&dv, "/metadata/namespace");
        if let Some(vm) = owner(&dv, "VirtualMachine")
            && !alive(keys::VMS, ns, &vm)
        {
            let name = s(&dv, "/metadata/name");
            let _ = shared.store.delete(keys::DATAVOLUMES, ns, name);
            shared
                .cdi
                .stop_importer(&(ns.to_string(), name.to_string()));
        }
    }
    let (pvcs, _) = shared
        .store
        .list_shared(keys::PVCS, None, |p| owner(p, "DataVolume").is_some());
    for pvc in pvcs {
        let ns = s(&pvc, "/metadata/namespace");
        if let Some(dv) = owner(&pvc, "DataVolume")
            && !alive(keys::DATAVOLUMES, ns, &dv)
        {
            let _ = shared
                .store
                .delete(keys::PVCS, ns, s(&pvc, "/metadata/name"));
        }
    }
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
