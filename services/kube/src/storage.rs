//! Storage: claims, storage classes, ResourceQuotas, VolumeSnapshots, a VM's volumes and virt-api's volume hotplug
//! (`addvolume`/`removevolume` on the VirtualMachine, which persists the change in its template
//! and, on a running VM, hotplugs it into the VMI). Claims and classes are k8s-openapi types; VMs and
//! VMIs the typed KubeVirt resources of `resources.rs`; VolumeSnapshots (not KubeVirt's) dynamic
//! objects of which only the fields used are read.
//!
//! Creates are retried like reads: a create that meets its object (409 AlreadyExists, also after a
//! retry of one that had gone through) reads and returns it. virt-api's state conflicts (409 "volume
//! with that name already exists", "because it does not exist") are answers, not races: they are
//! read at once, never retried.

use std::collections::BTreeMap;
use std::fmt::Debug;

use drover_workflows::ports::kube::{
    KubeError, NewPvc, PvcInfo, QuotaLimit, SnapshotInfo, StorageClassInfo, StorageQuota, VmInfo,
    VmVolume, VolumeStatusInfo,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, ResourceQuota, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::retrying;
use crate::resources::{VirtualMachine, VirtualMachineInstance, quantity};

pub async fn get_storage_class(
    client: &kube::Client,
    name: &str,
) -> Result<StorageClassInfo, KubeError> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let sc = retrying("get storage class", || api.get(name)).await?;
    Ok(StorageClassInfo {
        name: sc.metadata.name.unwrap_or_else(|| name.to_string()),
        provisioner: sc.provisioner,
    })
}

pub async fn get_pvc(client: &kube::Client, ns: &str, name: &str) -> Result<PvcInfo, KubeError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    retrying("get claim", || api.get(name))
        .await
        .map(|p| pvc_info(&p))
}

/// Creates the claim, or returns the one of that name as it is (its labels say whose it is).
pub async fn create_pvc(client: &kube::Client, new: &NewPvc) -> Result<PvcInfo, KubeError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &new.namespace);
    let mut pvc = PersistentVolumeClaim {
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![new.access_mode.clone()]),
            storage_class_name: Some(new.storage_class.clone()),
            volume_mode: new.volume_mode.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(new.size_bytes.to_string()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    pvc.metadata.name = Some(new.name.clone());
    pvc.metadata.namespace = Some(new.namespace.clone());
    pvc.metadata.labels = Some(new.labels.clone()).filter(|l| !l.is_empty());
    match create(&api, "create claim", &pvc).await? {
        Some(p) => Ok(pvc_info(&p)),
        None => get_pvc(client, &new.namespace, &new.name).await,
    }
}

pub async fn delete_pvc(client: &kube::Client, ns: &str, name: &str) -> Result<(), KubeError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    delete(&api, "delete claim", name).await
}

pub async fn get_vm(client: &kube::Client, ns: &str, name: &str) -> Result<VmInfo, KubeError> {
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let vm = retrying("get vm", || api.get(name)).await?;
    vm_info(client, &vm).await
}

