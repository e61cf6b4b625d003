//! Scenarios: the inventory (MAAS machines, pools, tags; nodes; VMs with memory, disks, networks and
//! storage classes), the simulation's timings and the fault rates, read from JSON or TOML or built
//! in. The built-in default mirrors the VMO reference architecture: 8 workers of 256 GiB with 20 VMs
//! each on RWX Portworx volumes, a few on RWO volumes, some on Multus VLANs, spare MAAS machines.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A whole lab scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name shown by `/lab/status`.
    pub name: String,
    /// Simulated seconds per real second (60 makes a 12-minute deploy take 12 s).
    pub time_scale: f64,
    /// `gitVersion` reported by `/version` and by nodes.
    pub kubernetes_version: String,
    /// Cluster-wide eviction strategy for VMIs that set none (`LiveMigrate`, `LiveMigrateIfPossible`,
    /// `External`, `None`). Palette VMO configures `LiveMigrate`.
    pub default_eviction_strategy: String,
    /// KubeVirt migration settings and the timing model.
    pub migrations: MigrationSettings,
    /// MAAS region inventory and timings.
    pub maas: MaasSettings,
    /// How long a node takes to come back from a reboot (the `node_reboot` fault).
    pub reboot: RebootSettings,
    /// Namespaces to create (VM namespaces are added automatically).
    pub namespaces: Vec<String>,
    /// Storage classes.
    pub storage_classes: Vec<StorageClassSpec>,
    /// Multus NetworkAttachmentDefinitions.
    pub networks: Vec<NetworkSpec>,
    /// Kubernetes nodes present at start.
    pub nodes: Vec<NodeSpec>,
    /// VMs, one by one.
    pub vms: Vec<VmSpec>,
    /// VMs, generated per node.
    pub vm_groups: Vec<VmGroup>,
    /// Random fault rates (0.0 to 1.0 per request or per operation).
    pub faults: FaultRates,
}

/// KubeVirt's migration configuration plus the lab's duration model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSettings {
    /// `parallelMigrationsPerCluster`.
    pub parallel_per_cluster: usize,
    /// `parallelOutboundMigrationsPerNode`.
    pub parallel_outbound_per_node: usize,
    /// `bandwidthPerMigration` in MiB/s; 0 is unlimited (the NIC is the limit).
    pub bandwidth_mib_per_s: f64,
    /// Effective migration throughput of a node's NIC in MiB/s, shared by its outbound migrations.
    pub node_throughput_mib_per_s: f64,
    /// Memory re-sent because the guest dirties pages (1.0 = idle guest).
    pub dirty_rate_factor: f64,
    /// `completionTimeoutPerGiB` in seconds.
    pub completion_timeout_per_gib: f64,
    /// Seconds for the target virt-launcher pod to start (Scheduling -> Scheduled).
    pub target_pod_start_secs: f64,
    /// Seconds from Scheduled to TargetReady.
    pub prepare_target_secs: f64,
    /// Seconds of switchover at the end of Running.
    pub switchover_secs: f64,
    /// Seconds a migration waits for a schedulable target before failing.
    pub unschedulable_timeout_secs: f64,
    /// Seconds before the evacuation controller retries a VMI whose migration failed.
    pub evacuation_retry_secs: f64,
}

/// A node reboot's timing: kubelet posts Ready again after `boot_secs`, and virt-handler (a
/// DaemonSet pod, started after the kubelet) labels the node `kubevirt.io/schedulable=true`
/// `virt_handler_start_secs` later. Until then no VM can land there, Ready or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebootSettings {
    /// Seconds from the reboot until the node is Ready (firmware, boot, kubelet).
    pub boot_secs: f64,
    /// Seconds from Ready until virt-handler runs and marks the node schedulable for VMs.
    pub virt_handler_start_secs: f64,
}

impl Default for RebootSettings {
    fn default() -> Self {
        RebootSettings {
            boot_secs: 180.0,
            virt_handler_start_secs: 60.0,
        }
    }
}

