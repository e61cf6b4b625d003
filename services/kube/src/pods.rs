//! Pods on a node and their eviction through the Eviction API (a 429 means "not now").

use drover_workflows::ports::kube::{Eviction, KubeError, PodInfo};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{EvictParams, ListParams};

use crate::error::{classify, retrying};

pub async fn list(client: &kube::Client, node: &str) -> Result<Vec<PodInfo>, KubeError> {
    let api: Api<Pod> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = retrying("list pods", || api.list(&params)).await?;
    Ok(pods
        .items
        .into_iter()
        .map(|p| PodInfo {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            owner_kind: p
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.iter().find(|o| o.controller == Some(true)).or(o.first()))
                .map(|o| o.kind.clone()),
            labels: p.metadata.labels.clone().unwrap_or_default(),
        })
        .collect())
}

pub async fn evict(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Eviction, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.evict(name, &EvictParams::default()).await {
        Ok(_) => Ok(Eviction::Evicted),
        Err(kube::Error::Api(status)) if status.code == 429 => Ok(Eviction::Refused {
            message: status.message.clone(),
        }),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Eviction::Gone),
        Err(e) => Err(classify(e)),
    }
}
