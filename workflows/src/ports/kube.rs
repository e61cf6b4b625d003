//! The Kubernetes/KubeVirt port: what the maintenance workflows need to read and change in a
//! cluster, in the workflows' own terms. `services/kube` implements it with kube-rs; the workflows
//! crate never sees kube types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use async_trait::async_trait;

/// Why a cluster call failed, classified for the engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeError {
    /// Worth retrying: 429, 5xx, connection trouble, conflicts. `retry_after` honours the server.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("not found: {0}")]
    NotFound(String),
    /// Retrying cannot help: 4xx other than the above, invalid objects.
    #[error("{0}")]
    Permanent(String),
}

/// A node as the drain planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub unschedulable: bool,
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
    /// Keys of NoSchedule and NoExecute taints (VMs tolerate none of them by default).
    #[serde(default)]
    pub taints: Vec<String>,
    /// Allocatable CPU in millicores and memory in bytes.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl NodeInfo {
    /// Whether new VMs can land here: ready, not cordoned, untainted, and running virt-handler
    /// (KubeVirt labels such nodes `kubevirt.io/schedulable=true`).
    pub fn takes_vms(&self) -> bool {
        self.ready
            && !self.unschedulable
            && self.taints.is_empty()
            && self
                .labels
                .get("kubevirt.io/schedulable")
                .map(String::as_str)
                == Some("true")
    }
}

impl NodeInfo {
    /// Whether VMs could land here once uncordoned: Ready, virt-handler running, and no taint but
    /// the cordon's own (`node.kubernetes.io/unschedulable`).
    pub fn hosts_vms_when_uncordoned(&self) -> bool {
        self.ready
            && self
                .taints
                .iter()
                .all(|t| t == "node.kubernetes.io/unschedulable")
            && self
                .labels
                .get("kubevirt.io/schedulable")
                .map(String::as_str)
                == Some("true")
    }
}

/// A running VM instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmiInfo {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: String,
    /// The `LiveMigratable` condition: None when migratable, else KubeVirt's reason and message.
    pub not_migratable: Option<(String, String)>,
    /// What the VMI's launcher pod requests: explicit requests, else vCPUs / 10 (KubeVirt's default
    /// cpuAllocationRatio) and the guest memory.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Whether a VirtualMachine owns it (so it can be stopped and started through the VM).
    pub vm: Option<String>,
}

/// A VirtualMachineInstanceMigration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub namespace: String,
    pub name: String,
    pub vmi: String,
    /// Pending, Scheduling, Scheduled, PreparingTarget, TargetReady, Running, Succeeded, Failed.
    pub phase: String,
    pub target_node: Option<String>,
    pub source_node: Option<String>,
    pub failure: Option<String>,
}

impl MigrationInfo {
    /// Succeeded or Failed: KubeVirt will not change it again.
    pub fn is_finished(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// A pod on a node, as the eviction step sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Kind of the controlling owner, if any (DaemonSet pods are never evicted).
    pub owner_kind: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What an eviction did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Eviction {
    Evicted,
    /// The pod is already gone.
    Gone,
    /// Refused for now (PodDisruptionBudget, KubeVirt evacuation): try again later.
    Refused {
        message: String,
    },
}

/// A PersistentVolumeClaim as the storage workflows see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PvcInfo {
    pub namespace: String,
    pub name: String,
    /// `Pending`, `Bound` or `Lost`.
    pub phase: String,
    pub storage_class: Option<String>,
    /// `ReadWriteOnce`, `ReadWriteMany`, `ReadOnlyMany`, `ReadWriteOncePod`: from the status once
    /// bound, else from the spec.
    pub access_modes: Vec<String>,
    /// Requested size in bytes.
    pub request_bytes: u64,
    pub labels: BTreeMap<String, String>,
}

/// A claim to create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewPvc {
    pub namespace: String,
    pub name: String,
    pub storage_class: String,
    pub access_mode: String,
    pub size_bytes: u64,
    /// `Block` or `Filesystem` (the class's default when None).
    pub volume_mode: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A StorageClass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageClassInfo {
    pub name: String,
    pub provisioner: String,
}

/// A VirtualMachine as the storage workflows see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub namespace: String,
    pub name: String,
    /// `status.printableStatus` (`Running`, `Stopped`, ...).
    pub printable_status: String,
    /// Whether a VMI of it runs (`status.ready`).
    pub running: bool,
    /// The VM's `spec.template.spec.evictionStrategy`, else the cluster's default (the KubeVirt
    /// CR's `spec.configuration.evictionStrategy`); None when neither is set.
    pub eviction_strategy: Option<String>,
    /// `spec.template.spec.volumes`.
    pub volumes: Vec<VmVolume>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One volume of a VM's template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmVolume {
    pub name: String,
    /// The claim behind it (a `persistentVolumeClaim` or `dataVolume` source), if any.
    pub claim: Option<String>,
    pub hotpluggable: bool,
}