/// MAAS region settings and inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaasSettings {
    /// API key `consumer:token:secret` accepted by the region.
    pub api_key: String,
    /// User name that owns what the API key allocates.
    pub user: String,
    /// DNS domain (`fqdn = hostname.domain`).
    pub domain: String,
    /// `node_timeout` in minutes: a deploy stuck longer becomes Failed deployment.
    pub node_timeout_minutes: f64,
    /// Median seconds a deploy takes from Deploying to Deployed.
    pub deploy_secs: f64,
    /// Spread of deploy durations (sigma of a lognormal around the median; 0 = always the median).
    pub deploy_jitter: f64,
    /// Seconds a release takes (without erase).
    pub release_secs: f64,
    /// Extra seconds a quick erase takes.
    pub quick_erase_secs: f64,
    /// Extra seconds a full erase takes.
    pub erase_secs: f64,
    /// Extra seconds a secure erase takes (the drives' own erase feature).
    pub secure_erase_secs: f64,
    /// Seconds from Deployed (with cluster-join user data) until the Node object appears.
    pub join_delay_secs: f64,
    /// Seconds from the Node appearing until it is Ready.
    pub node_ready_delay_secs: f64,
    /// Text in the decoded user data that marks a cluster join.
    pub join_marker: String,
    /// Resource pools (besides `default`).
    pub pools: Vec<String>,
    /// Zones (besides `default`).
    pub zones: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Machines.
    pub machines: Vec<MachineSpec>,
}

/// One MAAS machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineSpec {
    pub hostname: String,
    /// `system_id`; generated when empty.
    pub system_id: String,
    pub pool: String,
    pub zone: String,
    pub tags: Vec<String>,
    pub cpu_count: u32,
    /// MiB.
    pub memory: u64,
    /// Lowercase status constant: `ready`, `deployed`, `allocated`, `broken`, `new`.
    pub status: String,
    /// Primary IP address.
    pub ip: String,
}

/// A StorageClass and how its PVCs behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageClassSpec {
    pub name: String,
    pub provisioner: String,
    pub parameters: BTreeMap<String, String>,
    /// Access mode VM disks on this class get (`ReadWriteMany` or `ReadWriteOnce`).
    pub access_mode: String,
    /// `Filesystem` or `Block`.
    pub volume_mode: String,
    /// Marked as the default class.
    pub default: bool,
}

/// A Multus network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    pub name: String,
    pub namespace: String,
    pub vlan: u32,
    pub bridge: String,
}

/// A Kubernetes node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSpec {
    pub name: String,
    pub cpu: u32,
    pub memory_gib: u64,
    /// `worker` (runs VMs) or `control-plane`.
    pub role: String,
    pub labels: BTreeMap<String, String>,
    pub ip: String,
}

/// One VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmSpec {
    pub name: String,
    pub namespace: String,
    /// Node it runs on at start; chosen by the scheduler when empty.
    pub node: String,
    pub cpu: u32,
    pub memory_gib: f64,
    pub storage_class: String,
    pub disk_gib: u64,
    /// Multus networks (names of NetworkSpecs in the VM's namespace).
    pub networks: Vec<String>,
    /// Pod network binding: `masquerade` (migratable) or `bridge` (not migratable).
    pub pod_binding: String,
    /// Eviction strategy; the cluster default when empty.
    pub eviction_strategy: String,
    pub running: bool,
    pub labels: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
}

/// VMs generated on each node of a set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmGroup {
    /// Name prefix; VMs are `<prefix>-<node>-<nn>`.
    pub prefix: String,
    pub namespace: String,
    /// Nodes to fill; all workers when empty.
    pub nodes: Vec<String>,
    pub per_node: u32,
    pub cpu: u32,
    pub memory_gib: f64,
    pub storage_class: String,
    pub disk_gib: u64,
    pub networks: Vec<String>,
}

/// Fault rates: probabilities per request (HTTP faults) or per operation (simulated faults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRates {
    /// A MAAS request is answered 503 with `Retry-After: 10` (no rack controller), and so are
    /// the next `maas_503_burst - 1` MAAS requests.
    pub maas_503: f64,
    /// How many consecutive MAAS requests one random 503 takes (0 and 1 mean one).
    pub maas_503_burst: u32,
    /// A MAAS write is answered 409 with `Retry-After: 5` (serialization retries exhausted).
    pub maas_409: f64,
    /// A MAAS request times out at the proxy in front of the region (504, HTML body) before
    /// reaching MAAS.
    pub maas_504: f64,
    /// A MAAS request reaches MAAS and takes effect, but the proxy answers 504 anyway.
    pub maas_504_applied: f64,
    /// A deployment fails while installing (Failed deployment, the machine stays on).
    pub maas_deploy_failure: f64,
    /// A deployment fails within a minute: the BMC does not power the machine on.
    pub maas_deploy_power_failure: f64,
    /// A deployment never PXE boots and fails at `node_timeout`.
    pub maas_deploy_hang: f64,
    /// A machine loses power while installing; its deployment fails `node_timeout` later.
    pub maas_deploy_power_loss: f64,
    /// A release hangs and becomes Releasing failed after MAAS's 5-minute release timeout.
    pub maas_release_failure: f64,
    /// A release's disk erasing fails (Failed disk erasing).
    pub maas_erase_failure: f64,
    /// A deployed machine goes Broken, per hour.
    pub maas_machine_broken: f64,
    pub kube_429: f64,
    pub kube_500: f64,
    pub kube_503: f64,
    pub kube_409: f64,
    pub watch_disconnect: f64,
    pub migration_failure: f64,
    /// Maximum added latency per request, milliseconds (uniform jitter).
    pub latency_jitter_ms: u64,
    /// The CDI upload proxy's bandwidth per upload, MB/s of real time (0: as fast as it reads).
    #[serde(default)]
    pub upload_mb_per_s: f64,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            parallel_per_cluster: 5,
            parallel_outbound_per_node: 2,
            bandwidth_mib_per_s: 0.0,
            node_throughput_mib_per_s: 1024.0,
            dirty_rate_factor: 1.2,
            completion_timeout_per_gib: 150.0,
            target_pod_start_secs: 8.0,
            prepare_target_secs: 2.0,
            switchover_secs: 1.0,
            unschedulable_timeout_secs: 300.0,
            evacuation_retry_secs: 30.0,
        }
    }
}

