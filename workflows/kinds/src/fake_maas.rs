//! An in-memory MAAS region, so the MAAS kinds' steps are table-tested in milliseconds without the
//! lab. [`FakeMaas`] holds machines (status, owner, owner data, the `agent_name` they were
//! allocated under, tags, pool, zone, CPUs, memory, interfaces and events) behind a mutex and
//! answers the [`Maas`] port with MAAS's rules as the lab applies them (`services/lab/src/maas/`):
//! allocation takes a Ready, unowned machine matching every constraint (the first in the order the
//! test added them, where MAAS takes the cheapest) or answers `NoMatch`; deploy needs Allocated (a
//! Ready one is allocated implicitly) and leaves the machine Deploying; release is a no-op on a
//! Ready or Releasing machine and a `Conflict` where MAAS refuses it; abort, mark broken and mark
//! fixed move the states MAAS moves; only the owner may set owner data (`Conflict`) or mark a
//! machine broken (MAAS's 403, which the adapter turns into `Permanent`).
//!
//! The fake never moves a machine on its own, and writes no events: a deployment stays Deploying
//! until the test moves it ([`FakeMaas::set_status`]), a release lands on Ready at once (no disk
//! erasing; owner, owner data and `agent_name` cleared, as MAAS clears them), and a machine's
//! events are what the test gave it ([`FakeMaas::set_events`]). Every call is logged
//! ([`FakeMaas::calls`]) and the next N calls of an operation fail as told ([`FakeMaas::fail`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use drover_workflows::ports::maas::{
    Allocation, Deployment, Event, Interface, Link, Maas, MaasError, Machine, MachineFilter,
    NewBond, NewBridge, NewLink, NewVlan, Release, Subnet, Vlan, status,
};

/// The MAAS user the fake's port acts as: machines it allocates are owned by this name.
pub const USER: &str = "drover";

/// An operation of the [`Maas`] port, to make it fail or count its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    ListMachines,
    GetMachine,
    Allocate,
    Deploy,
    Release,
    Abort,
    MarkBroken,
    MarkFixed,
    SetOwnerData,
    Interfaces,
    Vlans,
    Subnets,
    CreateBond,
    CreateBridge,
    CreateVlan,
    LinkSubnet,
    Events,
}

/// One call a step made, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    ListMachines(MachineFilter),
    GetMachine {
        system_id: String,
    },
    Allocate(Allocation),
    Deploy {
        system_id: String,
        deployment: Deployment,
    },
    Release {
        system_id: String,
        release: Release,
    },
    Abort {
        system_id: String,
        comment: Option<String>,
    },
    MarkBroken {
        system_id: String,
        comment: String,
    },
    MarkFixed {
        system_id: String,
    },
    SetOwnerData {
        system_id: String,
        data: BTreeMap<String, Option<String>>,
    },
    Interfaces {
        system_id: String,
    },
    Vlans {
        fabric_id: u64,
    },
    Subnets,
    CreateBond {
        system_id: String,
        bond: NewBond,
    },
    CreateBridge {
        system_id: String,
        bridge: NewBridge,
    },
    CreateVlan {
        system_id: String,
        vlan: NewVlan,
    },
    LinkSubnet {
        system_id: String,
        interface: u64,
        link: NewLink,
    },
    Events {
        system_id: String,
        limit: u32,
    },
}

impl Call {
    /// The operation this call is of.
    pub fn op(&self) -> Op {
        match self {
            Call::ListMachines(_) => Op::ListMachines,
            Call::GetMachine { .. } => Op::GetMachine,
            Call::Allocate(_) => Op::Allocate,
            Call::Deploy { .. } => Op::Deploy,
            Call::Release { .. } => Op::Release,
            Call::Abort { .. } => Op::Abort,
            Call::MarkBroken { .. } => Op::MarkBroken,
            Call::MarkFixed { .. } => Op::MarkFixed,
            Call::SetOwnerData { .. } => Op::SetOwnerData,
            Call::Interfaces { .. } => Op::Interfaces,
            Call::Vlans { .. } => Op::Vlans,
            Call::Subnets => Op::Subnets,
            Call::CreateBond { .. } => Op::CreateBond,
            Call::CreateBridge { .. } => Op::CreateBridge,
            Call::CreateVlan { .. } => Op::CreateVlan,
            Call::LinkSubnet { .. } => Op::LinkSubnet,
            Call::Events { .. } => Op::Events,
        }
    }

