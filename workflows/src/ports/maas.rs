//! The MAAS port: what provisioning workflows need from Canonical MAAS (machines and their
//! lifecycle, owner data, host networking, events), in the workflows' own terms. `services/maas`
//! implements it over MAAS's REST API 2.0; the workflows crate never sees HTTP.
//!
//! Besides the trait: MAAS's status codes ([`status`]), the pure planner that checks a host network
//! layout against a machine's commissioned interfaces before anything changes
//! ([`HostNetwork::plan`]), and the rule that picks a failed deployment's reason
//! ([`failure_reason`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Why a MAAS call failed, classified for the engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaasError {
    /// Worth retrying: 5xx (MAAS's 503 and its proxy's 502 and 504), a 409 carrying Retry-After
    /// (MAAS's database serialisation retries), connection errors and timeouts. The adapter has
    /// already retried what was safe to retry; `retry_after` is the server's delay. A call that timed
    /// out may or may not have been applied: the caller reads the machine's state to find out (a
    /// timed-out deploy is never a failed deployment).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Allocation found no Ready machine matching the constraints (MAAS's 409 `NodesNotAvailable`),
    /// with MAAS's own message. Machines come back as others are released, so a step may wait.
    #[error("no machine matches: {0}")]
    NoMatch(String),
    /// 404: no such machine, interface or fabric.
    #[error("not found: {0}")]
    NotFound(String),
    /// A 409 without Retry-After: the machine's state does not allow the operation (MAAS's
    /// `NodeStateViolation`, e.g. deploying a machine in Failed deployment). Permanent for the
    /// call: the same call against the same state gets the same answer; read the machine, decide.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Retrying cannot help: 400 (MAAS's validation message kept as text), 401, 403, other 4xx, an
    /// answer that does not decode, a host network layout that does not fit the machine.
    #[error("{0}")]
    Permanent(String),
}

/// MAAS's numeric machine statuses (`status`), numbered as `maascommon/enums/node.py` does.
pub mod status {
    pub const NEW: u32 = 0;
    pub const COMMISSIONING: u32 = 1;
    pub const FAILED_COMMISSIONING: u32 = 2;
    pub const MISSING: u32 = 3;
    pub const READY: u32 = 4;
    pub const RESERVED: u32 = 5;
    pub const DEPLOYED: u32 = 6;
    pub const RETIRED: u32 = 7;
    pub const BROKEN: u32 = 8;
    pub const DEPLOYING: u32 = 9;
    pub const ALLOCATED: u32 = 10;
    pub const FAILED_DEPLOYMENT: u32 = 11;
    pub const RELEASING: u32 = 12;
    pub const FAILED_RELEASING: u32 = 13;
    pub const DISK_ERASING: u32 = 14;
    pub const FAILED_DISK_ERASING: u32 = 15;
    pub const RESCUE_MODE: u32 = 16;
    pub const ENTERING_RESCUE_MODE: u32 = 17;
    pub const FAILED_ENTERING_RESCUE_MODE: u32 = 18;
    pub const EXITING_RESCUE_MODE: u32 = 19;
    pub const FAILED_EXITING_RESCUE_MODE: u32 = 20;
    pub const TESTING: u32 = 21;
    pub const FAILED_TESTING: u32 = 22;
}

/// A machine as MAAS describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub system_id: String,
    pub hostname: String,
    /// MAAS's numeric status (see [`status`]) and its label (`Failed deployment`).
    pub status: u32,
    pub status_name: String,
    /// The latest status event (`Marking node failed - Installation failed ...`).
    pub status_message: String,
    /// Why the machine last failed or was marked broken, when it did.
    pub error_description: String,
    /// Resource pool and zone names.
    pub pool: String,
    pub zone: String,
    pub tags: Vec<String>,
    /// The user that holds it (allocated or deployed), if any.
    pub owner: Option<String>,
    /// Key/value data its owner set on it; MAAS clears it when the machine is released.
    pub owner_data: BTreeMap<String, String>,
    pub cpu_count: u32,
    pub memory_mib: u64,
    pub interfaces: Vec<Interface>,
    pub ip_addresses: Vec<String>,
    /// `on`, `off`, `unknown` or `error`.
    pub power_state: String,
}

