//! `drover lab`: the simulated MAAS region and Kubernetes/KubeVirt cluster, standalone. It prints
//! where the clients go (kube URL and kubeconfig, MAAS URL and API key) and serves until stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use drover_lab::{Lab, LabConfig, LabHandle};

#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (JSON or TOML); the reference architecture when absent.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Simulated seconds per real second (overrides the scenario's).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = ".drover/lab/kubeconfig")]
    pub kubeconfig: PathBuf,
}

/// Starts a lab as `args` say and writes its kubeconfig.
pub async fn start(
    scenario: Option<&Path>,
    listen: SocketAddr,
    time_scale: Option<f64>,
    kubeconfig: &Path,
) -> anyhow::Result<LabHandle> {
    let mut config = match scenario {
        Some(path) => LabConfig::from_file(path)
            .map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))?,
        None => LabConfig::reference(),
    };
    if let Some(scale) = time_scale {
        config = config.with_time_scale(scale);
    }
    config.bind = listen;
    let lab = Lab::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the lab: {e}"))?;
    if let Some(dir) = kubeconfig.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    lab.write_kubeconfig(kubeconfig)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", kubeconfig.display()))?;
    Ok(lab)
}

/// Prints where the lab's clients go.
pub fn describe(lab: &LabHandle, kubeconfig: &Path) {
    println!(
        "  Kubernetes  {}   (kubeconfig: {})",
        lab.kube_url(),
        kubeconfig.display()
    );
    println!(
        "  MAAS        {}   (API key: {})",
        lab.maas_url(),
        lab.maas_api_key()
    );
    let (jira_user, jira_token) = lab.jira_credentials();
    println!(
        "  Jira        {}   (basic auth: {jira_user} / {jira_token})",
        lab.jira_url()
    );
    let (sn_user, sn_password) = lab.servicenow_credentials();
    println!(
        "  ServiceNow  {}   (basic auth: {sn_user} / {sn_password})",
        lab.servicenow_url()
    );
    println!(
        "  Scenario    {} at {}x",
        lab.scenario().name,
        lab.scenario().time_scale
    );
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let lab = start(
        args.scenario.as_deref(),
        args.listen,
        args.time_scale,
        &args.kubeconfig,
    )
    .await?;
    println!("Drover lab is up.");
    describe(&lab, &args.kubeconfig);
    println!(
        "  Try:        kubectl --kubeconfig {} get nodes",
        args.kubeconfig.display()
    );
    crate::shutdown_signal().await;
    lab.shutdown().await;
    Ok(())
}
