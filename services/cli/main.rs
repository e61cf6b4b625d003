//! `drover`: one binary, a subcommand per role so roles scale separately. `main` only parses the
//! command line and the config, then hands over to the role's `run`.

mod client;
mod commands;
mod config;
mod dev;
mod lab;
mod redis_server;
mod shards;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use drover_workflows::ports::Ports;
use tracing::error;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Durable workflows for KubeVirt-on-bare-metal operations"
)]
struct Cli {
    /// Config file (TOML). Also DROVER_CONFIG.
    #[arg(long, global = true, env = "DROVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    target: client::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API.
    Api,
    /// Run steps: claim, run, commit.
    Worker,
    /// Everything on one machine with no configuration: a private Redis (unless REDIS_URL is set), the
    /// API, workers and a demo workflow with live progress.
    Dev(dev::Args),
    /// The simulated MAAS region and Kubernetes/KubeVirt cluster, standalone.
    Lab(lab::Args),
    /// The store's shards on a Redis Cluster: where they are, and moving one to another primary.
    Shards(shards::Args),
    #[command(flatten)]
    Client(commands::Command),
}

/// mimalloc rather than the system allocator: the worker's step path allocates and frees many
/// small buffers (JSON, Redis replies), and glibc's malloc took about half its CPU in a profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client commands talk to an API and print for a person or a script: no logging set-up,
    // one thread.
    if let Command::Client(command) = cli.command {
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(commands::run(command, &cli.target)),
            Err(e) => {
                eprintln!("drover: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let log_json = std::env::var("DROVER_LOG_FORMAT").is_ok_and(|f| f == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The API and the worker read their config before anything else: `[telemetry]` decides
    // where their spans go.
    let config = match &cli.command {
        Command::Api | Command::Worker | Command::Shards(_) => {
            match config::load(cli.config.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("drover: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    // `drover dev` logs to a file in its data directory, so the terminal shows its live view.
    let log_file = match &cli.command {
        Command::Dev(args) => match args.log_file().map(|p| open_log(&p)).transpose() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("drover: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let logging = match log_file {
        Some(file) => drover_telemetry::Logging {
            filter,
            json: log_json,
            ansi: false,
            writer: tracing_subscriber::fmt::writer::BoxMakeWriter::new(Arc::new(file)),
        },
        None => drover_telemetry::Logging {
            filter,
            json: log_json,
            // Colour only for a person at a terminal: escape codes in a log file or a
            // collector are noise.
            ansi: std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
            writer: tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        },
    };
    let role = match &cli.command {
        Command::Api => "api",
        Command::Worker => "worker",
        Command::Dev(_) => "dev",
        Command::Lab(_) => "lab",
        Command::Shards(_) => "shards",
        Command::Client(_) => "client",
    };
    let traces = config
        .as_ref()
        .map(|c| c.telemetry.clone())
        .unwrap_or_default();
    // Flushes the spans not yet exported when main returns.
    let _telemetry = match drover_telemetry::init(logging, &traces, role) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("drover: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Api => run_api(config.unwrap_or_default()).await,
            Command::Worker => run_worker(config.unwrap_or_default()).await,
            Command::Dev(args) => dev::run(args, cli.config.as_deref()).await,
            Command::Lab(args) => lab::run(args).await,
            Command::Shards(args) => shards::run(args, config.unwrap_or_default()).await,
            Command::Client(_) => unreachable!("client commands return above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("drover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens (appending; its directory made) the log file of `drover dev`.
fn open_log(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub(crate) async fn connect(
    store_config: &drover_store::Config,
) -> anyhow::Result<drover_store::Store> {
    let redis_url = &store_config.url;
    let store = drover_store::Store::connect(store_config)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Redis at {}: {e}",
                config::redact_url(redis_url)
            )
        })?;
    Ok(store)
}

/// The ports a worker process offers its steps.
pub async fn worker_ports(
    store: &drover_store::Store,
    kube: &config::KubeConfig,
    clusters: &[config::ClusterConfig],
    secrets: &drover_worker::secrets::Config,
    maas: &config::MaasConfig,
    images: &config::ImagesConfig,
    tickets: Option<&drover_tickets::Config>,
) -> anyhow::Result<Ports> {
    config::validate_clusters(clusters, secrets).map_err(anyhow::Error::msg)?;
    let mut ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
        .with_probe(Arc::new(drover_store::probe::RedisProbe::new(
            store.clone(),
        )))
        .with_images(Arc::new(images.port()));
    let cluster = cluster(kube).await?;
    if let Some(c) = &cluster {
        ports = ports.with_kube(c.clone().port());
    }
    secrets
        .validate(cluster.is_some())
        .map_err(anyhow::Error::msg)?;
    maas.validate(secrets).map_err(anyhow::Error::msg)?;
    if let Some(t) = tickets {
        validate_tickets(t, secrets)?;
    }
    let resolver = (!secrets.is_empty()).then(|| secrets_resolver(secrets, cluster));
    for c in clusters {
        let target = match c.target().map_err(anyhow::Error::msg)? {
            config::ClusterTarget::Ready(t) => t,
            config::ClusterTarget::Secret(name) => {
                // validate_clusters checked that [secrets] defines it, so the resolver exists.
                let Some(resolver) = &resolver else {
                    anyhow::bail!("clusters {:?}: [secrets] is empty", c.name)
                };
                let secret = drover_workflows::ports::secrets::Secrets::get(&**resolver, &name)
                    .await
                    .map_err(|e| anyhow::anyhow!("clusters {:?}: {e}", c.name))?;
                drover_kube::Target::KubeconfigText(secret.expose().to_string())
            }
        };
        let named = connect_cluster(&target, c.upload_proxy_url.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("clusters {:?}: {e}", c.name))?;
        ports = ports.with_cluster(c.name.clone(), named.port());
    }
    // Without [secrets] the port stays unset, and a step that needs one says to configure it.
    if let Some(resolver) = resolver {
        if let Some(client) = maas_client(maas, &resolver).await? {
            ports = ports.with_maas(client.port());
        }
        if let Some(t) = tickets {
            ports = ports
                .with_tickets(drover_tickets::Clients::new(t.clone(), resolver.clone()).port());
        }
        ports = ports.with_secrets(resolver);
    } else if tickets.is_some() {
        anyhow::bail!(
            "[tickets] names its credentials by secret reference: define them under [secrets]"
        );
    }
    Ok(ports)
}

/// `[tickets]` is sound and names secrets `[secrets]` defines.
fn validate_tickets(
    t: &drover_tickets::Config,
    secrets: &drover_worker::secrets::Config,
) -> anyhow::Result<()> {
    t.validate()
        .map_err(|e| anyhow::anyhow!("[tickets]: {e}"))?;
    let refs = [
        t.jira
            .as_ref()
            .map(|j| ("tickets.jira.api_token", &j.api_token)),
        t.servicenow
            .as_ref()
            .map(|s| ("tickets.servicenow.password", &s.password)),
    ];
    for (field, r) in refs.into_iter().flatten() {
        if secrets.get(r.name()).is_none() {
            anyhow::bail!(
                "{field} names secret {:?}, which [secrets] does not define",
                r.name()
            );
        }
    }
    Ok(())
}

/// The cluster `[kube]` names, if any.
async fn cluster(kube: &config::KubeConfig) -> anyhow::Result<Option<drover_kube::Cluster>> {
    let Some(target) = kube.target()? else {
        return Ok(None);
    };
    Ok(Some(
        connect_cluster(&target, kube.upload_proxy_url.as_deref()).await?,
    ))
}

/// A Kubernetes client for `target`, its uploads going to `upload_proxy` if given.
async fn connect_cluster(
    target: &drover_kube::Target,
    upload_proxy: Option<&str>,
) -> anyhow::Result<drover_kube::Cluster> {
    let mut cluster = drover_kube::Cluster::connect(target)
        .await
        .map_err(|e| anyhow::anyhow!("cannot set up the Kubernetes client: {e}"))?;
    if let Some(url) = upload_proxy {
        cluster = cluster
            .with_upload_proxy(url)
            .map_err(|e| anyhow::anyhow!("upload_proxy_url: {e}"))?;
    }
    Ok(cluster)
}

/// The secrets of `[secrets]`, reading `kubernetes` sources through `cluster`.
fn secrets_resolver(
    secrets: &drover_worker::secrets::Config,
    cluster: Option<drover_kube::Cluster>,
) -> Arc<drover_worker::secrets::ConfigSecrets> {
    let kube = cluster
        .map(|c| Arc::new(ClusterSecrets(c)) as Arc<dyn drover_worker::secrets::KubeSecrets>);
    Arc::new(drover_worker::secrets::ConfigSecrets::new(
        secrets.clone(),
        kube,
    ))
}

/// The MAAS client `[maas]` describes (none when it is not set), its API key read now through
/// `resolver` (a new key needs a restart). `maas` must have passed [`config::MaasConfig::validate`].
async fn maas_client(
    maas: &config::MaasConfig,
    resolver: &drover_worker::secrets::ConfigSecrets,
) -> anyhow::Result<Option<drover_maas::Client>> {
    use drover_workflows::ports::secrets::Secrets;
    let (Some(url), Some(key)) = (&maas.url, &maas.api_key) else {
        return Ok(None);
    };
    let api_key = resolver
        .get(key.name())
        .await
        .map_err(|e| anyhow::anyhow!("maas.api_key: {e}"))?;
    let client = drover_maas::Client::new(drover_maas::Config::new(url.clone(), api_key))
        .map_err(|e| anyhow::anyhow!("cannot set up the MAAS client: {e}"))?;
    Ok(Some(client))
}

/// The API's admission check: with `[maas]` set, the MAAS constraints of provisioning inputs are
/// checked against MAAS at submission (`drover_kinds::admission`); without, none. Only MAAS's API
/// key is read, so a cluster is connected only when that key is a Kubernetes Secret.
async fn api_admission(
    config: &config::Config,
) -> anyhow::Result<Option<Arc<dyn drover_workflows::registry::Admission>>> {
    config
        .maas
        .validate(&config.secrets)
        .map_err(anyhow::Error::msg)?;
    let Some(key) = &config.maas.api_key else {
        return Ok(None);
    };
    let in_cluster = matches!(
        config.secrets.get(key.name()),
        Some(drover_worker::secrets::Source::Kubernetes(_))
    );
    let cluster = if in_cluster {
        cluster(&config.kube).await?
    } else {
        None
    };
    if in_cluster && cluster.is_none() {
        anyhow::bail!(
            "maas.api_key is secret {:?}, a Kubernetes Secret, but no cluster is configured: set \
             [kube] (kubeconfig, url or infer)",
            key.name()
        );
    }
    let resolver = secrets_resolver(&config.secrets, cluster);
    Ok(maas_client(&config.maas, &resolver).await?.map(|client| {
        Arc::new(drover_kinds::admission::MaasAdmission::new(client.port()))
            as Arc<dyn drover_workflows::registry::Admission>
    }))
}

/// The API's webhooks (`[hooks]`): none when no source is configured. Their secrets are read
/// through `[secrets]` at each delivery (rotation needs no restart).
pub async fn api_hooks(
    config: &config::Config,
) -> anyhow::Result<Option<Arc<drover_api::hooks::Hooks>>> {
    let hooks = &config.hooks;
    hooks.validate().map_err(anyhow::Error::msg)?;
    let refs: Vec<(&str, &drover_workflows::ports::secrets::SecretRef)> = [
        hooks
            .jira
            .as_ref()
            .map(|j| ("hooks.jira.secret", &j.secret)),
        hooks
            .servicenow
            .as_ref()
            .map(|j| ("hooks.servicenow.secret", &j.secret)),
        hooks
            .generic
            .as_ref()
            .map(|j| ("hooks.generic.secret", &j.secret)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if refs.is_empty() {
        return Ok(None);
    }
    let mut in_cluster = false;
    for (field, r) in &refs {
        match config.secrets.get(r.name()) {
            None => anyhow::bail!(
                "{field} names secret {:?}, which [secrets] does not define",
                r.name()
            ),
            Some(drover_worker::secrets::Source::Kubernetes(_)) => in_cluster = true,
            Some(_) => {}
        }
    }
    let cluster = if in_cluster {
        cluster(&config.kube).await?
    } else {
        None
    };
    if let Some(t) = &config.tickets {
        validate_tickets(t, &config.secrets)?;
    }
    let secrets = secrets_resolver(&config.secrets, cluster);
    // Stale events are checked against the ticket as it is now, through [tickets].
    let tickets = config
        .tickets
        .as_ref()
        .map(|t| drover_tickets::Clients::new(t.clone(), secrets.clone()).port());
    tracing::info!(rules = hooks.rules.len(), "Ticketing webhooks enabled.");
    Ok(Some(Arc::new(drover_api::hooks::Hooks {
        config: hooks.clone(),
        secrets,
        tickets,
    })))
}

/// The `kubernetes` secret source over the cluster in `[kube]` (the worker crate does not depend on
/// the kube adapter, so the binary joins them).
struct ClusterSecrets(drover_kube::Cluster);

impl drover_worker::secrets::KubeSecrets for ClusterSecrets {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> drover_workflows::ports::BoxFuture<
        'a,
        Result<Vec<u8>, drover_workflows::ports::kube::KubeError>,
    > {
        Box::pin(self.0.read_secret(namespace, name, key))
    }
}

async fn run_api(config: config::Config) -> anyhow::Result<()> {
    config.api.validate().map_err(anyhow::Error::msg)?;
    config::validate_clusters(&config.clusters, &config.secrets).map_err(anyhow::Error::msg)?;
    for rule in &config.hooks.rules {
        if let Some(c) = &rule.cluster
            && !config.clusters.iter().any(|k| &k.name == c)
        {
            anyhow::bail!(
                "hooks.rules {:?}: cluster {c:?} is not one of [[clusters]]",
                rule.name
            );
        }
    }
    let store_config = config.require_redis()?;
    let mut registry = config.registry();
    if let Some(admission) = api_admission(&config).await? {
        tracing::info!("Submissions are checked against MAAS (provisioning constraints).");
        registry = registry.with_admission(admission);
    }
    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.api.listen))?;
    let store = connect(&store_config).await?;
    tracing::info!(listen = %config.api.listen, "API listening.");
    let hooks = api_hooks(&config).await?;
    if let Some(h) = &hooks {
        drover_api::hooks::check_shards(&store, &h.config).map_err(anyhow::Error::msg)?;
    }
    let state = Arc::new(drover_api::AppState {
        store,
        registry,
        config: config.api,
        hooks,
    });
    drover_api::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn run_worker(config: config::Config) -> anyhow::Result<()> {
    config.worker.validate().map_err(anyhow::Error::msg)?;
    let has_cluster = config.kube.target()?.is_some();
    config
        .secrets
        .validate(has_cluster)
        .map_err(anyhow::Error::msg)?;
    config
        .maas
        .validate(&config.secrets)
        .map_err(anyhow::Error::msg)?;
    let store_config = config.require_redis()?;
    let store = connect(&store_config).await?;
    let ports = worker_ports(
        &store,
        &config.kube,
        &config.clusters,
        &config.secrets,
        &config.maas,
        &config.images,
        config.tickets.as_ref(),
    )
    .await?;
    drover_worker::run(
        store,
        config.registry(),
        ports,
        config.worker,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
