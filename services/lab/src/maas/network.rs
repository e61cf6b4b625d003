//! Inventory endpoints besides machines: resource pools, zones, tags (incl. `machines` and
//! `update_nodes`), fabrics, VLANs, subnets, and machine interfaces with `create_bond`,
//! `create_bridge`, `create_vlan`, `create_physical`, `link_subnet` and `unlink_subnet`.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::maas::form::Params;
use crate::maas::model::{Interface, Named, Region, Status, Vlan};

fn nf(kind: &str) -> Error {
    Error::NotFound {
        resource: kind.into(),
        name: String::new(),
    }
}

fn required(p: &Params, key: &str) -> Result<String> {
    p.get(key)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .ok_or_else(|| Error::Validation(json!({key: ["This field is required."]})))
}

/// `GET resourcepools/`, `zones/`, `tags/`, `fabrics/`, `subnets/`.
pub fn list(r: &Region, what: &str) -> Value {
    match what {
        "resourcepools" => Value::Array(r.pools.iter().map(|x| r.pool_json(x)).collect()),
        "zones" => Value::Array(r.zones.iter().map(|x| r.zone_json(x)).collect()),
        "tags" => Value::Array(r.tags.iter().map(|x| r.tag_json(x)).collect()),
        "fabrics" => Value::Array(r.fabrics.iter().map(|x| r.fabric_json(x)).collect()),
        _ => Value::Array(r.subnets.iter().map(|x| r.subnet_json(x)).collect()),
    }
}

/// Create a pool, zone or tag.
pub fn create_named(r: &mut Region, what: &str, p: &Params) -> Result<Value> {
    let name = required(p, "name")?;
    let description = p
        .get("description")
        .or_else(|| p.get("comment"))
        .unwrap_or("")
        .to_string();
    let (list, label) = match what {
        "resourcepools" => (&mut r.pools, "Resource pool"),
        "zones" => (&mut r.zones, "Zone"),
        _ => (&mut r.tags, "Tag"),
    };
    if list.iter().any(|x| x.name == name) {
        return Err(Error::Validation(
            json!({"name": [format!("{label} with this Name already exists.")]}),
        ));
    }
    let id = list.iter().map(|x| x.id).max().unwrap_or(0) + 1;
    let n = Named {
        id,
        name,
        description,
    };
    list.push(n.clone());
    Ok(match what {
        "resourcepools" => r.pool_json(&n),
        "zones" => r.zone_json(&n),
        _ => r.tag_json(&n),
    })
}

/// `GET resourcepool/{id}/`.
pub fn pool(r: &Region, id: &str) -> Result<Value> {
    r.pools
        .iter()
        .find(|p| p.id.to_string() == id)
        .map(|p| r.pool_json(p))
        .ok_or_else(|| nf("ResourcePool"))
}

/// `GET zones/{name}/`.
pub fn zone(r: &Region, name: &str) -> Result<Value> {
    r.zones
        .iter()
        .find(|p| p.name == name)
        .map(|p| r.zone_json(p))
        .ok_or_else(|| nf("Zone"))
}

/// `GET tags/{name}/` and its ops.
pub fn tag(r: &mut Region, name: &str, op: Option<&str>, p: &Params) -> Result<Value> {
    let Some(t) = r.tags.iter().find(|t| t.name == name).cloned() else {
        return Err(nf("Tag"));
    };
    match op {
        None => Ok(r.tag_json(&t)),
        Some("machines" | "nodes") => Ok(Value::Array(
            r.machines
                .iter()
                .filter(|m| m.tags.contains(&t.name))
                .map(|m| r.machine_json(m))
                .collect(),
        )),
        Some("update_nodes") => {
            let (mut added, mut removed) = (0, 0);
            for id in p.all("add") {
                let m = r.machine_mut(&id).ok_or_else(|| nf("Machine"))?;
                if !m.tags.contains(&t.name) {
                    m.tags.push(t.name.clone());
                    added += 1;
                }
            }
            for id in p.all("remove") {
                let m = r.machine_mut(&id).ok_or_else(|| nf("Machine"))?;
                let before = m.tags.len();
                m.tags.retain(|x| x != &t.name);
                removed += before - m.tags.len();
            }
            Ok(json!({"added": added, "removed": removed}))
        }
        Some(op) => Err(Error::BadRequest(format!(
            "Unrecognised signature: method=GET op={op}"
        ))),
    }
}

