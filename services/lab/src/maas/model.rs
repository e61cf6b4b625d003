//! The MAAS region's data: machines with MAAS's numeric statuses and labels, resource pools, zones,
//! tags, fabrics, VLANs, subnets and interfaces, the event log, and their JSON renderings as the
//! 2.0 API returns them (`resource_uri`s, nested `pool`/`zone`/`vlan` objects). Status changes
//! and events go through `Region::set_status` and `Region::event`, which keep each machine's
//! `status_message` equal to its latest event at INFO or above, as MAAS derives it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::clock::SimTime;
use crate::error::{Error, Result};
use crate::maas::events::{self, Kind, kinds};
use crate::maas::lifecycle::DeployPlan;
use crate::scenario::MaasSettings;

/// API root, as resource URIs spell it.
pub const ROOT: &str = "/MAAS/api/2.0/";

/// MAAS node statuses (`src/maascommon/enums/node.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New = 0,
    Commissioning = 1,
    FailedCommissioning = 2,
    Missing = 3,
    Ready = 4,
    Reserved = 5,
    Deployed = 6,
    Retired = 7,
    Broken = 8,
    Deploying = 9,
    Allocated = 10,
    FailedDeployment = 11,
    Releasing = 12,
    FailedReleasing = 13,
    DiskErasing = 14,
    FailedDiskErasing = 15,
}

impl Status {
    /// Every status this lab uses.
    pub const ALL: [Status; 16] = [
        Status::New,
        Status::Commissioning,
        Status::FailedCommissioning,
        Status::Missing,
        Status::Ready,
        Status::Reserved,
        Status::Deployed,
        Status::Retired,
        Status::Broken,
        Status::Deploying,
        Status::Allocated,
        Status::FailedDeployment,
        Status::Releasing,
        Status::FailedReleasing,
        Status::DiskErasing,
        Status::FailedDiskErasing,
    ];

    /// `status_name` label.
    pub fn label(self) -> &'static str {
        match self {
            Status::New => "New",
            Status::Commissioning => "Commissioning",
            Status::FailedCommissioning => "Failed commissioning",
            Status::Missing => "Missing",
            Status::Ready => "Ready",
            Status::Reserved => "Reserved",
            Status::Deployed => "Deployed",
            Status::Retired => "Retired",
            Status::Broken => "Broken",
            Status::Deploying => "Deploying",
            Status::Allocated => "Allocated",
            Status::FailedDeployment => "Failed deployment",
            Status::Releasing => "Releasing",
            Status::FailedReleasing => "Releasing failed",
            Status::DiskErasing => "Disk erasing",
            Status::FailedDiskErasing => "Failed disk erasing",
        }
    }

    /// The lowercase constant name the `status` filter takes (`failed_deployment`).
    pub fn constant(self) -> String {
        let mut out = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// Parse the lowercase constant name.
    pub fn from_constant(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.constant() == s)
    }

    /// RELEASABLE_STATUSES.
    pub fn releasable(self) -> bool {
        matches!(
            self,
            Status::Allocated
                | Status::Reserved
                | Status::Broken
                | Status::Deploying
                | Status::Deployed
                | Status::FailedDeployment
                | Status::FailedDiskErasing
                | Status::FailedReleasing
        )
    }

    /// MAAS's simplified status.
    pub fn simple(self) -> &'static str {
        match self {
            Status::Allocated => "Allocated",
            Status::Broken => "Broken",
            Status::Commissioning => "Commissioning",
            Status::Deployed => "Deployed",
            Status::Deploying => "Deploying",
            Status::FailedCommissioning
            | Status::FailedDeployment
            | Status::FailedReleasing
            | Status::FailedDiskErasing => "Failed",
            Status::New => "New",
            Status::Ready => "Ready",
            Status::Releasing | Status::DiskErasing => "Releasing",
            _ => "Other",
        }
    }
}

/// A network interface of a machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub id: u64,
    pub name: String,
    /// `physical`, `bond`, `bridge`, `vlan`.
    pub kind: String,
    pub mac: String,
    pub vlan_id: u64,
    pub parents: Vec<String>,
    pub params: Value,
    /// (link id, mode, subnet id, ip).
    pub links: Vec<(u64, String, u64, String)>,
    pub tags: Vec<String>,
}