impl Default for MaasSettings {
    fn default() -> Self {
        MaasSettings {
            api_key: "lab-consumer:lab-token:lab-secret".into(),
            user: "admin".into(),
            domain: "maas".into(),
            node_timeout_minutes: 30.0,
            deploy_secs: 720.0,
            deploy_jitter: 0.25,
            release_secs: 60.0,
            quick_erase_secs: 90.0,
            erase_secs: 3600.0,
            secure_erase_secs: 300.0,
            join_delay_secs: 60.0,
            node_ready_delay_secs: 90.0,
            join_marker: "join".into(),
            pools: Vec::new(),
            zones: Vec::new(),
            tags: Vec::new(),
            machines: Vec::new(),
        }
    }
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            hostname: String::new(),
            system_id: String::new(),
            pool: "default".into(),
            zone: "default".into(),
            tags: Vec::new(),
            cpu_count: 64,
            memory: 262_144,
            status: "ready".into(),
            ip: String::new(),
        }
    }
}

impl Default for StorageClassSpec {
    fn default() -> Self {
        StorageClassSpec {
            name: String::new(),
            provisioner: "pxd.portworx.com".into(),
            parameters: BTreeMap::new(),
            access_mode: "ReadWriteMany".into(),
            volume_mode: "Filesystem".into(),
            default: false,
        }
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            name: String::new(),
            namespace: "default".into(),
            vlan: 0,
            bridge: "br0".into(),
        }
    }
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            name: String::new(),
            cpu: 64,
            memory_gib: 256,
            role: "worker".into(),
            labels: BTreeMap::new(),
            ip: String::new(),
        }
    }
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            name: String::new(),
            namespace: "default".into(),
            node: String::new(),
            cpu: 4,
            memory_gib: 8.0,
            storage_class: String::new(),
            disk_gib: 40,
            networks: Vec::new(),
            pod_binding: "masquerade".into(),
            eviction_strategy: String::new(),
            running: true,
            labels: BTreeMap::new(),
            node_selector: BTreeMap::new(),
        }
    }
}

impl Default for VmGroup {
    fn default() -> Self {
        VmGroup {
            prefix: "vm".into(),
            namespace: "default".into(),
            nodes: Vec::new(),
            per_node: 0,
            cpu: 4,
            memory_gib: 8.0,
            storage_class: String::new(),
            disk_gib: 40,
            networks: Vec::new(),
        }
    }
}

/// Missing fields of a scenario file default to the empty scenario, not the reference one.
impl Default for Scenario {
    fn default() -> Self {
        Scenario::empty()
    }
}

impl Scenario {
    /// An empty scenario (no inventory) with default timings.
    pub fn empty() -> Self {
        Scenario {
            name: "empty".into(),
            time_scale: 60.0,
            kubernetes_version: "v1.30.4".into(),
            default_eviction_strategy: "LiveMigrate".into(),
            migrations: MigrationSettings::default(),
            maas: MaasSettings::default(),
            reboot: RebootSettings::default(),
            namespaces: vec!["default".into(), "kube-system".into(), "kubevirt".into()],
            storage_classes: Vec::new(),
            networks: Vec::new(),
            nodes: Vec::new(),
            vms: Vec::new(),
            vm_groups: Vec::new(),
            faults: FaultRates::default(),
        }
    }

