//! `import-vm`: a VM from a disk image (vmdk, qcow2, vhd/vhdx, raw) or an OVA/OVF package, at a
//! local path or an http(s) URL, into KubeVirt on CDI DataVolumes.
//!
//! 0 `validate` reads everything before anything is copied or created: the OVF (CPU, memory,
//!              firmware, disks, NICs; errors name the element) and its manifest, whose checksums
//!              are verified by reading each file once; each disk with `qemu-img info` (a backing
//!              file, a corrupt or encrypted image, a format CDI cannot take, a raw "image" that is
//!              not whole sectors are refused); the storage and network mappings (every disk gets
//!              a class that exists, every source network a target that exists); names (a VM or
//!              DataVolume of that name that this workflow did not make); and the namespace's
//!              storage quota against PVCs sized from each image's virtual size plus the
//!              filesystem overhead. Its output is the plan: every later step works from it.
//!              Its compensation is the workflow's clean-up (below).
//! 1 `stage`    puts each disk where CDI can take it: an OVA's disks out of the tar, and formats
//!              CDI's upload does not take (vmdk, vhd, vhdx, vdi) through `qemu-img convert` to
//!              qcow2, in this workflow's work directory, with bytes, rate and ETA as progress. A
//!              staged file is renamed into place when complete, so a re-run keeps the disks that
//!              were done and starts the interrupted one over.
//! 2 `volumes`  creates one DataVolume per disk (upload source, or http source for a URL),
//!              labelled with this workflow's id.
//! 3 `transfer` streams each staged disk to CDI's upload proxy, or follows CDI's http import,
//!              reporting bytes, rate and ETA; a disk whose DataVolume has Succeeded is skipped. No
//!              progress for `stall_secs` fails the step with the reason (CDI's own message when it
//!              has one) instead of waiting in ImportInProgress for ever.
//! 4 `create`   creates the VirtualMachine: the plan's disks, NICs on the pod network or Multus
//!              networks, evictionStrategy LiveMigrate, the OVF's firmware; running unless `start`
//!              is false (a migration plan's cutover starts it later).
//! 5 `verify`   with `start`, waits until the VM runs and reports LiveMigratable, or says why not.
//! 6 `finish`   removes the work directory.
//!
//! The ledger: every object this workflow creates carries the label `drover.io/created-by` with its
//! id, and the plan names them all. The clean-up deletes the VM and the DataVolumes of the plan
//! whose label is this workflow's (so, exactly what it created, also what a step killed before
//! recording made), then the work directory; every part of it is idempotent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_workflows::ports::images::{ImageError, ImageInfo, Images};
use drover_workflows::ports::kube::{
    DataVolumeInfo, DvSource, Kube, KubeError, NewDataVolume, NewVm, NewVmDisk, NewVmNic,
    Transferred,
};
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{Outcome, Permit, Scope};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_steps, default_poll_ms};
use crate::ovf;
use crate::storage::{self, CREATED_BY, parse_quantity};

/// The `import-vm` kind.
pub struct ImportVm;

/// Where the VM comes from: `{"disk": "/images/web.vmdk"}`, `{"disk": "https://..."}`,
/// `{"ova": "/exports/web.ova"}` (or a URL, downloaded first), `{"ovf": "/exports/web/web.ovf"}`
/// (its files beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    Disk(String),
    Ova(String),
    Ovf(String),
}

/// Input of `import-vm`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub namespace: String,
    /// The VirtualMachine's name.
    pub name: String,
    pub source: Source,
    /// vCPUs, memory (`8Gi`) and firmware (`bios`, `efi`): the OVF's when it has them, else these
    /// (a plain disk: 2, `4Gi`, `bios` unless given). Given with an OVF, they override it.
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    /// The storage mapping: the class of every disk not named in `storage_map` (keys: the OVF's
    /// disk id, or the disk's file name).
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub storage_map: BTreeMap<String, String>,
    /// `ReadWriteMany` by default, so the VM can live-migrate.
    #[serde(default = "rwx")]
    pub access_mode: String,
    /// `Block` or `Filesystem`; the storage profile's default when not given.
    #[serde(default)]
    pub volume_mode: Option<String>,
    /// The network mapping: source network name (the OVF's; `default` for a plain disk) to
    /// `pod` or a NetworkAttachmentDefinition (`name` in the VM's namespace, or `namespace/name`).
    /// A plain disk with no mapping gets one NIC on the pod network.
    #[serde(default)]
    pub network_map: BTreeMap<String, String>,
    /// Start the VM once created (else it is created stopped).
    #[serde(default = "yes")]
    pub start: bool,
    /// Fail a transfer that has made no progress for this long.
    #[serde(default = "default_stall_secs")]
    pub stall_secs: u64,
    /// How long `verify` waits for the VM to run.
    #[serde(default = "default_ready_secs")]
    pub ready_timeout_secs: u64,
    /// CDI's filesystem overhead: a Filesystem-mode PVC is sized virtual size / (1 - overhead).
    #[serde(default = "default_overhead")]
    pub filesystem_overhead: f64,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Whose objects these are (the label value and the work directory): this workflow's id unless
    /// given. A migration plan names each VM's, so a retried import finds what the failed one made
    /// and goes on from there.
    #[serde(default)]
    pub owner: Option<String>,
    /// Leave what a failed import made (for a retry to continue from, or to look at); a
    /// migration plan cleans up itself.
    #[serde(default)]
    pub keep_on_failure: bool,
    /// A semaphore the import holds from validation to its end (a migration plan's concurrency).
    #[serde(default)]
    pub slot: Option<Slot>,
}

/// A named semaphore and its capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    pub capacity: u32,
}

/// Whose objects an import's are: the label value on them and the work directory's name.
pub fn owner_of(i: &Input, workflow_id: &str) -> String {
    i.owner.clone().unwrap_or_else(|| workflow_id.to_string())
}

fn rwx() -> String {
    "ReadWriteMany".into()
}

fn yes() -> bool {
    true
}

fn default_stall_secs() -> u64 {
    300
}

fn default_ready_secs() -> u64 {
    600
}

fn default_overhead() -> f64 {
    0.055
}

/// Formats CDI's upload takes as they are; the others are converted to qcow2 first.
const UPLOADABLE: [&str; 2] = ["raw", "qcow2"];
/// Formats CDI's importer reads (qemu's names: `vpc` is VHD).
const IMPORTABLE: [&str; 6] = ["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"];
const MIB: u64 = 1024 * 1024;

/// The plan `validate` makes: what every later step (and a migration plan's report) works from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub namespace: String,
    pub vm: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// `bios` or `efi`.
    pub firmware: String,
    pub disks: Vec<PlanDisk>,
    pub nics: Vec<PlanNic>,
    /// The work directory for staged files.
    pub work_dir: String,
    /// Total bytes of PVC storage the plan requests.
    pub storage_bytes: u64,
}