impl Machine {
    /// Whether the machine is in `status` (a [`status`] constant).
    pub fn is(&self, status: u32) -> bool {
        self.status == status
    }

    /// An interface by name.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// A network interface of a machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interface {
    pub id: u64,
    pub name: String,
    /// `physical`, `bond`, `bridge`, `vlan` or `unknown` (MAAS's `type`).
    pub kind: String,
    pub mac_address: String,
    /// The VLAN it is on; None when disconnected.
    pub vlan: Option<Vlan>,
    /// Names of the interfaces it is built on (a bond's NICs) and of those built on it.
    pub parents: Vec<String>,
    pub children: Vec<String>,
    pub links: Vec<Link>,
    pub enabled: bool,
}

/// A VLAN of a fabric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vlan {
    /// MAAS's object id (what `create_vlan` takes), not the 802.1Q tag.
    pub id: u64,
    /// The 802.1Q tag (0 for untagged).
    pub vid: u32,
    pub fabric_id: u64,
    pub name: String,
}

/// A subnet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Subnet {
    pub id: u64,
    pub name: String,
    pub cidr: String,
}

/// How an interface is linked to a subnet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Link {
    pub id: u64,
    /// `auto`, `dhcp`, `static`, `link_up` (lowercase, as MAAS renders it).
    pub mode: String,
    pub subnet: Option<Subnet>,
    pub ip_address: Option<String>,
}

/// One entry of a machine's event log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` or `AUDIT`.
    pub level: String,
    /// As MAAS formats it (`Tue, 05 Mar. 2024 10:00:00`).
    pub created: String,
    /// The event type's description (`Marking node failed`, `Failed to install OS`, ...).
    pub kind: String,
    pub description: String,
}

/// Which machines to list. Empty fields do not filter; lists match any of their values except
/// `tags`, which must all be present. `owner_data` entries must all match exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineFilter {
    pub system_ids: Vec<String>,
    pub hostnames: Vec<String>,
    /// [`status`] constants.
    pub statuses: Vec<u32>,
    pub agent_name: Option<String>,
    pub owner: Option<String>,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub tags: Vec<String>,
    /// MAAS cannot filter on owner data (gomaasapi and the Terraform provider filter themselves):
    /// the adapter lists with the other filters and keeps the machines that match these.
    pub owner_data: BTreeMap<String, String>,
}

impl MachineFilter {
    /// Whether a machine carries every `owner_data` entry of this filter.
    pub fn owner_data_matches(&self, machine: &Machine) -> bool {
        self.owner_data
            .iter()
            .all(|(k, v)| machine.owner_data.get(k) == Some(v))
    }
}

/// What to allocate. No constraint at all takes any Ready machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Allocation {
    pub pool: Option<String>,
    pub zone: Option<String>,
    /// Every tag must be on the machine; none of `not_tags` may be.
    pub tags: Vec<String>,
    pub not_tags: Vec<String>,
    /// Minimums.
    pub cpu_count: Option<u32>,
    pub memory_mib: Option<u64>,
    /// This machine only (MAAS's `system_id` constraint): how a caller that chose among the Ready
    /// machines itself takes the one it chose, if it still matches.
    pub system_id: Option<String>,
    /// Recorded on the machine: `list_machines` can find it by this name after a crash between
    /// the allocation and its commit (MAAS does not show it in the machine itself).
    pub agent_name: Option<String>,
    /// For MAAS's event log.
    pub comment: Option<String>,
}

/// How to deploy an allocated machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// `jammy`, `ubuntu/jammy`, `custom/<image>`; MAAS's `default_distro_series` when None.
    pub distro_series: Option<String>,
    pub hwe_kernel: Option<String>,
    /// Cloud-init user data as plain text; the adapter base64-encodes it for MAAS.
    pub user_data: Option<String>,
    pub comment: Option<String>,
}