/// What an ongoing operation will do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Idle,
    /// Deploying since `started` as `plan` says; `stages` of `lifecycle::DEPLOY_STAGES` have
    /// been reported so far.
    Deploying {
        started: SimTime,
        plan: DeployPlan,
        stages: usize,
    },
    /// Releasing since `started`; disk erasing of `erase_secs` follows when set (`erase_fails`:
    /// it fails halfway); `hang` stalls the release until the 5-minute release timeout makes it
    /// Releasing failed.
    Releasing {
        started: SimTime,
        erase_secs: Option<f64>,
        erase_fails: bool,
        hang: bool,
    },
    DiskErasing {
        started: SimTime,
        secs: f64,
        fails: bool,
    },
}

/// One machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    pub status: Status,
    pub previous_status: Status,
    pub status_message: String,
    pub error_description: String,
    pub owner: Option<String>,
    pub pool: String,
    pub zone: String,
    pub tags: Vec<String>,
    pub cpu_count: u32,
    pub memory: u64,
    /// `on`, `off`, `unknown` or `error`.
    pub power_state: String,
    /// When the power state last changed (a Node boots `node_ready_delay_secs` after power on).
    pub power_changed: SimTime,
    pub ip: String,
    pub osystem: String,
    pub distro_series: String,
    pub hwe_kernel: String,
    pub user_data: String,
    pub agent_name: String,
    /// `set_owner_data` / `set_workload_annotations` key-values, cleared when the owner goes.
    pub owner_data: BTreeMap<String, String>,
    pub locked: bool,
    pub swap_size: Option<u64>,
    pub interfaces: Vec<Interface>,
    pub activity: Activity,
    /// Sim time it reached Deployed (for the cluster join).
    pub deployed_at: Option<SimTime>,
    /// The Node of this deployment is Ready (or the machine came deployed with the scenario).
    pub joined: bool,
    /// When the Node object was created for this deployment.
    pub node_created: Option<SimTime>,
    /// The Node was marked NotReady because the machine is going away.
    pub node_down: bool,
}

/// A pool or zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub id: u64,
    pub name: String,
    pub description: String,
}

/// A fabric with its VLANs.
#[derive(Debug, Clone, PartialEq)]
pub struct Vlan {
    pub id: u64,
    pub fabric_id: u64,
    pub vid: u32,
    pub name: String,
    pub mtu: u32,
    pub dhcp_on: bool,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub id: u64,
    pub name: String,
    pub cidr: String,
    pub vlan_id: u64,
    pub gateway_ip: String,
}

/// The whole region.
#[derive(Debug, Clone)]
pub struct Region {
    pub settings: MaasSettings,
    pub machines: Vec<Machine>,
    pub pools: Vec<Named>,
    pub zones: Vec<Named>,
    pub tags: Vec<Named>,
    pub fabrics: Vec<Named>,
    pub vlans: Vec<Vlan>,
    pub subnets: Vec<Subnet>,
    pub next_id: u64,
    /// Simulated time of the last lifecycle pass.
    pub last_tick: SimTime,
    /// Every machine's events.
    pub events: events::Log,
}

impl Region {
    /// The region of the reference scenario, for unit tests.
    #[cfg(test)]
    pub fn reference() -> Self {
        Region::new(&crate::scenario::reference_architecture().maas)
    }