/// `GET fabrics/{id}/`.
pub fn fabric(r: &Region, id: &str) -> Result<Value> {
    r.fabrics
        .iter()
        .find(|f| f.id.to_string() == id)
        .map(|f| r.fabric_json(f))
        .ok_or_else(|| nf("Fabric"))
}

/// `GET`/`POST fabrics/{id}/vlans/`.
pub fn vlans(r: &mut Region, fabric_id: &str, create: Option<&Params>) -> Result<Value> {
    let fabric = r
        .fabrics
        .iter()
        .find(|f| f.id.to_string() == fabric_id)
        .cloned()
        .ok_or_else(|| nf("Fabric"))?;
    if let Some(p) = create {
        let vid: u32 = required(p, "vid")?
            .parse()
            .map_err(|_| Error::Validation(json!({"vid": ["VID must be between 0 and 4094."]})))?;
        if vid > 4094 {
            return Err(Error::Validation(
                json!({"vid": ["VID must be between 0 and 4094."]}),
            ));
        }
        if r.vlans
            .iter()
            .any(|v| v.fabric_id == fabric.id && v.vid == vid)
        {
            return Err(Error::Validation(
                json!({"__all__": ["VLAN with this Vid and Fabric already exists."]}),
            ));
        }
        let id = r.vlans.iter().map(|v| v.id).max().unwrap_or(5000) + 1;
        let v = Vlan {
            id,
            fabric_id: fabric.id,
            vid,
            name: p.get("name").unwrap_or(&vid.to_string()).to_string(),
            mtu: p.get("mtu").and_then(|m| m.parse().ok()).unwrap_or(1500),
            dhcp_on: false,
        };
        r.vlans.push(v.clone());
        return Ok(r.vlan_json(&v));
    }
    Ok(Value::Array(
        r.vlans
            .iter()
            .filter(|v| v.fabric_id == fabric.id)
            .map(|v| r.vlan_json(v))
            .collect(),
    ))
}

/// `GET`/`PUT fabrics/{id}/vlans/{vid}/`.
pub fn vlan(r: &mut Region, fabric_id: &str, vid: &str, update: Option<&Params>) -> Result<Value> {
    let v = r
        .vlans
        .iter_mut()
        .find(|v| v.fabric_id.to_string() == fabric_id && v.vid.to_string() == vid)
        .ok_or_else(|| nf("VLAN"))?;
    if let Some(p) = update {
        if let Some(m) = p.get("mtu").and_then(|m| m.parse().ok()) {
            v.mtu = m;
        }
        if let Some(n) = p.get("name") {
            v.name = n.to_string();
        }
        if p.get("dhcp_on").is_some() {
            v.dhcp_on = p.flag("dhcp_on");
        }
    }
    let v = v.clone();
    Ok(r.vlan_json(&v))
}

/// `GET subnets/{id}/`.
pub fn subnet(r: &Region, id: &str) -> Result<Value> {
    r.subnets
        .iter()
        .find(|s| s.id.to_string() == id || s.cidr == id)
        .map(|s| r.subnet_json(s))
        .ok_or_else(|| nf("Subnet"))
}