/// How to release a machine. Neither erase flag: no erase; `erase` alone overwrites the whole
/// disk (hours); `quick_erase` wipes the start and end of each disk; `secure_erase` uses the
/// drive's own erase when it has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Release {
    pub erase: bool,
    pub quick_erase: bool,
    pub secure_erase: bool,
    pub comment: Option<String>,
}

/// A bond to create from existing interfaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewBond {
    pub name: String,
    /// Interface ids.
    pub parents: Vec<u64>,
    /// `balance-rr`, `active-backup` (MAAS's default), `balance-xor`, `broadcast`, `802.3ad`,
    /// `balance-tlb`, `balance-alb`.
    pub mode: Option<String>,
    pub mtu: Option<u32>,
    /// `fast` or `slow`, for 802.3ad.
    pub lacp_rate: Option<String>,
    /// `layer2`, `layer2+3`, `layer3+4`, `encap2+3`, `encap3+4`.
    pub xmit_hash_policy: Option<String>,
    pub miimon: Option<u32>,
}

/// A bridge to create on an interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewBridge {
    pub name: String,
    /// Interface id.
    pub parent: u64,
    /// `standard` (MAAS's default) or `ovs`.
    pub bridge_type: Option<String>,
    pub stp: Option<bool>,
    /// Forward delay in seconds (MAAS's default 15).
    pub fd: Option<u32>,
    pub mtu: Option<u32>,
}

/// A VLAN interface to create on an interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewVlan {
    /// Interface id.
    pub parent: u64,
    /// The VLAN's MAAS object id ([`Vlan::id`]), on the parent's fabric.
    pub vlan: u64,
    pub mtu: Option<u32>,
}

/// How an interface gets its address on a subnet.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// An address MAAS picks from the subnet at deployment.
    #[default]
    Auto,
    Dhcp,
    /// The given address (or one MAAS picks now when none is given).
    Static,
    /// Up, without an address.
    LinkUp,
}

/// A link from an interface to a subnet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewLink {
    /// Subnet id.
    pub subnet: u64,
    pub mode: LinkMode,
    pub ip_address: Option<String>,
    pub default_gateway: bool,
}

