//! Drover's Kubernetes/KubeVirt adapter: kube-rs 5 with k8s-openapi for the core types and small
//! typed KubeVirt resources of our own (unknown fields tolerated), implementing the workflows'
//! [`Kube`](drover_workflows::ports::kube::Kube) port. It connects from in-cluster config, a kubeconfig
//! or a plain URL (the lab), retries 409/429/5xx briefly while honouring Retry-After, and classifies
//! what is left for the engine's retry policy.

mod error;
mod nodes;
mod pods;
mod resources;
mod vmis;

use std::sync::Arc;
use std::time::Duration;

use drover_workflows::ports::BoxFuture;
use drover_workflows::ports::kube::{
    Eviction, Kube, KubeError, MigrationInfo, NodeInfo, PodInfo, VmiInfo,
};
use std::collections::BTreeMap;

pub use error::Error;
pub use resources::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration};

/// Where the cluster is.
#[derive(Debug, Clone)]
pub enum Target {
    /// In-cluster service account, else `$KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// A kubeconfig file.
    Kubeconfig(std::path::PathBuf),
    /// A plain URL with no credentials (the lab).
    Url(String),
}

/// The adapter: a kube client and the port implementation over it.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    pub async fn connect(target: &Target) -> Result<Cluster, Error> {
        let config = match target {
            Target::Infer => kube::Config::infer()
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
            Target::Kubeconfig(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| Error::Config(e.to_string()))?
            }
            Target::Url(url) => {
                let uri = url
                    .parse()
                    .map_err(|e| Error::Config(format!("{url}: {e}")))?;
                kube::Config::new(uri)
            }
        };
        // kube's own retry waits out 429s for minutes; KubeVirt answers every eviction of a
        // virt-launcher pod with 429, which the drain must see at once. `error::retrying` retries.
        let mut config = config;
        config.default_retry = false;
        let client = kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Cluster { client })
    }

    /// The port, for the worker's `Ports`.
    pub fn port(self) -> Arc<dyn Kube> {
        Arc::new(self)
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

impl Kube for Cluster {
    fn get_node(&self, name: &str) -> BoxFuture<'_, Result<NodeInfo, KubeError>> {
        let name = name.to_string();
        Box::pin(async move { nodes::get(&self.client, &name).await })
    }

    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, KubeError>> {
        Box::pin(nodes::list(&self.client))
    }

    fn set_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
    ) -> BoxFuture<'_, Result<(), KubeError>> {
        let node = node.to_string();
        Box::pin(async move { nodes::set_unschedulable(&self.client, &node, unschedulable).await })
    }

    fn list_vmis(&self, node: Option<&str>) -> BoxFuture<'_, Result<Vec<VmiInfo>, KubeError>> {
        let node = node.map(str::to_string);
        Box::pin(async move { vmis::list(&self.client, node.as_deref()).await })
    }

    fn create_migration(
        &self,
        namespace: &str,
        name: &str,
        vmi: &str,
        added_node_selector: &BTreeMap<String, String>,
    ) -> BoxFuture<'_, Result<MigrationInfo, KubeError>> {
        let (namespace, name, vmi, sel) = (
            namespace.to_string(),
            name.to_string(),
            vmi.to_string(),
            added_node_selector.clone(),
        );
        Box::pin(async move {
            vmis::create_migration(&self.client, &namespace, &name, &vmi, &sel).await
        })
    }

    fn get_migration(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<MigrationInfo>, KubeError>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move { vmis::get_migration(&self.client, &namespace, &name).await })
    }

    fn watch_migration(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Option<MigrationInfo>, KubeError>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(
            async move { vmis::watch_migration(&self.client, &namespace, &name, timeout).await },
        )
    }

    fn delete_migration(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<(), KubeError>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move { vmis::delete_migration(&self.client, &namespace, &name).await })
    }

    fn set_vm_running(
        &self,
        namespace: &str,
        vm: &str,
        running: bool,
    ) -> BoxFuture<'_, Result<(), KubeError>> {
        let (namespace, vm) = (namespace.to_string(), vm.to_string());
        Box::pin(async move { vmis::set_vm_running(&self.client, &namespace, &vm, running).await })
    }

    fn list_pods(&self, node: &str) -> BoxFuture<'_, Result<Vec<PodInfo>, KubeError>> {
        let node = node.to_string();
        Box::pin(async move { pods::list(&self.client, &node).await })
    }

    fn evict_pod(&self, namespace: &str, name: &str) -> BoxFuture<'_, Result<Eviction, KubeError>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move { pods::evict(&self.client, &namespace, &name).await })
    }
}
