//! In-memory fake ports, so the cluster kinds' steps are table-tested in milliseconds without
//! Redis, a worker or the lab. [`FakeKube`] holds a small cluster model behind a mutex, answers the
//! [`Kube`] port from it with the real adapter's semantics (a create that meets an existing name
//! returns that object, as `services/kube` does on a 409; deleting a missing migration, node, claim
//! or snapshot is fine; adding a volume a VM has already, or removing one it has not, is fine; a 429
//! from the Eviction API is `Eviction::Refused`), records every call, and fails the
//! next N calls of an operation when told to. [`FakeClock`] is a settable clock whose `sleep`
//! returns at once; [`FakeSecrets`] a map of secret names to values; [`FakeSchedules`] a map of
//! schedule ids to specs, for the kinds that read their maintenance window's schedule. [`Harness`]
//! runs one step (or one compensation) of a kind through the engine's own entry point
//! (`Typed::<K>::load` and `Loaded::run`), on `futures`' executor: no tokio, over these and the
//! in-memory MAAS of `fake_maas.rs`.
//!
//! The fake never moves the world on its own: a test advances it (a migration's phase, a stopped
//! VM's instance going away, a claim binding, a hotplugged volume's phase, a snapshot becoming
//! ready, a DataVolume's phase and progress, a new VM's instance) by editing the model between
//! runs, which is how a level-triggered step sees the world change.
//!
//! The import calls follow the adapter too: creating a DataVolume or a VirtualMachine that exists
//! returns it as it is (labels included); deleting a missing one is fine; a DataVolume brings its
//! claim (CDI's, of the same name) and takes it when deleted; a deleted VM takes its instance; an
//! upload is refused as CDI's proxy refuses it (a transient 503 until the DataVolume exists and
//! is `UploadReady`) and otherwise recorded with the file's length from its metadata, leaving the
//! DataVolume's phase for the test to move.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::images::{ImageError, ImageInfo, Images, Package};
use drover_workflows::ports::kube::{
    DataVolumeInfo, Eviction, Kube, KubeError, MigrationInfo, NewDataVolume, NewPvc, NewVm,
    NodeInfo, OnProgress, PodInfo, PvcInfo, QuotaLimit, SnapshotInfo, StorageClassInfo,
    StorageQuota, Transferred, VmInfo, VmVolume, VmiInfo, VmiState, VolumeStatusInfo,
};
use drover_workflows::ports::schedules::Schedules;
use drover_workflows::ports::secrets::{Secret, SecretError, Secrets};
use drover_workflows::ports::{BoxFuture, Clock, Ports};
use drover_workflows::schedule::ScheduleSpec;
use drover_workflows::sdk::{Kind, Typed};
use drover_workflows::{
    ChildSpec, ChildStatus, LiveProgress, Loaded, Outcome, Phase, State, StepContext, Workflow,
};
use serde_json::Value;

use crate::fake_maas::FakeMaas;
use crate::window::Window;

/// An operation of the [`Kube`] port, to make it fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    GetNode,
    ListNodes,
    SetUnschedulable,
    DeleteNode,
    ListVmis,
    CreateMigration,
    GetMigration,
    WatchMigration,
    DeleteMigration,
    SetVmRunning,
    ListPods,
    EvictPod,
    GetStorageClass,
    GetPvc,
    CreatePvc,
    DeletePvc,
    GetVm,
    VmiVolumeStatus,
    AddVolume,
    RemoveVolume,
    CreateSnapshot,
    GetSnapshot,
    DeleteSnapshot,
    CreateDataVolume,
    GetDataVolume,
    DeleteDataVolume,
    UploadImage,
    NetworkExists,
    StorageQuota,
    CreateVm,
    DeleteVm,
    GetVmi,
}

/// One call a step made, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    GetNode {
        node: String,
    },
    ListNodes,
    SetUnschedulable {
        node: String,
        unschedulable: bool,
    },
    DeleteNode {
        node: String,
    },
    ListVmis {
        node: Option<String>,
    },
    CreateMigration {
        namespace: String,
        name: String,
        vmi: String,
        selector: BTreeMap<String, String>,
    },
    GetMigration {
        namespace: String,
        name: String,
    },
    WatchMigration {
        namespace: String,
        name: String,
        timeout: Duration,
    },
    DeleteMigration {
        namespace: String,
        name: String,
    },
    SetVmRunning {
        namespace: String,
        vm: String,
        running: bool,
    },
    ListPods {
        node: String,
    },
    EvictPod {
        namespace: String,
        name: String,
    },
    GetStorageClass {
        name: String,
    },
    GetPvc {
        namespace: String,
        name: String,
    },
    CreatePvc {
        pvc: NewPvc,
    },
    DeletePvc {
        namespace: String,
        name: String,
    },
    GetVm {
        namespace: String,
        name: String,
    },
    VmiVolumeStatus {
        namespace: String,
        vm: String,
    },
    AddVolume {
        namespace: String,
        vm: String,
        volume: String,
        claim: String,
    },
    RemoveVolume {
        namespace: String,
        vm: String,
        volume: String,
    },
    CreateSnapshot {
        namespace: String,
        name: String,
        pvc: String,
        class: Option<String>,
    },
    GetSnapshot {
        namespace: String,
        name: String,
    },
    DeleteSnapshot {
        namespace: String,
        name: String,
    },
    CreateDataVolume {
        dv: NewDataVolume,
    },
    GetDataVolume {
        namespace: String,
        name: String,
    },
    DeleteDataVolume {
        namespace: String,
        name: String,
    },
    UploadImage {
        namespace: String,
        data_volume: String,
        path: PathBuf,
    },
    NetworkExists {
        namespace: String,
        name: String,
    },
    StorageQuota {
        namespace: String,
        storage_class: String,
    },
    CreateVm {
        vm: NewVm,
    },
    DeleteVm {
        namespace: String,
        name: String,
    },
    GetVmi {
        namespace: String,
        name: String,
    },
}

impl Call {
    /// Whether the call asks the cluster to change (reads do not).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Call::SetUnschedulable { .. }
                | Call::DeleteNode { .. }
                | Call::CreateMigration { .. }
                | Call::DeleteMigration { .. }
                | Call::SetVmRunning { .. }
                | Call::EvictPod { .. }
                | Call::CreatePvc { .. }
                | Call::DeletePvc { .. }
                | Call::AddVolume { .. }
                | Call::RemoveVolume { .. }
                | Call::CreateSnapshot { .. }
                | Call::DeleteSnapshot { .. }
                | Call::CreateDataVolume { .. }
                | Call::DeleteDataVolume { .. }
                | Call::UploadImage { .. }
                | Call::CreateVm { .. }
                | Call::DeleteVm { .. }
        )
    }
}

