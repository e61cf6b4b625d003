//! Inventory endpoints besides machines: resource pools, zones, tags (incl. `machines` and
//! `update_nodes`), fabrics, VLANs and subnets. Machine interfaces are `interfaces.rs`.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::maas::form::Params;
use crate::maas::model::{Named, Region, Vlan};

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