/// One entry of a VMI's `status.volumeStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatusInfo {
    pub name: String,
    /// `Pending`, `Bound`, `AttachedToNode`, `MountedToPod`, `Ready`, ...
    pub phase: String,
    pub reason: String,
    pub message: String,
    pub hotplug: bool,
}

/// A VolumeSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub namespace: String,
    pub name: String,
    pub source_pvc: String,
    pub ready_to_use: bool,
    /// `status.error.message`, when the snapshot failed.
    pub error: Option<String>,
}

/// Where a new DataVolume's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DvSource {
    /// CDI's upload proxy takes the image (`spec.source.upload`).
    Upload,
    /// CDI's importer fetches it (`spec.source.http.url`).
    Http { url: String },
    /// An empty disk (`spec.source.blank`).
    Blank,
}

/// A DataVolume to create (`cdi.kubevirt.io/v1beta1`), with `spec.storage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDataVolume {
    pub namespace: String,
    pub name: String,
    pub source: DvSource,
    pub storage_class: String,
    pub access_mode: String,
    /// `Block` or `Filesystem` (the storage profile's default when None).
    pub volume_mode: Option<String>,
    pub size_bytes: u64,
    pub labels: BTreeMap<String, String>,
}

/// A DataVolume as the import workflows see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataVolumeInfo {
    pub namespace: String,
    pub name: String,
    /// `Pending`, `ImportScheduled`, `ImportInProgress`, `UploadScheduled`, `UploadReady`,
    /// `Succeeded`, `Failed`, ... (empty before CDI has written a status).
    pub phase: String,
    /// CDI's `status.progress` (`"45.23%"`, `"N/A"`).
    pub progress: String,
    /// How often CDI restarted its importer pod (`status.restartCount`).
    pub restart_count: u32,
    /// The `Running` condition's reason and message when it is not True (why the importer stopped).
    pub message: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A VirtualMachine to create: the disks are claims or DataVolumes, the NICs the pod network or
/// Multus networks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewVm {
    pub namespace: String,
    pub name: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    /// `bios` or `efi`.
    pub firmware: String,
    /// Whether the VM starts once created (`runStrategy: Always`) or waits (`Halted`).
    pub running: bool,
    /// `LiveMigrate`, `None`, ...
    pub eviction_strategy: String,
    /// Volumes in boot order: name and DataVolume name.
    pub disks: Vec<NewVmDisk>,
    pub nics: Vec<NewVmNic>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewVmDisk {
    pub name: String,
    pub data_volume: String,
    /// `virtio`, `sata`, `scsi`.
    pub bus: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewVmNic {
    pub name: String,
    /// `<namespace>/<name>` of a NetworkAttachmentDefinition (a bridge), or None for the pod
    /// network (masquerade).
    pub multus: Option<String>,
    /// `virtio`, `e1000e`, ...
    pub model: String,
    pub mac_address: Option<String>,
}

/// The storage a namespace's ResourceQuotas still allow, where they limit it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageQuota {
    /// The quota object that limits most, with what is left of `requests.storage` (or the class's
    /// `<class>.storageclass.storage.k8s.io/requests.storage`) in bytes.
    pub limits: Vec<QuotaLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaLimit {
    pub quota: String,
    pub resource: String,
    pub hard_bytes: u64,
    pub used_bytes: u64,
}

/// A running VM instance's state, as the import verifies it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmiState {
    pub phase: String,
    pub node: Option<String>,
    /// The `LiveMigratable` condition: None while not reported, Some(Ok) when True, Some(Err(reason:
    /// message)) when False.
    pub live_migratable: Option<Result<(), String>>,
}

/// Bytes moved so far, and of how many (0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Transferred {
    pub done: u64,
    pub total: u64,
}

/// Called as bytes move; cheap and non-blocking.
pub type OnProgress<'a> = &'a (dyn Fn(Transferred) + Send + Sync);