/// The MAAS operations provisioning workflows use. Reads are safe to repeat; of the writes, the
/// adapter repeats `set_owner_data` (idempotent) and the others only when MAAS surely did not act
/// (503, 409 with Retry-After, no connection), so a Transient error from a write may mean it was
/// applied: read the machine.
#[async_trait]
pub trait Maas: Send + Sync {
    /// Machines matching the filter, in MAAS's order (by id).
    async fn list_machines(&self, filter: &MachineFilter) -> Result<Vec<Machine>, MaasError>;
    async fn get_machine(&self, system_id: &str) -> Result<Machine, MaasError>;
    /// Takes one Ready machine matching the constraints; `NoMatch` when there is none.
    async fn allocate(&self, allocation: &Allocation) -> Result<Machine, MaasError>;
    /// Starts deploying an allocated (or Ready) machine; returns it Deploying. Poll
    /// [`Maas::get_machine`] for Deployed or Failed deployment.
    async fn deploy(&self, system_id: &str, deployment: &Deployment) -> Result<Machine, MaasError>;
    /// Starts releasing; a machine already Releasing or Ready is left as it is.
    async fn release(&self, system_id: &str, release: &Release) -> Result<Machine, MaasError>;
    /// Aborts a deployment (back to Allocated), commissioning, testing or disk erasing.
    async fn abort(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, MaasError>;
    /// Takes a machine out of service (only its owner may); MAAS releases it first if it can.
    async fn mark_broken(&self, system_id: &str, comment: &str) -> Result<Machine, MaasError>;
    /// Back from Broken to Ready (or Deployed, if it was).
    async fn mark_fixed(
        &self,
        system_id: &str,
        comment: Option<&str>,
    ) -> Result<Machine, MaasError>;
    /// Sets owner data keys; `None` deletes a key. Others are left as they are.
    async fn set_owner_data(
        &self,
        system_id: &str,
        data: &BTreeMap<String, Option<String>>,
    ) -> Result<Machine, MaasError>;

    /// A machine's interfaces.
    async fn interfaces(&self, system_id: &str) -> Result<Vec<Interface>, MaasError>;
    /// The VLANs of a fabric.
    async fn vlans(&self, fabric_id: u64) -> Result<Vec<Vlan>, MaasError>;
    async fn subnets(&self) -> Result<Vec<Subnet>, MaasError>;
    async fn create_bond(&self, system_id: &str, bond: &NewBond) -> Result<Interface, MaasError>;
    async fn create_bridge(
        &self,
        system_id: &str,
        bridge: &NewBridge,
    ) -> Result<Interface, MaasError>;
    async fn create_vlan(&self, system_id: &str, vlan: &NewVlan) -> Result<Interface, MaasError>;
    async fn link_subnet(
        &self,
        system_id: &str,
        interface: u64,
        link: &NewLink,
    ) -> Result<Interface, MaasError>;

    /// The machine's latest `limit` events, newest first.
    async fn events(&self, system_id: &str, limit: u32) -> Result<Vec<Event>, MaasError>;

    /// Brings a machine's interfaces to `layout`, a reconciler: reads the interfaces (and the
    /// fabric's VLANs and the subnets the layout needs), checks the whole layout with
    /// [`HostNetwork::plan`] before changing anything (a misfit is Permanent, naming every
    /// problem), then makes only the changes still missing. Returns the interfaces afterwards.
    async fn configure_network(
        &self,
        system_id: &str,
        layout: &HostNetwork,
    ) -> Result<Vec<Interface>, MaasError> {
        let interfaces = self.interfaces(system_id).await?;
        let fabric = layout
            .bond
            .nics
            .iter()
            .find_map(|n| interfaces.iter().find(|i| &i.name == n))
            .and_then(|i| i.vlan.as_ref())
            .map(|v| v.fabric_id);
        let vlans = match fabric {
            Some(f) if !layout.vlans.is_empty() => self.vlans(f).await?,
            _ => Vec::new(),
        };
        let subnets = if layout.links().next().is_some() {
            self.subnets().await?
        } else {
            Vec::new()
        };
        let changes = layout
            .plan(&interfaces, &vlans, &subnets)
            .map_err(|problems| {
                MaasError::Permanent(format!(
                    "host network layout does not fit machine {system_id}, nothing was changed: {}",
                    problems.join("; ")
                ))
            })?;
        let mut ids: BTreeMap<String, u64> =
            interfaces.iter().map(|i| (i.name.clone(), i.id)).collect();
        let id_of = |ids: &BTreeMap<String, u64>, name: &str| {
            ids.get(name).copied().ok_or_else(|| {
                MaasError::Permanent(format!(
                    "interface {name} of machine {system_id} vanished while its network was configured"
                ))
            })
        };
        for change in changes {
            let made = match &change {
                Change::CreateBond { name, nics } => {
                    let b = &layout.bond;
                    let parents = nics
                        .iter()
                        .map(|n| id_of(&ids, n))
                        .collect::<Result<_, _>>()?;
                    let bond = NewBond {
                        name: name.clone(),
                        parents,
                        mode: Some(b.mode.clone()),
                        mtu: b.mtu,
                        lacp_rate: b.lacp_rate.clone(),
                        xmit_hash_policy: b.xmit_hash_policy.clone(),
                        miimon: None,
                    };
                    self.create_bond(system_id, &bond).await?
                }
                Change::CreateBridge { name, parent } => {
                    let b = layout.bridge.as_ref();
                    let bridge = NewBridge {
                        name: name.clone(),
                        parent: id_of(&ids, parent)?,
                        bridge_type: b.and_then(|b| b.bridge_type.clone()),
                        stp: b.map(|b| b.stp),
                        fd: b.and_then(|b| b.fd),
                        mtu: b.and_then(|b| b.mtu),
                    };
                    self.create_bridge(system_id, &bridge).await?
                }
                Change::CreateVlan { parent, vlan, .. } => {
                    let new = NewVlan {
                        parent: id_of(&ids, parent)?,
                        vlan: *vlan,
                        mtu: None,
                    };
                    self.create_vlan(system_id, &new).await?
                }
                Change::Link {
                    interface,
                    subnet,
                    mode,
                    ip_address,
                    default_gateway,
                } => {
                    let link = NewLink {
                        subnet: *subnet,
                        mode: *mode,
                        ip_address: ip_address.clone(),
                        default_gateway: *default_gateway,
                    };
                    self.link_subnet(system_id, id_of(&ids, interface)?, &link)
                        .await?
                }
            };
            ids.insert(made.name.clone(), made.id);
        }
        self.interfaces(system_id).await
    }
}

/// A host network layout, as the VMO reference architecture builds it through MAAS: a bond of
/// physical NICs, optionally a bridge on it (the parent of the VMs' Multus networks), and VLAN
/// interfaces, each optionally linked to a subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostNetwork {
    pub bond: BondLayout,
    #[serde(default)]
    pub bridge: Option<BridgeLayout>,
    #[serde(default)]
    pub vlans: Vec<VlanLayout>,
}

