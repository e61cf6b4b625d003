//! In-memory fake ports, so the cluster kinds' steps are table-tested in milliseconds without
//! Redis, a worker or the lab. [`FakeKube`] holds a small cluster model behind a mutex, answers the
//! [`Kube`] port from it with the real adapter's semantics (a create that meets an existing name
//! returns that object, as `services/kube` does on a 409; deleting a missing migration or node is
//! fine; a 429 from the Eviction API is `Eviction::Refused`), records every call, and fails the
//! next N calls of an operation when told to. [`FakeClock`] is a settable clock whose `sleep`
//! returns at once; [`FakeSecrets`] a map of secret names to values. [`Harness`] runs one step (or
//! one compensation) of a kind through the engine's own entry point (`Typed::<K>::load` and
//! `Loaded::run`), on `futures`' executor: no tokio, over these and the in-memory MAAS of
//! `fake_maas.rs`.
//!
//! The fake never moves the world on its own: a test advances it (a migration's phase, a stopped
//! VM's instance going away) by editing the model between runs, which is how a level-triggered
//! step sees the world change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::kube::{
    Eviction, Kube, KubeError, MigrationInfo, NewPvc, NodeInfo, PodInfo, PvcInfo, SnapshotInfo,
    StorageClassInfo, VmInfo, VmiInfo, VolumeStatusInfo,
};
use drover_workflows::ports::secrets::{Secret, SecretError, Secrets};
use drover_workflows::ports::{BoxFuture, Clock, Ports};
use drover_workflows::sdk::{Kind, Typed};
use drover_workflows::{
    ChildSpec, ChildStatus, Loaded, Outcome, Phase, State, StepContext, Workflow,
};
use serde_json::Value;

use crate::fake_maas::FakeMaas;

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
    failures: BTreeMap<Op, VecDeque<KubeError>>,
    calls: Vec<Call>,
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

fn not_found(resource: &str, name: &str) -> KubeError {
    KubeError::NotFound(format!("{resource} \"{name}\" not found"))
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

fn not_modelled(op: &str) -> KubeError {
    KubeError::Permanent(format!("FakeKube does not model {op}"))
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

    // Storage is not modelled yet: the storage kinds are tested end to end against the lab
    // (tests/storage.rs); a table test that reaches these fails saying so.
    async fn get_storage_class(&self, _: &str) -> Result<StorageClassInfo, KubeError> {
        Err(not_modelled("get_storage_class"))
    }

    async fn get_pvc(&self, _: &str, _: &str) -> Result<PvcInfo, KubeError> {
        Err(not_modelled("get_pvc"))
    }

    async fn create_pvc(&self, _: &NewPvc) -> Result<PvcInfo, KubeError> {
        Err(not_modelled("create_pvc"))
    }

    async fn delete_pvc(&self, _: &str, _: &str) -> Result<(), KubeError> {
        Err(not_modelled("delete_pvc"))
    }

    async fn get_vm(&self, _: &str, _: &str) -> Result<VmInfo, KubeError> {
        Err(not_modelled("get_vm"))
    }

    async fn vmi_volume_status(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Vec<VolumeStatusInfo>, KubeError> {
        Err(not_modelled("vmi_volume_status"))
    }

    async fn add_volume(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), KubeError> {
        Err(not_modelled("add_volume"))
    }

    async fn remove_volume(&self, _: &str, _: &str, _: &str) -> Result<(), KubeError> {
        Err(not_modelled("remove_volume"))
    }

    async fn create_snapshot(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<SnapshotInfo, KubeError> {
        Err(not_modelled("create_snapshot"))
    }

    async fn get_snapshot(&self, _: &str, _: &str) -> Result<SnapshotInfo, KubeError> {
        Err(not_modelled("get_snapshot"))
    }

    async fn delete_snapshot(&self, _: &str, _: &str) -> Result<(), KubeError> {
        Err(not_modelled("delete_snapshot"))
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

/// Runs the steps of one workflow of a kind against fake ports, one step (or compensation) per
/// call, with the outputs, signals and children a test gives it.
pub struct Harness {
    pub kube: Arc<FakeKube>,
    pub maas: Arc<FakeMaas>,
    pub secrets: Arc<FakeSecrets>,
    pub clock: Arc<FakeClock>,
    pub workflow_id: String,
    pub attempt: u32,
    /// Outputs of completed steps, by step name.
    pub outputs: BTreeMap<String, Value>,
    pub signals: BTreeMap<String, Value>,
    pub children: Vec<ChildStatus>,
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
            maas: Arc::default(),
            secrets: Arc::default(),
            clock,
            workflow_id: "wf-1".into(),
            attempt: 1,
            outputs: BTreeMap::new(),
            signals: BTreeMap::new(),
            children: Vec::new(),
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

    /// The same, with secret `name` set to `value`.
    pub fn with_secret(self, name: &str, value: &str) -> Harness {
        self.secrets.set(name, value);
        self
    }

    /// The ports a step sees: the fakes, Kubernetes unless [`Harness::without_kube`].
    fn ports(&self) -> Ports {
        let ports = Ports::new(self.clock.clone())
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
            resumes: 0,
            ports: &ports,
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

/// A 429 with the server's Retry-After, as the adapter hands it over.
pub fn too_many_requests(retry_after: Duration) -> KubeError {
    KubeError::Transient {
        message: "429 Too Many Requests".into(),
        retry_after: Some(retry_after),
    }
}
