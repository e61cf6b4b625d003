//! Volume hotplug through virt-api's addvolume/removevolume: the VM template and the VMI gain (or
//! lose) a hotpluggable volume, and the VMI's `volumeStatus` walks Pending -> Bound ->
//! AttachedToNode -> MountedToPod -> Ready (Detaching on removal), as virt-handler reports it.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::kube::resources::keys;
use crate::state::Shared;

const PHASES: &[&str] = &[
    "Pending",
    "Bound",
    "AttachedToNode",
    "MountedToPod",
    "Ready",
];

/// `addvolume` on a VM (`on_vm`) or a VMI.
pub fn add(shared: &Shared, ns: &str, name: &str, opts: &Value, on_vm: bool) -> Result<()> {
    let vol_name = opts.get("name").and_then(Value::as_str).unwrap_or("");
    if vol_name.is_empty() {
        return Err(Error::BadRequest(
            "AddVolumeOptions requires name to be set".into(),
        ));
    }
    let Some(disk) = opts.get("disk").filter(|d| d.is_object()) else {
        return Err(Error::BadRequest(
            "AddVolumeOptions requires disk to not be nil".into(),
        ));
    };
    let Some(source) = opts.get("volumeSource").filter(|d| d.is_object()) else {
        return Err(Error::BadRequest(
            "AddVolumeOptions requires VolumeSource to not be nil".into(),
        ));
    };
    let mut volume = json!({"name": vol_name});
    if let Some(o) = source.as_object() {
        for (k, v) in o {
            let mut v = v.clone();
            v["hotpluggable"] = json!(true);
            volume[k] = v;
        }
    }
    let mut disk = disk.clone();
    disk["name"] = json!(vol_name);
    let exists = |spec: &Value| {
        spec["volumes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v["name"] == vol_name))
    };
    let conflict = || {
        Error::StateConflict(format!(
            "Unable to add volume [{vol_name}] because volume with that name already exists"
        ))
    };
    if on_vm {
        let vm = shared
            .store
            .get(keys::VMS, ns, name)
            .ok_or_else(|| Error::NotFound {
                resource: keys::VMS.into(),
                name: name.into(),
            })?;
        if !vm
            .pointer("/spec/template/spec")
            .is_some_and(Value::is_object)
        {
            return Err(Error::StateConflict(format!(
                "Unable to add volume [{vol_name}]: the VM has no template spec"
            )));
        }
        if exists(&vm["spec"]["template"]["spec"]) {
            return Err(conflict());
        }
        shared.store.modify(keys::VMS, ns, name, |v| {
            if let Some(spec) = v.pointer_mut("/spec/template/spec") {
                push(spec, &volume, &disk);
            }
            Ok(())
        })?;
    }
    if shared.store.get(keys::VMIS, ns, name).is_some() {
        shared.store.modify(keys::VMIS, ns, name, |v| {
            if exists(&v["spec"]) {
                return if on_vm { Ok(()) } else { Err(conflict()) };
            }
            push(&mut v["spec"], &volume, &disk);
            let st =
                json!({"name": vol_name, "target": "", "phase": "Pending", "hotplugVolume": {}});
            match v["status"]["volumeStatus"].as_array_mut() {
                Some(a) => a.push(st),
                None => v["status"]["volumeStatus"] = json!([st]),
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `removevolume` on a VM or a VMI.
pub fn remove(shared: &Shared, ns: &str, name: &str, opts: &Value, on_vm: bool) -> Result<()> {
    let vol_name = opts
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if vol_name.is_empty() {
        return Err(Error::BadRequest(
            "RemoveVolumeOptions requires name to be set".into(),
        ));
    }
    let missing = || {
        Error::StateConflict(format!(
            "Unable to remove volume [{vol_name}] because it does not exist"
        ))
    };
    let strip = |spec: &mut Value| -> bool {
        let mut removed = false;
        if let Some(a) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
            let before = a.len();
            a.retain(|v| v["name"] != vol_name.as_str());
            removed = a.len() != before;
        }
        if let Some(a) = spec
            .pointer_mut("/domain/devices/disks")
            .and_then(Value::as_array_mut)
        {
            a.retain(|v| v["name"] != vol_name.as_str());
        }
        removed
    };
    if on_vm {
        shared.store.modify(keys::VMS, ns, name, |v| {
            if v.pointer_mut("/spec/template/spec").is_some_and(&strip) {
                Ok(())
            } else {
                Err(missing())
            }
        })?;
    }
    if shared.store.get_shared(keys::VMIS, ns, name).is_some() {
        shared.store.modify(keys::VMIS, ns, name, |v| {
            let removed = v.get_mut("spec").is_some_and(strip);
            if !removed && !on_vm {
                return Err(missing());
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn push(spec: &mut Value, volume: &Value, disk: &Value) {
    if !spec.is_object()
        || !spec.get("domain").is_none_or(Value::is_object)
        || !spec.pointer("/domain/devices").is_none_or(Value::is_object)
    {
        return;
    }
    match spec["volumes"].as_array_mut() {
        Some(a) => a.push(volume.clone()),
        None => spec["volumes"] = json!([volume]),
    }
    match spec["domain"]["devices"]["disks"].as_array_mut() {
        Some(a) => a.push(disk.clone()),
        None => spec["domain"]["devices"]["disks"] = json!([disk]),
    }
}

/// Move every hotplugged volume of a VMI one phase forward (called once per simulator pass).
pub fn advance_hotplug(vmi: &mut Value) {
    let name = vmi["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(statuses) = vmi["status"]["volumeStatus"].as_array_mut() else {
        return;
    };
    for st in statuses
        .iter_mut()
        .filter(|s| s.get("hotplugVolume").is_some())
    {
        let cur = st["phase"].as_str().unwrap_or("Pending");
        let idx = PHASES.iter().position(|p| *p == cur).unwrap_or(0);
        if idx + 1 < PHASES.len() {
            st["phase"] = json!(PHASES[idx + 1]);
        }
        if st["phase"] == "Ready" {
            let vol = st["name"].as_str().unwrap_or("").to_string();
            st["reason"] = json!("VolumeReady");
            st["message"] = json!(format!("Successfully attach hotplugged volume {vol} to VM"));
            st["hotplugVolume"] = json!({"attachPodName": format!("hp-volume-{}", &name.chars().take(5).collect::<String>())});
            st["target"] = json!("sda");
        }
    }
}
