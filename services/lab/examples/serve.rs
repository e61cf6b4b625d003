//! Run the lab standalone until Ctrl-C: `cargo run -p drover-lab --example serve [scenario.toml]
//! [time-scale]`. Prints the Kubernetes URL, the MAAS URL and API key, and writes a kubeconfig.

use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut config = match args.next().filter(|a| a != "-") {
        Some(path) => drover_lab::LabConfig::from_file(&PathBuf::from(path))?,
        None => drover_lab::LabConfig::default(),
    };
    if let Some(scale) = args.next() {
        config = config.with_time_scale(scale.parse()?);
    }
    let lab = drover_lab::Lab::start(config).await?;
    let kubeconfig =
        std::env::temp_dir().join(format!("drover-lab-{}.kubeconfig", lab.addr().port()));
    lab.write_kubeconfig(&kubeconfig)?;
    print!("{}", lab.summary(&kubeconfig));
    tokio::signal::ctrl_c().await?;
    lab.shutdown().await;
    Ok(())
}