    /// Whether the call asks MAAS to change something (reads do not).
    pub fn mutates(&self) -> bool {
        !matches!(
            self.op(),
            Op::ListMachines
                | Op::GetMachine
                | Op::Interfaces
                | Op::Vlans
                | Op::Subnets
                | Op::Events
        )
    }
}

/// A machine as the fake holds it: what MAAS shows, and what it keeps without showing.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// As [`Maas::get_machine`] returns it; its `interfaces` are what [`Maas::interfaces`] returns.
    pub machine: Machine,
    /// The `agent_name` it was allocated under (MAAS filters on it but does not show it).
    pub agent_name: Option<String>,
    /// Newest first, as [`Maas::events`] returns them.
    pub events: Vec<Event>,
    /// The last deployment asked for (its user data holds the resolved join command).
    pub deployment: Option<Deployment>,
}

/// The region as the fake holds it. Tests edit it between runs through [`FakeMaas::edit`].
#[derive(Debug, Default)]
pub struct Region {
    /// In the order they were added (MAAS lists by id).
    pub machines: Vec<Record>,
    /// VLANs by fabric id.
    pub vlans: BTreeMap<u64, Vec<Vlan>>,
    pub subnets: Vec<Subnet>,
    next_interface: u64,
    failures: BTreeMap<Op, VecDeque<MaasError>>,
    calls: Vec<Call>,
}

impl Region {
    /// A machine by system id.
    pub fn get(&self, system_id: &str) -> Option<&Record> {
        self.machines
            .iter()
            .find(|r| r.machine.system_id == system_id)
    }

    fn record(&mut self, system_id: &str) -> Result<&mut Record, MaasError> {
        self.machines
            .iter_mut()
            .find(|r| r.machine.system_id == system_id)
            .ok_or_else(|| MaasError::NotFound(format!("no machine with system ID {system_id}")))
    }

    fn interface_id(&mut self) -> u64 {
        self.next_interface += 1;
        1000 + self.next_interface
    }
}

impl Record {
    fn set_status(&mut self, to: u32) {
        self.machine.status = to;
        self.machine.status_name = status_name(to).to_string();
    }

    /// As MAAS does when a machine leaves its owner (released, marked broken).
    fn disown(&mut self) {
        self.machine.owner = None;
        self.machine.owner_data.clear();
        self.agent_name = None;
    }

    fn interface_named(&self, name: &str) -> Option<&Interface> {
        self.machine.interfaces.iter().find(|i| i.name == name)
    }

    fn interface_by_id(&self, id: u64) -> Result<&Interface, MaasError> {
        self.machine
            .interfaces
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| MaasError::NotFound(format!("no interface {id}")))
    }
}

/// An in-memory [`Maas`].
#[derive(Debug, Default)]
pub struct FakeMaas {
    region: Mutex<Region>,
}

impl FakeMaas {
    /// Adds a machine (see [`ready`] and [`held`]).
    pub fn machine(self, record: Record) -> FakeMaas {
        self.edit(|r| r.machines.push(record));
        self
    }

