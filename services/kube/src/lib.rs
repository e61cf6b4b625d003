//! Drover's Kubernetes/KubeVirt adapter: kube-rs 5 with k8s-openapi for the core types and small
//! typed KubeVirt resources of our own (unknown fields tolerated), implementing the workflows'
//! [`Kube`](drover_workflows::ports::kube::Kube) port. It connects from in-cluster config, a kubeconfig
//! or a plain URL (the lab), retries 409/429/5xx briefly while honouring Retry-After, and classifies
//! what is left for the engine's retry policy. Image uploads go to CDI's upload proxy, by default at
//! the API server's URL, else where [`Cluster::with_upload_proxy`] says.

mod cdi;
mod error;
mod nodes;
mod pods;
mod resources;
mod secrets;
mod storage;
mod upload;
mod vmis;
mod vms;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::kube::{
    DataVolumeInfo, Eviction, Kube, KubeError, MigrationInfo, NewDataVolume, NewPvc, NewVm,
    NodeInfo, OnProgress, PodInfo, PvcInfo, SnapshotInfo, StorageClassInfo, StorageQuota, VmInfo,
    VmiInfo, VmiState, VolumeStatusInfo,
};
use std::collections::BTreeMap;

pub use error::Error;
pub use resources::{
    DataVolume, VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration,
};

/// Where the cluster is.
#[derive(Clone)]
pub enum Target {
    /// In-cluster service account, else `$KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// A kubeconfig file.
    Kubeconfig(std::path::PathBuf),
    /// A kubeconfig's text, read from a secret (it holds credentials: never printed).
    KubeconfigText(String),
    /// A plain URL with no credentials (the lab).
    Url(String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Infer => f.write_str("Infer"),
            Target::Kubeconfig(p) => f.debug_tuple("Kubeconfig").field(p).finish(),
            Target::KubeconfigText(_) => f.write_str("KubeconfigText(<redacted>)"),
            Target::Url(u) => f.debug_tuple("Url").field(u).finish(),
        }
    }
}

/// The adapter: a kube client and the port implementation over it, and where CDI's upload proxy is.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    upload_proxy: upload::Proxy,
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
            Target::KubeconfigText(text) => {
                // The parser's error may quote the text: say only that it is not a kubeconfig.
                let kubeconfig = kube::config::Kubeconfig::from_yaml(text).map_err(|_| {
                    Error::Config("the secret does not hold a kubeconfig (YAML)".into())
                })?;
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
        let upload_proxy = upload::Proxy::new(None, config.clone()).map_err(Error::Config)?;
        // Every API call: a client span, a traceparent header and a latency observation.
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| Error::Config(e.to_string()))?
            .with_layer(&drover_telemetry::calls::Layer(
                drover_telemetry::calls::System::Kubernetes,
            ))
            .build();
        Ok(Cluster {
            client,
            upload_proxy,
        })
    }

    /// Sends image uploads to CDI's upload proxy at `url` (`https://cdi-uploadproxy.example`, or
    /// the lab's `http://127.0.0.1:PORT`) instead of the API server's URL. An `https://` proxy is
    /// reached with the cluster's TLS settings (its CA, else the system's roots).
    pub fn with_upload_proxy(mut self, url: &str) -> Result<Cluster, Error> {
        let config = self.upload_proxy.config().clone();
        self.upload_proxy = upload::Proxy::new(Some(url), config).map_err(Error::Config)?;
        Ok(self)
    }

    /// Where image uploads go.
    pub fn upload_proxy_url(&self) -> &str {
        self.upload_proxy.url()
    }

    /// The port, for the worker's `Ports`.
    pub fn port(self) -> Arc<dyn Kube> {
        Arc::new(self)
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The value under `key` in Secret `namespace/name`, decoded from base64; for the worker's
    /// `kubernetes` secret sources (not part of the `Kube` port: steps never read Secrets). Errors
    /// name the Secret and key, never a value.
    pub async fn read_secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>, KubeError> {
        secrets::read(&self.client, namespace, name, key).await
    }
}

#[async_trait]
impl Kube for Cluster {
    async fn get_node(&self, name: &str) -> Result<NodeInfo, KubeError> {
        nodes::get(&self.client, name).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, KubeError> {
        nodes::list(&self.client).await
    }

    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), KubeError> {
        nodes::set_unschedulable(&self.client, node, unschedulable).await
    }

    async fn delete_node(&self, name: &str) -> Result<(), KubeError> {
        nodes::delete(&self.client, name).await
    }

    async fn list_vmis(&self, node: Option<&str>) -> Result<Vec<VmiInfo>, KubeError> {
        vmis::list(&self.client, node).await
    }

