//! A machine's interfaces, `nodes/{system_id}/interfaces/`, with MAAS's forms and messages
//! (`api/interfaces.py`, `forms/interface.py`, `forms/interface_link.py`): list, read,
//! `create_physical`, `create_bond`, `create_bridge`, `create_vlan`, update, delete (204),
//! `link_subnet`, `unlink_subnet`, `disconnect`, `add_tag`, `remove_tag`, `set_default_gateway`.
//! Changes are refused with 409 unless the machine is New, Ready, Allocated or Broken (an
//! update also while Deployed); parents are checked (on this machine, not already in a bond or
//! bridge, bonds' parents on one VLAN, bridges and VLANs with exactly one parent).

use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::maas::form::{Errors, Params};
use crate::maas::model::{Interface, Machine, Region, Status};

const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
];
const LACP_RATES: &[&str] = &["fast", "slow"];
const XMIT_HASH_POLICIES: &[&str] = &["layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4"];
const BRIDGE_TYPES: &[&str] = &["standard", "ovs"];
const LINK_MODES: &[&str] = &["auto", "dhcp", "static", "link_up"];

fn nf(kind: &str) -> Error {
    Error::NotFound {
        resource: kind.into(),
        name: String::new(),
    }
}

/// `compose_invalid_choice_text`.
fn invalid_choice_of(what: &str, value: &str, choices: &[&str]) -> String {
    let valid: Vec<String> = choices.iter().map(|c| format!("'{c}'")).collect();
    format!(
        "'{value}' is not a valid {what}.  It should be one of: {}.",
        valid.join(", ")
    )
}

/// MAAS's 409 when the machine is in the wrong state for `operation`.
fn check_state(m: &Machine, operation: &str, deployed_too: bool) -> Result<()> {
    let ok = matches!(
        m.status,
        Status::New | Status::Ready | Status::Allocated | Status::Broken
    ) || (deployed_too && m.status == Status::Deployed);
    if ok {
        Ok(())
    } else {
        Err(Error::StateConflict(format!(
            "Cannot {operation} interface because the machine is not New, Ready, Allocated, or Broken."
        )))
    }
}

fn machine(r: &Region, system_id: &str) -> Result<(usize, Machine)> {
    let i = r.index(system_id)?;
    Ok((i, r.machines[i].clone()))
}

/// Children of the interface named `name` (interfaces that list it as a parent).
fn children<'a>(m: &'a Machine, name: &str) -> impl Iterator<Item = &'a Interface> {
    m.interfaces
        .iter()
        .filter(move |c| c.parents.iter().any(|p| p == name))
}

/// `GET nodes/{system_id}/interfaces/`.
pub fn list(r: &Region, system_id: &str) -> Result<Value> {
    let (_, m) = machine(r, system_id)?;
    Ok(Value::Array(
        m.interfaces
            .iter()
            .map(|i| r.interface_json(&m, i))
            .collect(),
    ))
}

/// The first subnet on a VLAN (what a new interface's LINK_UP link points at).
fn subnet_of_vlan(r: &Region, vlan_id: u64) -> u64 {
    r.subnets
        .iter()
        .find(|s| s.vlan_id == vlan_id)
        .map_or(0, |s| s.id)
}