/// A VirtualMachine as the port sees it; the eviction strategy falls back to the cluster's.
pub async fn vm_info(client: &kube::Client, vm: &VirtualMachine) -> Result<VmInfo, KubeError> {
    let template = &vm.spec["template"]["spec"];
    let status = vm.status.clone().unwrap_or_default();
    let volumes = template["volumes"]
        .as_array()
        .map(|a| a.iter().map(vm_volume).collect())
        .unwrap_or_default();
    let eviction_strategy = match template["evictionStrategy"].as_str() {
        Some(s) => Some(s.to_string()),
        None => cluster_eviction_strategy(client).await?,
    };
    Ok(VmInfo {
        namespace: vm.metadata.namespace.clone().unwrap_or_default(),
        name: vm.metadata.name.clone().unwrap_or_default(),
        printable_status: status["printableStatus"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        running: status["ready"] == json!(true),
        eviction_strategy,
        volumes,
        labels: vm.metadata.labels.clone().unwrap_or_default(),
    })
}

/// The VMI of VM `vm` (KubeVirt names it after its VM): its `status.volumeStatus`.
pub async fn vmi_volume_status(
    client: &kube::Client,
    ns: &str,
    vm: &str,
) -> Result<Vec<VolumeStatusInfo>, KubeError> {
    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    let vmi = retrying("get vmi", || api.get(vm)).await?;
    Ok(vmi
        .status
        .unwrap_or_default()
        .volume_status
        .into_iter()
        .map(|s| VolumeStatusInfo {
            name: s.name,
            phase: s.phase.unwrap_or_default(),
            reason: s.reason.unwrap_or_default(),
            message: s.message.unwrap_or_default(),
            hotplug: s.hotplug_volume.is_some(),
        })
        .collect())
}

/// AddVolumeOptions: the claim as a hotpluggable SCSI disk (virtio cannot be hotplugged) named
/// `volume`. A volume of that name already there (KubeVirt's 409 "volume with that name already
/// exists") is done; any other refusal (the claim attached under another name, a VM without a
/// template) is permanent.
pub async fn add_volume(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    volume: &str,
    claim: &str,
) -> Result<(), KubeError> {
    let options = json!({
        "name": volume,
        "disk": {"name": volume, "disk": {"bus": "scsi"}},
        "volumeSource": {"persistentVolumeClaim": {"claimName": claim, "hotpluggable": true}},
    });
    match vm_subresource(client, ns, vm, "addvolume", &options).await? {
        Refusal::None => Ok(()),
        Refusal::Conflict(message)
            if message.contains(&format!("[{volume}]"))
                && message.contains("already exists")
                && !message.contains("volume source") =>
        {
            Ok(())
        }
        Refusal::Conflict(message) => Err(KubeError::Permanent(format!("409 {message}"))),
    }
}

/// RemoveVolumeOptions. A volume not there (409 "because it does not exist") is done; another
/// refusal (a volume that is not hotpluggable) is permanent.
pub async fn remove_volume(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    volume: &str,
) -> Result<(), KubeError> {
    match vm_subresource(client, ns, vm, "removevolume", &json!({"name": volume})).await? {
        Refusal::None => Ok(()),
        Refusal::Conflict(message) if message.contains("does not exist") => Ok(()),
        Refusal::Conflict(message) => Err(KubeError::Permanent(format!("409 {message}"))),
    }
}

/// Creates a VolumeSnapshot of claim `pvc`, or returns the one of that name as it is.
pub async fn create_snapshot(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pvc: &str,
    class: Option<&str>,
) -> Result<SnapshotInfo, KubeError> {
    let api = snapshots(client, ns);
    let mut spec = json!({"source": {"persistentVolumeClaimName": pvc}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let mut object = DynamicObject::new(name, &snapshot_resource()).within(ns);
    object.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "drover".to_string(),
    )]));
    object.data = json!({ "spec": spec });
    match create(&api, "create snapshot", &object).await? {
        Some(s) => Ok(snapshot_info(ns, &s)),
        None => get_snapshot(client, ns, name).await,
    }
}