/// The cluster as the fake holds it. Tests edit it between runs through [`FakeKube::edit`].
#[derive(Debug, Default)]
pub struct Cluster {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub vmis: Vec<VmiInfo>,
    /// By (namespace, name).
    pub migrations: BTreeMap<(String, String), MigrationInfo>,
    /// Each pod with the node it runs on.
    pub pods: Vec<(String, PodInfo)>,
    /// VirtualMachines by (namespace, name): whether each is running.
    pub vms: BTreeMap<(String, String), bool>,
    /// What evicting a pod does, by (namespace, name); a pod not listed is evicted (and removed).
    pub evictions: BTreeMap<(String, String), Eviction>,
    /// Names of the migrations the fake created, in order (a create that met an existing name
    /// is not among them: the adapter answered it with the existing object).
    pub created: Vec<String>,
    /// Creates that met an existing migration of the same name (the adapter's 409 adoption).
    pub adopted: Vec<String>,
    /// Also refuse, as KubeVirt's migration webhook does (and the lab does not), a migration of a
    /// VMI that has one not yet finished, whatever its name: "in-flight migration detected".
    pub in_flight_webhook: bool,
    /// The next this many reads of a migration miss it, as a read that raced its creation does.
    pub unseen_reads: usize,
    /// StorageClasses by name.
    pub storage_classes: BTreeMap<String, StorageClassInfo>,
    /// Claims by (namespace, name). A created one is `Pending` until the test binds it.
    pub pvcs: BTreeMap<(String, String), PvcInfo>,
    /// What `get_vm` reports of a VM in [`Cluster::vms`] besides whether it runs, by (namespace,
    /// name); a VM without an entry has no volumes and no eviction strategy.
    pub templates: BTreeMap<(String, String), VmTemplate>,
    /// The `status.volumeStatus` of each VM's instance, by (namespace, VM name). It is read only
    /// while [`Cluster::vmis`] holds a VMI of that VM (`VmiInfo::vm`); else the instance is
    /// NotFound. `add_volume` appends a hotplug entry `Pending` and `remove_volume` turns it
    /// `Detaching`; the test moves it on (to `Ready`, or out of the list).
    pub volume_status: BTreeMap<(String, String), Vec<VolumeStatusInfo>>,
    /// VolumeSnapshots by (namespace, name). A created one is not ready until the test says so.
    pub snapshots: BTreeMap<(String, String), SnapshotInfo>,
    /// DataVolumes by (namespace, name), as `get_data_volume` reports them: a created one is
    /// `Pending` with progress `N/A` until the test moves its phase, progress, restart count or
    /// message.
    pub data_volumes: BTreeMap<(String, String), DataVolumeInfo>,
    /// What each DataVolume the fake created was asked to be, by (namespace, name).
    pub data_volume_specs: BTreeMap<(String, String), NewDataVolume>,
    /// Uploads that went through, in order.
    pub uploads: Vec<Upload>,
    /// NetworkAttachmentDefinitions, by (namespace, name).
    pub networks: BTreeSet<(String, String)>,
    /// ResourceQuota limits by namespace; `storage_quota` returns those of `requests.storage` and
    /// of the class's `<class>.storageclass.storage.k8s.io/requests.storage`.
    pub quotas: BTreeMap<String, Vec<QuotaLimit>>,
    /// What each VirtualMachine the fake created was asked to be, by (namespace, name). Created,
    /// a VM is in [`Cluster::vms`] not running (KubeVirt starts it once its DataVolumes are ready:
    /// the test says when, with its instance), `Starting` when it was created to run.
    pub new_vms: BTreeMap<(String, String), NewVm>,
    /// What `get_vmi` reports, by (namespace, name); a name not here falls back to the VMI of that
    /// name in [`Cluster::vmis`] (its `LiveMigratable` condition reported), else NotFound.
    pub vmi_states: BTreeMap<(String, String), VmiState>,
    failures: BTreeMap<Op, VecDeque<KubeError>>,
    calls: Vec<Call>,
}

/// The part of a VirtualMachine's spec the storage kinds read, and its labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmTemplate {
    pub eviction_strategy: Option<String>,
    pub volumes: Vec<VmVolume>,
    pub labels: BTreeMap<String, String>,
}

/// An image upload the fake took.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub namespace: String,
    pub data_volume: String,
    pub path: PathBuf,
    /// The file's length, from its metadata.
    pub bytes: u64,
}

/// An in-memory [`Kube`].
#[derive(Debug, Default)]
pub struct FakeKube {
    cluster: Mutex<Cluster>,
}

impl FakeKube {
    /// Adds a node.
    pub fn node(self, node: NodeInfo) -> FakeKube {
        self.edit(|c| c.nodes.insert(node.name.clone(), node));
        self
    }

    /// Adds a VMI, and its VirtualMachine (running) when it has one.
    pub fn vmi(self, vmi: VmiInfo) -> FakeKube {
        self.edit(|c| {
            if let Some(vm) = &vmi.vm {
                c.vms.insert((vmi.namespace.clone(), vm.clone()), true);
            }
            c.vmis.push(vmi);
        });
        self
    }

    /// Adds a pod on `node`.
    pub fn pod(self, node: &str, pod: PodInfo) -> FakeKube {
        self.edit(|c| c.pods.push((node.to_string(), pod)));
        self
    }

    /// Adds a VirtualMachine with its template. A running one gets its instance (a VMI of the same
    /// name, on no node) whose volume statuses say each template volume is Ready.
    pub fn vm(self, vm: VmInfo) -> FakeKube {
        self.edit(|c| {
            let key = (vm.namespace.clone(), vm.name.clone());
            c.vms.insert(key.clone(), vm.running);
            if vm.running {
                c.vmis.push(VmiInfo {
                    namespace: vm.namespace.clone(),
                    name: vm.name.clone(),
                    node: None,
                    phase: "Running".into(),
                    not_migratable: None,
                    cpu_millis: 1000,
                    memory_bytes: 4 << 30,
                    vm: Some(vm.name.clone()),
                });
                let ready = vm.volumes.iter().map(|v| VolumeStatusInfo {
                    name: v.name.clone(),
                    phase: "Ready".into(),
                    hotplug: v.hotpluggable,
                    ..VolumeStatusInfo::default()
                });
                c.volume_status.insert(key.clone(), ready.collect());
            }
            c.templates.insert(
                key,
                VmTemplate {
                    eviction_strategy: vm.eviction_strategy,
                    volumes: vm.volumes,
                    labels: vm.labels,
                },
            );
        });
        self
    }

    /// Adds a StorageClass.
    pub fn storage_class(self, name: &str, provisioner: &str) -> FakeKube {
        self.edit(|c| {
            c.storage_classes.insert(
                name.to_string(),
                StorageClassInfo {
                    name: name.to_string(),
                    provisioner: provisioner.to_string(),
                },
            )
        });
        self
    }

    /// Adds a claim, as it would be there before the workflow.
    pub fn pvc(self, pvc: PvcInfo) -> FakeKube {
        self.edit(|c| {
            c.pvcs
                .insert((pvc.namespace.clone(), pvc.name.clone()), pvc)
        });
        self
    }

    /// Adds a DataVolume, as it would be there before the workflow.
    pub fn data_volume(self, dv: DataVolumeInfo) -> FakeKube {
        self.edit(|c| {
            c.data_volumes
                .insert((dv.namespace.clone(), dv.name.clone()), dv)
        });
        self
    }

    /// Adds a NetworkAttachmentDefinition.
    pub fn network(self, namespace: &str, name: &str) -> FakeKube {
        self.edit(|c| c.networks.insert((namespace.to_string(), name.to_string())));
        self
    }

    /// Adds a ResourceQuota's limit of `resource` in `namespace`.
    pub fn quota(
        self,
        namespace: &str,
        quota: &str,
        resource: &str,
        hard_bytes: u64,
        used_bytes: u64,
    ) -> FakeKube {
        self.edit(|c| {
            c.quotas
                .entry(namespace.to_string())
                .or_default()
                .push(QuotaLimit {
                    quota: quota.to_string(),
                    resource: resource.to_string(),
                    hard_bytes,
                    used_bytes,
                })
        });
        self
    }

    /// Sets what `get_vmi` reports of the instance `namespace/name`.
    pub fn set_vmi(&self, namespace: &str, name: &str, state: VmiState) {
        self.edit(|c| {
            c.vmi_states
                .insert((namespace.to_string(), name.to_string()), state)
        });
    }