/// `POST nodes/{system_id}/interfaces/?op=create_{physical,bond,bridge,vlan}`.
pub fn create(r: &mut Region, system_id: &str, op: &str, p: &Params) -> Result<Value> {
    let (mi, m) = machine(r, system_id)?;
    let operation = match op {
        "create_physical" => "create",
        "create_bond" => "create bond",
        "create_bridge" => "create bridge",
        "create_vlan" => "create VLAN",
        other => {
            return Err(Error::BadRequest(format!(
                "Unrecognised signature: method=POST op={other}"
            )));
        }
    };
    check_state(&m, operation, false)?;
    if op == "create_bridge" && p.get("parent").is_some() && p.get("parents").is_some() {
        return Err(Error::BadRequest(
            "Cannot specify both parent and parents fields.".into(),
        ));
    }
    let mut errors = Errors::default();
    // Bridges and VLANs take `parent`, reported back under `parent`.
    let (parent_field, raw_parents): (&str, Vec<String>) = match op {
        "create_bond" | "create_physical" => ("parents", p.all("parents")),
        _ if p.get("parent").is_some() => ("parent", p.all("parent")),
        _ => ("parent", p.all("parents")),
    };
    let mut parents: Vec<Interface> = Vec::new();
    for v in &raw_parents {
        match m.interfaces.iter().find(|i| i.id.to_string() == *v) {
            Some(i) => parents.push(i.clone()),
            None => errors.add(
                parent_field,
                format!("Select a valid choice. {v} is not one of the available choices."),
            ),
        }
    }
    let vlan_param = p.get("vlan").filter(|v| !v.is_empty());
    let vlan = match vlan_param {
        None => None,
        Some(v) => match v
            .parse::<u64>()
            .ok()
            .and_then(|id| r.vlans.iter().find(|x| x.id == id))
        {
            Some(vlan) => Some(vlan.clone()),
            None => {
                errors.add(
                    "vlan",
                    "Select a valid choice. That choice is not one of the available choices.",
                );
                None
            }
        },
    };
    let mtu = match p.get("mtu").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(x) if x >= 552 => Some(x),
            Ok(_) => {
                errors.add("mtu", "Ensure this value is greater than or equal to 552.");
                None
            }
            Err(_) => {
                errors.add("mtu", "Enter a whole number.");
                None
            }
        },
    };
    let name = p.get("name").unwrap_or("").to_string();
    let id = r.next_id;
    let mut iface = Interface {
        id,
        name: name.clone(),
        kind: String::new(),
        mac: p.get("mac_address").unwrap_or("").to_string(),
        vlan_id: 0,
        parents: parents.iter().map(|i| i.name.clone()).collect(),
        params: json!({}),
        links: Vec::new(),
        tags: p.all("tags"),
    };
    let in_use = |allow_vlan_children: bool| -> Vec<String> {
        let mut v: Vec<String> = parents
            .iter()
            .filter(|par| {
                children(&m, &par.name).any(|c| !(allow_vlan_children && c.kind == "vlan"))
            })
            .map(|par| par.name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    match op {
        "create_physical" => {
            iface.kind = "physical".into();
            if iface.mac.is_empty() {
                errors.add("mac_address", "This field is required.");
            }
            if !parents.is_empty() {
                errors.add("parents", "A physical interface cannot have parents.");
            }
            if iface.name.is_empty() {
                iface.name = format!("eth{}", m.interfaces.len());
            }
            iface.vlan_id = vlan.as_ref().map_or(0, |v| v.id);
        }
        "create_bond" => {
            iface.kind = "bond".into();
            if name.is_empty() {
                errors.add("name", "This field is required.");
            }
            if raw_parents.is_empty() {
                errors.add("parents", "A bond interface must have one or more parents.");
            }
            let mut params = Map::new();
            for (field, choices, default) in [
                ("bond_mode", BOND_MODES, "active-backup"),
                ("bond_lacp_rate", LACP_RATES, "slow"),
                ("bond_xmit_hash_policy", XMIT_HASH_POLICIES, "layer2"),
            ] {
                let v = p.get(field).filter(|v| !v.is_empty()).unwrap_or(default);
                if !choices.contains(&v) {
                    errors.add(field, invalid_choice_of(field, v, choices));
                }
                params.insert(field.into(), json!(v));
            }
            for (field, default, max) in [
                ("bond_miimon", 100u64, u64::MAX),
                ("bond_downdelay", 0, u64::MAX),
                ("bond_updelay", 0, u64::MAX),
                ("bond_num_grat_arp", 1, 255),
            ] {
                let v = match p.get(field).filter(|v| !v.is_empty()) {
                    None => default,
                    Some(v) => match v.parse::<u64>() {
                        Ok(x) if x <= max => x,
                        Ok(_) => {
                            errors.add(
                                field,
                                format!("Ensure this value is less than or equal to {max}."),
                            );
                            default
                        }
                        Err(_) => {
                            errors.add(field, "Enter a whole number.");
                            default
                        }
                    },
                };
                params.insert(field.into(), json!(v));
            }
            iface.params = Value::Object(params);
            if !errors.has("parents") && !parents.is_empty() {
                let busy = in_use(false);
                if !busy.is_empty() {
                    errors.add(
                        "parents",
                        format!("Interfaces already in-use: {}.", busy.join(", ")),
                    );
                }
                let first_vlan = parents[0].vlan_id;
                iface.vlan_id = vlan.as_ref().map_or(first_vlan, |v| v.id);
                if parents.iter().any(|par| par.vlan_id != iface.vlan_id) {
                    errors.add("parents", "All parents must belong to the same VLAN.");
                }
            }
        }
        "create_bridge" => {
            iface.kind = "bridge".into();
            if name.is_empty() {
                errors.add("name", "This field is required.");
            }
            let bridge_type = p
                .get("bridge_type")
                .filter(|v| !v.is_empty())
                .unwrap_or("standard");
            if !BRIDGE_TYPES.contains(&bridge_type) {
                errors.add(
                    "bridge_type",
                    invalid_choice_of("bridge_type", bridge_type, BRIDGE_TYPES),
                );
            }
            let bridge_fd = match p.get("bridge_fd").filter(|v| !v.is_empty()) {
                None => 15,
                Some(v) => v.parse::<u64>().unwrap_or_else(|_| {
                    errors.add("bridge_fd", "Enter a whole number.");
                    15
                }),
            };
            iface.params = json!({"bridge_type": bridge_type, "bridge_stp": p.flag("bridge_stp"), "bridge_fd": bridge_fd});
            if !errors.has("parent") {
                if parents.len() != 1 {
                    errors.add("parent", "A bridge interface must have exactly one parent.");
                } else if parents[0].kind == "bridge" {
                    errors.add(
                        "parent",
                        "A bridge interface can't have another bridge interface as parent.",
                    );
                } else if children(&m, &parents[0].name)
                    .any(|c| c.kind == "bond" || c.kind == "bridge")
                {
                    errors.add(
                        "parent",
                        "A bridge interface can't have a parent that is already in a bond or a bridge.",
                    );
                } else {
                    let busy = in_use(true);
                    if !busy.is_empty() {
                        errors.add(
                            "parent",
                            format!("Interfaces already in-use: {}.", busy.join(", ")),
                        );
                    }
                }
            }
            // An allocated machine's bridge always sits on its parent's VLAN.
            iface.vlan_id = match (&vlan, parents.first()) {
                (Some(v), _) if m.status != Status::Allocated => v.id,
                (_, Some(par)) => par.vlan_id,
                (Some(v), None) => v.id,
                (None, None) => 0,
            };
        }
        _ => {
            iface.kind = "vlan".into();
            if vlan_param.is_none() {
                errors.add(
                    "vlan",
                    "A VLAN interface must be connected to a tagged VLAN.",
                );
            }
            if !errors.has("parent") {
                if parents.len() != 1 {
                    errors.add("parent", "A VLAN interface must have exactly one parent.");
                } else if parents[0].kind == "vlan" {
                    errors.add(
                        "parent",
                        "A VLAN interface can't have another VLAN interface as parent.",
                    );
                } else if children(&m, &parents[0].name).any(|c| c.kind == "bond") {
                    errors.add(
                        "parent",
                        "A VLAN interface can't have a parent that is already in a bond.",
                    );
                }
            }
            if let Some(v) = &vlan {
                if v.vid == 0 {
                    errors.add("vlan", "A VLAN interface can only belong to a tagged VLAN.");
                } else if let Some(par) = parents.first() {
                    let parent_fabric = r
                        .vlans
                        .iter()
                        .find(|x| x.id == par.vlan_id)
                        .map(|x| x.fabric_id);
                    if parent_fabric.is_some_and(|f| f != v.fabric_id) {
                        errors.add(
                            "vlan",
                            "A VLAN interface can only belong to a tagged VLAN on the same fabric as its parent interface.",
                        );
                    }
                    iface.name = format!("{}.{}", par.name, v.vid);
                    iface.mac = par.mac.clone();
                }
                iface.vlan_id = v.id;
            }
        }
    }
    if iface.kind == "bond" || iface.kind == "bridge" {
        if iface.mac.is_empty()
            && let Some(par) = parents.first()
        {
            iface.mac = par.mac.clone();
        }
        if let Some(v) = &vlan
            && iface.kind == "bond"
        {
            iface.vlan_id = v.id;
        }
    }
    if !iface.name.is_empty() && m.interfaces.iter().any(|i| i.name == iface.name) {
        let domain = &r.settings.domain;
        errors.add(
            "name",
            format!(
                "Node {} ({}.{domain}) already has an interface named '{}'.",
                m.system_id, m.hostname, iface.name
            ),
        );
    }
    errors.into_result()?;
    if let Some(mtu) = mtu {
        iface.params["mtu"] = json!(mtu);
    }
    // A new interface is brought up without an address (`ensure_link_up`).
    r.next_id += 2;
    iface.links = vec![(
        id + 1,
        "link_up".into(),
        subnet_of_vlan(r, iface.vlan_id),
        String::new(),
    )];
    r.machines[mi].interfaces.push(iface.clone());
    let m = r.machines[mi].clone();
    Ok(r.interface_json(&m, &iface))
}

/// `DELETE nodes/{system_id}/interfaces/{id}/`: the interface and its VLAN children go; bonds
/// and bridges on it lose it as a parent.
pub fn delete(r: &mut Region, system_id: &str, iid: &str) -> Result<()> {
    let (mi, m) = machine(r, system_id)?;
    let iface = m
        .interfaces
        .iter()
        .find(|i| i.id.to_string() == iid)
        .cloned()
        .ok_or_else(|| nf("Interface"))?;
    check_state(&m, "delete interface", false)?;
    let mut gone = vec![iface.name.clone()];
    let mut k = 0;
    while k < gone.len() {
        let name = gone[k].clone();
        for c in children(&m, &name) {
            if c.kind == "vlan" && !gone.contains(&c.name) {
                gone.push(c.name.clone());
            }
        }
        k += 1;
    }
    let machine = &mut r.machines[mi];
    machine.interfaces.retain(|i| !gone.contains(&i.name));
    for i in machine.interfaces.iter_mut() {
        i.parents.retain(|p| !gone.contains(p));
    }
    Ok(())
}

fn in_subnet(ip: Ipv4Addr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits.min(32))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Every static address in use on the region's machines.
fn addresses_in_use(r: &Region) -> Vec<String> {
    r.machines
        .iter()
        .flat_map(|m| m.interfaces.iter())
        .flat_map(|i| i.links.iter())
        .filter(|l| !l.3.is_empty())
        .map(|l| l.3.clone())
        .chain(r.machines.iter().map(|m| m.ip.clone()))
        .collect()
}

/// `nodes/{system_id}/interfaces/{id}/`: read, update (PUT), and the interface ops.
pub fn interface(
    r: &mut Region,
    system_id: &str,
    iid: &str,
    method: &str,
    op: Option<&str>,
    p: &Params,
) -> Result<Value> {
    let (mi, m) = machine(r, system_id)?;
    let iface = m
        .interfaces
        .iter()
        .find(|i| i.id.to_string() == iid)
        .cloned()
        .ok_or_else(|| nf("Interface"))?;
    let operation = match (method, op) {
        ("GET", None) => return Ok(r.interface_json(&m, &iface)),
        ("PUT", None) => "update interface",
        ("POST", Some("link_subnet")) => "link subnet",
        ("POST", Some("unlink_subnet")) => "unlink subnet",
        ("POST", Some("disconnect")) => "disconnect",
        ("POST", Some("set_default_gateway")) => "set default gateway",
        ("POST", Some("add_tag" | "remove_tag")) => "",
        (m, Some(op)) => {
            return Err(Error::BadRequest(format!(
                "Unrecognised signature: method={m} op={op}"
            )));
        }
        _ => return Err(Error::MethodNotAllowed),
    };
    if !operation.is_empty() {
        check_state(&m, operation, operation == "update interface")?;
    }
    let next = r.next_id;
    let subnets = r.subnets.clone();
    let used = addresses_in_use(r);
    let vlan_ids: Vec<u64> = r.vlans.iter().map(|v| v.id).collect();
    let link_up_subnet = subnet_of_vlan(r, iface.vlan_id);
    let mut errors = Errors::default();
    let mut i = iface.clone();
    match op {
        Some("link_subnet") => {
            let mode = p.get("mode").unwrap_or("").to_lowercase();
            if mode.is_empty() {
                errors.add("mode", "This field is required.");
            } else if !LINK_MODES.contains(&mode.as_str()) {
                errors.add(
                    "mode",
                    format!("Select a valid choice. {mode} is not one of the available choices."),
                );
            }
            let subnet = match p.get("subnet").filter(|s| !s.is_empty()) {
                None => {
                    if matches!(mode.as_str(), "auto" | "static") {
                        errors.add("subnet", "This field is required.");
                    }
                    None
                }
                Some(v) => match subnets
                    .iter()
                    .find(|s| s.id.to_string() == v || s.cidr == v)
                {
                    Some(s) => Some(s.clone()),
                    None => {
                        errors.add(
                            "subnet",
                            "Select a valid choice. That choice is not one of the available choices.",
                        );
                        None
                    }
                },
            };
            let mut ip = p.get("ip_address").unwrap_or("").to_string();
            if mode == "static"
                && let Some(s) = &subnet
            {
                if ip.is_empty() {
                    // MAAS picks a free address in the subnet.
                    ip = (10..250u32)
                        .filter_map(|host| {
                            let base: Ipv4Addr = s.cidr.split('/').next()?.parse().ok()?;
                            Some(Ipv4Addr::from(u32::from(base) + 256 * 2 + host).to_string())
                        })
                        .find(|a| !used.contains(a))
                        .unwrap_or_default();
                } else {
                    match ip.parse::<Ipv4Addr>() {
                        Err(_) => errors.add("ip_address", "Enter a valid IPv4 or IPv6 address."),
                        Ok(a) if !in_subnet(a, &s.cidr) => errors.add(
                            "ip_address",
                            format!("IP address is not in the given subnet '{}'.", s.cidr),
                        ),
                        Ok(_) if used.contains(&ip) => {
                            errors.add("ip_address", "IP address is already in use.")
                        }
                        Ok(_) => {}
                    }
                }
            } else if !ip.is_empty() && mode != "static" {
                ip.clear();
            }
            if mode == "dhcp" && i.links.iter().any(|l| l.1 == "dhcp") {
                errors.add("mode", "Interface can only have one DHCP link.");
            }
            errors.into_result()?;
            if mode == "link_up" {
                i.links.clear();
            } else {
                i.links.retain(|l| l.1 != "link_up");
            }
            i.links.push((next, mode, subnet.map_or(0, |s| s.id), ip));
            r.next_id += 1;
        }
        Some("unlink_subnet") => {
            let link = p.get("id").unwrap_or("");
            if link.is_empty() {
                errors.add("id", "This field is required.");
            } else if !i.links.iter().any(|l| l.0.to_string() == link) {
                errors.add(
                    "id",
                    format!("Select a valid choice. {link} is not one of the available choices."),
                );
            }
            errors.into_result()?;
            i.links.retain(|l| l.0.to_string() != link);
            if i.links.is_empty() {
                i.links
                    .push((next, "link_up".into(), link_up_subnet, String::new()));
                r.next_id += 1;
            }
        }
        Some("disconnect") => {
            i.links.clear();
            i.vlan_id = 0;
        }
        Some(tag_op @ ("add_tag" | "remove_tag")) => {
            let tag = p
                .get("tag")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Validation(json!({"tag": ["This field is required."]})))?;
            if tag_op == "add_tag" {
                if !i.tags.iter().any(|t| t == tag) {
                    i.tags.push(tag.to_string());
                }
            } else {
                i.tags.retain(|t| t != tag);
            }
        }
        Some(_) => {}
        None => {
            if let Some(n) = p.get("name") {
                if n.is_empty() {
                    errors.add("name", "This field cannot be blank.");
                } else if m.interfaces.iter().any(|x| x.name == n && x.id != i.id) {
                    let domain = &r.settings.domain;
                    errors.add(
                        "name",
                        format!(
                            "Node {} ({}.{domain}) already has an interface named '{n}'.",
                            m.system_id, m.hostname
                        ),
                    );
                }
            }
            let vlan = p.get("vlan").filter(|v| !v.is_empty());
            if m.status != Status::Deployed
                && let Some(v) = vlan
            {
                match v.parse::<u64>().ok().filter(|id| vlan_ids.contains(id)) {
                    Some(id) => i.vlan_id = id,
                    None => errors.add(
                        "vlan",
                        "Select a valid choice. That choice is not one of the available choices.",
                    ),
                }
            }
            errors.into_result()?;
            if let Some(n) = p.get("name") {
                let old = i.name.clone();
                i.name = n.to_string();
                for other in r.machines[mi].interfaces.iter_mut() {
                    for par in other.parents.iter_mut() {
                        if *par == old {
                            *par = i.name.clone();
                        }
                    }
                }
            }
            if let Some(mac) = p.get("mac_address").filter(|v| !v.is_empty()) {
                i.mac = mac.to_string();
            }
        }
    }
    let machine = &mut r.machines[mi];
    if let Some(slot) = machine.interfaces.iter_mut().find(|x| x.id == i.id) {
        *slot = i.clone();
    }
    let m = machine.clone();
    Ok(r.interface_json(&m, &i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host and its NICs' ids.
    fn setup() -> (Host, Vec<String>) {
        let mut r = Region::reference();
        let i = r
            .machines
            .iter()
            .position(|m| m.status == Status::Ready)
            .unwrap();
        r.machines[i].status = Status::Allocated;
        let sid = r.machines[i].system_id.clone();
        let nics = r.machines[i]
            .interfaces
            .iter()
            .map(|n| n.id.to_string())
            .collect();
        (Host { r, sid }, nics)
    }

    /// An allocated machine of the reference region, to build interfaces on.
    struct Host {
        r: Region,
        sid: String,
    }

    impl Host {
        /// `POST /machines/<sid>/interfaces/?op=<op>` with literal parameters.
        fn create(&mut self, op: &str, pairs: &[(&str, &str)]) -> Result<Value> {
            create(&mut self.r, &self.sid, op, &Params::of(pairs))
        }

        /// `POST /machines/<sid>/interfaces/<iid>/?op=<op>` with literal parameters.
        fn post(&mut self, iid: &str, op: &str, pairs: &[(&str, &str)]) -> Result<Value> {
            interface(
                &mut self.r,
                &self.sid,
                iid,
                "POST",
                Some(op),
                &Params::of(pairs),
            )
        }
    }

    fn err(res: Result<Value>) -> Value {
        match res {
            Err(Error::Validation(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vmo_host_network_and_parent_checks() {
        let (mut h, nics) = setup();
        assert_eq!(
            err(h.create("create_bond", &[("name", "bond0"), ("parents", "999")])),
            json!({"parents": ["Select a valid choice. 999 is not one of the available choices."]})
        );
        assert_eq!(
            err(h.create("create_bond", &[("name", "bond0")])),
            json!({"parents": ["A bond interface must have one or more parents."]})
        );
        assert_eq!(
            err(h.create(
                "create_bond",
                &[
                    ("name", "bond0"),
                    ("parents", &nics[0]),
                    ("bond_mode", "fastest")
                ]
            )),
            json!({"bond_mode": ["'fastest' is not a valid bond_mode.  It should be one of: 'balance-rr', 'active-backup', 'balance-xor', 'broadcast', '802.3ad', 'balance-tlb', 'balance-alb'."]})
        );
        let bond = h
            .create(
                "create_bond",
                &[
                    ("name", "bond0"),
                    ("parents", &nics[0]),
                    ("parents", &nics[1]),
                    ("bond_mode", "802.3ad"),
                ],
            )
            .unwrap();
        assert_eq!(bond["parents"], json!(["eno1", "eno2"]));
        assert_eq!(bond["links"][0]["mode"], "link_up");
        assert_eq!(
            err(h.create("create_bond", &[("name", "bond1"), ("parents", &nics[0])])),
            json!({"parents": ["Interfaces already in-use: eno1."]})
        );
        let bond_id = bond["id"].to_string();
        let vlan = h
            .create("create_vlan", &[("vlan", "5002"), ("parent", &bond_id)])
            .unwrap();
        assert_eq!(vlan["name"], "bond0.10");
        assert_eq!(
            err(h.create("create_vlan", &[("vlan", "5001"), ("parent", &bond_id)])),
            json!({"vlan": ["A VLAN interface can only belong to a tagged VLAN."]})
        );
        assert_eq!(
            err(h.create("create_vlan", &[("vlan", "5003"), ("parent", &nics[0])])),
            json!({"parent": ["A VLAN interface can't have a parent that is already in a bond."]})
        );
        assert_eq!(
            err(h.create("create_vlan", &[("vlan", "5002"), ("parent", &bond_id)])),
            json!({"name": [format!("Node {} (spare-01.maas) already has an interface named 'bond0.10'.", h.sid)]})
        );
        let br = h
            .create("create_bridge", &[("name", "br0"), ("parent", &bond_id)])
            .unwrap();
        assert_eq!(br["type"], "bridge");
        assert_eq!(
            err(h.create("create_bridge", &[("name", "br1"), ("parent", &bond_id)])),
            json!({"parent": ["A bridge interface can't have a parent that is already in a bond or a bridge."]})
        );
        let vid = vlan["id"].to_string();
        let linked = h
            .post(
                &vid,
                "link_subnet",
                &[
                    ("mode", "STATIC"),
                    ("subnet", "2"),
                    ("ip_address", "172.16.0.50"),
                ],
            )
            .unwrap();
        assert_eq!(linked["links"].as_array().map(Vec::len), Some(1));
        assert_eq!(linked["links"][0]["ip_address"], "172.16.0.50");
        assert_eq!(
            err(h.post(
                &vid,
                "link_subnet",
                &[
                    ("mode", "STATIC"),
                    ("subnet", "2"),
                    ("ip_address", "10.0.0.1")
                ]
            )),
            json!({"ip_address": ["IP address is not in the given subnet '172.16.0.0/22'."]})
        );
        assert_eq!(
            err(h.post(&vid, "link_subnet", &[("mode", "AUTO")])),
            json!({"subnet": ["This field is required."]})
        );
        let link = linked["links"][0]["id"].to_string();
        let unlinked = h.post(&vid, "unlink_subnet", &[("id", &link)]).unwrap();
        assert_eq!(unlinked["links"][0]["mode"], "link_up");
        // Deleting the bond takes its VLAN interface with it; the bridge loses its parent.
        delete(&mut h.r, &h.sid, &bond_id).unwrap();
        let names: Vec<String> =
            h.r.machine(&h.sid)
                .unwrap()
                .interfaces
                .iter()
                .map(|i| i.name.clone())
                .collect();
        assert_eq!(names, vec!["eno1", "eno2", "br0"]);
    }

    #[test]
    fn state_conflicts_use_maas_wording() {
        let (mut h, nics) = setup();
        let i = h.r.index(&h.sid).unwrap();
        h.r.machines[i].status = Status::Deploying;
        let cases = [
            ("create_bond", "create bond"),
            ("create_vlan", "create VLAN"),
            ("create_bridge", "create bridge"),
            ("create_physical", "create"),
        ];
        for (op, words) in cases {
            assert_eq!(
                h.create(op, &[]).unwrap_err().to_string(),
                format!(
                    "Cannot {words} interface because the machine is not New, Ready, Allocated, or Broken."
                )
            );
        }
        assert_eq!(
            delete(&mut h.r, &h.sid, &nics[0]).unwrap_err().to_string(),
            "Cannot delete interface interface because the machine is not New, Ready, Allocated, or Broken."
        );
        assert_eq!(
            h.post(&nics[0], "link_subnet", &[])
                .unwrap_err()
                .to_string(),
            "Cannot link subnet interface because the machine is not New, Ready, Allocated, or Broken."
        );
        h.r.machines[i].status = Status::Deployed;
        assert!(
            interface(
                &mut h.r,
                &h.sid,
                &nics[0],
                "PUT",
                None,
                &Params::of(&[("name", "eth0")])
            )
            .is_ok()
        );
    }
}
