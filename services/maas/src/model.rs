//! MAAS's JSON as the 2.0 API renders it (`DISPLAYED_MACHINE_FIELDS`, interfaces, VLANs, subnets,
//! events), decoded leniently, and its translation into the port's types. Unknown fields are
//! ignored; a field that is missing or `null` takes its default, since MAAS versions differ in
//! what they include and write `null` for unset strings.

use std::collections::BTreeMap;

use drover_workflows::ports::maas as port;
use serde::{Deserialize, Deserializer};

/// The `status` filter's name of each status code (`GET machines/?status=failed_deployment`),
/// indexed by code.
const STATUS_NAMES: [&str; 23] = [
    "new",
    "commissioning",
    "failed_commissioning",
    "missing",
    "ready",
    "reserved",
    "deployed",
    "retired",
    "broken",
    "deploying",
    "allocated",
    "failed_deployment",
    "releasing",
    "failed_releasing",
    "disk_erasing",
    "failed_disk_erasing",
    "rescue_mode",
    "entering_rescue_mode",
    "failed_entering_rescue_mode",
    "exiting_rescue_mode",
    "failed_exiting_rescue_mode",
    "testing",
    "failed_testing",
];

/// The filter name of a status code, if MAAS has one.
pub fn status_name(code: u32) -> Option<&'static str> {
    STATUS_NAMES.get(code as usize).copied()
}