/// `GET nodes/{system_id}/interfaces/` and the create ops.
pub fn interfaces(r: &mut Region, system_id: &str, op: Option<&str>, p: &Params) -> Result<Value> {
    let m = r.machine(system_id).cloned().ok_or_else(|| nf("Machine"))?;
    let Some(op) = op else {
        return Ok(Value::Array(
            m.interfaces
                .iter()
                .map(|i| r.interface_json(&m, i))
                .collect(),
        ));
    };
    if !matches!(
        m.status,
        Status::New | Status::Ready | Status::Allocated | Status::Broken
    ) {
        return Err(Error::StateConflict(format!(
            "Cannot {} interface because the machine is not New, Ready, Allocated, or Broken.",
            op.replace('_', " ")
        )));
    }
    let by_id = |id: &str| {
        m.interfaces
            .iter()
            .find(|i| i.id.to_string() == id || i.name == id)
            .cloned()
    };
    let parents: Vec<Interface> = p
        .all("parents")
        .iter()
        .chain(p.all("parent").iter())
        .filter_map(|id| by_id(id))
        .collect();
    let id = r.next_id;
    let mut iface = Interface {
        id,
        name: p.get("name").unwrap_or("").to_string(),
        kind: String::new(),
        mac: String::new(),
        vlan_id: 5001,
        parents: parents.iter().map(|i| i.name.clone()).collect(),
        params: json!({}),
        links: Vec::new(),
        tags: p.all("tags"),
    };
    match op {
        "create_bond" | "create_bridge" => {
            if op == "create_bridge" && p.get("parent").is_some() && p.get("parents").is_some() {
                return Err(Error::BadRequest(
                    "Cannot specify both parent and parents fields.".into(),
                ));
            }
            required(p, "name")?;
            if parents.is_empty() {
                return Err(Error::Validation(
                    json!({"parents": ["A bond interface must have one or more parents."]}),
                ));
            }
            iface.kind = if op == "create_bond" {
                "bond".into()
            } else {
                "bridge".into()
            };
            iface.mac = p
                .get("mac_address")
                .map(String::from)
                .unwrap_or_else(|| parents[0].mac.clone());
            iface.vlan_id = p
                .get("vlan")
                .and_then(|v| v.parse().ok())
                .unwrap_or(parents[0].vlan_id);
            iface.params = if op == "create_bond" {
                json!({
                    "bond_mode": p.get("bond_mode").unwrap_or("active-backup"),
                    "bond_miimon": p.get("bond_miimon").and_then(|x| x.parse::<u32>().ok()).unwrap_or(100),
                    "bond_downdelay": 0, "bond_updelay": 0,
                    "bond_lacp_rate": p.get("bond_lacp_rate").unwrap_or("slow"),
                    "bond_xmit_hash_policy": p.get("bond_xmit_hash_policy").unwrap_or("layer2"),
                    "bond_num_grat_arp": 1
                })
            } else {
                json!({"bridge_type": p.get("bridge_type").unwrap_or("standard"), "bridge_stp": p.flag("bridge_stp"), "bridge_fd": p.get("bridge_fd").and_then(|x| x.parse::<u32>().ok()).unwrap_or(15)})
            };
        }
        "create_vlan" => {
            let vlan_id: u64 = required(p, "vlan")?
                .parse()
                .map_err(|_| Error::Validation(json!({"vlan": ["Select a valid choice."]})))?;
            let vlan = r.vlans.iter().find(|v| v.id == vlan_id).cloned().ok_or_else(|| Error::Validation(json!({"vlan": ["Select a valid choice. That choice is not one of the available choices."]})))?;
            let parent = parents
                .first()
                .cloned()
                .ok_or_else(|| Error::Validation(json!({"parent": ["This field is required."]})))?;
            iface.kind = "vlan".into();
            iface.name = format!("{}.{}", parent.name, vlan.vid);
            iface.mac = parent.mac.clone();
            iface.vlan_id = vlan.id;
        }
        "create_physical" => {
            iface.kind = "physical".into();
            iface.mac = required(p, "mac_address")?;
            if iface.name.is_empty() {
                iface.name = format!("eth{}", m.interfaces.len());
            }
        }
        other => {
            return Err(Error::BadRequest(format!(
                "Unrecognised signature: method=POST op={other}"
            )));
        }
    }
    if m.interfaces.iter().any(|i| i.name == iface.name) {
        return Err(Error::Validation(
            json!({"name": [format!("Interface with this name already exists on {}.", m.hostname)]}),
        ));
    }
    r.next_id += 1;
    let machine = r.machine_mut(system_id).ok_or_else(|| nf("Machine"))?;
    machine.interfaces.push(iface.clone());
    let machine = machine.clone();
    Ok(r.interface_json(&machine, &iface))
}