    /// Reads or changes the model.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Region) -> R) -> R {
        f(&mut self.lock())
    }

    /// A machine as MAAS would show it now.
    pub fn get(&self, system_id: &str) -> Machine {
        self.edit(|r| r.get(system_id).map(|m| m.machine.clone()))
            .unwrap_or_else(|| panic!("no machine {system_id}"))
    }

    /// The `agent_name` a machine is held under.
    pub fn agent_name(&self, system_id: &str) -> Option<String> {
        self.edit(|r| r.get(system_id).and_then(|m| m.agent_name.clone()))
    }

    /// The last deployment asked of a machine.
    pub fn deployment(&self, system_id: &str) -> Option<Deployment> {
        self.edit(|r| r.get(system_id).and_then(|m| m.deployment.clone()))
    }

    /// Moves a machine by hand (a deployment ends, an operator acts), as MAAS would show it.
    pub fn set_status(&self, system_id: &str, to: u32) {
        self.edit(|r| {
            r.record(system_id)
                .unwrap_or_else(|e| panic!("{e}"))
                .set_status(to)
        });
    }

    /// Gives a machine its events, newest first.
    pub fn set_events(&self, system_id: &str, events: Vec<Event>) {
        self.edit(|r| r.record(system_id).unwrap_or_else(|e| panic!("{e}")).events = events);
    }

    /// Makes the next `times` calls of `op` fail with `error` (logged, with no effect).
    pub fn fail(&self, op: Op, times: usize, error: MaasError) {
        self.edit(|r| {
            r.failures
                .entry(op)
                .or_default()
                .extend(std::iter::repeat_n(error, times))
        });
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far that asked MAAS to change something.
    pub fn mutations(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.mutates())
            .cloned()
            .collect()
    }

    /// How many calls of `op` were made so far.
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op() == op).count()
    }

    /// Forgets the calls so far (a test that drives several steps looks at one at a time).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Region> {
        // A test that panicked while holding the lock has failed already; its model is still usable.
        self.region.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call` and takes the lock, or fails it as told.
    fn begin(&self, call: Call) -> Result<MutexGuard<'_, Region>, MaasError> {
        let mut r = self.lock();
        let op = call.op();
        r.calls.push(call);
        match r.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(r),
        }
    }
}

/// MAAS's label for a status (`Failed deployment`).
pub fn status_name(s: u32) -> &'static str {
    match s {
        status::NEW => "New",
        status::COMMISSIONING => "Commissioning",
        status::FAILED_COMMISSIONING => "Failed commissioning",
        status::MISSING => "Missing",
        status::READY => "Ready",
        status::RESERVED => "Reserved",
        status::DEPLOYED => "Deployed",
        status::RETIRED => "Retired",
        status::BROKEN => "Broken",
        status::DEPLOYING => "Deploying",
        status::ALLOCATED => "Allocated",
        status::FAILED_DEPLOYMENT => "Failed deployment",
        status::RELEASING => "Releasing",
        status::FAILED_RELEASING => "Releasing failed",
        status::DISK_ERASING => "Disk erasing",
        status::FAILED_DISK_ERASING => "Failed disk erasing",
        status::RESCUE_MODE => "Rescue mode",
        status::ENTERING_RESCUE_MODE => "Entering rescue mode",
        status::FAILED_ENTERING_RESCUE_MODE => "Failed to enter rescue mode",
        status::EXITING_RESCUE_MODE => "Exiting rescue mode",
        status::FAILED_EXITING_RESCUE_MODE => "Failed to exit rescue mode",
        status::TESTING => "Testing",
        status::FAILED_TESTING => "Failed testing",
        _ => "Unknown",
    }
}

/// The states MAAS releases from (the lab's `Status::releasable`).
fn releasable(s: u32) -> bool {
    matches!(
        s,
        status::ALLOCATED
            | status::RESERVED
            | status::BROKEN
            | status::DEPLOYING
            | status::DEPLOYED
            | status::FAILED_DEPLOYMENT
            | status::FAILED_DISK_ERASING
            | status::FAILED_RELEASING
    )
}

fn matches_filter(r: &Record, f: &MachineFilter) -> bool {
    let m = &r.machine;
    let any = |want: &[String], have: &str| want.is_empty() || want.iter().any(|w| w == have);
    any(&f.system_ids, &m.system_id)
        && any(&f.hostnames, &m.hostname)
        && (f.statuses.is_empty() || f.statuses.contains(&m.status))
        && f.agent_name
            .as_ref()
            .is_none_or(|a| r.agent_name.as_ref() == Some(a))
        && f.owner.as_ref().is_none_or(|o| m.owner.as_ref() == Some(o))
        && f.pool.as_ref().is_none_or(|p| &m.pool == p)
        && f.zone.as_ref().is_none_or(|z| &m.zone == z)
        && f.tags.iter().all(|t| m.tags.contains(t))
        && f.owner_data_matches(m)
}

fn fits(m: &Machine, a: &Allocation) -> bool {
    m.status == status::READY
        && m.owner.is_none()
        && a.pool.as_ref().is_none_or(|p| &m.pool == p)
        && a.zone.as_ref().is_none_or(|z| &m.zone == z)
        && a.tags.iter().all(|t| m.tags.contains(t))
        && !a.not_tags.iter().any(|t| m.tags.contains(t))
        && a.cpu_count.is_none_or(|n| m.cpu_count >= n)
        && a.memory_mib.is_none_or(|n| m.memory_mib >= n)
        && a.system_id.as_ref().is_none_or(|s| &m.system_id == s)
}

#[async_trait]
impl Maas for FakeMaas {
    async fn list_machines(&self, filter: &MachineFilter) -> Result<Vec<Machine>, MaasError> {
        let r = self.begin(Call::ListMachines(filter.clone()))?;
        Ok(r.machines
            .iter()
            .filter(|m| matches_filter(m, filter))
            .map(|m| m.machine.clone())
            .collect())
    }

    async fn get_machine(&self, system_id: &str) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::GetMachine {
            system_id: system_id.into(),
        })?;
        Ok(r.record(system_id)?.machine.clone())
    }

    async fn allocate(&self, allocation: &Allocation) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::Allocate(allocation.clone()))?;
        let Some(m) = r.machines.iter_mut().find(|m| fits(&m.machine, allocation)) else {
            return Err(MaasError::NoMatch(
                "No available machine matches constraints".into(),
            ));
        };
        m.machine.owner = Some(USER.into());
        m.agent_name = allocation.agent_name.clone();
        m.set_status(status::ALLOCATED);
        Ok(m.machine.clone())
    }

    async fn deploy(&self, system_id: &str, deployment: &Deployment) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::Deploy {
            system_id: system_id.into(),
            deployment: deployment.clone(),
        })?;
        let m = r.record(system_id)?;
        if m.machine.status == status::READY && m.machine.owner.is_none() {
            m.machine.owner = Some(USER.into());
            m.set_status(status::ALLOCATED);
        }
        if m.machine.status != status::ALLOCATED {
            return Err(MaasError::Conflict(format!(
                "Can't deploy a machine that is in the '{}' state",
                m.machine.status_name
            )));
        }
        m.deployment = Some(deployment.clone());
        m.machine.error_description.clear();
        m.set_status(status::DEPLOYING);
        Ok(m.machine.clone())
    }

    async fn release(&self, system_id: &str, release: &Release) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::Release {
            system_id: system_id.into(),
            release: release.clone(),
        })?;
        let m = r.record(system_id)?;
        match m.machine.status {
            status::READY | status::RELEASING => {}
            s if releasable(s) => {
                m.disown();
                m.set_status(status::READY);
            }
            _ => {
                return Err(MaasError::Conflict(format!(
                    "Machine cannot be released in its current state ('{}').",
                    m.machine.status_name
                )));
            }
        }
        Ok(m.machine.clone())
    }

    async fn abort(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::Abort {
            system_id: system_id.into(),
            comment: comment.map(str::to_string),
        })?;
        let m = r.record(system_id)?;
        match m.machine.status {
            status::DEPLOYING => m.set_status(status::ALLOCATED),
            status::DISK_ERASING => m.set_status(status::FAILED_DISK_ERASING),
            _ => {
                return Err(MaasError::Conflict(format!(
                    "Cannot abort in current state: node {system_id} is in state {}.",
                    m.machine.status_name
                )));
            }
        }
        Ok(m.machine.clone())
    }

    async fn mark_broken(&self, system_id: &str, comment: &str) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::MarkBroken {
            system_id: system_id.into(),
            comment: comment.into(),
        })?;
        let m = r.record(system_id)?;
        if m.machine.owner.as_deref() != Some(USER) {
            return Err(MaasError::Permanent(
                "403 You do not have permission to mark this node as broken.".into(),
            ));
        }
        if m.machine.status == status::BROKEN {
            return Err(MaasError::Conflict(format!(
                "Cannot mark node broken: node {system_id} is already broken."
            )));
        }
        m.disown();
        m.set_status(status::BROKEN);
        m.machine.error_description = comment.into();
        Ok(m.machine.clone())
    }

    async fn mark_fixed(
        &self,
        system_id: &str,
        _comment: Option<&str>,
    ) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::MarkFixed {
            system_id: system_id.into(),
        })?;
        let m = r.record(system_id)?;
        if m.machine.status != status::BROKEN {
            return Err(MaasError::Conflict(
                "Can't mark a non-broken node as 'Ready'.".into(),
            ));
        }
        m.disown();
        m.set_status(status::READY);
        m.machine.error_description.clear();
        Ok(m.machine.clone())
    }

    async fn set_owner_data(
        &self,
        system_id: &str,
        data: &BTreeMap<String, Option<String>>,
    ) -> Result<Machine, MaasError> {
        let mut r = self.begin(Call::SetOwnerData {
            system_id: system_id.into(),
            data: data.clone(),
        })?;
        let m = r.record(system_id)?;
        if m.machine.owner.as_deref() != Some(USER) {
            return Err(MaasError::Conflict(
                "Cannot set workload annotation: it hasn't been acquired.".into(),
            ));
        }
        for (k, v) in data {
            match v {
                Some(v) => m.machine.owner_data.insert(k.clone(), v.clone()),
                None => m.machine.owner_data.remove(k),
            };
        }
        Ok(m.machine.clone())
    }

    async fn interfaces(&self, system_id: &str) -> Result<Vec<Interface>, MaasError> {
        let mut r = self.begin(Call::Interfaces {
            system_id: system_id.into(),
        })?;
        Ok(r.record(system_id)?.machine.interfaces.clone())
    }

    async fn vlans(&self, fabric_id: u64) -> Result<Vec<Vlan>, MaasError> {
        let r = self.begin(Call::Vlans { fabric_id })?;
        r.vlans
            .get(&fabric_id)
            .cloned()
            .ok_or_else(|| MaasError::NotFound(format!("no fabric {fabric_id}")))
    }

    async fn subnets(&self) -> Result<Vec<Subnet>, MaasError> {
        let r = self.begin(Call::Subnets)?;
        Ok(r.subnets.clone())
    }

    async fn create_bond(&self, system_id: &str, bond: &NewBond) -> Result<Interface, MaasError> {
        let mut r = self.begin(Call::CreateBond {
            system_id: system_id.into(),
            bond: bond.clone(),
        })?;
        let id = r.interface_id();
        let m = r.record(system_id)?;
        let parents = bond
            .parents
            .iter()
            .map(|p| m.interface_by_id(*p).map(|i| i.name.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let vlan = m.interface_named(&parents[0]).and_then(|i| i.vlan.clone());
        add_interface(m, id, &bond.name, "bond", parents, vlan)
    }

    async fn create_bridge(
        &self,
        system_id: &str,
        bridge: &NewBridge,
    ) -> Result<Interface, MaasError> {
        let mut r = self.begin(Call::CreateBridge {
            system_id: system_id.into(),
            bridge: bridge.clone(),
        })?;
        let id = r.interface_id();
        let m = r.record(system_id)?;
        let parent = m.interface_by_id(bridge.parent)?.clone();
        add_interface(
            m,
            id,
            &bridge.name,
            "bridge",
            vec![parent.name],
            parent.vlan,
        )
    }

    async fn create_vlan(&self, system_id: &str, vlan: &NewVlan) -> Result<Interface, MaasError> {
        let mut r = self.begin(Call::CreateVlan {
            system_id: system_id.into(),
            vlan: vlan.clone(),
        })?;
        let id = r.interface_id();
        let v = r
            .vlans
            .values()
            .flatten()
            .find(|v| v.id == vlan.vlan)
            .cloned()
            .ok_or_else(|| MaasError::NotFound(format!("no VLAN {}", vlan.vlan)))?;
        let m = r.record(system_id)?;
        let parent = m.interface_by_id(vlan.parent)?.name.clone();
        let name = format!("{parent}.{}", v.vid);
        add_interface(m, id, &name, "vlan", vec![parent], Some(v))
    }

    async fn link_subnet(
        &self,
        system_id: &str,
        interface: u64,
        link: &NewLink,
    ) -> Result<Interface, MaasError> {
        let mut r = self.begin(Call::LinkSubnet {
            system_id: system_id.into(),
            interface,
            link: link.clone(),
        })?;
        let subnet = r
            .subnets
            .iter()
            .find(|s| s.id == link.subnet)
            .cloned()
            .ok_or_else(|| MaasError::NotFound(format!("no subnet {}", link.subnet)))?;
        let m = r.record(system_id)?;
        m.interface_by_id(interface)?;
        let i = m
            .machine
            .interfaces
            .iter_mut()
            .find(|i| i.id == interface)
            .expect("looked up above");
        let id = i.links.len() as u64 + 1;
        i.links.push(Link {
            id,
            mode: serde_json::to_value(link.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            subnet: Some(subnet),
            ip_address: link.ip_address.clone(),
        });
        Ok(i.clone())
    }

    async fn events(&self, system_id: &str, limit: u32) -> Result<Vec<Event>, MaasError> {
        let r = self.begin(Call::Events {
            system_id: system_id.into(),
            limit,
        })?;
        // MAAS's event query answers an unknown machine with no events, not a 404.
        Ok(r.get(system_id)
            .map(|m| m.events.iter().take(limit as usize).cloned().collect())
            .unwrap_or_default())
    }
}

/// Adds an interface built on `parents` (which learn of their child) and returns it.
fn add_interface(
    m: &mut Record,
    id: u64,
    name: &str,
    kind: &str,
    parents: Vec<String>,
    vlan: Option<Vlan>,
) -> Result<Interface, MaasError> {
    if m.interface_named(name).is_some() {
        return Err(MaasError::Permanent(format!(
            "400 interface {name} already exists"
        )));
    }
    for i in m.machine.interfaces.iter_mut() {
        if parents.contains(&i.name) {
            i.children.push(name.to_string());
        }
    }
    let made = Interface {
        id,
        name: name.into(),
        kind: kind.into(),
        vlan,
        parents,
        enabled: true,
        ..Interface::default()
    };
    m.machine.interfaces.push(made.clone());
    Ok(made)
}

/// A Ready, unowned machine `system_id` with hostname `host-<system_id>`, 16 CPUs and 64 GiB, in
/// pool `default`, zone `default`, without tags.
pub fn ready(system_id: &str) -> Record {
    let mut r = Record {
        machine: Machine {
            system_id: system_id.into(),
            hostname: format!("host-{system_id}"),
            pool: "default".into(),
            zone: "default".into(),
            cpu_count: 16,
            memory_mib: 64 * 1024,
            power_state: "off".into(),
            ..Machine::default()
        },
        ..Record::default()
    };
    r.set_status(status::READY);
    r
}

/// Machine `system_id` in `status`, held by the fake's user under `agent_name` with `owner_data`,
/// as an earlier run of a step would have left it.
pub fn held(system_id: &str, status: u32, agent_name: &str, owner_data: &[(&str, &str)]) -> Record {
    let mut r = ready(system_id);
    r.set_status(status);
    r.machine.owner = Some(USER.into());
    r.agent_name = Some(agent_name.into());
    r.machine.owner_data = owner_data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

impl Record {
    /// The same, with `tags`.
    pub fn tags(mut self, tags: &[&str]) -> Record {
        self.machine.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    /// The same, in resource pool `pool`.
    pub fn pool(mut self, pool: &str) -> Record {
        self.machine.pool = pool.into();
        self
    }

    /// The same, with `cpu_count` CPUs and `memory_mib` MiB.
    pub fn size(mut self, cpu_count: u32, memory_mib: u64) -> Record {
        self.machine.cpu_count = cpu_count;
        self.machine.memory_mib = memory_mib;
        self
    }

    /// The same, with these interfaces.
    pub fn interfaces(mut self, interfaces: Vec<Interface>) -> Record {
        self.machine.interfaces = interfaces;
        self
    }
}

/// An event of `kind` at `level` (`ERROR`, `INFO`, ...), as MAAS's event log holds it.
pub fn event(level: &str, kind: &str, description: &str) -> Event {
    Event {
        level: level.into(),
        kind: kind.into(),
        description: description.into(),
        ..Event::default()
    }
}

/// The event MAAS logs when a deployment fails (`Marking node failed`, at ERROR).
pub fn marked_failed(description: &str) -> Event {
    event("ERROR", "Marking node failed", description)
}

#[cfg(test)]
mod tests {
    use drover_workflows::ports::maas::{BondLayout, HostNetwork};
    use futures::executor::block_on;

    use super::*;

    fn maas() -> FakeMaas {
        FakeMaas::default()
            .machine(ready("a").tags(&["gpu"]))
            .machine(ready("b").pool("spare").size(8, 16 * 1024))
            .machine(held(
                "c",
                status::DEPLOYED,
                "other",
                &[("drover-workflow", "p2")],
            ))
    }

    #[test]
    fn allocation_honours_constraints_and_records_the_agent_name() {
        let maas = maas();
        let want = Allocation {
            pool: Some("spare".into()),
            agent_name: Some("wf-1".into()),
            ..Allocation::default()
        };
        let m = block_on(maas.allocate(&want)).unwrap();
        assert_eq!((m.system_id.as_str(), m.status), ("b", status::ALLOCATED));
        assert_eq!(m.owner.as_deref(), Some(USER));
        assert_eq!(maas.agent_name("b").as_deref(), Some("wf-1"));
        // b is taken now; a is in another pool.
        assert!(matches!(
            block_on(maas.allocate(&want)),
            Err(MaasError::NoMatch(_))
        ));
        let big = Allocation {
            cpu_count: Some(16),
            not_tags: vec!["gpu".into()],
            ..Allocation::default()
        };
        assert!(matches!(
            block_on(maas.allocate(&big)),
            Err(MaasError::NoMatch(_))
        ));
        let by_agent = MachineFilter {
            agent_name: Some("wf-1".into()),
            ..MachineFilter::default()
        };
        let found = block_on(maas.list_machines(&by_agent)).unwrap();
        assert_eq!(found.len(), 1);
        let by_data = MachineFilter {
            owner_data: BTreeMap::from([("drover-workflow".into(), "p2".into())]),
            ..MachineFilter::default()
        };
        let found = block_on(maas.list_machines(&by_data)).unwrap();
        assert_eq!(found[0].system_id, "c");
        assert_eq!(maas.count(Op::Allocate), 3);
        assert_eq!(maas.mutations().len(), 3);
    }

    #[test]
    fn the_lifecycle_follows_maas_rules() {
        let maas = maas();
        let release = Release::default();
        // Ready is deployed through an implicit allocation; Deploying again is a conflict.
        let m = block_on(maas.deploy("a", &Deployment::default())).unwrap();
        assert_eq!(m.status_name, "Deploying");
        assert!(matches!(
            block_on(maas.deploy("a", &Deployment::default())),
            Err(MaasError::Conflict(_))
        ));
        let m = block_on(maas.abort("a", None)).unwrap();
        assert!(m.is(status::ALLOCATED));
        assert!(matches!(
            block_on(maas.abort("a", None)),
            Err(MaasError::Conflict(_))
        ));
        // Release clears what MAAS clears; a second release is a no-op.
        let m = block_on(maas.release("c", &release)).unwrap();
        assert!(m.is(status::READY) && m.owner.is_none() && m.owner_data.is_empty());
        assert_eq!(maas.agent_name("c"), None);
        assert!(block_on(maas.release("c", &release)).is_ok());
        maas.set_status("c", status::COMMISSIONING);
        assert!(matches!(
            block_on(maas.release("c", &release)),
            Err(MaasError::Conflict(_))
        ));
        // Only the owner marks a machine broken or sets owner data.
        assert!(matches!(
            block_on(maas.mark_broken("b", "x")),
            Err(MaasError::Permanent(_))
        ));
        assert!(matches!(
            block_on(maas.set_owner_data("b", &BTreeMap::new())),
            Err(MaasError::Conflict(_))
        ));
        let m = block_on(maas.mark_broken("a", "bad disk")).unwrap();
        assert!(m.is(status::BROKEN) && m.owner.is_none());
        assert_eq!(m.error_description, "bad disk");
        assert!(
            block_on(maas.mark_fixed("a", None))
                .unwrap()
                .is(status::READY)
        );
        assert!(matches!(
            block_on(maas.get_machine("zz")),
            Err(MaasError::NotFound(_))
        ));
    }

    #[test]
    fn failures_are_served_in_order_and_logged() {
        let maas = maas();
        maas.fail(Op::GetMachine, 1, MaasError::Permanent("boom".into()));
        assert_eq!(
            block_on(maas.get_machine("a")),
            Err(MaasError::Permanent("boom".into()))
        );
        assert!(block_on(maas.get_machine("a")).is_ok());
        assert_eq!(maas.count(Op::GetMachine), 2);
        maas.set_events(
            "a",
            vec![
                marked_failed("2"),
                event("INFO", "Deploying", ""),
                marked_failed("1"),
            ],
        );
        let events = block_on(maas.events("a", 2)).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].description, "2");
    }

    #[test]
    fn configure_network_runs_over_the_fake_s_interfaces() {
        let nic = |id: u64, name: &str| Interface {
            id,
            name: name.into(),
            kind: "physical".into(),
            vlan: Some(Vlan {
                id: 5001,
                ..Vlan::default()
            }),
            enabled: true,
            ..Interface::default()
        };
        let maas = FakeMaas::default().machine(
            held("a", status::ALLOCATED, "wf", &[])
                .interfaces(vec![nic(1, "eno1"), nic(2, "eno2")]),
        );
        let layout = HostNetwork {
            bond: BondLayout {
                name: "bond0".into(),
                nics: vec!["eno1".into(), "eno2".into()],
                mode: "802.3ad".into(),
                mtu: None,
                lacp_rate: None,
                xmit_hash_policy: None,
                link: None,
            },
            bridge: None,
            vlans: Vec::new(),
        };
        let after = block_on(maas.configure_network("a", &layout)).unwrap();
        let bond = after.iter().find(|i| i.name == "bond0").unwrap();
        assert_eq!(bond.parents, ["eno1", "eno2"]);
        assert_eq!(maas.count(Op::CreateBond), 1);
        // Run again, it finds the bond and changes nothing.
        block_on(maas.configure_network("a", &layout)).unwrap();
        assert_eq!(maas.count(Op::CreateBond), 1);
    }
}
