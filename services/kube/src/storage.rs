//! Storage: claims, storage classes, VolumeSnapshots, a VM's volumes and virt-api's volume hotplug
//! (`addvolume`/`removevolume` on the VirtualMachine, which persists the change in its template).
//! KubeVirt and snapshot objects are read as dynamic objects: only the fields used are looked at.

use std::collections::BTreeMap;

use drover_workflows::ports::kube::{
    KubeError, NewPvc, PvcInfo, SnapshotInfo, StorageClassInfo, VmInfo, VmVolume, VolumeStatusInfo,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::error::{classify, retrying};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn vms(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let r = resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines");
    Api::namespaced_with(client.clone(), ns, &r)
}

fn vmis(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    );
    Api::namespaced_with(client.clone(), ns, &r)
}

fn snapshots(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let r = resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    );
    Api::namespaced_with(client.clone(), ns, &r)
}

fn ok_if_gone(r: Result<(), KubeError>) -> Result<(), KubeError> {
    match r {
        Err(KubeError::NotFound(_)) => Ok(()),
        other => other,
    }
}

pub async fn get_storage_class(
    client: &kube::Client,
    name: &str,
) -> Result<StorageClassInfo, KubeError> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let sc = retrying("get storage class", || api.get(name)).await?;
    Ok(StorageClassInfo {
        name: name.to_string(),
        provisioner: sc.provisioner,
    })
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
        .and_then(|r| r.get("storage").cloned())
        .and_then(|q| crate::resources::quantity(&q.0, false))
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

pub async fn get_pvc(client: &kube::Client, ns: &str, name: &str) -> Result<PvcInfo, KubeError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    retrying("get claim", || api.get(name))
        .await
        .map(|p| pvc_info(&p))
}

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
    pvc.metadata.labels = Some(new.labels.clone());
    match api.create(&PostParams::default(), &pvc).await {
        Ok(p) => Ok(pvc_info(&p)),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            get_pvc(client, &new.namespace, &new.name).await
        }
        Err(e) => Err(classify(e)),
    }
}

pub async fn delete_pvc(client: &kube::Client, ns: &str, name: &str) -> Result<(), KubeError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams::default();
    ok_if_gone(
        retrying("delete claim", || api.delete(name, &dp))
            .await
            .map(|_| ()),
    )
}

pub async fn get_vm(client: &kube::Client, ns: &str, name: &str) -> Result<VmInfo, KubeError> {
    let api = vms(client, ns);
    let vm = retrying("get vm", || api.get(name)).await?;
    let spec = &vm.data["spec"]["template"]["spec"];
    let volumes = spec["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let claim = v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .or_else(|| v["dataVolume"]["name"].as_str())
                .map(String::from);
            let hotpluggable = v["persistentVolumeClaim"]["hotpluggable"] == json!(true)
                || v["dataVolume"]["hotpluggable"] == json!(true);
            VmVolume {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                claim,
                hotpluggable,
            }
        })
        .collect();
    Ok(VmInfo {
        namespace: ns.to_string(),
        name: name.to_string(),
        printable_status: vm.data["status"]["printableStatus"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        running: vm.data["status"]["ready"] == json!(true),
        eviction_strategy: match spec["evictionStrategy"].as_str() {
            Some(s) => Some(s.to_string()),
            None => cluster_eviction_strategy(client).await,
        },
        volumes,
    })
}

/// The cluster-wide default a VM without its own `evictionStrategy` gets: the KubeVirt CR's
/// `spec.configuration.evictionStrategy` (None when there is none, or it cannot be read).
async fn cluster_eviction_strategy(client: &kube::Client) -> Option<String> {
    let r = resource("kubevirt.io", "v1", "KubeVirt", "kubevirts");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &r);
    let lp = kube::api::ListParams::default();
    let list = retrying("list kubevirts", || api.list(&lp)).await.ok()?;
    list.items.iter().find_map(|k| {
        k.data["spec"]["configuration"]["evictionStrategy"]
            .as_str()
            .map(String::from)
    })
}

pub async fn vmi_volume_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<VolumeStatusInfo>, KubeError> {
    let api = vmis(client, ns);
    let vmi = retrying("get vmi", || api.get(name)).await?;
    Ok(vmi.data["status"]["volumeStatus"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| VolumeStatusInfo {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            phase: s["phase"].as_str().unwrap_or_default().to_string(),
            reason: s["reason"].as_str().unwrap_or_default().to_string(),
            message: s["message"].as_str().unwrap_or_default().to_string(),
            hotplug: s.get("hotplugVolume").is_some_and(|h| !h.is_null()),
        })
        .collect())
}

async fn subresource(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    verb: &str,
    body: &Value,
) -> Result<(), KubeError> {
    let url =
        format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{vm}/{verb}");
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    retrying(verb, || {
        let request = http::Request::put(url.as_str())
            .header("content-type", "application/json")
            .body(bytes.clone())
            .map_err(kube::Error::HttpError);
        async move { client.request_text(request?).await }
    })
    .await
    .map(|_| ())
}

pub async fn add_volume(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    volume: &str,
    claim: &str,
) -> Result<(), KubeError> {
    let body = json!({
        "name": volume,
        "disk": {"name": volume, "disk": {"bus": "scsi"}},
        "volumeSource": {"persistentVolumeClaim": {"claimName": claim, "hotpluggable": true}},
    });
    match subresource(client, ns, vm, "addvolume", &body).await {
        // A re-run after the volume went in: already where we want it.
        Err(KubeError::Transient { message, .. } | KubeError::Permanent(message))
            if message.contains("already exists") =>
        {
            Ok(())
        }
        other => other,
    }
}

pub async fn remove_volume(
    client: &kube::Client,
    ns: &str,
    vm: &str,
    volume: &str,
) -> Result<(), KubeError> {
    match subresource(client, ns, vm, "removevolume", &json!({"name": volume})).await {
        Err(KubeError::Transient { message, .. } | KubeError::Permanent(message))
            if message.contains("does not exist") || message.contains("not found") =>
        {
            Ok(())
        }
        other => other,
    }
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
    let r = resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    );
    let mut object = DynamicObject::new(name, &r).within(ns);
    object.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "drover".to_string(),
    )]));
    object.data = json!({ "spec": spec });
    match api.create(&PostParams::default(), &object).await {
        Ok(s) => Ok(snapshot_info(ns, &s)),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            get_snapshot(client, ns, name).await
        }
        Err(e) => Err(classify(e)),
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
    let api = snapshots(client, ns);
    let dp = DeleteParams::default();
    ok_if_gone(
        retrying("delete snapshot", || api.delete(name, &dp))
            .await
            .map(|_| ()),
    )
}