    /// Build from the scenario.
    pub fn new(settings: &MaasSettings) -> Self {
        let mut r = Region {
            settings: settings.clone(),
            machines: Vec::new(),
            pools: vec![Named {
                id: 0,
                name: "default".into(),
                description: "Default pool".into(),
            }],
            zones: vec![Named {
                id: 1,
                name: "default".into(),
                description: String::new(),
            }],
            tags: Vec::new(),
            fabrics: vec![Named {
                id: 0,
                name: "fabric-0".into(),
                description: String::new(),
            }],
            vlans: vec![
                Vlan {
                    id: 5001,
                    fabric_id: 0,
                    vid: 0,
                    name: "untagged".into(),
                    mtu: 1500,
                    dhcp_on: true,
                },
                Vlan {
                    id: 5002,
                    fabric_id: 0,
                    vid: 10,
                    name: "mgmt".into(),
                    mtu: 1500,
                    dhcp_on: false,
                },
                Vlan {
                    id: 5003,
                    fabric_id: 0,
                    vid: 20,
                    name: "data".into(),
                    mtu: 9000,
                    dhcp_on: false,
                },
            ],
            subnets: vec![
                Subnet {
                    id: 1,
                    name: "192.168.0.0/22".into(),
                    cidr: "192.168.0.0/22".into(),
                    vlan_id: 5001,
                    gateway_ip: "192.168.0.1".into(),
                },
                Subnet {
                    id: 2,
                    name: "172.16.0.0/22".into(),
                    cidr: "172.16.0.0/22".into(),
                    vlan_id: 5002,
                    gateway_ip: "172.16.0.1".into(),
                },
                Subnet {
                    id: 3,
                    name: "10.20.30.0/16".into(),
                    cidr: "10.20.0.0/16".into(),
                    vlan_id: 5003,
                    gateway_ip: "10.20.0.1".into(),
                },
            ],
            next_id: 100,
            last_tick: 0.0,
            events: events::Log::default(),
        };
        for (i, p) in settings.pools.iter().enumerate() {
            if p != "default" {
                r.pools.push(Named {
                    id: i as u64 + 1,
                    name: p.clone(),
                    description: String::new(),
                });
            }
        }
        for (i, z) in settings.zones.iter().enumerate() {
            if z != "default" {
                r.zones.push(Named {
                    id: i as u64 + 2,
                    name: z.clone(),
                    description: String::new(),
                });
            }
        }
        for (i, t) in settings.tags.iter().enumerate() {
            r.tags.push(Named {
                id: i as u64 + 1,
                name: t.clone(),
                description: String::new(),
            });
        }
        for (i, m) in settings.machines.iter().enumerate() {
            for t in &m.tags {
                if !r.tags.iter().any(|x| &x.name == t) {
                    let id = r.tags.len() as u64 + 1;
                    r.tags.push(Named {
                        id,
                        name: t.clone(),
                        description: String::new(),
                    });
                }
            }
            for (list, name) in [(&mut r.pools, &m.pool), (&mut r.zones, &m.zone)] {
                if !list.iter().any(|x| &x.name == name) {
                    let id = list.len() as u64 + 10;
                    list.push(Named {
                        id,
                        name: name.clone(),
                        description: String::new(),
                    });
                }
            }
            let status = Status::from_constant(&m.status).unwrap_or(Status::Ready);
            let system_id = if m.system_id.is_empty() {
                system_id_for(i as u64)
            } else {
                m.system_id.clone()
            };
            let deployed = matches!(
                status,
                Status::Deployed | Status::Allocated | Status::Deploying
            );
            let ip = if m.ip.is_empty() {
                format!("10.20.31.{}", i + 10)
            } else {
                m.ip.clone()
            };
            let mut machine = Machine {
                id: i as u64 + 1,
                system_id,
                hostname: if m.hostname.is_empty() {
                    format!("machine-{i:02}")
                } else {
                    m.hostname.clone()
                },
                status,
                previous_status: status,
                status_message: status.label().into(),
                error_description: String::new(),
                owner: deployed.then(|| settings.user.clone()),
                pool: m.pool.clone(),
                zone: m.zone.clone(),
                tags: m.tags.clone(),
                cpu_count: m.cpu_count,
                memory: m.memory,
                power_state: if status == Status::Deployed {
                    "on".into()
                } else {
                    "off".into()
                },
                power_changed: 0.0,
                ip,
                osystem: if status == Status::Deployed {
                    "ubuntu".into()
                } else {
                    String::new()
                },
                distro_series: if status == Status::Deployed {
                    "jammy".into()
                } else {
                    String::new()
                },
                hwe_kernel: String::new(),
                user_data: String::new(),
                agent_name: String::new(),
                owner_data: BTreeMap::new(),
                locked: false,
                swap_size: None,
                interfaces: Vec::new(),
                activity: Activity::Idle,
                deployed_at: None,
                joined: status == Status::Deployed,
                node_created: None,
                node_down: false,
            };
            for n in 0..2u64 {
                let id = r.next_id;
                r.next_id += 1;
                machine.interfaces.push(Interface {
                    id,
                    name: format!("eno{}", n + 1),
                    kind: "physical".into(),
                    mac: format!("52:54:00:{:02x}:{:02x}:{:02x}", i / 256, i % 256, n),
                    vlan_id: 5001,
                    parents: Vec::new(),
                    params: json!({}),
                    links: if n == 0 {
                        vec![(id, "auto".into(), 1, String::new())]
                    } else {
                        Vec::new()
                    },
                    tags: Vec::new(),
                });
            }
            r.machines.push(machine);
        }
        r
    }

