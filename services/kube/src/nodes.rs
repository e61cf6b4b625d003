//! Nodes: read them for planning, cordon and uncordon them, delete them.

use drover_workflows::ports::kube::{KubeError, NodeInfo};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::error::retrying;
use crate::resources::quantity;

fn info(node: &Node) -> NodeInfo {
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let get = |k: &str, millis: bool| {
        alloc
            .and_then(|a| a.get(k))
            .and_then(|q| quantity(&q.0, millis))
            .unwrap_or(0)
    };
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True"),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| {
                t.iter()
                    .filter(|t| t.effect != "PreferNoSchedule")
                    .map(|t| t.key.clone())
                    .collect()
            })
            .unwrap_or_default(),
        cpu_millis: get("cpu", true),
        memory_bytes: get("memory", false),
    }
}

pub async fn get(client: &kube::Client, name: &str) -> Result<NodeInfo, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    retrying("get node", || api.get(name))
        .await
        .map(|n| info(&n))
}

pub async fn list(client: &kube::Client) -> Result<Vec<NodeInfo>, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let params = ListParams::default();
    let nodes = retrying("list nodes", || api.list(&params)).await?;
    Ok(nodes.items.iter().map(info).collect())
}

pub async fn set_unschedulable(
    client: &kube::Client,
    name: &str,
    unschedulable: bool,
) -> Result<(), KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({ "spec": { "unschedulable": unschedulable } });
    let params = PatchParams::default();
    let patch = Patch::Merge(&patch);
    retrying("cordon node", || api.patch(name, &params, &patch))
        .await
        .map(|_| ())
}

/// Deletes Node `name`; one already gone (404) is fine.
pub async fn delete(client: &kube::Client, name: &str) -> Result<(), KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let params = DeleteParams::default();
    match retrying("delete node", || api.delete(name, &params)).await {
        Ok(_) | Err(KubeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