    async fn create_migration(
        &self,
        namespace: &str,
        name: &str,
        vmi: &str,
        added_node_selector: &BTreeMap<String, String>,
    ) -> Result<MigrationInfo, KubeError> {
        vmis::create_migration(&self.client, namespace, name, vmi, added_node_selector).await
    }

    async fn get_migration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<MigrationInfo>, KubeError> {
        vmis::get_migration(&self.client, namespace, name).await
    }

    async fn watch_migration(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<MigrationInfo>, KubeError> {
        vmis::watch_migration(&self.client, namespace, name, timeout).await
    }

    async fn delete_migration(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        vmis::delete_migration(&self.client, namespace, name).await
    }

    async fn set_vm_running(
        &self,
        namespace: &str,
        vm: &str,
        running: bool,
    ) -> Result<(), KubeError> {
        vmis::set_vm_running(&self.client, namespace, vm, running).await
    }

    async fn list_pods(&self, node: &str) -> Result<Vec<PodInfo>, KubeError> {
        pods::list(&self.client, node).await
    }

    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<Eviction, KubeError> {
        pods::evict(&self.client, namespace, name).await
    }

    async fn get_storage_class(&self, name: &str) -> Result<StorageClassInfo, KubeError> {
        storage::get_storage_class(&self.client, name).await
    }

    async fn get_pvc(&self, namespace: &str, name: &str) -> Result<PvcInfo, KubeError> {
        storage::get_pvc(&self.client, namespace, name).await
    }

    async fn create_pvc(&self, pvc: &NewPvc) -> Result<PvcInfo, KubeError> {
        storage::create_pvc(&self.client, pvc).await
    }

    async fn delete_pvc(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        storage::delete_pvc(&self.client, namespace, name).await
    }

    async fn get_vm(&self, namespace: &str, name: &str) -> Result<VmInfo, KubeError> {
        storage::get_vm(&self.client, namespace, name).await
    }

    async fn vmi_volume_status(
        &self,
        namespace: &str,
        vm: &str,
    ) -> Result<Vec<VolumeStatusInfo>, KubeError> {
        storage::vmi_volume_status(&self.client, namespace, vm).await
    }

    async fn add_volume(
        &self,
        namespace: &str,
        vm: &str,
        volume: &str,
        claim: &str,
    ) -> Result<(), KubeError> {
        storage::add_volume(&self.client, namespace, vm, volume, claim).await
    }

    async fn remove_volume(
        &self,
        namespace: &str,
        vm: &str,
        volume: &str,
    ) -> Result<(), KubeError> {
        storage::remove_volume(&self.client, namespace, vm, volume).await
    }

    async fn create_snapshot(
        &self,
        namespace: &str,
        name: &str,
        pvc: &str,
        class: Option<&str>,
    ) -> Result<SnapshotInfo, KubeError> {
        storage::create_snapshot(&self.client, namespace, name, pvc, class).await
    }

    async fn get_snapshot(&self, namespace: &str, name: &str) -> Result<SnapshotInfo, KubeError> {
        storage::get_snapshot(&self.client, namespace, name).await
    }

    async fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        storage::delete_snapshot(&self.client, namespace, name).await
    }

    async fn create_data_volume(&self, dv: &NewDataVolume) -> Result<DataVolumeInfo, KubeError> {
        cdi::create_data_volume(&self.client, dv).await
    }

    async fn get_data_volume(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DataVolumeInfo, KubeError> {
        cdi::get_data_volume(&self.client, namespace, name).await
    }

    async fn delete_data_volume(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        cdi::delete_data_volume(&self.client, namespace, name).await
    }

    async fn upload_image(
        &self,
        namespace: &str,
        data_volume: &str,
        path: &std::path::Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, KubeError> {
        cdi::upload_image(
            &self.client,
            &self.upload_proxy,
            namespace,
            data_volume,
            path,
            on_progress,
        )
        .await
    }

    async fn network_exists(&self, namespace: &str, name: &str) -> Result<bool, KubeError> {
        vms::network_exists(&self.client, namespace, name).await
    }

    async fn storage_quota(
        &self,
        namespace: &str,
        storage_class: &str,
    ) -> Result<StorageQuota, KubeError> {
        storage::storage_quota(&self.client, namespace, storage_class).await
    }

    async fn create_vm(&self, vm: &NewVm) -> Result<VmInfo, KubeError> {
        vms::create_vm(&self.client, vm).await
    }

    async fn delete_vm(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        vms::delete_vm(&self.client, namespace, name).await
    }

    async fn get_vmi(&self, namespace: &str, name: &str) -> Result<VmiState, KubeError> {
        vms::get_vmi(&self.client, namespace, name).await
    }
}