/// One disk of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDisk {
    /// The OVF's disk id, or `disk-0` for a plain disk.
    pub id: String,
    /// Where it is read from: a path, a URL, or `member` of the package at `path`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// qemu's format name, as qemu-img says (for a package member before extraction, the OVF's).
    pub format: String,
    pub virtual_size: u64,
    pub pvc_bytes: u64,
    pub storage_class: String,
    pub access_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    pub data_volume: String,
    /// `upload` (through CDI's upload proxy) or `http` (CDI imports the URL).
    pub transfer: String,
    /// Whether `stage` converts it to qcow2 first.
    pub convert: bool,
}

/// One NIC of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNic {
    pub name: String,
    pub source_network: String,
    /// `pod`, or the NetworkAttachmentDefinition as `namespace/name`.
    pub target: String,
    pub model: String,
}

impl Kind for ImportVm {
    const NAME: &'static str = "import-vm";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        check_input(i)
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        cluster_steps(vec![
            Step::new("validate", |ctx| Box::pin(validate(ctx)))
                .permits(|i| {
                    i.slot
                        .iter()
                        .map(|s| Permit {
                            name: s.name.clone(),
                            capacity: s.capacity,
                            scope: Scope::Workflow,
                        })
                        .collect()
                })
                .compensate(|ctx| Box::pin(clean_up(ctx))),
            Step::new("stage", |ctx| Box::pin(stage(ctx))),
            Step::new("volumes", |ctx| Box::pin(volumes(ctx))),
            Step::new("transfer", |ctx| Box::pin(transfer(ctx))),
            Step::new("create", |ctx| Box::pin(create(ctx))),
            Step::new("verify", |ctx| Box::pin(verify(ctx))),
            Step::new("finish", |ctx| Box::pin(finish(ctx))),
        ])
    }
}

/// The checks of an input that need nothing but the input.
pub fn check_input(i: &Input) -> Result<(), String> {
    storage::check_names(&[("namespace", &i.namespace), ("name", &i.name)])?;
    let source = match &i.source {
        Source::Disk(s) | Source::Ova(s) | Source::Ovf(s) => s,
    };
    if source.trim().is_empty() {
        return Err("source: give a path or an http(s) URL".into());
    }
    if let Source::Ovf(s) = &i.source
        && is_url(s)
    {
        return Err(
            "source.ovf: an OVF is read from a local path with its files beside it; \
                    give an OVA's URL as source.ova instead"
                .into(),
        );
    }
    if !matches!(
        i.access_mode.as_str(),
        "ReadWriteMany" | "ReadWriteOnce" | "ReadWriteOncePod"
    ) {
        return Err("access_mode is ReadWriteMany, ReadWriteOnce or ReadWriteOncePod".into());
    }
    if let Some(m) = &i.volume_mode
        && m != "Block"
        && m != "Filesystem"
    {
        return Err("volume_mode is Block or Filesystem".into());
    }
    if let Some(f) = &i.firmware
        && f != "bios"
        && f != "efi"
    {
        return Err("firmware is bios or efi".into());
    }
    if let Some(m) = &i.memory
        && parse_quantity(m).is_none_or(|b| b < 64 * MIB)
    {
        return Err(format!(
            "memory {m:?} is not a Kubernetes quantity of at least 64Mi (e.g. 8Gi)"
        ));
    }
    if i.cpus == Some(0) || i.cpus.is_some_and(|c| c > 512) {
        return Err("cpus is 1 to 512".into());
    }
    for (network, target) in &i.network_map {
        if target != "pod" && nad_ref(&i.namespace, target).is_none() {
            return Err(format!(
                "network_map.{network}: {target:?} is neither pod nor a \
                 NetworkAttachmentDefinition name (name or namespace/name)"
            ));
        }
    }
    for (class, what) in i
        .storage_class
        .iter()
        .map(|c| (c, "storage_class".to_string()))
        .chain(
            i.storage_map
                .iter()
                .map(|(k, c)| (c, format!("storage_map.{k}"))),
        )
    {
        if !storage::dns_label(class) && !class.contains('.') {
            return Err(format!("{what}: {class:?} is not a storage class name"));
        }
    }
    if !(0.0..0.5).contains(&i.filesystem_overhead) {
        return Err("filesystem_overhead is a fraction from 0 to 0.5 (CDI's default 0.055)".into());
    }
    if let Some(s) = &i.slot
        && (s.capacity == 0 || s.name.is_empty())
    {
        return Err("slot: a name and a capacity of at least 1".into());
    }
    if i.owner.as_deref().is_some_and(str::is_empty) {
        return Err("owner: give a non-empty owner, or leave it out".into());
    }
    if i.stall_secs == 0 || i.ready_timeout_secs == 0 || !(10..=600_000).contains(&i.poll_ms) {
        return Err(
            "stall_secs and ready_timeout_secs must be at least 1, poll_ms 10 to 600000".into(),
        );
    }
    Ok(())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A NetworkAttachmentDefinition reference as `namespace/name`.
fn nad_ref(namespace: &str, target: &str) -> Option<String> {
    let (ns, name) = target.split_once('/').unwrap_or((namespace, target));
    (storage::dns_label(ns) && storage::dns_label(name)).then(|| format!("{ns}/{name}"))
}

/// What validation found wrong, each problem a sentence naming what to fix; or a transient
/// error (a cluster or file that did not answer), worth retrying.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    Problems(Vec<String>),
    Transient(String),
}

impl From<KubeError> for Invalid {
    fn from(e: KubeError) -> Invalid {
        match e {
            KubeError::Transient { message, .. } => Invalid::Transient(message),
            e => Invalid::Problems(vec![e.to_string()]),
        }
    }
}

impl From<Invalid> for StepError {
    fn from(e: Invalid) -> StepError {
        match e {
            Invalid::Transient(m) => StepError::retry(m, None),
            Invalid::Problems(p) => StepError::fail(p.join("; ")),
        }
    }
}