    /// The same region with events stamped from `epoch` (wall time at simulated time 0).
    pub fn with_epoch(mut self, epoch: std::time::SystemTime) -> Self {
        self.events.epoch = epoch;
        self
    }

    /// Number of machines.
    pub fn machine_count(&self) -> usize {
        self.machines.len()
    }

    /// A machine by system_id.
    pub fn machine(&self, system_id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.system_id == system_id)
    }

    /// A machine by system_id, mutably.
    pub fn machine_mut(&mut self, system_id: &str) -> Option<&mut Machine> {
        self.machines.iter_mut().find(|m| m.system_id == system_id)
    }

    /// The index of a machine, or MAAS's 404.
    pub fn index(&self, system_id: &str) -> Result<usize> {
        self.machines
            .iter()
            .position(|m| m.system_id == system_id)
            .ok_or_else(|| Error::NotFound {
                resource: "Machine".into(),
                name: system_id.to_string(),
            })
    }

    /// Record an event for machine `i`; INFO and above become its `status_message`. `user` is
    /// who caused it (the machine's owner, or `unknown`, when `None`).
    pub fn event(
        &mut self,
        i: usize,
        kind: Kind,
        description: &str,
        user: Option<&str>,
        at: SimTime,
    ) {
        let m = &self.machines[i];
        let username = user.or(m.owner.as_deref()).unwrap_or("unknown").to_string();
        let e = self.events.push(
            &m.system_id,
            &m.hostname,
            at,
            kind,
            description.to_string(),
            &username,
        );
        if let Some(msg) = e.status_message() {
            self.machines[i].status_message = msg;
        }
    }

    /// Record a user's request (`User releasing node`: `(admin)` or `(admin) - comment`).
    pub fn request(
        &mut self,
        i: usize,
        kind: Kind,
        user: &str,
        comment: Option<&str>,
        at: SimTime,
    ) {
        let description = match comment.filter(|c| !c.is_empty()) {
            Some(c) => format!("({user}) - {c}"),
            None => format!("({user})"),
        };
        self.event(i, kind, &description, Some(user), at);
    }

    /// Move machine `i` to `to`, recording `Node changed status` (`From 'Ready' to 'Allocated'`,
    /// with ` (to admin)` when it gains an owner).
    pub fn set_status(&mut self, i: usize, to: Status, at: SimTime) {
        let m = &mut self.machines[i];
        let from = m.status;
        if from == to {
            return;
        }
        m.previous_status = from;
        m.status = to;
        let mut description = format!("From '{}' to '{}'", from.label(), to.label());
        if to == Status::Allocated
            && let Some(owner) = &m.owner
        {
            description.push_str(&format!(" (to {owner})"));
        }
        self.event(i, kinds::NODE_CHANGED_STATUS, &description, None, at);
    }

    /// Change machine `i`'s power state, recording `Node powered on`/`off`.
    pub fn set_power(&mut self, i: usize, state: &str, at: SimTime) {
        let m = &mut self.machines[i];
        if m.power_state == state {
            return;
        }
        m.power_state = state.to_string();
        m.power_changed = at;
        match state {
            "on" => self.event(i, kinds::NODE_POWERED_ON, "", None, at),
            "off" => self.event(i, kinds::NODE_POWERED_OFF, "", None, at),
            _ => {}
        }
    }

    /// Machine `i` no longer has an owner: its owner data goes too (MAAS deletes it).
    pub fn disown(&mut self, i: usize) {
        let m = &mut self.machines[i];
        m.owner = None;
        m.owner_data.clear();
        m.agent_name.clear();
    }

    fn named_json(&self, n: &Named, kind: &str) -> Value {
        let uri = match kind {
            "pool" => format!("{ROOT}resourcepool/{}/", n.id),
            "zone" => format!("{ROOT}zones/{}/", n.name),
            "tag" => format!("{ROOT}tags/{}/", n.name),
            _ => format!("{ROOT}fabrics/{}/", n.id),
        };
        let mut v =
            json!({"id": n.id, "name": n.name, "description": n.description, "resource_uri": uri});
        if kind == "tag" {
            v = json!({"name": n.name, "definition": "", "comment": n.description, "kernel_opts": "", "resource_uri": uri});
        }
        if kind == "fabric" {
            v["class_type"] = Value::Null;
            v["vlans"] = Value::Array(
                self.vlans
                    .iter()
                    .filter(|x| x.fabric_id == n.id)
                    .map(|x| self.vlan_json(x))
                    .collect(),
            );
        }
        v
    }

    /// A pool as JSON.
    pub fn pool_json(&self, n: &Named) -> Value {
        self.named_json(n, "pool")
    }

    /// A zone as JSON.
    pub fn zone_json(&self, n: &Named) -> Value {
        self.named_json(n, "zone")
    }

    /// A tag as JSON.
    pub fn tag_json(&self, n: &Named) -> Value {
        self.named_json(n, "tag")
    }

    /// A fabric as JSON.
    pub fn fabric_json(&self, n: &Named) -> Value {
        self.named_json(n, "fabric")
    }

    /// A VLAN as JSON.
    pub fn vlan_json(&self, v: &Vlan) -> Value {
        let fabric = self
            .fabrics
            .iter()
            .find(|f| f.id == v.fabric_id)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        json!({
            "id": v.id, "vid": v.vid, "name": v.name, "mtu": v.mtu, "dhcp_on": v.dhcp_on,
            "fabric": fabric, "fabric_id": v.fabric_id, "space": "undefined", "primary_rack": null,
            "secondary_rack": null, "external_dhcp": null, "relay_vlan": null,
            "resource_uri": format!("{ROOT}vlans/{}/", v.id)
        })
    }

    /// A subnet as JSON.
    pub fn subnet_json(&self, s: &Subnet) -> Value {
        let vlan = self
            .vlans
            .iter()
            .find(|v| v.id == s.vlan_id)
            .map(|v| self.vlan_json(v))
            .unwrap_or(Value::Null);
        json!({
            "id": s.id, "name": s.name, "cidr": s.cidr, "vlan": vlan, "gateway_ip": s.gateway_ip,
            "dns_servers": [], "space": "undefined", "managed": true, "active_discovery": false,
            "allow_dns": true, "allow_proxy": true, "rdns_mode": 2, "description": "",
            "resource_uri": format!("{ROOT}subnets/{}/", s.id)
        })
    }

    /// An interface as JSON.
    pub fn interface_json(&self, m: &Machine, i: &Interface) -> Value {
        let vlan = self
            .vlans
            .iter()
            .find(|v| v.id == i.vlan_id)
            .map(|v| self.vlan_json(v))
            .unwrap_or(Value::Null);
        let mut children: Vec<String> = m
            .interfaces
            .iter()
            .filter(|c| c.parents.contains(&i.name))
            .map(|c| c.name.clone())
            .collect();
        children.sort();
        let mut parents = i.parents.clone();
        parents.sort();
        let links: Vec<Value> = i
            .links
            .iter()
            .map(|(id, mode, subnet, ip)| {
                let sub = self
                    .subnets
                    .iter()
                    .find(|s| s.id == *subnet)
                    .map(|s| self.subnet_json(s))
                    .unwrap_or(Value::Null);
                let mut l = json!({"id": id, "mode": mode, "subnet": sub});
                if !ip.is_empty() {
                    l["ip_address"] = json!(ip);
                }
                l
            })
            .collect();
        let mtu = self
            .vlans
            .iter()
            .find(|v| v.id == i.vlan_id)
            .map_or(1500, |v| v.mtu);
        json!({
            "id": i.id, "name": i.name, "type": i.kind, "mac_address": i.mac, "vlan": vlan,
            "parents": parents, "children": children, "links": links, "tags": i.tags,
            "enabled": true, "effective_mtu": mtu, "params": i.params, "discovered": [],
            "system_id": m.system_id, "link_connected": true, "interface_speed": 10000, "link_speed": 10000,
            "resource_uri": format!("{ROOT}nodes/{}/interfaces/{}/", m.system_id, i.id)
        })
    }

    /// A machine as JSON (`DISPLAYED_MACHINE_FIELDS`, the ones clients read).
    pub fn machine_json(&self, m: &Machine) -> Value {
        let pool = self
            .pools
            .iter()
            .find(|p| p.name == m.pool)
            .map(|p| self.pool_json(p))
            .unwrap_or(Value::Null);
        let zone = self
            .zones
            .iter()
            .find(|z| z.name == m.zone)
            .map(|z| self.zone_json(z))
            .unwrap_or(Value::Null);
        let interfaces: Vec<Value> = m
            .interfaces
            .iter()
            .map(|i| self.interface_json(m, i))
            .collect();
        let ips: Vec<&str> = if matches!(m.status, Status::Deployed | Status::Deploying) {
            vec![m.ip.as_str()]
        } else {
            Vec::new()
        };
        let domain = &self.settings.domain;
        json!({
            "system_id": m.system_id,
            "hostname": m.hostname,
            "description": "",
            "hardware_uuid": format!("00000000-0000-4000-8000-{:012x}", m.id),
            "domain": {"id": 0, "name": domain, "authoritative": true, "ttl": null, "resource_record_count": 0, "is_default": true, "resource_uri": format!("{ROOT}domains/0/")},
            "fqdn": format!("{}.{}", m.hostname, domain),
            "owner": m.owner,
            "owner_data": m.owner_data,
            "workload_annotations": m.owner_data,
            "locked": m.locked,
            "architecture": "amd64/generic",
            "min_hwe_kernel": "",
            "hwe_kernel": if m.hwe_kernel.is_empty() { Value::Null } else { json!(m.hwe_kernel) },
            "cpu_count": m.cpu_count,
            "cpu_speed": 2600,
            "memory": m.memory,
            "swap_size": m.swap_size,
            "storage": 960197.124,
            "status": m.status as u8,
            "status_name": m.status.label(),
            "status_message": m.status_message,
            "status_action": "",
            "osystem": m.osystem,
            "distro_series": m.distro_series,
            "ephemeral_deploy": false,
            "error_description": m.error_description,
            "netboot": !matches!(m.status, Status::Deployed),
            "power_type": "ipmi",
            "power_state": m.power_state,
            "tag_names": m.tags,
            "address_ttl": null,
            "ip_addresses": ips,
            "interface_set": interfaces,
            "boot_interface": interfaces.first().cloned().unwrap_or(Value::Null),
            "zone": zone,
            "pool": pool,
            "node_type": 0,
            "node_type_name": "Machine",
            "blockdevice_set": [],
            "physicalblockdevice_set": [],
            "virtualblockdevice_set": [],
            "boot_disk": null,
            "volume_groups": [], "raids": [], "cache_sets": [], "bcaches": [],
            "special_filesystems": [],
            "parent": null,
            "default_gateways": {"ipv4": {"gateway_ip": null, "link_id": null}, "ipv6": {"gateway_ip": null, "link_id": null}},
            "commissioning_status": 2, "commissioning_status_name": "Passed",
            "testing_status": 2, "testing_status_name": "Passed",
            "numanode_set": [],
            "hardware_info": {"system_vendor": "Lab", "system_product": "Simulated", "cpu_model": "Intel(R) Xeon(R) Gold 6338"},
            "enable_hw_sync": false,
            "enable_kernel_crash_dump": false,
            "is_dpu": false,
            "resource_uri": format!("{ROOT}machines/{}/", m.system_id)
        })
    }
}

/// A stable six-character system_id for machine `n` (a bijection of `n` modulo 28^6, so ids never
/// collide).
pub fn system_id_for(n: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstvwxy3456789";
    const SPACE: u64 = 28u64.pow(6);
    let mut x = (n.wrapping_mul(387_420_489) + 123_456_789) % SPACE;
    let mut out = String::new();
    for _ in 0..6 {
        out.push(ALPHABET[(x % 28) as usize] as char);
        x /= 28;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_and_constants() {
        assert_eq!(Status::FailedDeployment.constant(), "failed_deployment");
        assert_eq!(
            Status::from_constant("disk_erasing"),
            Some(Status::DiskErasing)
        );
        assert_eq!(Status::FailedReleasing.label(), "Releasing failed");
        assert_eq!(Status::Deploying as u8, 9);
        let ids: std::collections::HashSet<String> = (0..500).map(system_id_for).collect();
        assert_eq!(ids.len(), 500);
    }
}