/// The bond of a [`HostNetwork`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BondLayout {
    pub name: String,
    /// Names of the machine's physical NICs (at least two).
    pub nics: Vec<String>,
    #[serde(default = "default_bond_mode")]
    pub mode: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub lacp_rate: Option<String>,
    #[serde(default)]
    pub xmit_hash_policy: Option<String>,
    #[serde(default)]
    pub link: Option<LinkLayout>,
}

fn default_bond_mode() -> String {
    "active-backup".into()
}

/// The bridge of a [`HostNetwork`], on its bond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeLayout {
    pub name: String,
    #[serde(default)]
    pub bridge_type: Option<String>,
    #[serde(default)]
    pub stp: bool,
    #[serde(default)]
    pub fd: Option<u32>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub link: Option<LinkLayout>,
}

/// A VLAN interface of a [`HostNetwork`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VlanLayout {
    /// The 802.1Q tag; the VLAN must exist on the NICs' fabric.
    pub vid: u32,
    /// The interface it sits on: the bond (default) or the bridge.
    #[serde(default)]
    pub on: Option<String>,
    #[serde(default)]
    pub link: Option<LinkLayout>,
}

/// A subnet link of a [`HostNetwork`] interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkLayout {
    /// The subnet's CIDR, name or id.
    pub subnet: String,
    #[serde(default)]
    pub mode: LinkMode,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub default_gateway: bool,
}

/// One change [`HostNetwork::plan`] found missing. Interfaces are named; ids are resolved as the
/// changes are made, since a bond's id exists only once it is created.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateBond {
        name: String,
        nics: Vec<String>,
    },
    CreateBridge {
        name: String,
        parent: String,
    },
    CreateVlan {
        parent: String,
        vid: u32,
        /// The VLAN's MAAS object id.
        vlan: u64,
    },
    Link {
        interface: String,
        subnet: u64,
        mode: LinkMode,
        ip_address: Option<String>,
        default_gateway: bool,
    },
}

impl HostNetwork {
    /// Every (interface name, link) the layout asks for.
    fn links(&self) -> impl Iterator<Item = (String, &LinkLayout)> {
        let bond = self.bond.link.iter().map(|l| (self.bond.name.clone(), l));
        let bridge = self
            .bridge
            .iter()
            .flat_map(|b| b.link.iter().map(|l| (b.name.clone(), l)));
        let vlans = self.vlans.iter().flat_map(move |v| {
            v.link
                .iter()
                .map(move |l| (format!("{}.{}", self.vlan_parent(v), v.vid), l))
        });
        bond.chain(bridge).chain(vlans)
    }

    fn vlan_parent<'a>(&'a self, v: &'a VlanLayout) -> &'a str {
        v.on.as_deref().unwrap_or(&self.bond.name)
    }