/// Reads the source (downloading an OVA URL into `work_dir`), checks it and the mappings against
/// the cluster, and returns the plan, or every problem found. `owner` is the workflow whose
/// objects may already exist (a re-run finds its own). Verifying a package's checksums reads it
/// once; `on_progress` sees those bytes.
pub async fn resolve(
    kube: &dyn Kube,
    images: &dyn Images,
    i: &Input,
    owner: &str,
    on_progress: &(dyn Fn(&str, Transferred) + Send + Sync),
) -> Result<Plan, Invalid> {
    let work_dir = images.work_dir(owner);
    let mut problems = Vec::new();
    let mut shape = Shape {
        cpus: 2,
        memory_bytes: 4 * 1024 * MIB,
        firmware: "bios".into(),
    };
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    match &i.source {
        Source::Disk(source) => {
            let info = inspect(images, source).await?;
            match info {
                Err(p) => problems.push(p),
                Ok(info) => {
                    let file = source.rsplit('/').next().unwrap_or(source).to_string();
                    disks.push(RawDisk {
                        id: "disk-0".into(),
                        file,
                        path: source.clone(),
                        member: None,
                        format: info.format.clone(),
                        virtual_size: info.virtual_size,
                        inspected: true,
                    });
                    if let Some(p) = refuse(source, &info) {
                        problems.push(p);
                    }
                }
            }
            let networks: Vec<(String, String)> = if i.network_map.is_empty() {
                vec![("default".into(), "pod".into())]
            } else {
                i.network_map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            for (k, (network, _)) in networks.iter().enumerate() {
                nics.push((format!("nic-{k}"), network.clone(), "virtio".to_string()));
            }
        }
        Source::Ova(source) | Source::Ovf(source) => {
            let package = if is_url(source) {
                let dest = work_dir.join("package.ova");
                match images
                    .download(source, &dest, &|t| on_progress("download", t))
                    .await
                {
                    Ok(_) => dest.to_string_lossy().into_owned(),
                    Err(ImageError::Transient(m)) => return Err(Invalid::Transient(m)),
                    Err(e) => return Err(Invalid::Problems(vec![format!("{source}: {e}")])),
                }
            } else {
                source.clone()
            };
            match read_package(images, &package, on_progress).await? {
                Err(mut p) => problems.append(&mut p),
                Ok(desc) => {
                    shape = Shape {
                        cpus: desc.cpus,
                        memory_bytes: desc.memory_bytes,
                        firmware: match desc.firmware {
                            ovf::Firmware::Efi => "efi".into(),
                            ovf::Firmware::Bios => "bios".into(),
                        },
                    };
                    for d in &desc.disks {
                        let file = d.file.clone();
                        disks.push(RawDisk {
                            id: d.id.clone(),
                            file: file.clone(),
                            path: package.clone(),
                            member: Some(file),
                            format: d.format.clone().unwrap_or_else(|| "vmdk".into()),
                            virtual_size: d.capacity_bytes,
                            inspected: false,
                        });
                    }
                    for (k, n) in desc.nics.iter().enumerate() {
                        let name = format!("nic-{k}");
                        nics.push((name, n.network.clone(), nic_model(&n.model)));
                    }
                }
            }
        }
    }
    if let Some(c) = i.cpus {
        shape.cpus = c;
    }
    if let Some(m) = i.memory.as_deref().and_then(parse_quantity) {
        shape.memory_bytes = m;
    }
    if let Some(f) = &i.firmware {
        shape.firmware = f.clone();
    }

    // The storage mapping: a class for every disk, each class real.
    let mut planned = Vec::new();
    let mut classes: BTreeMap<String, bool> = BTreeMap::new();
    for (k, d) in disks.iter().enumerate() {
        let class = i
            .storage_map
            .get(&d.id)
            .or_else(|| i.storage_map.get(&d.file))
            .or(i.storage_class.as_ref());
        let Some(class) = class else {
            problems.push(format!(
                "disk {} ({}) has no storage class: set storage_class, or map it in storage_map",
                d.id, d.file
            ));
            continue;
        };
        if !classes.contains_key(class) {
            let exists = match kube.get_storage_class(class).await {
                Ok(_) => true,
                Err(KubeError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            classes.insert(class.clone(), exists);
            if !exists {
                problems.push(format!("storage class {class} does not exist"));
            }
        }
        let block = i.volume_mode.as_deref() == Some("Block");
        let pvc_bytes = pvc_size(d.virtual_size, block, i.filesystem_overhead);
        let url = is_url(&d.path) && d.member.is_none();
        planned.push(PlanDisk {
            id: d.id.clone(),
            path: d.path.clone(),
            member: d.member.clone(),
            format: d.format.clone(),
            virtual_size: d.virtual_size,
            pvc_bytes,
            storage_class: class.clone(),
            access_mode: i.access_mode.clone(),
            volume_mode: i.volume_mode.clone(),
            data_volume: data_volume_name(&i.name, k),
            transfer: if url { "http" } else { "upload" }.into(),
            convert: !url && d.inspected && !UPLOADABLE.contains(&d.format.as_str())
                || d.member.is_some(),
        });
    }

    // The network mapping: every source network mapped, every target real.
    let mut plan_nics = Vec::new();
    for (name, network, model) in nics {
        let target = match &i.source {
            Source::Disk(_) if i.network_map.is_empty() => Some("pod".to_string()),
            _ => i.network_map.get(&network).cloned(),
        };
        let Some(target) = target else {
            problems.push(format!(
                "network {network:?} (of {name}) is not mapped: add it to network_map as pod or a \
                 NetworkAttachmentDefinition"
            ));
            continue;
        };
        let target = if target == "pod" {
            target
        } else {
            let Some(r) = nad_ref(&i.namespace, &target) else {
                problems.push(format!("network_map.{network}: {target:?} is not a name"));
                continue;
            };
            let (ns, nad) = r.split_once('/').unwrap_or_default();
            if !kube.network_exists(ns, nad).await? {
                problems.push(format!(
                    "network {network:?} maps to NetworkAttachmentDefinition {r}, which does not \
                     exist"
                ));
            }
            r
        };
        plan_nics.push(PlanNic {
            name,
            source_network: network,
            target,
            model,
        });
    }
    if plan_nics.iter().filter(|n| n.target == "pod").count() > 1 {
        problems.push("more than one network maps to the pod network; a VM has one pod NIC".into());
    }

    // Names: the VM and its DataVolumes are new, or this workflow's own.
    let mine = storage::label_value(owner);
    match kube.get_vm(&i.namespace, &i.name).await {
        Ok(vm) if vm.labels.get(CREATED_BY) != Some(&mine) => problems.push(format!(
            "VirtualMachine {}/{} exists already; choose another name or delete it",
            i.namespace, i.name
        )),
        Ok(_) | Err(KubeError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for d in &planned {
        match kube.get_data_volume(&i.namespace, &d.data_volume).await {
            Ok(dv) if dv.labels.get(CREATED_BY) != Some(&mine) => problems.push(format!(
                "DataVolume {}/{} exists already and is not this import's; delete it or rename \
                 the VM",
                i.namespace, d.data_volume
            )),
            Ok(_) | Err(KubeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Quota: what the namespace still allows, per class and in all.
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &planned {
        *by_class.entry(&d.storage_class).or_default() += d.pvc_bytes;
    }
    let total: u64 = by_class.values().sum();
    for (class, bytes) in &by_class {
        let quota = kube.storage_quota(&i.namespace, class).await?;
        for l in &quota.limits {
            let need = if l.resource == "requests.storage" {
                total
            } else {
                *bytes
            };
            let left = l.hard_bytes.saturating_sub(l.used_bytes);
            if need > left {
                problems.push(format!(
                    "ResourceQuota {} allows {} more of {} in {}, and the disks need {}",
                    l.quota,
                    gib(left),
                    l.resource,
                    i.namespace,
                    gib(need)
                ));
            }
        }
    }
    problems.dedup();
    if !problems.is_empty() {
        return Err(Invalid::Problems(problems));
    }
    Ok(Plan {
        namespace: i.namespace.clone(),
        vm: i.name.clone(),
        cpus: shape.cpus,
        memory_bytes: shape.memory_bytes,
        firmware: shape.firmware,
        storage_bytes: total,
        disks: planned,
        nics: plan_nics,
        work_dir: work_dir.to_string_lossy().into_owned(),
    })
}

struct Shape {
    cpus: u32,
    memory_bytes: u64,
    firmware: String,
}

struct RawDisk {
    id: String,
    file: String,
    path: String,
    member: Option<String>,
    format: String,
    virtual_size: u64,
    /// Whether `format` and `virtual_size` come from qemu-img (else from the OVF).
    inspected: bool,
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// A PVC's size for an image: the virtual size, plus the filesystem's overhead unless the volume
/// is a block device, rounded up to whole MiB.
pub fn pvc_size(virtual_size: u64, block: bool, overhead: f64) -> u64 {
    let raw = if block {
        virtual_size as f64
    } else {
        virtual_size as f64 / (1.0 - overhead)
    };
    (raw / MIB as f64).ceil() as u64 * MIB
}

/// The DataVolume for disk `k` of VM `vm`.
pub fn data_volume_name(vm: &str, k: usize) -> String {
    let base: String = vm.chars().take(55).collect();
    format!("{}-disk-{k}", base.trim_end_matches('-'))
}

fn nic_model(ovf_model: &str) -> String {
    match ovf_model.to_ascii_lowercase().as_str() {
        "e1000" | "e1000e" => "e1000e".into(),
        _ => "virtio".into(),
    }
}

/// `qemu-img info` of a disk source: Ok(Err(problem)) when the image is missing or unreadable.
async fn inspect(images: &dyn Images, source: &str) -> Result<Result<ImageInfo, String>, Invalid> {
    match images.inspect(source).await {
        Ok(info) => Ok(Ok(info)),
        Err(ImageError::Transient(m)) => Err(Invalid::Transient(format!("{source}: {m}"))),
        Err(ImageError::NotFound(m)) => Ok(Err(format!("{source} does not exist ({m})"))),
        Err(ImageError::Invalid(m)) => Ok(Err(format!("{source} is not a readable image: {m}"))),
    }
}

/// Why an inspected image cannot be imported, if it cannot.
pub fn refuse(source: &str, info: &ImageInfo) -> Option<String> {
    if let Some(b) = &info.backing_file {
        return Some(format!(
            "{source} is an overlay on backing file {b}; flatten it first (qemu-img convert to a \
             standalone image)"
        ));
    }
    if info.corrupt {
        return Some(format!(
            "{source} is corrupt (qemu-img marks the {} image corrupt); repair it with qemu-img \
             check -r or export it again",
            info.format
        ));
    }
    if info.encrypted {
        return Some(format!(
            "{source} is encrypted; decrypt it before importing"
        ));
    }
    if !IMPORTABLE.contains(&info.format.as_str()) {
        return Some(format!(
            "{source} is a {} image; this importer takes raw, qcow2, vmdk, vhd (vpc), vhdx and vdi",
            info.format
        ));
    }
    if info.format == "raw" && (info.virtual_size == 0 || !info.virtual_size.is_multiple_of(512)) {
        return Some(format!(
            "{source} is not a disk image: qemu-img reads it as raw, and {} bytes is not a whole \
             number of 512-byte sectors",
            info.virtual_size
        ));
    }
    None
}

/// An OVF's descriptor after its manifest was checked.
async fn read_package(
    images: &dyn Images,
    package: &str,
    on_progress: &(dyn Fn(&str, Transferred) + Send + Sync),
) -> Result<Result<ovf::Ovf, Vec<String>>, Invalid> {
    let p = match images.open_package(package).await {
        Ok(p) => p,
        Err(ImageError::Transient(m)) => return Err(Invalid::Transient(m)),
        Err(ImageError::NotFound(m)) => {
            return Ok(Err(vec![format!("{package} does not exist ({m})")]));
        }
        Err(e) => return Ok(Err(vec![format!("{package}: {e}")])),
    };
    let desc = match ovf::parse(&p.ovf) {
        Ok(d) => d,
        Err(e) => return Ok(Err(vec![format!("{}: {e}", p.ovf_name)])),
    };
    let mut problems = Vec::new();
    for d in &desc.disks {
        if !p.files.iter().any(|(f, _)| f == &d.file) {
            problems.push(format!(
                "{}: disk {} refers to file {}, which the package does not contain",
                p.ovf_name, d.id, d.file
            ));
        }
    }
    if let Some((mf_name, mf)) = &p.manifest {
        match ovf::parse_manifest(mf) {
            Err(e) => problems.push(format!("{mf_name}: {e}")),
            Ok(entries) => {
                for e in entries {
                    if !p.files.iter().any(|(f, _)| f == &e.file) {
                        problems.push(format!(
                            "{mf_name} lists {}, which the package does not contain",
                            e.file
                        ));
                        continue;
                    }
                    let found = match images
                        .digest(package, &e.file, &e.algorithm, &|t| on_progress(&e.file, t))
                        .await
                    {
                        Ok(h) => h,
                        Err(ImageError::Transient(m)) => return Err(Invalid::Transient(m)),
                        Err(err) => {
                            problems.push(format!("{}: {err}", e.file));
                            continue;
                        }
                    };
                    if !found.eq_ignore_ascii_case(&e.hex) {
                        problems.push(format!(
                            "checksum mismatch for {}: {mf_name} says {} {}, the file has {}",
                            e.file,
                            e.algorithm.to_uppercase(),
                            e.hex,
                            found
                        ));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Ok(desc))
    } else {
        Ok(Err(problems))
    }
}

/// Progress as it is shown: bytes, rate and ETA, per disk and phase.
struct Meter<'c, 'a> {
    ctx: &'c Ctx<'a, ImportVm>,
    started_ms: u64,
    last_ms: AtomicU64,
    what: Mutex<(String, String)>,
}

impl<'c, 'a> Meter<'c, 'a> {
    fn new(ctx: &'c Ctx<'a, ImportVm>) -> Self {
        let now = ctx.now_ms();
        Meter {
            ctx,
            started_ms: now,
            last_ms: AtomicU64::new(now),
            what: Mutex::new((String::new(), String::new())),
        }
    }

    /// Starts measuring `phase` of `disk` afresh.
    fn begin(&self, disk: &str, phase: &str) -> u64 {
        *self.what.lock().unwrap_or_else(|e| e.into_inner()) = (disk.into(), phase.into());
        let now = self.ctx.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        self.ctx
            .report_progress(json!({"disk": disk, "phase": phase}));
        now
    }

    fn report(&self, since_ms: u64, t: Transferred) {
        let now = self.ctx.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        let secs = now.saturating_sub(since_ms).max(1) as f64 / 1000.0;
        let rate = t.done as f64 / secs;
        let eta =
            (t.total > t.done && rate > 0.0).then(|| ((t.total - t.done) as f64 / rate).ceil());
        let (disk, phase) = self.what.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.ctx.report_progress(json!({
            "disk": disk,
            "phase": phase,
            "bytes": t.done,
            "total_bytes": t.total,
            "percent": (t.total > 0).then(|| (t.done as f64 * 1000.0 / t.total as f64).round() / 10.0),
            "rate_mb_per_s": (rate / 1e6 * 10.0).round() / 10.0,
            "eta_secs": eta,
        }));
    }

    /// Milliseconds since the last progress.
    fn idle_ms(&self) -> u64 {
        self.ctx
            .now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }

    fn elapsed_ms(&self) -> u64 {
        self.ctx.now_ms().saturating_sub(self.started_ms)
    }
}

/// Runs `work` until it ends, or fails it when the meter sees no progress for `stall_secs`.
async fn watched<T>(
    ctx: &Ctx<'_, ImportVm>,
    meter: &Meter<'_, '_>,
    what: &str,
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    let stall_ms = ctx.input.stall_secs * 1000;
    let watchdog = async {
        loop {
            ctx.ports.clock.sleep(Duration::from_millis(500)).await;
            if meter.idle_ms() >= stall_ms {
                return;
            }
        }
    };
    futures::select_biased! {
        r = work.fuse() => r,
        () = Box::pin(watchdog).fuse() => Err(StepError::fail(format!(
            "{what} made no progress for {} s (stall_secs); giving up",
            ctx.input.stall_secs
        ))),
    }
}

async fn validate(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let kube = ctx.kube()?;
    let images = ctx.images()?;
    let meter = Meter::new(ctx);
    let since = meter.begin("package", "verifying checksums");
    let owner = owner_of(ctx.input, ctx.workflow_id);
    let plan = resolve(kube, images, ctx.input, &owner, &|_, t| {
        meter.report(since, t)
    })
    .await?;
    Ok(Outcome::Done(json!(plan)))
}

/// `stage`'s output: what to upload for each disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    /// Per disk (in plan order): the file to upload, or None for an http import.
    pub files: Vec<Option<String>>,
    /// Per disk: the virtual size qemu-img reported for what is staged.
    pub virtual_sizes: Vec<u64>,
}

async fn stage(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let images = ctx.images()?;
    let plan: Plan = ctx.output("validate")?;
    let meter = Meter::new(ctx);
    let mut files = Vec::new();
    let mut sizes = Vec::new();
    for d in &plan.disks {
        if d.transfer == "http" {
            files.push(None);
            sizes.push(d.virtual_size);
            continue;
        }
        // A package member comes out of the tar first, then is inspected as any disk.
        let mut source = d.path.clone();
        let mut format = d.format.clone();
        if let Some(member) = &d.member {
            let out = Path::new(&plan.work_dir).join(format!("{}.extracted", d.data_volume));
            if !done_file(images, &out).await {
                let since = meter.begin(&d.id, "extracting");
                watched(ctx, &meter, &format!("extracting {member}"), async {
                    images
                        .extract(&d.path, member, &out, &|t| meter.report(since, t))
                        .await
                        .map_err(StepError::from)
                })
                .await?;
            }
            source = out.to_string_lossy().into_owned();
            let info = images.inspect(&source).await?;
            if let Some(p) = refuse(member, &info) {
                return Err(StepError::fail(p));
            }
            if info.virtual_size > d.virtual_size {
                return Err(StepError::fail(format!(
                    "{member}: its virtual size ({} bytes) is larger than the OVF's capacity for \
                     disk {} ({} bytes); the OVF is wrong",
                    info.virtual_size, d.id, d.virtual_size
                )));
            }
            format = info.format;
        }
        let upload = if UPLOADABLE.contains(&format.as_str()) {
            source
        } else {
            let out = Path::new(&plan.work_dir).join(format!("{}.qcow2", d.data_volume));
            if !done_file(images, &out).await {
                let since = meter.begin(&d.id, "converting");
                watched(ctx, &meter, &format!("converting {}", d.id), async {
                    images
                        .convert(&source, &format, &out, "qcow2", &|t| meter.report(since, t))
                        .await
                        .map_err(StepError::from)
                })
                .await?;
            }
            out.to_string_lossy().into_owned()
        };
        let info = images.inspect(&upload).await?;
        sizes.push(info.virtual_size);
        files.push(Some(upload));
    }
    Ok(Outcome::Done(json!(Staged {
        files,
        virtual_sizes: sizes,
    })))
}

/// Whether a staged file is complete: the images port renames a file into place only when it is,
/// and qemu-img reads it whole and uncorrupted (a conversion is not fsynced, so after a machine
/// crash its name may hold less; it is then staged again).
async fn done_file(images: &dyn Images, path: &Path) -> bool {
    images
        .inspect(&path.to_string_lossy())
        .await
        .is_ok_and(|i| i.virtual_size > 0 && !i.corrupt)
}

async fn volumes(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let kube = ctx.kube()?;
    let plan: Plan = ctx.output("validate")?;
    let mine = storage::label_value(&owner_of(ctx.input, ctx.workflow_id));
    let mut created = Vec::new();
    for d in &plan.disks {
        let source = if d.transfer == "http" {
            DvSource::Http {
                url: d.path.clone(),
            }
        } else {
            DvSource::Upload
        };
        let dv = kube
            .create_data_volume(&NewDataVolume {
                namespace: plan.namespace.clone(),
                name: d.data_volume.clone(),
                source,
                storage_class: d.storage_class.clone(),
                access_mode: d.access_mode.clone(),
                volume_mode: d.volume_mode.clone(),
                size_bytes: d.pvc_bytes,
                labels: BTreeMap::from([
                    (CREATED_BY.to_string(), mine.clone()),
                    ("drover.io/vm".to_string(), plan.vm.clone()),
                ]),
            })
            .await?;
        if dv.labels.get(CREATED_BY) != Some(&mine) {
            return Err(StepError::fail(format!(
                "DataVolume {}/{} appeared meanwhile and is not this import's; nothing of it was \
                 touched",
                plan.namespace, d.data_volume
            )));
        }
        created.push(d.data_volume.clone());
    }
    Ok(Outcome::Done(json!({"data_volumes": created})))
}

/// CDI's progress string (`"45.23%"`) as a fraction.
fn cdi_fraction(progress: &str) -> Option<f64> {
    progress
        .strip_suffix('%')
        .and_then(|p| p.trim().parse::<f64>().ok())
        .map(|p| (p / 100.0).clamp(0.0, 1.0))
}

async fn transfer(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let kube = ctx.kube()?;
    let plan: Plan = ctx.output("validate")?;
    let staged: Staged = ctx.output("stage")?;
    let meter = Meter::new(ctx);
    let mut moved = Vec::new();
    for (k, d) in plan.disks.iter().enumerate() {
        let dv = kube
            .get_data_volume(&plan.namespace, &d.data_volume)
            .await?;
        if dv.phase == "Succeeded" {
            moved.push(
                json!({"disk": d.id, "data_volume": d.data_volume, "bytes": null, "skipped": true}),
            );
            continue;
        }
        let started = ctx.now_ms();
        let bytes = match staged.files.get(k).cloned().flatten() {
            Some(file) => {
                let since = meter.begin(&d.id, "waiting for the upload server");
                watched(
                    ctx,
                    &meter,
                    &format!("upload of {}", d.id),
                    upload(ctx, &meter, since, &plan, d, &file),
                )
                .await?
            }
            None => {
                meter.begin(&d.id, "importing");
                watched(
                    ctx,
                    &meter,
                    &format!("CDI's import of {}", d.path),
                    follow_import(ctx, &meter, &plan, d),
                )
                .await?
            }
        };
        let secs = ctx.now_ms().saturating_sub(started).max(1) as f64 / 1000.0;
        moved.push(json!({
            "disk": d.id,
            "data_volume": d.data_volume,
            "bytes": bytes,
            "secs": secs,
            "mb_per_s": ((bytes as f64 / secs / 1e6) * 10.0).round() / 10.0,
        }));
    }
    Ok(Outcome::Done(json!({
        "disks": moved,
        "elapsed_ms": meter.elapsed_ms(),
    })))
}

/// Waits for the DataVolume's upload server, then streams the file to it; the DataVolume's
/// Succeeded is the end.
async fn upload(
    ctx: &Ctx<'_, ImportVm>,
    meter: &Meter<'_, '_>,
    since: u64,
    plan: &Plan,
    d: &PlanDisk,
    file: &str,
) -> Result<u64, StepError> {
    let kube = ctx.kube()?;
    let poll = Duration::from_millis(ctx.input.poll_ms);
    let mut sent = None;
    loop {
        let dv = kube
            .get_data_volume(&plan.namespace, &d.data_volume)
            .await?;
        match dv.phase.as_str() {
            "Succeeded" => return Ok(sent.unwrap_or(0)),
            "Failed" => return Err(dv_failed(&dv)),
            "UploadReady" if sent.is_none() => {
                let since = meter.begin(&d.id, "uploading").max(since);
                let n = kube
                    .upload_image(&plan.namespace, &d.data_volume, Path::new(file), &|t| {
                        meter.report(since, t)
                    })
                    .await?;
                sent = Some(n);
                meter.begin(&d.id, "uploaded; CDI is writing the volume");
            }
            _ => {}
        }
        ctx.ports.clock.sleep(poll).await;
    }
}

/// Follows CDI's http import until Succeeded; progress is CDI's percentage of the virtual size.
async fn follow_import(
    ctx: &Ctx<'_, ImportVm>,
    meter: &Meter<'_, '_>,
    plan: &Plan,
    d: &PlanDisk,
) -> Result<u64, StepError> {
    let kube = ctx.kube()?;
    let poll = Duration::from_millis(ctx.input.poll_ms);
    let since = ctx.now_ms();
    let mut last = (String::new(), String::new(), 0u32);
    loop {
        let dv = kube
            .get_data_volume(&plan.namespace, &d.data_volume)
            .await?;
        if dv.phase == "Succeeded" {
            return Ok(d.virtual_size);
        }
        if dv.phase == "Failed" {
            return Err(dv_failed(&dv));
        }
        // CDI restarts a failing importer for ever; what counts as progress is the percentage
        // moving, or the phase changing, not a restart.
        let now = (dv.phase.clone(), dv.progress.clone(), dv.restart_count);
        if now.0 != last.0 || now.1 != last.1 {
            let done = cdi_fraction(&dv.progress).map_or(0, |f| (f * d.virtual_size as f64) as u64);
            meter.report(
                since,
                Transferred {
                    done,
                    total: d.virtual_size,
                },
            );
        } else if let Some(m) = &dv.message {
            // Keep the reason visible while nothing moves.
            ctx.report_progress(json!({
                "disk": d.id, "phase": dv.phase, "progress": dv.progress,
                "restarts": dv.restart_count, "message": m,
            }));
        }
        last = now;
        if meter.idle_ms() + poll.as_millis() as u64 >= ctx.input.stall_secs * 1000
            && let Some(m) = &dv.message
        {
            return Err(StepError::fail(format!(
                "CDI's import of {} into {} made no progress for {} s ({} restarts of its \
                 importer): {m}",
                d.path, d.data_volume, ctx.input.stall_secs, dv.restart_count
            )));
        }
        ctx.ports.clock.sleep(poll).await;
    }
}

fn dv_failed(dv: &DataVolumeInfo) -> StepError {
    StepError::fail(format!(
        "DataVolume {}/{} failed: {}",
        dv.namespace,
        dv.name,
        dv.message.as_deref().unwrap_or("CDI gave no reason")
    ))
}

async fn create(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let kube = ctx.kube()?;
    let plan: Plan = ctx.output("validate")?;
    let mine = storage::label_value(&owner_of(ctx.input, ctx.workflow_id));
    let vm = kube
        .create_vm(&NewVm {
            namespace: plan.namespace.clone(),
            name: plan.vm.clone(),
            cpu_cores: plan.cpus,
            memory_bytes: plan.memory_bytes,
            firmware: plan.firmware.clone(),
            running: ctx.input.start,
            eviction_strategy: "LiveMigrate".into(),
            disks: plan
                .disks
                .iter()
                .enumerate()
                .map(|(k, d)| NewVmDisk {
                    name: format!("disk-{k}"),
                    data_volume: d.data_volume.clone(),
                    bus: "virtio".into(),
                })
                .collect(),
            nics: plan
                .nics
                .iter()
                .map(|n| NewVmNic {
                    name: n.name.clone(),
                    multus: (n.target != "pod").then(|| n.target.clone()),
                    model: n.model.clone(),
                    mac_address: None,
                })
                .collect(),
            labels: BTreeMap::from([(CREATED_BY.to_string(), mine.clone())]),
        })
        .await?;
    if vm.labels.get(CREATED_BY) != Some(&mine) {
        return Err(StepError::fail(format!(
            "VirtualMachine {}/{} appeared meanwhile and is not this import's; it was not touched",
            plan.namespace, plan.vm
        )));
    }
    Ok(Outcome::Done(
        json!({"vm": plan.vm, "created_ms": ctx.now_ms()}),
    ))
}

async fn verify(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let plan: Plan = ctx.output("validate")?;
    let created: Value = ctx.output("create")?;
    if !ctx.input.start {
        return Ok(Outcome::Done(json!({"running": false, "started": false})));
    }
    let kube = ctx.kube()?;
    let waited = ctx
        .now_ms()
        .saturating_sub(created["created_ms"].as_u64().unwrap_or(0));
    let vmi = match kube.get_vmi(&plan.namespace, &plan.vm).await {
        Ok(v) => Some(v),
        Err(KubeError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(v) = &vmi
        && v.phase == "Running"
        && let Some(lm) = &v.live_migratable
    {
        return Ok(Outcome::Done(json!({
            "running": true,
            "node": v.node,
            "live_migratable": lm.is_ok(),
            "not_migratable_because": lm.as_ref().err(),
        })));
    }
    if waited >= ctx.input.ready_timeout_secs * 1000 {
        let vm = kube.get_vm(&plan.namespace, &plan.vm).await?;
        return Err(StepError::fail(format!(
            "VM {}/{} is not running after {} s: the VM is {}{}",
            plan.namespace,
            plan.vm,
            waited / 1000,
            vm.printable_status,
            vmi.map(|v| format!(", its instance {}", v.phase))
                .unwrap_or_default()
        )));
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(ctx.input.poll_ms),
        progress: Some(json!({"vm": plan.vm, "vmi_phase": vmi.map(|v| v.phase)})),
    })
}

async fn finish(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    let plan: Plan = ctx.output("validate")?;
    ctx.images()?.remove(Path::new(&plan.work_dir)).await?;
    let verified: Value = ctx.output("verify")?;
    let transfer: Value = ctx.output("transfer")?;
    Ok(Outcome::Done(json!({
        "vm": format!("{}/{}", plan.namespace, plan.vm),
        "created": ledger(&plan),
        "disks": transfer["disks"],
        "running": verified["running"],
        "live_migratable": verified.get("live_migratable"),
        "not_migratable_because": verified.get("not_migratable_because"),
    })))
}

/// Every object the plan makes, as the ledger lists them.
pub fn ledger(plan: &Plan) -> Vec<Value> {
    let mut objects: Vec<Value> = plan
        .disks
        .iter()
        .map(|d| json!({"kind": "DataVolume", "namespace": plan.namespace, "name": d.data_volume}))
        .collect();
    objects.push(json!({"kind": "VirtualMachine", "namespace": plan.namespace, "name": plan.vm}));
    objects
}

/// The clean-up: the VM, then the DataVolumes, of the plan that carry this workflow's label, then
/// the work directory. Idempotent; never touches what another made. With `keep_on_failure`, it
/// leaves everything (the migration plan cleans up what it decides to).
async fn clean_up(ctx: &Ctx<'_, ImportVm>) -> StepResult {
    if ctx.input.keep_on_failure {
        return Ok(Outcome::Done(json!({"deleted": [], "kept": true})));
    }
    let images = ctx.images()?;
    let owner = owner_of(ctx.input, ctx.workflow_id);
    let Some(plan) = ctx.output_if::<Plan>("validate")? else {
        // Validation itself failed: only a downloaded package can be left.
        images.remove(&images.work_dir(&owner)).await?;
        return Ok(Outcome::Done(json!({"deleted": []})));
    };
    let removed = remove_objects(ctx.kube()?, images, &plan, &owner, true).await?;
    Ok(Outcome::Done(json!({"deleted": removed})))
}

/// Deletes the plan's objects that carry `owner`'s label (the VM only when `vm`), then the work
/// directory; returns what it deleted. What is gone already, or is another's, is left.
pub async fn remove_objects(
    kube: &dyn Kube,
    images: &dyn Images,
    plan: &Plan,
    owner: &str,
    vm: bool,
) -> Result<Vec<Value>, StepError> {
    let mut removed = Vec::new();
    let mine = storage::label_value(owner);
    if vm {
        match kube.get_vm(&plan.namespace, &plan.vm).await {
            Ok(v) if v.labels.get(CREATED_BY) == Some(&mine) => {
                kube.delete_vm(&plan.namespace, &plan.vm).await?;
                removed.push(json!({"kind": "VirtualMachine", "name": plan.vm}));
            }
            Ok(_) | Err(KubeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for d in &plan.disks {
        match kube.get_data_volume(&plan.namespace, &d.data_volume).await {
            Ok(dv) if dv.labels.get(CREATED_BY) == Some(&mine) => {
                kube.delete_data_volume(&plan.namespace, &d.data_volume)
                    .await?;
                removed.push(json!({"kind": "DataVolume", "name": d.data_volume}));
            }
            Ok(_) | Err(KubeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    images.remove(Path::new(&plan.work_dir)).await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use drover_workflows::sdk::parse;
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_that_could_never_run_are_refused_with_what_to_fix() {
        let ok = json!({"namespace": "vmo-prod", "name": "web-01",
                        "source": {"disk": "/images/web.vmdk"}, "storage_class": "px-rwx"});
        assert!(parse::<ImportVm>(&ok).is_ok());
        let cases = [
            (json!({"source": {"iso": "/x"}}), "unknown variant"),
            (json!({"source": {"ovf": "https://x/y.ovf"}}), "source.ovf"),
            (json!({"source": {"disk": " "}}), "source: give a path"),
            (json!({"name": "Web_01"}), "name: 1-63"),
            (json!({"memory": "8GB"}), "memory"),
            (json!({"cpus": 0}), "cpus"),
            (json!({"firmware": "uefi"}), "firmware is bios or efi"),
            (
                json!({"network_map": {"VM Network": "a/b/c"}}),
                "network_map.VM Network",
            ),
            (json!({"filesystem_overhead": 0.9}), "filesystem_overhead"),
            (json!({"access_mode": "RWX"}), "access_mode"),
            (json!({"stall_secs": 0}), "stall_secs"),
        ];
        for (patch, needle) in cases {
            let mut input = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                input[k] = v.clone();
            }
            let e = parse::<ImportVm>(&input).expect_err(needle);
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn pvcs_fit_the_image_with_cdis_overhead() {
        let gib = 1024 * MIB;
        // 10 GiB on a filesystem: 10 / 0.945 = 10.58 GiB, rounded up to MiB.
        let fs = pvc_size(10 * gib, false, 0.055);
        assert!(
            fs as f64 >= 10.0 * gib as f64 / 0.945 && fs.is_multiple_of(MIB),
            "{fs}"
        );
        assert!(fs < 10 * gib + gib, "{fs}");
        assert_eq!(pvc_size(10 * gib, true, 0.055), 10 * gib);
        assert_eq!(pvc_size(MIB + 1, true, 0.0), 2 * MIB);
    }

    #[test]
    fn images_that_cannot_be_imported_say_why() {
        let ok = ImageInfo {
            format: "qcow2".into(),
            virtual_size: 1 << 30,
            ..ImageInfo::default()
        };
        assert_eq!(refuse("a", &ok), None);
        let cases = [
            (
                ImageInfo {
                    backing_file: Some("base.qcow2".into()),
                    ..ok.clone()
                },
                "backing file base.qcow2",
            ),
            (
                ImageInfo {
                    corrupt: true,
                    ..ok.clone()
                },
                "corrupt",
            ),
            (
                ImageInfo {
                    encrypted: true,
                    ..ok.clone()
                },
                "encrypted",
            ),
            (
                ImageInfo {
                    format: "qed".into(),
                    ..ok.clone()
                },
                "a qed image",
            ),
            (
                ImageInfo {
                    format: "raw".into(),
                    virtual_size: 1000,
                    ..ok.clone()
                },
                "not a disk image",
            ),
        ];
        for (info, needle) in cases {
            let e = refuse("a", &info).expect(needle);
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert_eq!(cdi_fraction("45.23%"), Some(0.4523));
        assert_eq!(cdi_fraction("N/A"), None);
    }
}

#[cfg(test)]
mod table {
    //! The import's reconcilers against the fake ports: what clean-up deletes and keeps, what a
    //! re-run adopts, what validation refuses.
    use std::collections::BTreeMap;

    use drover_workflows::Outcome;
    use drover_workflows::ports::images::ImageInfo;
    use drover_workflows::ports::kube::{DataVolumeInfo, VmInfo};
    use serde_json::json;

    use super::*;
    use crate::fake::{Call, FakeKube, Harness};

    const WF: &str = "wf-1";

    fn input() -> serde_json::Value {
        json!({"namespace": "ns", "name": "web", "source": {"disk": "/images/web.qcow2"},
               "storage_class": "px-rwx"})
    }

    fn labelled(owner: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(CREATED_BY.to_string(), storage::label_value(owner))])
    }

    fn dv(name: &str, owner: &str) -> DataVolumeInfo {
        DataVolumeInfo {
            namespace: "ns".into(),
            name: name.into(),
            phase: "Succeeded".into(),
            labels: labelled(owner),
            ..DataVolumeInfo::default()
        }
    }

    fn plan(disks: usize) -> Plan {
        Plan {
            namespace: "ns".into(),
            vm: "web".into(),
            cpus: 2,
            memory_bytes: 4 << 30,
            firmware: "bios".into(),
            disks: (0..disks)
                .map(|k| PlanDisk {
                    id: format!("disk-{k}"),
                    path: "/images/web.qcow2".into(),
                    member: None,
                    format: "qcow2".into(),
                    virtual_size: 1 << 30,
                    pvc_bytes: 1 << 30,
                    storage_class: "px-rwx".into(),
                    access_mode: "ReadWriteMany".into(),
                    volume_mode: None,
                    data_volume: data_volume_name("web", k),
                    transfer: "upload".into(),
                    convert: false,
                })
                .collect(),
            nics: Vec::new(),
            work_dir: "/work/wf-1".into(),
            storage_bytes: 1 << 30,
        }
    }

    fn deleted(h: &Harness) -> Vec<String> {
        h.kube
            .mutations()
            .into_iter()
            .filter_map(|c| match c {
                Call::DeleteDataVolume { name, .. } | Call::DeleteVm { name, .. } => Some(name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn clean_up_deletes_what_carries_this_imports_label_and_nothing_else() {
        let kube = FakeKube::default()
            .vm(VmInfo {
                namespace: "ns".into(),
                name: "web".into(),
                labels: labelled(WF),
                ..VmInfo::default()
            })
            .data_volume(dv("web-disk-0", WF))
            // A DataVolume of that name another workflow made: not ours to delete.
            .data_volume(dv("web-disk-1", "wf-other"));
        let mut h = Harness::new::<ImportVm>(input(), kube);
        h.outputs.insert("validate".into(), json!(plan(3)));
        let out = h.compensate("validate");
        assert!(matches!(out, Outcome::Done(_)), "{out:?}");
        assert_eq!(deleted(&h), ["web", "web-disk-0"]);
        assert_eq!(h.images.removed(), [std::path::PathBuf::from("/work/wf-1")]);
        // Run again (a compensation retried): nothing more is deleted.
        let before = deleted(&h).len();
        h.compensate("validate");
        assert_eq!(deleted(&h).len(), before);
    }

    #[test]
    fn a_kept_failure_leaves_everything_for_the_retry() {
        let kube = FakeKube::default().data_volume(dv("web-disk-0", "plan/web"));
        let mut i = input();
        i["keep_on_failure"] = json!(true);
        i["owner"] = json!("plan/web");
        let mut h = Harness::new::<ImportVm>(i, kube);
        h.outputs.insert("validate".into(), json!(plan(1)));
        h.compensate("validate");
        assert_eq!(deleted(&h), Vec::<String>::new());
        assert!(h.images.removed().is_empty());
    }

    #[test]
    fn a_re_run_adopts_its_own_data_volume_and_refuses_anothers() {
        let mut h = Harness::new::<ImportVm>(
            input(),
            FakeKube::default().data_volume(dv("web-disk-0", WF)),
        );
        h.outputs.insert("validate".into(), json!(plan(1)));
        assert!(matches!(h.run("volumes"), Outcome::Done(_)));
        let mut h = Harness::new::<ImportVm>(
            input(),
            FakeKube::default().data_volume(dv("web-disk-0", "wf-other")),
        );
        h.outputs.insert("validate".into(), json!(plan(1)));
        match h.run("volumes") {
            Outcome::Fail { error } => assert!(error.contains("not this import's"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_lists_every_problem_at_once() {
        let mut i = input();
        i["network_map"] = json!({"default": "vlan99"});
        let h = Harness::new::<ImportVm>(
            i,
            FakeKube::default().vm(VmInfo {
                namespace: "ns".into(),
                name: "web".into(),
                ..VmInfo::default()
            }),
        );
        h.images.set(
            "/images/web.qcow2",
            ImageInfo {
                format: "qcow2".into(),
                virtual_size: 1 << 30,
                backing_file: Some("base.qcow2".into()),
                ..ImageInfo::default()
            },
        );
        match h.run("validate") {
            Outcome::Fail { error } => {
                for needle in [
                    "backing file base.qcow2",
                    "storage class px-rwx does not exist",
                    "NetworkAttachmentDefinition ns/vlan99, which does not exist",
                    "VirtualMachine ns/web exists already",
                ] {
                    assert!(error.contains(needle), "{needle}: {error}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(h.kube.mutations().is_empty());
    }
}