/// The cluster operations maintenance workflows use. Every call is idempotent or says how it was not.
#[async_trait]
pub trait Kube: Send + Sync {
    async fn get_node(&self, name: &str) -> Result<NodeInfo, KubeError>;
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, KubeError>;
    /// Sets `spec.unschedulable`.
    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), KubeError>;
    /// Deletes the Node object (its machine stays as it is; a kubelet that runs on it registers it
    /// again). Idempotent: a Node already gone is `Ok(())`.
    async fn delete_node(&self, name: &str) -> Result<(), KubeError>;
    async fn list_vmis(&self, node: Option<&str>) -> Result<Vec<VmiInfo>, KubeError>;
    /// Creates a migration; an existing one of the same name is returned as it is.
    async fn create_migration(
        &self,
        namespace: &str,
        name: &str,
        vmi: &str,
        added_node_selector: &BTreeMap<String, String>,
    ) -> Result<MigrationInfo, KubeError>;
    async fn get_migration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<MigrationInfo>, KubeError>;
    /// Reads a migration and, unless it has finished, waits (at most `timeout`) for its phase to
    /// change or for it to go; returns it as it is then. The adapter watches the one object, so a
    /// change is seen when it happens rather than at the next poll.
    async fn watch_migration(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<MigrationInfo>, KubeError>;
    /// Deletes a migration (KubeVirt aborts it if still running); a missing one is fine.
    async fn delete_migration(&self, namespace: &str, name: &str) -> Result<(), KubeError>;
    /// Stops or starts a VirtualMachine through its subresource.
    async fn set_vm_running(
        &self,
        namespace: &str,
        vm: &str,
        running: bool,
    ) -> Result<(), KubeError>;
    async fn list_pods(&self, node: &str) -> Result<Vec<PodInfo>, KubeError>;
    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<Eviction, KubeError>;

    async fn get_storage_class(&self, name: &str) -> Result<StorageClassInfo, KubeError>;
    async fn get_pvc(&self, namespace: &str, name: &str) -> Result<PvcInfo, KubeError>;
    /// Creates a claim; one of the same name that exists already is returned as it is (the caller
    /// checks it is the one it meant, by its labels).
    async fn create_pvc(&self, pvc: &NewPvc) -> Result<PvcInfo, KubeError>;
    /// Deletes a claim; a missing one is fine.
    async fn delete_pvc(&self, namespace: &str, name: &str) -> Result<(), KubeError>;
    async fn get_vm(&self, namespace: &str, name: &str) -> Result<VmInfo, KubeError>;
    /// The `status.volumeStatus` of the VM's running instance; NotFound when none runs.
    async fn vmi_volume_status(
        &self,
        namespace: &str,
        vm: &str,
    ) -> Result<Vec<VolumeStatusInfo>, KubeError>;
    /// virt-api's `addvolume` on the VirtualMachine: a claim as a hotpluggable SCSI disk named
    /// `volume`, persisted in the VM's template (on a stopped VM only there). A volume of that name
    /// that exists already is `Ok(())`.
    async fn add_volume(
        &self,
        namespace: &str,
        vm: &str,
        volume: &str,
        claim: &str,
    ) -> Result<(), KubeError>;
    /// virt-api's `removevolume` on the VirtualMachine; a volume already gone is `Ok(())`.
    async fn remove_volume(&self, namespace: &str, vm: &str, volume: &str)
    -> Result<(), KubeError>;
    /// Creates a VolumeSnapshot of a claim (the class's default snapshot class when None); an
    /// existing one of the same name is returned as it is.
    async fn create_snapshot(
        &self,
        namespace: &str,
        name: &str,
        pvc: &str,
        class: Option<&str>,
    ) -> Result<SnapshotInfo, KubeError>;
    async fn get_snapshot(&self, namespace: &str, name: &str) -> Result<SnapshotInfo, KubeError>;
    /// Deletes a snapshot; a missing one is fine.
    async fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<(), KubeError>;

    /// Creates a DataVolume; one of the same name that exists already is returned as it is (the
    /// caller checks whose it is, by its labels).
    async fn create_data_volume(&self, dv: &NewDataVolume) -> Result<DataVolumeInfo, KubeError>;
    async fn get_data_volume(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DataVolumeInfo, KubeError>;
    /// Deletes a DataVolume (CDI deletes its claim with it); a missing one is fine.
    async fn delete_data_volume(&self, namespace: &str, name: &str) -> Result<(), KubeError>;
    /// Uploads a local image file into an upload DataVolume that is `UploadReady`: an
    /// UploadTokenRequest for its claim, then a POST of the file to CDI's upload proxy, streamed
    /// from disk. Returns the bytes sent. The proxy's refusal (not an image, too large) is
    /// Permanent; a proxy that is not ready yet is Transient.
    async fn upload_image(
        &self,
        namespace: &str,
        data_volume: &str,
        path: &std::path::Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, KubeError>;
    /// Whether a NetworkAttachmentDefinition `<namespace>/<name>` exists.
    async fn network_exists(&self, namespace: &str, name: &str) -> Result<bool, KubeError>;
    /// What the namespace's ResourceQuotas allow for claims of `storage_class`.
    async fn storage_quota(
        &self,
        namespace: &str,
        storage_class: &str,
    ) -> Result<StorageQuota, KubeError>;
    /// Creates a VirtualMachine; one of the same name that exists already is returned as it is
    /// (with its labels, so the caller can tell whose it is).
    async fn create_vm(&self, vm: &NewVm) -> Result<VmInfo, KubeError>;
    /// Deletes a VirtualMachine (and its instance); a missing one is fine.
    async fn delete_vm(&self, namespace: &str, name: &str) -> Result<(), KubeError>;
    /// The state of the VM's running instance; NotFound when none runs.
    async fn get_vmi(&self, namespace: &str, name: &str) -> Result<VmiState, KubeError>;
}