    /// Read a scenario from a `.json` or `.toml` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Scenario(format!("cannot read {}: {e}", path.display())))?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        }
    }

    /// Parse a JSON scenario.
    pub fn from_json(text: &str) -> Result<Self> {
        let s: Scenario = serde_json::from_str(text).map_err(|e| Error::Scenario(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Parse a TOML scenario.
    pub fn from_toml(text: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text).map_err(|e| Error::Scenario(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Check the scenario is consistent.
    pub fn validate(&self) -> Result<()> {
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err(Error::Scenario(
                "time_scale must be a positive number".into(),
            ));
        }
        if self.maas.api_key.split(':').count() != 3 {
            return Err(Error::Scenario(
                "maas.api_key must be consumer:token:secret".into(),
            ));
        }
        let m = &self.migrations;
        if m.parallel_per_cluster == 0 || m.parallel_outbound_per_node == 0 {
            return Err(Error::Scenario(
                "migration parallelism limits must be at least 1".into(),
            ));
        }
        for vm in self.all_vms() {
            if !vm.node.is_empty() && !self.nodes.iter().any(|n| n.name == vm.node) {
                return Err(Error::Scenario(format!(
                    "vm {} is placed on unknown node {}",
                    vm.name, vm.node
                )));
            }
            if !vm.storage_class.is_empty()
                && !self
                    .storage_classes
                    .iter()
                    .any(|c| c.name == vm.storage_class)
            {
                return Err(Error::Scenario(format!(
                    "vm {} uses unknown storage class {}",
                    vm.name, vm.storage_class
                )));
            }
        }
        Ok(())
    }

    /// VMs listed one by one plus those generated by `vm_groups`.
    pub fn all_vms(&self) -> Vec<VmSpec> {
        let mut out = self.vms.clone();
        for g in &self.vm_groups {
            let nodes: Vec<&str> = if g.nodes.is_empty() {
                self.nodes
                    .iter()
                    .filter(|n| n.role == "worker")
                    .map(|n| n.name.as_str())
                    .collect()
            } else {
                g.nodes.iter().map(String::as_str).collect()
            };
            for node in nodes {
                for i in 0..g.per_node {
                    out.push(VmSpec {
                        name: format!("{}-{}-{:02}", g.prefix, node, i),
                        namespace: g.namespace.clone(),
                        node: node.to_string(),
                        cpu: g.cpu,
                        memory_gib: g.memory_gib,
                        storage_class: g.storage_class.clone(),
                        disk_gib: g.disk_gib,
                        networks: g.networks.clone(),
                        ..VmSpec::default()
                    });
                }
            }
        }
        out
    }
}

/// The built-in scenario: 3 control-plane nodes and 8 workers (64 cores, 256 GiB) deployed from
/// MAAS, 20 VMs of 8 GiB per worker on Portworx sharedv4 RWX volumes (every fifth also on the
/// `vlan20` Multus network), the last VM of four workers on an RWO volume, and four spare machines
/// tagged `vmo-worker` in the `spare` pool.
pub fn reference_architecture() -> Scenario {
    let mut s = Scenario::empty();
    s.name = "vmo-reference".into();
    s.namespaces
        .extend(["vmo-prod".into(), "cdi".into(), "portworx".into()]);
    s.storage_classes = vec![
        StorageClassSpec {
            name: "px-rwx".into(),
            parameters: [
                ("repl", "3"),
                ("sharedv4", "true"),
                ("sharedv4_svc_type", "ClusterIP"),
                ("io_profile", "auto"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
            default: true,
            ..StorageClassSpec::default()
        },
        StorageClassSpec {
            name: "px-rwo".into(),
            parameters: [("repl", "2")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            access_mode: "ReadWriteOnce".into(),
            ..StorageClassSpec::default()
        },
        StorageClassSpec {
            name: "pure-block".into(),
            parameters: [("backend", "pure_block")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            volume_mode: "Block".into(),
            ..StorageClassSpec::default()
        },
    ];
    s.networks = [20u32, 21]
        .iter()
        .map(|v| NetworkSpec {
            name: format!("vlan{v}"),
            namespace: "vmo-prod".into(),
            vlan: *v,
            bridge: "br0".into(),
        })
        .collect();
    let mut machines = Vec::new();
    for i in 1..=3 {
        let name = format!("cp-{i:02}");
        s.nodes.push(NodeSpec {
            name: name.clone(),
            cpu: 16,
            memory_gib: 64,
            role: "control-plane".into(),
            ip: format!("10.20.30.{}", 10 + i),
            ..NodeSpec::default()
        });
        machines.push(MachineSpec {
            hostname: name,
            pool: "vmo".into(),
            tags: vec!["control-plane".into()],
            cpu_count: 16,
            memory: 65_536,
            status: "deployed".into(),
            ip: format!("10.20.30.{}", 10 + i),
            ..MachineSpec::default()
        });
    }
    for i in 1..=8 {
        let name = format!("worker-{i:02}");
        let zone = if i % 2 == 0 { "az2" } else { "az1" };
        s.nodes.push(NodeSpec {
            name: name.clone(),
            ip: format!("10.20.30.{}", 20 + i),
            labels: [("topology.kubernetes.io/zone".to_string(), zone.to_string())]
                .into_iter()
                .collect(),
            ..NodeSpec::default()
        });
        machines.push(MachineSpec {
            hostname: name,
            pool: "vmo".into(),
            zone: zone.into(),
            tags: vec!["vmo-worker".into()],
            status: "deployed".into(),
            ip: format!("10.20.30.{}", 20 + i),
            ..MachineSpec::default()
        });
        for j in 0..20 {
            let rwo = j == 19 && i > 4;
            s.vms.push(VmSpec {
                name: format!("vm-{i:02}-{j:02}"),
                namespace: "vmo-prod".into(),
                node: format!("worker-{i:02}"),
                storage_class: if rwo {
                    "px-rwo".into()
                } else {
                    "px-rwx".into()
                },
                networks: if j % 5 == 0 {
                    vec!["vlan20".into()]
                } else {
                    Vec::new()
                },
                labels: [("app".to_string(), format!("app-{}", j % 4))]
                    .into_iter()
                    .collect(),
                ..VmSpec::default()
            });
        }
    }
    for i in 1..=4 {
        machines.push(MachineSpec {
            hostname: format!("spare-{i:02}"),
            pool: "spare".into(),
            zone: if i % 2 == 0 {
                "az2".into()
            } else {
                "az1".into()
            },
            tags: vec!["vmo-worker".into()],
            status: "ready".into(),
            ip: format!("10.20.30.{}", 40 + i),
            ..MachineSpec::default()
        });
    }
    s.maas.pools = vec!["vmo".into(), "spare".into()];
    s.maas.zones = vec!["az1".into(), "az2".into()];
    s.maas.tags = vec!["vmo-worker".into(), "control-plane".into(), "gpu".into()];
    s.maas.machines = machines;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mirrors_reference_architecture() {
        let s = reference_architecture();
        s.validate().unwrap();
        assert_eq!(s.nodes.iter().filter(|n| n.role == "worker").count(), 8);
        let vms = s.all_vms();
        assert_eq!(vms.len(), 160);
        assert_eq!(
            vms.iter().filter(|v| v.storage_class == "px-rwo").count(),
            4
        );
        assert!(vms.iter().any(|v| !v.networks.is_empty()));
        assert_eq!(
            s.maas.machines.iter().filter(|m| m.pool == "spare").count(),
            4
        );
    }

    #[test]
    fn shipped_scenario_files_parse() {
        let big = Scenario::from_toml(include_str!("../scenarios/1000-vms.toml")).unwrap();
        assert_eq!(big.all_vms().len(), 1000);
        let small = Scenario::from_toml(include_str!("../scenarios/small.toml")).unwrap();
        assert_eq!(small.all_vms().len(), 11);
        assert_eq!(small.maas.machines.len(), 5);
    }

    #[test]
    fn lab_settings_validate() {
        let s: crate::LabSettings =
            toml::from_str("time_scale = 300.0\nbind = \"127.0.0.1:0\"").unwrap();
        assert_eq!(s.into_config().unwrap().scenario.time_scale, 300.0);
        let bad: crate::LabSettings = toml::from_str("time_scale = -1.0").unwrap();
        assert!(bad.into_config().is_err());
        assert!(toml::from_str::<crate::LabSettings>("nope = 1").is_err());
        let missing: crate::LabSettings =
            toml::from_str("scenario = \"/nonexistent.toml\"").unwrap();
        assert!(missing.into_config().is_err());
    }

    #[test]
    fn toml_and_json_round_trip() {
        let toml_text = r#"
            name = "tiny"
            time_scale = 600.0
            [migrations]
            parallel_per_cluster = 3
            [[nodes]]
            name = "n1"
            [[vm_groups]]
            prefix = "g"
            per_node = 2
        "#;
        let s = Scenario::from_toml(toml_text).unwrap();
        assert_eq!(s.migrations.parallel_per_cluster, 3);
        assert_eq!(s.all_vms().len(), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(Scenario::from_json(&json).unwrap().all_vms().len(), 2);
        assert!(Scenario::from_toml("bogus_field = 1").is_err());
        assert!(Scenario::from_json(r#"{"time_scale": -1}"#).is_err());
    }
}