/// `nodes/{system_id}/interfaces/{id}/`: read, delete, `link_subnet`, `unlink_subnet`.
pub fn interface(
    r: &mut Region,
    system_id: &str,
    iid: &str,
    method: &str,
    op: Option<&str>,
    p: &Params,
) -> Result<Value> {
    let m = r.machine(system_id).cloned().ok_or_else(|| nf("Machine"))?;
    let iface = m
        .interfaces
        .iter()
        .find(|i| i.id.to_string() == iid)
        .cloned()
        .ok_or_else(|| nf("Interface"))?;
    if method == "GET" && op.is_none() {
        return Ok(r.interface_json(&m, &iface));
    }
    if !matches!(
        m.status,
        Status::New | Status::Ready | Status::Allocated | Status::Broken
    ) {
        let what = op.unwrap_or("update").replace('_', " ");
        return Err(Error::StateConflict(format!(
            "Cannot {what} interface because the machine is not New, Ready, Allocated, or Broken."
        )));
    }
    let next = r.next_id;
    let subnets = r.subnets.clone();
    let machine = r.machine_mut(system_id).ok_or_else(|| nf("Machine"))?;
    match (method, op) {
        ("DELETE", None) => {
            machine.interfaces.retain(|i| i.id != iface.id);
            return Ok(Value::Null);
        }
        ("POST", Some("link_subnet")) => {
            let mode = required(p, "mode")?.to_lowercase();
            if !matches!(mode.as_str(), "auto" | "dhcp" | "static" | "link_up") {
                return Err(Error::Validation(
                    json!({"mode": [format!("Select a valid choice. {mode} is not one of the available choices.")]}),
                ));
            }
            let subnet: u64 = required(p, "subnet")?
                .parse()
                .map_err(|_| Error::Validation(json!({"subnet": ["Select a valid choice."]})))?;
            if !subnets.iter().any(|s| s.id == subnet) {
                return Err(Error::Validation(
                    json!({"subnet": ["Select a valid choice. That choice is not one of the available choices."]}),
                ));
            }
            let ip = p.get("ip_address").unwrap_or("").to_string();
            if let Some(i) = machine.interfaces.iter_mut().find(|i| i.id == iface.id) {
                i.links.push((next, mode, subnet, ip));
            }
        }
        ("POST", Some("unlink_subnet")) => {
            let link: u64 = required(p, "id")?.parse().unwrap_or(0);
            if let Some(i) = machine.interfaces.iter_mut().find(|i| i.id == iface.id) {
                let before = i.links.len();
                i.links.retain(|l| l.0 != link);
                if before == i.links.len() {
                    return Err(Error::Validation(
                        json!({"id": [format!("Select a valid choice. {link} is not one of the available choices.")]}),
                    ));
                }
            }
        }
        ("POST", Some("disconnect")) => {
            if let Some(i) = machine.interfaces.iter_mut().find(|i| i.id == iface.id) {
                i.links.clear();
            }
        }
        ("PUT", None) => {
            if let Some(i) = machine.interfaces.iter_mut().find(|i| i.id == iface.id) {
                if let Some(n) = p.get("name") {
                    i.name = n.to_string();
                }
                if let Some(v) = p.get("vlan").and_then(|v| v.parse().ok()) {
                    i.vlan_id = v;
                }
            }
        }
        (m, Some(op)) => {
            return Err(Error::BadRequest(format!(
                "Unrecognised signature: method={m} op={op}"
            )));
        }
        _ => return Err(Error::MethodNotAllowed),
    }
    r.next_id += 1;
    let m = r.machine(system_id).cloned().ok_or_else(|| nf("Machine"))?;
    let iface = m
        .interfaces
        .iter()
        .find(|i| i.id == iface.id)
        .cloned()
        .ok_or_else(|| nf("Interface"))?;
    Ok(r.interface_json(&m, &iface))
}
