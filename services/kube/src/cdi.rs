//! CDI: DataVolumes (`cdi.kubevirt.io/v1beta1`, with `spec.storage`) and uploads into them (an
//! `UploadTokenRequest` of `upload.cdi.kubevirt.io/v1beta1` for the DataVolume's claim, then the
//! file streamed to CDI's upload proxy by [`crate::upload`]).
//!
//! A create that meets its DataVolume (409 AlreadyExists) reads and returns it, as the claims and
//! snapshots of `storage.rs` do; the caller tells whose it is by its labels.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use drover_workflows::ports::kube::{
    DataVolumeInfo, DvSource, KubeError, NewDataVolume, OnProgress,
};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::error::retrying;
use crate::resources::DataVolume;
use crate::storage::{create, delete};
use crate::upload::Proxy;

/// Asks CDI to bind the claim at once rather than wait for its first consumer (a
/// WaitForFirstConsumer class would otherwise hold the DataVolume until a VM uses it, and the
/// import waits for the DataVolume before it creates the VM). `virtctl image-upload --force-bind`
/// sets the same.
const IMMEDIATE_BINDING: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";

pub async fn create_data_volume(
    client: &kube::Client,
    new: &NewDataVolume,
) -> Result<DataVolumeInfo, KubeError> {
    let api: Api<DataVolume> = Api::namespaced(client.clone(), &new.namespace);
    let mut dv = DataVolume {
        spec: spec(new),
        ..DataVolume::default()
    };
    dv.metadata.name = Some(new.name.clone());
    dv.metadata.namespace = Some(new.namespace.clone());
    dv.metadata.labels = Some(new.labels.clone()).filter(|l| !l.is_empty());
    dv.metadata.annotations = Some(BTreeMap::from([(
        IMMEDIATE_BINDING.to_string(),
        "true".to_string(),
    )]));
    match create(&api, "create data volume", &dv).await? {
        Some(d) => Ok(info(&d)),
        None => get_data_volume(client, &new.namespace, &new.name).await,
    }
}