/// `null` as the default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Named {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Machine {
    #[serde(deserialize_with = "nullable")]
    pub system_id: String,
    #[serde(deserialize_with = "nullable")]
    pub hostname: String,
    #[serde(deserialize_with = "nullable")]
    pub status: u32,
    #[serde(deserialize_with = "nullable")]
    pub status_name: String,
    #[serde(deserialize_with = "nullable")]
    pub status_message: String,
    #[serde(deserialize_with = "nullable")]
    pub error_description: String,
    pub pool: Option<Named>,
    pub zone: Option<Named>,
    #[serde(deserialize_with = "nullable")]
    pub tag_names: Vec<String>,
    pub owner: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub owner_data: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub cpu_count: u32,
    #[serde(deserialize_with = "nullable")]
    pub memory: u64,
    #[serde(deserialize_with = "nullable")]
    pub interface_set: Vec<Interface>,
    #[serde(deserialize_with = "nullable")]
    pub ip_addresses: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub power_state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Interface {
    #[serde(deserialize_with = "nullable")]
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub mac_address: String,
    pub vlan: Option<Vlan>,
    #[serde(deserialize_with = "nullable")]
    pub parents: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub children: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub links: Vec<Link>,
    /// Absent means enabled (MAAS always sends it; interfaces are enabled unless disabled).
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Vlan {
    #[serde(deserialize_with = "nullable")]
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub vid: u32,
    #[serde(deserialize_with = "nullable")]
    pub fabric_id: u64,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Subnet {
    #[serde(deserialize_with = "nullable")]
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub cidr: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Link {
    #[serde(deserialize_with = "nullable")]
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub mode: String,
    pub subnet: Option<Subnet>,
    pub ip_address: Option<String>,
}

/// `GET events/?op=query`: a page of events, newest first.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Events {
    #[serde(deserialize_with = "nullable")]
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(deserialize_with = "nullable")]
    pub id: u64,
    /// The machine's system_id.
    #[serde(deserialize_with = "nullable")]
    pub node: String,
    #[serde(deserialize_with = "nullable")]
    pub hostname: String,
    #[serde(deserialize_with = "nullable")]
    pub level: String,
    #[serde(deserialize_with = "nullable")]
    pub created: String,
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
}

impl From<Machine> for port::Machine {
    fn from(m: Machine) -> port::Machine {
        port::Machine {
            system_id: m.system_id,
            hostname: m.hostname,
            status: m.status,
            status_name: m.status_name,
            status_message: m.status_message,
            error_description: m.error_description,
            pool: m.pool.map(|p| p.name).unwrap_or_default(),
            zone: m.zone.map(|z| z.name).unwrap_or_default(),
            tags: m.tag_names,
            owner: m.owner.filter(|o| !o.is_empty()),
            owner_data: m.owner_data,
            cpu_count: m.cpu_count,
            memory_mib: m.memory,
            interfaces: m.interface_set.into_iter().map(Into::into).collect(),
            ip_addresses: m.ip_addresses,
            power_state: m.power_state,
        }
    }
}

impl From<Interface> for port::Interface {
    fn from(i: Interface) -> port::Interface {
        port::Interface {
            id: i.id,
            name: i.name,
            kind: i.kind,
            mac_address: i.mac_address,
            vlan: i.vlan.map(Into::into),
            parents: i.parents,
            children: i.children,
            links: i.links.into_iter().map(Into::into).collect(),
            enabled: i.enabled.unwrap_or(true),
        }
    }
}

impl From<Vlan> for port::Vlan {
    fn from(v: Vlan) -> port::Vlan {
        port::Vlan {
            id: v.id,
            vid: v.vid,
            fabric_id: v.fabric_id,
            name: v.name,
        }
    }
}

impl From<Subnet> for port::Subnet {
    fn from(s: Subnet) -> port::Subnet {
        port::Subnet {
            id: s.id,
            name: s.name,
            cidr: s.cidr,
        }
    }
}

impl From<Link> for port::Link {
    fn from(l: Link) -> port::Link {
        port::Link {
            id: l.id,
            mode: l.mode.to_lowercase(),
            subnet: l.subnet.map(Into::into),
            ip_address: l.ip_address.filter(|ip| !ip.is_empty()),
        }
    }
}

impl From<Event> for port::Event {
    fn from(e: Event) -> port::Event {
        port::Event {
            id: e.id,
            system_id: e.node,
            hostname: e.hostname,
            level: e.level,
            created: e.created,
            kind: e.kind,
            description: e.description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_leniently() {
        let m: Machine = serde_json::from_value(json!({
            "system_id": "g8xyqs", "hostname": "causal-quagga", "status": 11,
            "status_name": "Failed deployment", "status_message": null, "error_description": null,
            "pool": {"name": "vmo", "id": 1}, "zone": null, "tag_names": ["vmo-worker"],
            "owner": "admin", "owner_data": {"drover/workflow": "wf-1"}, "cpu_count": 64,
            "memory": 262144, "power_state": "off", "ip_addresses": null, "something_new": [1, 2],
            "interface_set": [{
                "id": 7, "name": "bond0", "type": "bond", "mac_address": null,
                "vlan": {"id": 5001, "vid": 0, "fabric_id": 0, "name": "untagged", "mtu": 1500},
                "parents": ["eno1", "eno2"], "children": ["br0"],
                "links": [{"id": 3, "mode": "STATIC", "ip_address": "10.0.0.5",
                           "subnet": {"id": 2, "cidr": "10.0.0.0/24", "name": "10.0.0.0/24"}},
                          {"id": 4, "mode": "link_up"}]
            }]
        }))
        .unwrap();
        let m: port::Machine = m.into();
        assert_eq!(m.status, port::status::FAILED_DEPLOYMENT);
        assert_eq!((m.pool.as_str(), m.zone.as_str()), ("vmo", ""));
        assert_eq!(m.status_message, "");
        assert_eq!(m.owner_data["drover/workflow"], "wf-1");
        assert_eq!(m.memory_mib, 262_144);
        let bond = m.interface("bond0").unwrap();
        assert!(bond.enabled);
        assert_eq!(bond.vlan.as_ref().map(|v| v.fabric_id), Some(0));
        assert_eq!(bond.links[0].mode, "static");
        assert_eq!(bond.links[0].subnet.as_ref().map(|s| s.id), Some(2));
        assert_eq!(bond.links[1].subnet, None);
        let empty: port::Machine = serde_json::from_value::<Machine>(json!({})).unwrap().into();
        assert_eq!(empty, port::Machine::default());
        assert_eq!(
            status_name(port::status::FAILED_DEPLOYMENT),
            Some("failed_deployment")
        );
        assert_eq!(
            status_name(port::status::FAILED_TESTING),
            Some("failed_testing")
        );
        assert_eq!(status_name(23), None);
    }
}