    /// Pure: checks the layout against a machine's interfaces, the VLANs of its NICs' fabric and
    /// the region's subnets, and returns the changes still missing in the order to make them
    /// (none when the machine already has the layout). Every problem is reported at once, each
    /// saying what is missing or in the way; nothing is planned when there is any.
    ///
    /// VLAN interfaces are named `<parent>.<vid>`, as MAAS names them.
    pub fn plan(
        &self,
        interfaces: &[Interface],
        fabric_vlans: &[Vlan],
        subnets: &[Subnet],
    ) -> Result<Vec<Change>, Vec<String>> {
        let mut problems = Vec::new();
        let mut changes = Vec::new();
        let find = |name: &str| interfaces.iter().find(|i| i.name == name);
        let names = || {
            let mut v: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
            v.sort_unstable();
            v.join(", ")
        };
        let bond = &self.bond;

        // The bond and its NICs.
        let distinct: BTreeSet<&String> = bond.nics.iter().collect();
        if bond.name.is_empty() {
            problems.push("the bond needs a name".to_string());
        }
        if bond.nics.len() < 2 || distinct.len() != bond.nics.len() {
            problems.push(format!(
                "bond {} needs at least two distinct NICs, the layout names {:?}",
                bond.name, bond.nics
            ));
        }
        for nic in &bond.nics {
            match find(nic) {
                None => problems.push(format!(
                    "the machine has no interface {nic} for bond {} (it has {})",
                    bond.name,
                    names()
                )),
                Some(i) if i.kind != "physical" => problems.push(format!(
                    "{nic} is a {} interface, not a physical NIC",
                    i.kind
                )),
                Some(i) if !i.enabled => problems.push(format!("NIC {nic} is disabled")),
                Some(i) if i.vlan.is_none() => {
                    problems.push(format!("NIC {nic} is not connected to any VLAN"))
                }
                Some(i) if i.children.iter().any(|c| c != &bond.name) => problems.push(format!(
                    "NIC {nic} already carries {}",
                    i.children.join(", ")
                )),
                Some(_) => {}
            }
        }
        let same_parents = |i: &Interface, want: &[&str]| {
            let mut have: Vec<&str> = i.parents.iter().map(String::as_str).collect();
            let mut want = want.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            have == want
        };
        let nics: Vec<&str> = bond.nics.iter().map(String::as_str).collect();
        match find(&bond.name) {
            Some(i) if i.kind == "bond" && same_parents(i, &nics) => {}
            Some(i) => problems.push(format!(
                "an interface {} already exists ({}, on {}) and is not a bond of {}",
                bond.name,
                i.kind,
                if i.parents.is_empty() {
                    "no parents".to_string()
                } else {
                    i.parents.join(", ")
                },
                bond.nics.join(", ")
            )),
            None => changes.push(Change::CreateBond {
                name: bond.name.clone(),
                nics: bond.nics.clone(),
            }),
        }

        // The bridge on the bond.
        let mut created: BTreeSet<String> = BTreeSet::from([bond.name.clone()]);
        if let Some(br) = &self.bridge {
            match find(&br.name) {
                Some(i) if i.kind == "bridge" && same_parents(i, &[bond.name.as_str()]) => {}
                Some(i) => problems.push(format!(
                    "an interface {} already exists ({}) and is not a bridge on {}",
                    br.name, i.kind, bond.name
                )),
                None => changes.push(Change::CreateBridge {
                    name: br.name.clone(),
                    parent: bond.name.clone(),
                }),
            }
            created.insert(br.name.clone());
        }

        // VLAN interfaces.
        let mut seen = BTreeSet::new();
        for v in &self.vlans {
            let parent = self.vlan_parent(v);
            if !(1..=4094).contains(&v.vid) {
                problems.push(format!("VLAN {} is not a tag between 1 and 4094", v.vid));
                continue;
            }
            if !seen.insert((parent.to_string(), v.vid)) {
                problems.push(format!("VLAN {} on {parent} is named twice", v.vid));
                continue;
            }
            if !created.contains(parent) && find(parent).is_none() {
                problems.push(format!(
                    "VLAN {} is on {parent}, which neither the machine nor the layout has",
                    v.vid
                ));
                continue;
            }
            let existing = interfaces.iter().find(|i| {
                i.kind == "vlan"
                    && i.parents.iter().any(|p| p == parent)
                    && i.vlan.as_ref().is_some_and(|x| x.vid == v.vid)
            });
            if existing.is_some() {
                continue;
            }
            match fabric_vlans.iter().find(|x| x.vid == v.vid) {
                Some(x) => changes.push(Change::CreateVlan {
                    parent: parent.to_string(),
                    vid: v.vid,
                    vlan: x.id,
                }),
                None => {
                    let mut have: Vec<u32> = fabric_vlans.iter().map(|x| x.vid).collect();
                    have.sort_unstable();
                    problems.push(format!(
                        "the NICs' fabric has no VLAN {} (it has {have:?}); create it in MAAS first",
                        v.vid
                    ));
                }
            }
        }

        // Subnet links.
        for (name, l) in self.links() {
            let Some(subnet) = subnets
                .iter()
                .find(|s| s.cidr == l.subnet || s.name == l.subnet || s.id.to_string() == l.subnet)
            else {
                problems.push(format!(
                    "{name} is to be linked to subnet {}, which MAAS does not have",
                    l.subnet
                ));
                continue;
            };
            let linked = find(&name).is_some_and(|i| {
                i.links
                    .iter()
                    .any(|k| k.subnet.as_ref().is_some_and(|s| s.id == subnet.id))
            });
            if !linked {
                changes.push(Change::Link {
                    interface: name,
                    subnet: subnet.id,
                    mode: l.mode,
                    ip_address: l.ip_address.clone(),
                    default_gateway: l.default_gateway,
                });
            }
        }

        if problems.is_empty() {
            Ok(changes)
        } else {
            Err(problems)
        }
    }
}