pub async fn get_data_volume(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<DataVolumeInfo, KubeError> {
    let api: Api<DataVolume> = Api::namespaced(client.clone(), ns);
    retrying("get data volume", || api.get(name))
        .await
        .map(|d| info(&d))
}

pub async fn delete_data_volume(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(), KubeError> {
    let api: Api<DataVolume> = Api::namespaced(client.clone(), ns);
    delete(&api, "delete data volume", name).await
}

/// An upload token for the DataVolume's claim (CDI names it after the DataVolume), then the file
/// to the proxy.
pub async fn upload_image(
    client: &kube::Client,
    proxy: &Proxy,
    ns: &str,
    data_volume: &str,
    path: &Path,
    on_progress: OnProgress<'_>,
) -> Result<u64, KubeError> {
    let token = upload_token(client, ns, data_volume).await?;
    proxy.upload(&token, path, on_progress).await
}

/// Creates an UploadTokenRequest and reads its `status.token`. CDI's API server answers it without
/// storing it, so its name does not matter; each gets a new one, for servers that do store it.
async fn upload_token(
    client: &kube::Client,
    ns: &str,
    data_volume: &str,
) -> Result<String, KubeError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let r = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("upload.cdi.kubevirt.io", "v1beta1", "UploadTokenRequest"),
        "uploadtokenrequests",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let name = format!(
        "drover-upload-{nanos:x}-{:x}",
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let mut request = DynamicObject::new(&name, &r).within(ns);
    request.data = json!({"spec": {"pvcName": data_volume}});
    let params = PostParams::default();
    let made = retrying("request upload token", || api.create(&params, &request)).await?;
    made.data["status"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| {
            KubeError::Permanent(format!(
                "the UploadTokenRequest for {ns}/{data_volume} came back without a token"
            ))
        })
}

/// `spec.source` and `spec.storage`; an empty class or access mode is left to CDI's storage profile.
fn spec(new: &NewDataVolume) -> Value {
    let source = match &new.source {
        DvSource::Upload => json!({"upload": {}}),
        DvSource::Http { url } => json!({"http": {"url": url}}),
        DvSource::Blank => json!({"blank": {}}),
    };
    let mut storage = json!({
        "resources": {"requests": {"storage": new.size_bytes.to_string()}},
    });
    if !new.access_mode.is_empty() {
        storage["accessModes"] = json!([new.access_mode]);
    }
    if !new.storage_class.is_empty() {
        storage["storageClassName"] = json!(new.storage_class);
    }
    if let Some(mode) = &new.volume_mode {
        storage["volumeMode"] = json!(mode);
    }
    json!({"source": source, "storage": storage})
}

fn info(d: &DataVolume) -> DataVolumeInfo {
    let status = d.status.clone().unwrap_or_default();
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Running" && c.status != "True")
        .and_then(|c| {
            let reason = c.reason.as_deref().unwrap_or_default();
            let message = c.message.as_deref().unwrap_or_default();
            match (reason.is_empty(), message.is_empty()) {
                (true, true) => None,
                (false, true) => Some(reason.to_string()),
                (true, false) => Some(message.to_string()),
                (false, false) => Some(format!("{reason}: {message}")),
            }
        });
    DataVolumeInfo {
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.unwrap_or_default(),
        progress: status.progress.unwrap_or_default(),
        restart_count: status
            .restart_count
            .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
            .unwrap_or(0),
        message,
        labels: d.metadata.labels.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(source: DvSource) -> NewDataVolume {
        NewDataVolume {
            namespace: "ns".into(),
            name: "vm-disk-0".into(),
            source,
            storage_class: "px-rwx".into(),
            access_mode: "ReadWriteMany".into(),
            volume_mode: Some("Block".into()),
            size_bytes: 10 << 30,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn the_spec_names_its_source_and_storage() {
        let s = spec(&new(DvSource::Http {
            url: "http://images/disk.qcow2".into(),
        }));
        assert_eq!(
            s,
            json!({
                "source": {"http": {"url": "http://images/disk.qcow2"}},
                "storage": {
                    "accessModes": ["ReadWriteMany"],
                    "volumeMode": "Block",
                    "storageClassName": "px-rwx",
                    "resources": {"requests": {"storage": (10u64 << 30).to_string()}},
                },
            })
        );
        assert_eq!(
            spec(&new(DvSource::Upload))["source"],
            json!({"upload": {}})
        );
        let mut blank = new(DvSource::Blank);
        blank.storage_class.clear();
        blank.volume_mode = None;
        let s = spec(&blank);
        assert_eq!(s["source"], json!({"blank": {}}));
        assert!(s["storage"].get("storageClassName").is_none());
        assert!(s["storage"].get("volumeMode").is_none());
    }

    #[test]
    fn a_stopped_importer_says_why() {
        let d: DataVolume = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "labels": {"drover.io/created-by": "wf"}},
            "spec": {},
            "status": {"phase": "ImportInProgress", "progress": "12.50%", "restartCount": 3,
                "newField": true,
                "conditions": [
                    {"type": "Bound", "status": "True", "reason": "Bound"},
                    {"type": "Running", "status": "False", "reason": "Error",
                     "message": "Unable to connect to http data source: 404 Not Found"}]}
        }))
        .unwrap();
        let i = info(&d);
        assert_eq!(
            (i.phase.as_str(), i.progress.as_str(), i.restart_count),
            ("ImportInProgress", "12.50%", 3)
        );
        assert_eq!(
            i.message.as_deref(),
            Some("Error: Unable to connect to http data source: 404 Not Found")
        );
        assert_eq!(i.labels["drover.io/created-by"], "wf");
        let running: DataVolume = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "status": {"conditions": [{"type": "Running", "status": "True", "reason": "Pod is running"}]}
        }))
        .unwrap();
        assert_eq!(info(&running).message, None);
        assert_eq!(info(&DataVolume::default()).phase, "");
    }
}
