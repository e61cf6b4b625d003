//! VMIs, their migrations, and VM start/stop through the KubeVirt subresource API.

use std::collections::BTreeMap;

use drover_workflows::ports::kube::{KubeError, MigrationInfo, VmiInfo};
use kube::Api;
use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

use crate::error::{classify, retrying};
use crate::resources::{
    MigrationSpec, VirtualMachineInstance, VirtualMachineInstanceMigration, quantity,
};

/// KubeVirt's default `cpuAllocationRatio`: a vCPU requests a tenth of a core.
const CPU_ALLOCATION_RATIO: u64 = 10;

fn vmi_info(v: &VirtualMachineInstance) -> VmiInfo {
    let status = v.status.clone().unwrap_or_default();
    let not_migratable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "LiveMigratable" && c.status == "False")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    let domain = &v.spec["domain"];
    let requests = &domain["resources"]["requests"];
    let memory = requests["memory"]
        .as_str()
        .or(domain["memory"]["guest"].as_str())
        .and_then(|q| quantity(q, false))
        .unwrap_or(0);
    let cpu = requests["cpu"]
        .as_str()
        .and_then(|q| quantity(q, true))
        .unwrap_or_else(|| {
            let topology: u64 = ["cores", "sockets", "threads"]
                .iter()
                .map(|k| domain["cpu"][*k].as_u64().unwrap_or(1))
                .product();
            topology * 1000 / CPU_ALLOCATION_RATIO
        });
    VmiInfo {
        namespace: v.metadata.namespace.clone().unwrap_or_default(),
        name: v.metadata.name.clone().unwrap_or_default(),
        node: status.node_name.clone(),
        phase: status.phase.clone().unwrap_or_default(),
        not_migratable,
        cpu_millis: cpu,
        memory_bytes: memory,
        vm: v
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.iter().find(|o| o.kind == "VirtualMachine"))
            .map(|o| o.name.clone()),
    }
}

fn migration_info(m: &VirtualMachineInstanceMigration) -> MigrationInfo {
    let status = m.status.clone().unwrap_or_default();
    let state = status.migration_state.unwrap_or_default();
    MigrationInfo {
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        name: m.metadata.name.clone().unwrap_or_default(),
        vmi: m.spec.vmi_name.clone(),
        phase: status.phase.unwrap_or_else(|| "Pending".to_string()),
        target_node: state.target_node,
        source_node: state.source_node,
        failure: state.failure_reason.or_else(|| {
            state
                .failed
                .filter(|f| *f)
                .map(|_| "migration failed".to_string())
        }),
    }
}

pub async fn list(client: &kube::Client, node: Option<&str>) -> Result<Vec<VmiInfo>, KubeError> {
    let api: Api<VirtualMachineInstance> = Api::all(client.clone());
    let params = match node {
        Some(n) => ListParams::default().labels(&format!("kubevirt.io/nodeName={n}")),
        None => ListParams::default(),
    };
    let vmis = retrying("list vmis", || api.list(&params)).await?;
    // The label is KubeVirt's; the status is the truth.
    Ok(vmis
        .items
        .iter()
        .map(vmi_info)
        .filter(|v| node.is_none() || v.node.as_deref() == node)
        .collect())
}

pub async fn create_migration(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    vmi: &str,
    added_node_selector: &BTreeMap<String, String>,
) -> Result<MigrationInfo, KubeError> {
    let api: Api<VirtualMachineInstanceMigration> = Api::namespaced(client.clone(), namespace);
    let mut object = VirtualMachineInstanceMigration {
        spec: MigrationSpec {
            vmi_name: vmi.to_string(),
            added_node_selector: added_node_selector.clone(),
        },
        ..Default::default()
    };
    object.metadata.name = Some(name.to_string());
    object.metadata.namespace = Some(namespace.to_string());
    object.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "drover".to_string(),
    )]));
    match api.create(&PostParams::default(), &object).await {
        Ok(m) => Ok(migration_info(&m)),
        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
            retrying("get migration", || api.get(name))
                .await
                .map(|m| migration_info(&m))
        }
        Err(e) => Err(classify(e)),
    }
}

pub async fn get_migration(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<MigrationInfo>, KubeError> {
    let api: Api<VirtualMachineInstanceMigration> = Api::namespaced(client.clone(), namespace);
    match retrying("get migration", || api.get(name)).await {
        Ok(m) => Ok(Some(migration_info(&m))),
        Err(KubeError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads one migration and, unless it has finished, watches it (a field selector on its name,
/// from the resourceVersion the read returned) until its phase changes, it is deleted, or `timeout`
/// passes. A watch the server ends early (or a 410 Gone) falls back to a fresh read, so the caller
/// never sees a stale phase.
pub async fn watch_migration(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<MigrationInfo>, KubeError> {
    let api: Api<VirtualMachineInstanceMigration> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Option<String> = None;
    loop {
        let current = match retrying("get migration", || api.get(name)).await {
            Ok(m) => m,
            Err(KubeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let info = migration_info(&current);
        let phase = seen.get_or_insert_with(|| info.phase.clone()).clone();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if info.phase != phase || info.is_finished() || left.is_zero() {
            return Ok(Some(info));
        }
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(left.as_secs().clamp(1, 290) as u32);
        let stream = match api.watch(&params, &version).await {
            Ok(s) => s,
            // The server is busy or restarting: read again after a breath, as after a dropped
            // watch; the read retries (and gives up) as every other call does.
            Err(e) => match classify(e) {
                KubeError::Transient { .. } => {
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                    continue;
                }
                other => return Err(other),
            },
        };
        let mut stream = std::pin::pin!(stream);
        let ended = tokio::time::timeout(left, async {
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    WatchEvent::Modified(m) | WatchEvent::Added(m) => {
                        let info = migration_info(&m);
                        if info.phase != phase {
                            return Some(Some(info));
                        }
                    }
                    WatchEvent::Deleted(_) => return Some(None),
                    // Gone (410) or another error: read the object afresh.
                    WatchEvent::Error(_) => return None,
                    WatchEvent::Bookmark(_) => {}
                }
            }
            None
        })
        .await;
        match ended {
            Ok(Some(found)) => return Ok(found),
            // The watch ended or failed: look again (the loop's get) after a breath, so a server
            // that keeps closing watches is not hammered.
            Ok(None) => tokio::time::sleep(Duration::from_millis(100).min(left)).await,
            // The window passed without a change: the loop's get returns the object as it is now.
            Err(_) => {}
        }
    }
}

pub async fn delete_migration(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), KubeError> {
    let api: Api<VirtualMachineInstanceMigration> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::default();
    match retrying("delete migration", || api.delete(name, &params)).await {
        Ok(_) | Err(KubeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn set_vm_running(
    client: &kube::Client,
    namespace: &str,
    vm: &str,
    running: bool,
) -> Result<(), KubeError> {
    let verb = if running { "start" } else { "stop" };
    let url = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{vm}/{verb}"
    );
    let result = retrying(verb, || {
        let request = http::Request::put(url.as_str())
            .header("content-type", "application/json")
            .body(b"{}".to_vec())
            .map_err(kube::Error::HttpError);
        async move { client.request_text(request?).await }
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        // Starting a running VM or stopping a stopped one: already where we want it.
        Err(KubeError::Transient { message, .. } | KubeError::Permanent(message))
            if message.contains("already running")
                || message.contains("not running")
                || message.contains("already stopped") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