pub async fn get_snapshot(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<SnapshotInfo, KubeError> {
    let api = snapshots(client, ns);
    retrying("get snapshot", || api.get(name))
        .await
        .map(|s| snapshot_info(ns, &s))
}

pub async fn delete_snapshot(client: &kube::Client, ns: &str, name: &str) -> Result<(), KubeError> {
    delete(&snapshots(client, ns), "delete snapshot", name).await
}

/// What the namespace's ResourceQuotas say of claims of `class`: for each quota that limits
/// `requests.storage` or `<class>.storageclass.storage.k8s.io/requests.storage`, its hard limit
/// and use. The quota controller's `status` is read first; a resource it has not counted yet (a
/// quota just made or changed) falls back to `spec.hard`, with nothing used.
pub async fn storage_quota(
    client: &kube::Client,
    ns: &str,
    class: &str,
) -> Result<StorageQuota, KubeError> {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default();
    let list = retrying("list resource quotas", || api.list(&params)).await?;
    let mut resources = vec!["requests.storage".to_string()];
    if !class.is_empty() {
        resources.push(format!(
            "{class}.storageclass.storage.k8s.io/requests.storage"
        ));
    }
    let mut limits = Vec::new();
    for q in &list.items {
        let spec_hard = q.spec.as_ref().and_then(|s| s.hard.as_ref());
        let status = q.status.as_ref();
        for resource in &resources {
            let counted = status
                .and_then(|s| s.hard.as_ref())
                .and_then(|h| h.get(resource));
            let hard = counted.or_else(|| spec_hard.and_then(|h| h.get(resource)));
            let Some(hard) = hard.and_then(|h| quantity(&h.0, false)) else {
                continue;
            };
            let used = counted
                .and(status.and_then(|s| s.used.as_ref()))
                .and_then(|u| u.get(resource))
                .and_then(|u| quantity(&u.0, false))
                .unwrap_or(0);
            limits.push(QuotaLimit {
                quota: q.metadata.name.clone().unwrap_or_default(),
                resource: resource.clone(),
                hard_bytes: hard,
                used_bytes: used,
            });
        }
    }
    Ok(StorageQuota { limits })
}

fn pvc_info(p: &PersistentVolumeClaim) -> PvcInfo {
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let access_modes = status
        .access_modes
        .filter(|m| !m.is_empty())
        .or(spec.access_modes)
        .unwrap_or_default();
    let request_bytes = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").and_then(|q| quantity(&q.0, false)))
        .unwrap_or(0);
    PvcInfo {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.unwrap_or_default(),
        storage_class: spec.storage_class_name,
        access_modes,
        request_bytes,
        labels: p.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A volume of a VM template: its claim is a `persistentVolumeClaim`'s, or the `dataVolume`'s (CDI
/// names the claim after the DataVolume).
fn vm_volume(v: &Value) -> VmVolume {
    let source = ["persistentVolumeClaim", "dataVolume"]
        .iter()
        .map(|k| &v[*k])
        .find(|s| s.is_object());
    VmVolume {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        claim: source
            .and_then(|s| s["claimName"].as_str().or(s["name"].as_str()))
            .map(String::from),
        hotpluggable: source.is_some_and(|s| s["hotpluggable"] == json!(true)),
    }
}

/// The cluster's default eviction strategy: the KubeVirt CR's
/// `spec.configuration.evictionStrategy`. None when it sets none (or there is no KubeVirt CR); a
/// CR that cannot be read is an error, not None: the storage kinds refuse a ReadWriteOnce volume
/// on a VM evicted by live migration, and must not guess that it is not.
async fn cluster_eviction_strategy(client: &kube::Client) -> Result<Option<String>, KubeError> {
    let r = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &r);
    let params = ListParams::default();
    let list = retrying("list kubevirts", || api.list(&params)).await?;
    Ok(list.items.iter().find_map(|k| {
        k.data["spec"]["configuration"]["evictionStrategy"]
            .as_str()
            .map(String::from)
    }))
}

fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

fn snapshots(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &snapshot_resource())
}

fn snapshot_info(ns: &str, s: &DynamicObject) -> SnapshotInfo {
    SnapshotInfo {
        namespace: ns.to_string(),
        name: s.metadata.name.clone().unwrap_or_default(),
        source_pvc: s.data["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ready_to_use: s.data["status"]["readyToUse"] == json!(true),
        error: s.data["status"]["error"]["message"]
            .as_str()
            .map(String::from),
    }
}

/// Creates `object`; None when one of its name exists already (the caller reads it).
pub(crate) async fn create<K>(api: &Api<K>, what: &str, object: &K) -> Result<Option<K>, KubeError>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PostParams::default();
    let params = &params;
    retrying(what, || async move {
        match api.create(params, object).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Deletes `name`; one already gone is fine.
pub(crate) async fn delete<K>(api: &Api<K>, what: &str, name: &str) -> Result<(), KubeError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams::default();
    match retrying(what, || api.delete(name, &params)).await {
        Ok(_) | Err(KubeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How virt-api answered a volume request.
enum Refusal {
    /// Accepted (202).
    None,
    /// A 409 about the VM's state, with virt-api's message.
    Conflict(String),
}

/// `PUT` of virt-api's subresource `verb` on VirtualMachine `ns/vm`, as `set_vm_running` does
/// start and stop. A 409 is virt-api's verdict on the VM's state and comes back at once as a
/// [`Refusal`], unless it is a write race ("the object has been modified"), which is retried as
/// every other transient failure.
async fn vm_subresource(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    verb: &str,
    body: &Value,
) -> Result<Refusal, KubeError> {
    let url =
        format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{vm}/{verb}");
    let body = body.to_string().into_bytes();
    let (url, body) = (&url, &body);
    retrying(verb, || async move {
        let request = http::Request::put(url.as_str())
            .header("content-type", "application/json")
            .body(body.clone())
            .map_err(kube::Error::HttpError)?;
        match client.request_text(request).await {
            Ok(_) => Ok(Refusal::None),
            Err(kube::Error::Api(s)) if is_state_conflict(&s) => {
                Ok(Refusal::Conflict(s.message.clone()))
            }
            Err(e) => Err(e),
        }
    })
    .await
}

fn is_state_conflict(s: &Status) -> bool {
    s.code == 409 && !s.message.contains("the object has been modified")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_volume_names_its_claim() {
        let v = vm_volume(&json!({"name": "rootdisk", "dataVolume": {"name": "vm-root"}}));
        assert_eq!(v.claim.as_deref(), Some("vm-root"));
        assert!(!v.hotpluggable);
        let v = vm_volume(&json!({"name": "data",
            "persistentVolumeClaim": {"claimName": "vm-data", "hotpluggable": true}}));
        assert_eq!(v.claim.as_deref(), Some("vm-data"));
        assert!(v.hotpluggable);
        let v = vm_volume(&json!({"name": "cloudinitdisk", "cloudInitNoCloud": {}}));
        assert_eq!((v.name.as_str(), v.claim), ("cloudinitdisk", None));
    }
}