    /// Moves DataVolume `namespace/name` to `phase` with `progress` (it must exist).
    pub fn set_data_volume(&self, namespace: &str, name: &str, phase: &str, progress: &str) {
        self.edit(|c| {
            let dv = c
                .data_volumes
                .get_mut(&(namespace.to_string(), name.to_string()))
                .unwrap_or_else(|| panic!("no DataVolume {namespace}/{name}"));
            dv.phase = phase.to_string();
            dv.progress = progress.to_string();
        });
    }

    /// Adds a migration, as an earlier attempt would have left it.
    pub fn migration(self, m: MigrationInfo) -> FakeKube {
        self.edit(|c| {
            c.migrations
                .insert((m.namespace.clone(), m.name.clone()), m)
        });
        self
    }

    /// Reads or changes the model.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        f(&mut self.lock())
    }

    /// Makes the next `times` calls of `op` fail with `error`.
    pub fn fail(&self, op: Op, times: usize, error: KubeError) {
        self.edit(|c| {
            c.failures
                .entry(op)
                .or_default()
                .extend(std::iter::repeat_n(error, times))
        });
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far that asked the cluster to change.
    pub fn mutations(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.mutates())
            .cloned()
            .collect()
    }

    /// Forgets the calls so far (a test that drives several steps looks at one at a time).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        // A test that panicked while holding the lock has failed already; its model is still usable.
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call` and takes the lock, or fails it as told.
    fn begin(&self, op: Op, call: Call) -> Result<MutexGuard<'_, Cluster>, KubeError> {
        let mut c = self.lock();
        c.calls.push(call);
        match c.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(c),
        }
    }
}

/// A VM of the model as `get_vm` reports it: `Running` when it runs, `Starting` when it was created
/// to run and does not yet, else `Stopped`.
fn vm_info(c: &Cluster, key: &(String, String), running: bool) -> VmInfo {
    let template = c.templates.get(key).cloned().unwrap_or_default();
    let starting = c.new_vms.get(key).is_some_and(|v| v.running);
    VmInfo {
        namespace: key.0.clone(),
        name: key.1.clone(),
        printable_status: match (running, starting) {
            (true, _) => "Running",
            (false, true) => "Starting",
            (false, false) => "Stopped",
        }
        .into(),
        running,
        eviction_strategy: template.eviction_strategy,
        volumes: template.volumes,
        labels: template.labels,
    }
}

fn not_found(resource: &str, name: &str) -> KubeError {
    KubeError::NotFound(format!("{resource} \"{name}\" not found"))
}

/// Whether a VMI of VirtualMachine `namespace/vm` exists.
fn has_instance(c: &Cluster, namespace: &str, vm: &str) -> bool {
    c.vmis
        .iter()
        .any(|v| v.namespace == namespace && v.vm.as_deref() == Some(vm))
}

/// KubeVirt's migration admission webhook, as the lab enforces it: a migration of a VMI that does
/// not exist or cannot live-migrate is refused with 422 (which the adapter classifies permanent);
/// with [`Cluster::in_flight_webhook`], so is one of a VMI already migrating. Admission runs before
/// storage, so this comes before a name conflict.
fn admit_migration(c: &Cluster, namespace: &str, vmi: &str) -> Result<(), KubeError> {
    const WEBHOOK: &str =
        "422 admission webhook \"migration-create-validator.kubevirt.io\" denied the request";
    match c
        .vmis
        .iter()
        .find(|v| v.namespace == namespace && v.name == vmi)
    {
        None => Err(KubeError::Permanent(format!(
            "{WEBHOOK}: the VMI \"{namespace}/{vmi}\" does not exist"
        ))),
        Some(VmiInfo {
            not_migratable: Some((reason, message)),
            ..
        }) => Err(KubeError::Permanent(format!(
            "{WEBHOOK}: Cannot migrate VMI, Reason: {reason}, Message: {message}"
        ))),
        Some(_) => match c.migrations.values().find(|m| {
            c.in_flight_webhook && m.namespace == namespace && m.vmi == vmi && !m.is_finished()
        }) {
            Some(m) => Err(KubeError::Permanent(format!(
                "{WEBHOOK}: in-flight migration detected. Active migration job ({}) is currently \
                 already in progress for VMI {vmi}.",
                m.name
            ))),
            None => Ok(()),
        },
    }
}

#[async_trait]
impl Kube for FakeKube {
    async fn get_node(&self, name: &str) -> Result<NodeInfo, KubeError> {
        let c = self.begin(
            Op::GetNode,
            Call::GetNode {
                node: name.to_string(),
            },
        )?;
        c.nodes
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("nodes", name))
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, KubeError> {
        let c = self.begin(Op::ListNodes, Call::ListNodes)?;
        Ok(c.nodes.values().cloned().collect())
    }

    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::SetUnschedulable,
            Call::SetUnschedulable {
                node: node.to_string(),
                unschedulable,
            },
        )?;
        let n = c
            .nodes
            .get_mut(node)
            .ok_or_else(|| not_found("nodes", node))?;
        n.unschedulable = unschedulable;
        Ok(())
    }

    /// Removes the node from the model; a missing one is fine, as in the adapter. Its pods and
    /// VMIs stay for the test to move.
    async fn delete_node(&self, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeleteNode,
            Call::DeleteNode {
                node: name.to_string(),
            },
        )?;
        c.nodes.remove(name);
        Ok(())
    }

    async fn list_vmis(&self, node: Option<&str>) -> Result<Vec<VmiInfo>, KubeError> {
        let c = self.begin(
            Op::ListVmis,
            Call::ListVmis {
                node: node.map(str::to_string),
            },
        )?;
        Ok(c.vmis
            .iter()
            .filter(|v| node.is_none() || v.node.as_deref() == node)
            .cloned()
            .collect())
    }

    async fn create_migration(
        &self,
        namespace: &str,
        name: &str,
        vmi: &str,
        added_node_selector: &BTreeMap<String, String>,
    ) -> Result<MigrationInfo, KubeError> {
        let mut c = self.begin(
            Op::CreateMigration,
            Call::CreateMigration {
                namespace: namespace.to_string(),
                name: name.to_string(),
                vmi: vmi.to_string(),
                selector: added_node_selector.clone(),
            },
        )?;
        admit_migration(&c, namespace, vmi)?;
        let key = (namespace.to_string(), name.to_string());
        // The adapter's answer to 409 AlreadyExists: the existing object, as it is.
        if let Some(existing) = c.migrations.get(&key).cloned() {
            c.adopted.push(name.to_string());
            return Ok(existing);
        }
        let source_node = c
            .vmis
            .iter()
            .find(|v| v.namespace == namespace && v.name == vmi)
            .and_then(|v| v.node.clone());
        let m = MigrationInfo {
            namespace: namespace.to_string(),
            name: name.to_string(),
            vmi: vmi.to_string(),
            phase: "Pending".into(),
            target_node: None,
            source_node,
            failure: None,
        };
        c.migrations.insert(key, m.clone());
        c.created.push(name.to_string());
        Ok(m)
    }

    async fn get_migration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<MigrationInfo>, KubeError> {
        let c = self.begin(
            Op::GetMigration,
            Call::GetMigration {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        let mut c = c;
        if c.unseen_reads > 0 {
            c.unseen_reads -= 1;
            return Ok(None);
        }
        Ok(c.migrations
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    /// Returns at once with the migration as it is: a test moves its phase between runs.
    async fn watch_migration(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<MigrationInfo>, KubeError> {
        let c = self.begin(
            Op::WatchMigration,
            Call::WatchMigration {
                namespace: namespace.to_string(),
                name: name.to_string(),
                timeout,
            },
        )?;
        let mut c = c;
        if c.unseen_reads > 0 {
            c.unseen_reads -= 1;
            return Ok(None);
        }
        Ok(c.migrations
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn delete_migration(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeleteMigration,
            Call::DeleteMigration {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.migrations
            .remove(&(namespace.to_string(), name.to_string()));
        Ok(())
    }

    /// Starting a running VM or stopping a stopped one is fine, as in the adapter; the VMI is left
    /// for the test to remove or add.
    async fn set_vm_running(
        &self,
        namespace: &str,
        vm: &str,
        running: bool,
    ) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::SetVmRunning,
            Call::SetVmRunning {
                namespace: namespace.to_string(),
                vm: vm.to_string(),
                running,
            },
        )?;
        let state = c
            .vms
            .get_mut(&(namespace.to_string(), vm.to_string()))
            .ok_or_else(|| not_found("virtualmachines.kubevirt.io", vm))?;
        *state = running;
        Ok(())
    }

    async fn list_pods(&self, node: &str) -> Result<Vec<PodInfo>, KubeError> {
        let c = self.begin(
            Op::ListPods,
            Call::ListPods {
                node: node.to_string(),
            },
        )?;
        Ok(c.pods
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<Eviction, KubeError> {
        let mut c = self.begin(
            Op::EvictPod,
            Call::EvictPod {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        let at = c
            .pods
            .iter()
            .position(|(_, p)| p.namespace == namespace && p.name == name);
        let Some(at) = at else {
            return Ok(Eviction::Gone);
        };
        let eviction = c
            .evictions
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or(Eviction::Evicted);
        // Refused (a 429: a PodDisruptionBudget, KubeVirt's evacuation) leaves the pod where it is.
        if !matches!(eviction, Eviction::Refused { .. }) {
            c.pods.remove(at);
        }
        Ok(eviction)
    }

    async fn get_storage_class(&self, name: &str) -> Result<StorageClassInfo, KubeError> {
        let c = self.begin(
            Op::GetStorageClass,
            Call::GetStorageClass {
                name: name.to_string(),
            },
        )?;
        c.storage_classes
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("storageclasses.storage.k8s.io", name))
    }

    async fn get_pvc(&self, namespace: &str, name: &str) -> Result<PvcInfo, KubeError> {
        let c = self.begin(
            Op::GetPvc,
            Call::GetPvc {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.pvcs
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found("persistentvolumeclaims", name))
    }

    /// A claim of that name already there is returned as it is, as the adapter does on a 409. A
    /// new one is `Pending` (an unknown class is no error: Kubernetes leaves such a claim Pending).
    async fn create_pvc(&self, pvc: &NewPvc) -> Result<PvcInfo, KubeError> {
        let mut c = self.begin(Op::CreatePvc, Call::CreatePvc { pvc: pvc.clone() })?;
        let made = c
            .pvcs
            .entry((pvc.namespace.clone(), pvc.name.clone()))
            .or_insert_with(|| PvcInfo {
                namespace: pvc.namespace.clone(),
                name: pvc.name.clone(),
                phase: "Pending".into(),
                storage_class: Some(pvc.storage_class.clone()),
                access_modes: vec![pvc.access_mode.clone()],
                request_bytes: pvc.size_bytes,
                labels: pvc.labels.clone(),
            });
        Ok(made.clone())
    }

    async fn delete_pvc(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeletePvc,
            Call::DeletePvc {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.pvcs.remove(&(namespace.to_string(), name.to_string()));
        Ok(())
    }

    /// A VM of [`Cluster::vms`], running as that says, with its [`Cluster::templates`] entry.
    async fn get_vm(&self, namespace: &str, name: &str) -> Result<VmInfo, KubeError> {
        let c = self.begin(
            Op::GetVm,
            Call::GetVm {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        let key = (namespace.to_string(), name.to_string());
        let running = *c
            .vms
            .get(&key)
            .ok_or_else(|| not_found("virtualmachines.kubevirt.io", name))?;
        Ok(vm_info(&c, &key, running))
    }

    async fn vmi_volume_status(
        &self,
        namespace: &str,
        vm: &str,
    ) -> Result<Vec<VolumeStatusInfo>, KubeError> {
        let c = self.begin(
            Op::VmiVolumeStatus,
            Call::VmiVolumeStatus {
                namespace: namespace.to_string(),
                vm: vm.to_string(),
            },
        )?;
        if !has_instance(&c, namespace, vm) {
            return Err(not_found("virtualmachineinstances.kubevirt.io", vm));
        }
        Ok(c.volume_status
            .get(&(namespace.to_string(), vm.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    /// Puts the volume in the VM's template and, when an instance runs, a `Pending` hotplug entry
    /// in its volume status. A volume of that name already in the template is fine, whatever its
    /// claim (virt-api's 409, which the adapter takes as done); the claim is not looked up, as
    /// virt-api does not.
    async fn add_volume(
        &self,
        namespace: &str,
        vm: &str,
        volume: &str,
        claim: &str,
    ) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::AddVolume,
            Call::AddVolume {
                namespace: namespace.to_string(),
                vm: vm.to_string(),
                volume: volume.to_string(),
                claim: claim.to_string(),
            },
        )?;
        let key = (namespace.to_string(), vm.to_string());
        if !c.vms.contains_key(&key) {
            return Err(not_found("virtualmachines.kubevirt.io", vm));
        }
        let template = c.templates.entry(key.clone()).or_default();
        if template.volumes.iter().any(|v| v.name == volume) {
            return Ok(());
        }
        template.volumes.push(VmVolume {
            name: volume.to_string(),
            claim: Some(claim.to_string()),
            hotpluggable: true,
        });
        if has_instance(&c, namespace, vm) {
            let statuses = c.volume_status.entry(key).or_default();
            if !statuses.iter().any(|s| s.name == volume) {
                statuses.push(VolumeStatusInfo {
                    name: volume.to_string(),
                    phase: "Pending".into(),
                    hotplug: true,
                    ..VolumeStatusInfo::default()
                });
            }
        }
        Ok(())
    }

    /// Takes the volume out of the VM's template and turns its status entry `Detaching` (the test
    /// removes it). A volume the template does not have is fine.
    async fn remove_volume(
        &self,
        namespace: &str,
        vm: &str,
        volume: &str,
    ) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::RemoveVolume,
            Call::RemoveVolume {
                namespace: namespace.to_string(),
                vm: vm.to_string(),
                volume: volume.to_string(),
            },
        )?;
        let key = (namespace.to_string(), vm.to_string());
        if !c.vms.contains_key(&key) {
            return Err(not_found("virtualmachines.kubevirt.io", vm));
        }
        if let Some(t) = c.templates.get_mut(&key) {
            t.volumes.retain(|v| v.name != volume);
        }
        if let Some(s) = c
            .volume_status
            .get_mut(&key)
            .and_then(|s| s.iter_mut().find(|s| s.name == volume))
        {
            s.phase = "Detaching".into();
        }
        Ok(())
    }

    /// A snapshot of that name already there is returned as it is. A new one is not ready (the test
    /// makes it so, or sets its error).
    async fn create_snapshot(
        &self,
        namespace: &str,
        name: &str,
        pvc: &str,
        class: Option<&str>,
    ) -> Result<SnapshotInfo, KubeError> {
        let mut c = self.begin(
            Op::CreateSnapshot,
            Call::CreateSnapshot {
                namespace: namespace.to_string(),
                name: name.to_string(),
                pvc: pvc.to_string(),
                class: class.map(str::to_string),
            },
        )?;
        let made = c
            .snapshots
            .entry((namespace.to_string(), name.to_string()))
            .or_insert_with(|| SnapshotInfo {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source_pvc: pvc.to_string(),
                ready_to_use: false,
                error: None,
            });
        Ok(made.clone())
    }

    async fn get_snapshot(&self, namespace: &str, name: &str) -> Result<SnapshotInfo, KubeError> {
        let c = self.begin(
            Op::GetSnapshot,
            Call::GetSnapshot {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.snapshots
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found("volumesnapshots.snapshot.storage.k8s.io", name))
    }

    async fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeleteSnapshot,
            Call::DeleteSnapshot {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.snapshots
            .remove(&(namespace.to_string(), name.to_string()));
        Ok(())
    }

    /// A DataVolume of that name already there is returned as it is, as the adapter does on a 409.
    /// A new one is `Pending`, and CDI's claim of the same name (`Pending`, with its labels) comes
    /// with it unless one is there.
    async fn create_data_volume(&self, dv: &NewDataVolume) -> Result<DataVolumeInfo, KubeError> {
        let mut c = self.begin(
            Op::CreateDataVolume,
            Call::CreateDataVolume { dv: dv.clone() },
        )?;
        let key = (dv.namespace.clone(), dv.name.clone());
        if let Some(existing) = c.data_volumes.get(&key) {
            return Ok(existing.clone());
        }
        let made = DataVolumeInfo {
            namespace: dv.namespace.clone(),
            name: dv.name.clone(),
            phase: "Pending".into(),
            progress: "N/A".into(),
            restart_count: 0,
            message: None,
            labels: dv.labels.clone(),
        };
        c.data_volumes.insert(key.clone(), made.clone());
        c.data_volume_specs.insert(key.clone(), dv.clone());
        c.pvcs.entry(key).or_insert_with(|| PvcInfo {
            namespace: dv.namespace.clone(),
            name: dv.name.clone(),
            phase: "Pending".into(),
            storage_class: Some(dv.storage_class.clone()).filter(|s| !s.is_empty()),
            access_modes: vec![dv.access_mode.clone()],
            request_bytes: dv.size_bytes,
            labels: dv.labels.clone(),
        });
        Ok(made)
    }

    async fn get_data_volume(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DataVolumeInfo, KubeError> {
        let c = self.begin(
            Op::GetDataVolume,
            Call::GetDataVolume {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        c.data_volumes
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found("datavolumes.cdi.kubevirt.io", name))
    }

    /// Removes the DataVolume and its claim; a missing one is fine.
    async fn delete_data_volume(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeleteDataVolume,
            Call::DeleteDataVolume {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        let key = (namespace.to_string(), name.to_string());
        if c.data_volumes.remove(&key).is_some() {
            c.pvcs.remove(&key);
        }
        c.data_volume_specs.remove(&key);
        Ok(())
    }

    /// CDI's proxy as the adapter reports it: no DataVolume (no claim) or one not `UploadReady`, a
    /// 503 (transient). Else the upload is recorded with the file's length (a
    /// file that cannot be read is permanent, as in the adapter), `on_progress` hears it once, and
    /// the DataVolume stays as it is for the test to move.
    async fn upload_image(
        &self,
        namespace: &str,
        data_volume: &str,
        path: &std::path::Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, KubeError> {
        let mut c = self.begin(
            Op::UploadImage,
            Call::UploadImage {
                namespace: namespace.to_string(),
                data_volume: data_volume.to_string(),
                path: path.to_path_buf(),
            },
        )?;
        let Some(dv) = c
            .data_volumes
            .get(&(namespace.to_string(), data_volume.to_string()))
        else {
            return Err(KubeError::Transient {
                message: format!(
                    "upload proxy: 503 Service Unavailable rejecting Upload Request for PVC \
                     {data_volume} that doesn't exist"
                ),
                retry_after: None,
            });
        };
        if dv.phase != "UploadReady" {
            return Err(KubeError::Transient {
                message: format!(
                    "upload proxy: 503 Service Unavailable upload server for \
                     {namespace}/{data_volume} is not ready"
                ),
                retry_after: Some(Duration::from_secs(2)),
            });
        }
        let bytes = std::fs::metadata(path)
            .map_err(|e| KubeError::Permanent(format!("{}: {e}", path.display())))?
            .len();
        c.uploads.push(Upload {
            namespace: namespace.to_string(),
            data_volume: data_volume.to_string(),
            path: path.to_path_buf(),
            bytes,
        });
        drop(c);
        on_progress(Transferred {
            done: bytes,
            total: bytes,
        });
        Ok(bytes)
    }

    async fn network_exists(&self, namespace: &str, name: &str) -> Result<bool, KubeError> {
        let c = self.begin(
            Op::NetworkExists,
            Call::NetworkExists {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        Ok(c.networks
            .contains(&(namespace.to_string(), name.to_string())))
    }

    async fn storage_quota(
        &self,
        namespace: &str,
        storage_class: &str,
    ) -> Result<StorageQuota, KubeError> {
        let c = self.begin(
            Op::StorageQuota,
            Call::StorageQuota {
                namespace: namespace.to_string(),
                storage_class: storage_class.to_string(),
            },
        )?;
        let class = format!("{storage_class}.storageclass.storage.k8s.io/requests.storage");
        let limits = c
            .quotas
            .get(namespace)
            .map(|l| {
                l.iter()
                    .filter(|l| l.resource == "requests.storage" || l.resource == class)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(StorageQuota { limits })
    }

    /// A VM of that name already there is returned as it is (with its labels), as the adapter does
    /// on a 409. A new one is recorded in [`Cluster::new_vms`] and gets its template (eviction
    /// strategy, DataVolume volumes, labels); it does not run until the test says so.
    async fn create_vm(&self, vm: &NewVm) -> Result<VmInfo, KubeError> {
        let mut c = self.begin(Op::CreateVm, Call::CreateVm { vm: vm.clone() })?;
        let key = (vm.namespace.clone(), vm.name.clone());
        if let Some(running) = c.vms.get(&key).copied() {
            return Ok(vm_info(&c, &key, running));
        }
        c.vms.insert(key.clone(), false);
        c.templates.insert(
            key.clone(),
            VmTemplate {
                eviction_strategy: Some(vm.eviction_strategy.clone()).filter(|s| !s.is_empty()),
                volumes: vm
                    .disks
                    .iter()
                    .map(|d| VmVolume {
                        name: d.name.clone(),
                        claim: Some(d.data_volume.clone()),
                        hotpluggable: false,
                    })
                    .collect(),
                labels: vm.labels.clone(),
            },
        );
        c.new_vms.insert(key.clone(), vm.clone());
        Ok(vm_info(&c, &key, false))
    }

    /// Removes the VM and its instance; a missing one is fine.
    async fn delete_vm(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let mut c = self.begin(
            Op::DeleteVm,
            Call::DeleteVm {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        let key = (namespace.to_string(), name.to_string());
        c.vms.remove(&key);
        c.templates.remove(&key);
        c.new_vms.remove(&key);
        c.volume_status.remove(&key);
        c.vmi_states.remove(&key);
        c.vmis
            .retain(|v| !(v.namespace == namespace && v.vm.as_deref() == Some(name)));
        Ok(())
    }

    async fn get_vmi(&self, namespace: &str, name: &str) -> Result<VmiState, KubeError> {
        let c = self.begin(
            Op::GetVmi,
            Call::GetVmi {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )?;
        if let Some(state) = c.vmi_states.get(&(namespace.to_string(), name.to_string())) {
            return Ok(state.clone());
        }
        c.vmis
            .iter()
            .find(|v| v.namespace == namespace && v.name == name)
            .map(|v| VmiState {
                phase: v.phase.clone(),
                node: v.node.clone(),
                live_migratable: Some(match &v.not_migratable {
                    None => Ok(()),
                    Some((reason, message)) => Err(format!("{reason}: {message}")),
                }),
            })
            .ok_or_else(|| not_found("virtualmachineinstances.kubevirt.io", name))
    }
}

/// A clock that says what it is told; `sleep` returns at once.
#[derive(Debug, Default)]
pub struct FakeClock {
    now_ms: AtomicU64,
}

impl FakeClock {
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Secrets by name, as a worker's `[secrets]` would resolve them; a name not set is unknown.
#[derive(Debug, Default)]
pub struct FakeSecrets {
    values: Mutex<BTreeMap<String, Result<Secret, SecretError>>>,
}

impl FakeSecrets {
    /// Gives secret `name` its value.
    pub fn set(&self, name: &str, value: &str) {
        self.lock().insert(name.into(), Ok(Secret::new(value)));
    }

    /// Makes resolving secret `name` fail with `error`.
    pub fn fail(&self, name: &str, error: SecretError) {
        self.lock().insert(name.into(), Err(error));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Result<Secret, SecretError>>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Secrets for FakeSecrets {
    async fn get(&self, name: &str) -> Result<Secret, SecretError> {
        self.lock()
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(SecretError::Unknown(name.into())))
    }
}

/// The images port in memory: `inspect` answers what a test set per source (NotFound otherwise),
/// and every removal is recorded. Nothing is read or written.
#[derive(Default)]
pub struct FakeImages {
    infos: Mutex<BTreeMap<String, ImageInfo>>,
    removed: Mutex<Vec<std::path::PathBuf>>,
}

impl FakeImages {
    pub fn set(&self, source: &str, info: ImageInfo) {
        guard(&self.infos).insert(source.to_string(), info);
    }

    /// Paths removed, in order.
    pub fn removed(&self) -> Vec<std::path::PathBuf> {
        guard(&self.removed).clone()
    }
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Images for FakeImages {
    fn work_dir(&self, workflow: &str) -> std::path::PathBuf {
        std::path::Path::new("/work").join(workflow)
    }

    async fn inspect(&self, source: &str) -> Result<ImageInfo, ImageError> {
        guard(&self.infos)
            .get(source)
            .cloned()
            .ok_or_else(|| ImageError::NotFound(format!("no such file: {source}")))
    }

    async fn open_package(&self, source: &str) -> Result<Package, ImageError> {
        Err(ImageError::NotFound(format!("no such file: {source}")))
    }

    async fn digest(
        &self,
        _: &str,
        member: &str,
        _: &str,
        _: OnProgress<'_>,
    ) -> Result<String, ImageError> {
        Err(ImageError::NotFound(member.to_string()))
    }

    async fn extract(
        &self,
        _: &str,
        member: &str,
        _: &std::path::Path,
        _: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        Err(ImageError::NotFound(member.to_string()))
    }

    async fn convert(
        &self,
        source: &str,
        _: &str,
        _: &std::path::Path,
        _: &str,
        _: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        Err(ImageError::NotFound(source.to_string()))
    }

    async fn download(
        &self,
        url: &str,
        _: &std::path::Path,
        _: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        Err(ImageError::NotFound(url.to_string()))
    }

    async fn remove(&self, path: &std::path::Path) -> Result<(), ImageError> {
        guard(&self.removed).push(path.to_path_buf());
        Ok(())
    }
}

/// The stored schedules in memory: a spec per id (none: no such schedule), settable between
/// runs as an operator edits or deletes a schedule; the next read fails (transiently) when told.
/// Reads are counted.
#[derive(Debug, Default)]
pub struct FakeSchedules {
    specs: Mutex<BTreeMap<String, ScheduleSpec>>,
    fail_next: Mutex<Option<String>>,
    reads: AtomicU64,
}

impl FakeSchedules {
    /// Stores `spec` as schedule `id` (replacing what was there).
    pub fn set(&self, id: &str, spec: ScheduleSpec) {
        guard(&self.specs).insert(id.into(), spec);
    }

    /// Deletes schedule `id`.
    pub fn remove(&self, id: &str) {
        guard(&self.specs).remove(id);
    }

    /// Makes the next read fail with `error`, as a store that does not answer.
    pub fn fail_next(&self, error: &str) {
        *guard(&self.fail_next) = Some(error.into());
    }

    /// How many specs were read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Schedules for FakeSchedules {
    async fn spec(&self, id: &str) -> Result<Option<ScheduleSpec>, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = guard(&self.fail_next).take() {
            return Err(error);
        }
        Ok(guard(&self.specs).get(id).cloned())
    }
}

/// Runs the steps of one workflow of a kind against fake ports, one step (or compensation) per
/// call, with the outputs, signals and children a test gives it.
pub struct Harness {
    pub kube: Arc<FakeKube>,
    pub images: Arc<FakeImages>,
    pub schedules: Arc<FakeSchedules>,
    pub maas: Arc<FakeMaas>,
    pub secrets: Arc<FakeSecrets>,
    pub clock: Arc<FakeClock>,
    pub workflow_id: String,
    pub attempt: u32,
    /// Outputs of completed steps, by step name.
    pub outputs: BTreeMap<String, Value>,
    pub signals: BTreeMap<String, Value>,
    pub children: Vec<ChildStatus>,
    /// How many times an operator resumed the workflow.
    pub resumes: u32,
    /// What the step reported while it ran.
    pub live: LiveProgress,
    /// Whether the worker has a Kubernetes connection.
    connected: bool,
    loaded: Box<dyn Loaded>,
}

impl Harness {
    /// Loads kind `K` with `input` (panicking with the load error) over `kube`, an empty MAAS
    /// and no secrets.
    pub fn new<K: Kind>(input: Value, kube: FakeKube) -> Harness {
        let loaded = Typed::<K>::default()
            .load(&input)
            .unwrap_or_else(|e| panic!("{} refused its input: {e}", K::NAME));
        let clock = Arc::new(FakeClock::default());
        clock.set(1_700_000_000_000);
        Harness {
            kube: Arc::new(kube),
            images: Arc::default(),
            schedules: Arc::default(),
            maas: Arc::default(),
            secrets: Arc::default(),
            clock,
            workflow_id: "wf-1".into(),
            attempt: 1,
            outputs: BTreeMap::new(),
            signals: BTreeMap::new(),
            children: Vec::new(),
            resumes: 0,
            live: LiveProgress::default(),
            connected: true,
            loaded,
        }
    }

    /// The same, on a worker that has no Kubernetes connection.
    pub fn without_kube(mut self) -> Harness {
        self.connected = false;
        self
    }

    /// The same, over `maas`.
    pub fn with_maas(mut self, maas: FakeMaas) -> Harness {
        self.maas = Arc::new(maas);
        self
    }

    /// The same, with schedule `id` stored as `spec`.
    pub fn with_schedule(self, id: &str, spec: ScheduleSpec) -> Harness {
        self.schedules.set(id, spec);
        self
    }

    /// The same, with secret `name` set to `value`.
    pub fn with_secret(self, name: &str, value: &str) -> Harness {
        self.secrets.set(name, value);
        self
    }

    /// The ports a step sees: the fakes, Kubernetes unless [`Harness::without_kube`].
    fn ports(&self) -> Ports {
        let ports = Ports::new(self.clock.clone())
            .with_images(self.images.clone())
            .with_schedules(self.schedules.clone())
            .with_maas(self.maas.clone())
            .with_secrets(self.secrets.clone());
        if self.connected {
            ports.with_kube(self.kube.clone())
        } else {
            ports
        }
    }

    /// The loaded workflow, to look at its step table.
    pub fn loaded(&self) -> &dyn Loaded {
        self.loaded.as_ref()
    }

    /// Runs step `step` forward once.
    pub fn run(&self, step: &str) -> Outcome {
        self.call(step, Phase::Forward)
    }

    /// Runs step `step` forward once and, when it is done, records its output as the engine would.
    pub fn advance(&mut self, step: &str) -> Outcome {
        let outcome = self.run(step);
        if let Outcome::Done(v) = &outcome {
            self.outputs.insert(step.to_string(), v.clone());
        }
        outcome
    }

    /// Runs the compensation of step `step` once.
    pub fn compensate(&self, step: &str) -> Outcome {
        self.call(step, Phase::Compensate)
    }

    fn call(&self, step: &str, phase: Phase) -> Outcome {
        let index = self
            .loaded
            .steps()
            .iter()
            .position(|s| s.name == step)
            .unwrap_or_else(|| panic!("no step {step:?}"));
        let ports = self.ports();
        let ctx = StepContext {
            workflow_id: &self.workflow_id,
            step: index,
            attempt: self.attempt,
            phase,
            token: 1,
            worker: "test-worker",
            outputs: &self.outputs,
            signals: &self.signals,
            children: &self.children,
            resumes: self.resumes,
            ports: &ports,
            live: &self.live,
        };
        futures::executor::block_on(match phase {
            Phase::Forward => self.loaded.run(&ctx),
            Phase::Compensate => self.loaded.compensate(&ctx),
        })
    }
}

/// A Ready node that runs virt-handler, with 16 cores and 64 GiB.
pub fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        unschedulable: false,
        ready: true,
        labels: BTreeMap::from([
            ("kubevirt.io/schedulable".to_string(), "true".to_string()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
        ]),
        taints: Vec::new(),
        cpu_millis: 16_000,
        memory_bytes: 64 << 30,
    }
}

/// A running, migratable VMI `ns/name` on `node`, owned by the VirtualMachine `name-vm`, asking
/// for 1 core and 4 GiB.
pub fn vmi(name: &str, node: &str) -> VmiInfo {
    VmiInfo {
        namespace: "ns".into(),
        name: name.into(),
        node: Some(node.into()),
        phase: "Running".into(),
        not_migratable: None,
        cpu_millis: 1000,
        memory_bytes: 4 << 30,
        vm: Some(format!("{name}-vm")),
    }
}

/// A pod `ns/name` controlled by an owner of kind `owner`.
pub fn pod(name: &str, owner: Option<&str>) -> PodInfo {
    PodInfo {
        namespace: "ns".into(),
        name: name.into(),
        owner_kind: owner.map(str::to_string),
        labels: BTreeMap::new(),
    }
}

/// A migration `ns/name` of VMI `vmi` in `phase`.
pub fn migration(name: &str, vmi: &str, phase: &str) -> MigrationInfo {
    MigrationInfo {
        namespace: "ns".into(),
        name: name.into(),
        vmi: vmi.into(),
        phase: phase.into(),
        target_node: None,
        source_node: None,
        failure: None,
    }
}

/// A child that ended in `state`, as its parent step sees it, from the spec the parent spawned.
pub fn child(
    id: &str,
    spec: &ChildSpec,
    state: State,
    result: Option<Value>,
    error: Option<&str>,
) -> ChildStatus {
    ChildStatus {
        id: id.into(),
        kind: spec.kind.clone(),
        input: spec.input.clone(),
        state,
        result,
        error: error.map(str::to_string),
        updated_ms: 0,
    }
}

/// A running VirtualMachine `ns/name` evicted by live migration, with its root disk on claim
/// `name-root` (a DataVolume's, so not hotpluggable).
pub fn vm(name: &str) -> VmInfo {
    VmInfo {
        namespace: "ns".into(),
        name: name.into(),
        printable_status: "Running".into(),
        running: true,
        eviction_strategy: Some("LiveMigrate".into()),
        volumes: vec![VmVolume {
            name: "rootdisk".into(),
            claim: Some(format!("{name}-root")),
            hotpluggable: false,
        }],
        labels: BTreeMap::new(),
    }
}

/// 2026-03-02T00:00:00Z, a Monday, in Unix ms.
pub const MONDAY_MS: i64 = 1_772_409_600_000;
/// An hour in ms.
pub const HOUR_MS: i64 = 3_600_000;

/// The spec of schedule `nightly`: a rolling maintenance daily at 02:00 UTC with a two-hour
/// window, and `freezes` (a JSON list of `{name, from, to}`).
pub fn nightly(freezes: Value) -> ScheduleSpec {
    serde_json::from_value(serde_json::json!({
        "cron": "0 2 * * *",
        "kind": "rolling-maintenance",
        "window_secs": 7200,
        "freezes": freezes,
    }))
    .expect("a valid schedule spec")
}

/// The window `nightly`'s fire on Monday opened: 02:00 to 04:00 UTC.
pub fn monday_window() -> Window {
    Window {
        schedule: "nightly".into(),
        start_ms: MONDAY_MS + 2 * HOUR_MS,
        end_ms: MONDAY_MS + 4 * HOUR_MS,
    }
}

/// A 429 with the server's Retry-After, as the adapter hands it over.
pub fn too_many_requests(retry_after: Duration) -> KubeError {
    KubeError::Transient {
        message: "429 Too Many Requests".into(),
        retry_after: Some(retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    /// The storage calls answer as the adapter does against the lab (`tests/drain/adapter.rs`):
    /// creates return what is there, deletes and volume changes are idempotent, hotplug and
    /// snapshots move only when the test moves them.
    #[test]
    fn storage_follows_the_adapter() {
        let kube = FakeKube::default()
            .storage_class("px-rwx", "pxd.portworx.com")
            .vm(vm("a"))
            .pvc(PvcInfo {
                namespace: "ns".into(),
                name: "a-root".into(),
                phase: "Bound".into(),
                ..PvcInfo::default()
            });
        let key = ("ns".to_string(), "a".to_string());
        let new = NewPvc {
            namespace: "ns".into(),
            name: "a-data".into(),
            storage_class: "px-rwx".into(),
            access_mode: "ReadWriteMany".into(),
            size_bytes: 1 << 30,
            ..NewPvc::default()
        };
        let made = block_on(kube.create_pvc(&new)).unwrap();
        assert_eq!(made.phase, "Pending");
        kube.edit(|c| {
            c.pvcs
                .get_mut(&("ns".into(), "a-data".into()))
                .unwrap()
                .phase = "Bound".into()
        });
        assert_eq!(block_on(kube.create_pvc(&new)).unwrap().phase, "Bound");

        block_on(kube.add_volume("ns", "a", "data", "a-data")).unwrap();
        block_on(kube.add_volume("ns", "a", "data", "a-data")).unwrap();
        let vm = block_on(kube.get_vm("ns", "a")).unwrap();
        assert_eq!(vm.volumes.len(), 2, "{vm:?}");
        let status = block_on(kube.vmi_volume_status("ns", "a")).unwrap();
        assert_eq!(
            status
                .iter()
                .map(|s| (s.name.as_str(), s.phase.as_str()))
                .collect::<Vec<_>>(),
            [("rootdisk", "Ready"), ("data", "Pending")]
        );
        block_on(kube.remove_volume("ns", "a", "data")).unwrap();
        block_on(kube.remove_volume("ns", "a", "data")).unwrap();
        assert_eq!(block_on(kube.get_vm("ns", "a")).unwrap().volumes.len(), 1);
        assert_eq!(
            kube.edit(|c| c.volume_status[&key][1].phase.clone()),
            "Detaching"
        );

        assert_eq!(
            block_on(kube.get_pvc("ns", "a-root")).unwrap().phase,
            "Bound"
        );
        let s = block_on(kube.create_snapshot("ns", "snap", "a-root", None)).unwrap();
        assert!(!s.ready_to_use);
        kube.edit(|c| {
            c.snapshots
                .get_mut(&("ns".into(), "snap".into()))
                .unwrap()
                .ready_to_use = true
        });
        assert!(
            block_on(kube.create_snapshot("ns", "snap", "a-root", None))
                .unwrap()
                .ready_to_use
        );
        block_on(kube.delete_snapshot("ns", "snap")).unwrap();
        block_on(kube.delete_snapshot("ns", "snap")).unwrap();
        block_on(kube.delete_pvc("ns", "a-data")).unwrap();
        block_on(kube.delete_pvc("ns", "a-data")).unwrap();
        assert!(matches!(
            block_on(kube.get_pvc("ns", "a-data")),
            Err(KubeError::NotFound(_))
        ));

        // A stopped VM has no instance; its template still takes volumes.
        kube.edit(|c| c.vmis.clear());
        assert!(matches!(
            block_on(kube.vmi_volume_status("ns", "a")),
            Err(KubeError::NotFound(_))
        ));
        block_on(kube.add_volume("ns", "a", "more", "a-more")).unwrap();
        assert_eq!(block_on(kube.get_vm("ns", "a")).unwrap().volumes.len(), 2);

        kube.fail(Op::AddVolume, 1, too_many_requests(Duration::from_secs(1)));
        assert!(block_on(kube.add_volume("ns", "a", "x", "y")).is_err());
        assert_eq!(
            kube.mutations()
                .iter()
                .filter(|c| matches!(c, Call::AddVolume { .. }))
                .count(),
            4
        );
    }

    /// The import calls answer as the adapter does against the lab (`tests/import/adapter.rs`):
    /// creates return what is there, labels and all; deletes are idempotent and take what CDI and
    /// KubeVirt would take with them; an upload waits for `UploadReady` and counts the file's bytes.
    #[test]
    fn imports_follow_the_adapter() {
        use drover_workflows::ports::kube::{DvSource, NewVmDisk, NewVmNic};
        let kube = FakeKube::default()
            .data_volume(DataVolumeInfo {
                namespace: "ns".into(),
                name: "theirs".into(),
                phase: "Succeeded".into(),
                ..DataVolumeInfo::default()
            })
            .network("ns", "vlan-10")
            .quota("ns", "storage", "requests.storage", 100 << 30, 10 << 30)
            .quota(
                "ns",
                "storage",
                "px-rwx.storageclass.storage.k8s.io/requests.storage",
                50 << 30,
                0,
            )
            .quota(
                "ns",
                "storage",
                "px-rwo.storageclass.storage.k8s.io/requests.storage",
                1 << 30,
                0,
            );
        let mine = BTreeMap::from([("drover.io/created-by".to_string(), "wf-1".to_string())]);
        let new = NewDataVolume {
            namespace: "ns".into(),
            name: "web-disk-0".into(),
            source: DvSource::Upload,
            storage_class: "px-rwx".into(),
            access_mode: "ReadWriteMany".into(),
            volume_mode: Some("Block".into()),
            size_bytes: 2 << 30,
            labels: mine.clone(),
        };
        let made = block_on(kube.create_data_volume(&new)).unwrap();
        assert_eq!((made.phase.as_str(), &made.labels), ("Pending", &mine));
        assert_eq!(
            block_on(kube.get_pvc("ns", "web-disk-0")).unwrap().labels,
            mine
        );
        let other = NewDataVolume {
            labels: BTreeMap::new(),
            ..new.clone()
        };
        assert_eq!(
            block_on(kube.create_data_volume(&other)).unwrap().labels,
            mine
        );
        // One that was there before is returned as it is: not this workflow's.
        let theirs = block_on(kube.create_data_volume(&NewDataVolume {
            name: "theirs".into(),
            ..new.clone()
        }))
        .unwrap();
        assert_eq!(
            (theirs.phase.as_str(), theirs.labels.len()),
            ("Succeeded", 0)
        );

        let file = std::env::temp_dir().join(format!("drover-fake-upload-{}", std::process::id()));
        std::fs::write(&file, vec![7u8; 4096]).unwrap();
        let seen = Mutex::new(Vec::new());
        let record = |t: Transferred| seen.lock().unwrap().push(t);
        let early = block_on(kube.upload_image("ns", "web-disk-0", &file, &record));
        assert!(
            matches!(early, Err(KubeError::Transient { .. })),
            "{early:?}"
        );
        let missing = block_on(kube.upload_image("ns", "nope", &file, &record));
        assert!(
            matches!(&missing, Err(KubeError::Transient { message, .. }) if message.contains("503")),
            "{missing:?}"
        );
        kube.set_data_volume("ns", "web-disk-0", "UploadReady", "N/A");
        assert_eq!(
            block_on(kube.upload_image("ns", "web-disk-0", &file, &record)),
            Ok(4096)
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(kube.edit(|c| c.uploads[0].bytes), 4096);
        assert_eq!(seen.lock().unwrap().last().map(|t| t.done), Some(4096));
        assert_eq!(
            block_on(kube.get_data_volume("ns", "web-disk-0"))
                .unwrap()
                .phase,
            "UploadReady"
        );

        assert!(block_on(kube.network_exists("ns", "vlan-10")).unwrap());
        assert!(!block_on(kube.network_exists("ns", "vlan-20")).unwrap());
        let quota = block_on(kube.storage_quota("ns", "px-rwx")).unwrap();
        assert_eq!(
            quota
                .limits
                .iter()
                .map(|l| l.resource.as_str())
                .collect::<Vec<_>>(),
            [
                "requests.storage",
                "px-rwx.storageclass.storage.k8s.io/requests.storage"
            ]
        );

        let vm = NewVm {
            namespace: "ns".into(),
            name: "web".into(),
            cpu_cores: 2,
            memory_bytes: 4 << 30,
            firmware: "efi".into(),
            running: true,
            eviction_strategy: "LiveMigrate".into(),
            disks: vec![NewVmDisk {
                name: "disk-0".into(),
                data_volume: "web-disk-0".into(),
                bus: "virtio".into(),
            }],
            nics: vec![NewVmNic {
                name: "nic-0".into(),
                multus: Some("ns/vlan-10".into()),
                model: "virtio".into(),
                mac_address: None,
            }],
            labels: mine.clone(),
        };
        let made = block_on(kube.create_vm(&vm)).unwrap();
        assert_eq!(
            (made.printable_status.as_str(), made.running, &made.labels),
            ("Starting", false, &mine)
        );
        assert_eq!(made.volumes[0].claim.as_deref(), Some("web-disk-0"));
        let again = block_on(kube.create_vm(&NewVm {
            labels: BTreeMap::new(),
            ..vm.clone()
        }))
        .unwrap();
        assert_eq!(again.labels, mine);
        assert!(matches!(
            block_on(kube.get_vmi("ns", "web")),
            Err(KubeError::NotFound(_))
        ));
        kube.set_vmi(
            "ns",
            "web",
            VmiState {
                phase: "Running".into(),
                node: Some("n1".into()),
                live_migratable: Some(Ok(())),
            },
        );
        assert_eq!(
            block_on(kube.get_vmi("ns", "web")).unwrap().phase,
            "Running"
        );

        block_on(kube.delete_vm("ns", "web")).unwrap();
        block_on(kube.delete_vm("ns", "web")).unwrap();
        assert!(matches!(
            block_on(kube.get_vm("ns", "web")),
            Err(KubeError::NotFound(_))
        ));
        assert!(matches!(
            block_on(kube.get_vmi("ns", "web")),
            Err(KubeError::NotFound(_))
        ));
        block_on(kube.delete_data_volume("ns", "web-disk-0")).unwrap();
        block_on(kube.delete_data_volume("ns", "web-disk-0")).unwrap();
        assert!(matches!(
            block_on(kube.get_pvc("ns", "web-disk-0")),
            Err(KubeError::NotFound(_))
        ));
        assert_eq!(
            kube.mutations()
                .iter()
                .filter(|c| matches!(c, Call::UploadImage { .. }))
                .count(),
            3
        );
    }
}