/// Why a deployment failed, for a workflow's record: the newest ERROR or CRITICAL event
/// (`type: description`), else the machine's `error_description`, else its status message.
/// `events` are newest first, as [`Maas::events`] returns them.
pub fn failure_reason(machine: &Machine, events: &[Event]) -> String {
    let event = events
        .iter()
        .find(|e| matches!(e.level.as_str(), "ERROR" | "CRITICAL"))
        .map(|e| match (e.kind.is_empty(), e.description.is_empty()) {
            (_, true) => e.kind.clone(),
            (true, false) => e.description.clone(),
            (false, false) => format!("{}: {}", e.kind, e.description),
        });
    event
        .or_else(|| {
            (!machine.error_description.is_empty()).then(|| machine.error_description.clone())
        })
        .unwrap_or_else(|| machine.status_message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nic(id: u64, name: &str) -> Interface {
        Interface {
            id,
            name: name.into(),
            kind: "physical".into(),
            vlan: Some(Vlan {
                id: 5001,
                vid: 0,
                fabric_id: 0,
                name: "untagged".into(),
            }),
            enabled: true,
            ..Interface::default()
        }
    }

    fn layout() -> HostNetwork {
        serde_json::from_value(json!({
            "bond": {"name": "bond0", "nics": ["eno1", "eno2"], "mode": "802.3ad"},
            "bridge": {"name": "br0"},
            "vlans": [
                {"vid": 10, "link": {"subnet": "172.16.0.0/22"}},
                {"vid": 20, "link": {"subnet": "10.20.0.0/16", "mode": "static", "ip_address": "10.20.30.99", "default_gateway": true}}
            ]
        }))
        .unwrap()
    }

    fn vlans() -> Vec<Vlan> {
        [(5001, 0), (5002, 10), (5003, 20)]
            .into_iter()
            .map(|(id, vid)| Vlan {
                id,
                vid,
                fabric_id: 0,
                name: vid.to_string(),
            })
            .collect()
    }

    fn subnets() -> Vec<Subnet> {
        [
            (1, "192.168.0.0/22"),
            (2, "172.16.0.0/22"),
            (3, "10.20.0.0/16"),
        ]
        .into_iter()
        .map(|(id, cidr)| Subnet {
            id,
            name: cidr.into(),
            cidr: cidr.into(),
        })
        .collect()
    }

    #[test]
    fn a_fresh_machine_gets_every_change_in_order() {
        let nics = [nic(1, "eno1"), nic(2, "eno2")];
        let plan = layout().plan(&nics, &vlans(), &subnets()).unwrap();
        assert_eq!(
            plan,
            vec![
                Change::CreateBond {
                    name: "bond0".into(),
                    nics: vec!["eno1".into(), "eno2".into()]
                },
                Change::CreateBridge {
                    name: "br0".into(),
                    parent: "bond0".into()
                },
                Change::CreateVlan {
                    parent: "bond0".into(),
                    vid: 10,
                    vlan: 5002
                },
                Change::CreateVlan {
                    parent: "bond0".into(),
                    vid: 20,
                    vlan: 5003
                },
                Change::Link {
                    interface: "bond0.10".into(),
                    subnet: 2,
                    mode: LinkMode::Auto,
                    ip_address: None,
                    default_gateway: false
                },
                Change::Link {
                    interface: "bond0.20".into(),
                    subnet: 3,
                    mode: LinkMode::Static,
                    ip_address: Some("10.20.30.99".into()),
                    default_gateway: true
                },
            ]
        );
    }

    #[test]
    fn what_exists_is_not_planned_again() {
        let mut eno1 = nic(1, "eno1");
        let mut eno2 = nic(2, "eno2");
        eno1.children = vec!["bond0".into()];
        eno2.children = vec!["bond0".into()];
        let bond = Interface {
            id: 3,
            name: "bond0".into(),
            kind: "bond".into(),
            parents: vec!["eno2".into(), "eno1".into()],
            ..nic(3, "bond0")
        };
        let v10 = Interface {
            id: 4,
            name: "bond0.10".into(),
            kind: "vlan".into(),
            parents: vec!["bond0".into()],
            vlan: Some(vlans()[1].clone()),
            links: vec![Link {
                id: 9,
                mode: "auto".into(),
                subnet: Some(subnets()[1].clone()),
                ip_address: None,
            }],
            ..Interface::default()
        };
        let plan = layout()
            .plan(&[eno1, eno2, bond, v10], &vlans(), &subnets())
            .unwrap();
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert!(matches!(&plan[0], Change::CreateBridge { .. }));
        assert!(matches!(&plan[1], Change::CreateVlan { vid: 20, .. }));
        assert!(matches!(&plan[2], Change::Link { interface, .. } if interface == "bond0.20"));
    }

    #[test]
    fn every_misfit_is_named_and_nothing_is_planned() {
        let mut l = layout();
        l.bond.nics = vec!["eno1".into(), "eno3".into()];
        l.vlans.push(VlanLayout {
            vid: 30,
            on: None,
            link: None,
        });
        l.vlans.push(VlanLayout {
            vid: 5000,
            on: None,
            link: None,
        });
        l.bridge.as_mut().unwrap().link = Some(LinkLayout {
            subnet: "10.99.0.0/16".into(),
            mode: LinkMode::Auto,
            ip_address: None,
            default_gateway: false,
        });
        let mut eno1 = nic(1, "eno1");
        eno1.children = vec!["bond1".into()];
        let problems = l
            .plan(&[eno1, nic(2, "eno2")], &vlans(), &subnets())
            .unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains("no interface eno3 for bond bond0 (it has eno1, eno2)"),
            "{all}"
        );
        assert!(all.contains("NIC eno1 already carries bond1"), "{all}");
        assert!(all.contains("no VLAN 30 (it has [0, 10, 20])"), "{all}");
        assert!(all.contains("VLAN 5000 is not a tag"), "{all}");
        assert!(
            all.contains("subnet 10.99.0.0/16, which MAAS does not have"),
            "{all}"
        );
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn failure_reasons_prefer_error_events() {
        let m = Machine {
            status_message: "Marking node failed - timed out".into(),
            ..Machine::default()
        };
        let info = Event {
            level: "INFO".into(),
            kind: "Deploying".into(),
            ..Event::default()
        };
        let error = Event {
            level: "ERROR".into(),
            kind: "Failed to install OS".into(),
            description: "curtin exited 3".into(),
            ..Event::default()
        };
        assert_eq!(
            failure_reason(&m, &[info.clone(), error]),
            "Failed to install OS: curtin exited 3"
        );
        assert_eq!(
            failure_reason(&m, &[info]),
            "Marking node failed - timed out"
        );
        let m = Machine {
            error_description: "bad disk".into(),
            ..m
        };
        assert_eq!(failure_reason(&m, &[]), "bad disk");
    }
}
