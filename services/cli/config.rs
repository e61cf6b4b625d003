//! The process configuration: defaults, then a TOML file, then `DROVER_*` environment variables,
//! validated once before any port is bound. Unknown keys are errors, so a typo never goes unnoticed.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Redis URL (`redis://127.0.0.1:6379/0`), or the Sentinels that name the primary
    /// (`redis+sentinel://host:26379,host:26379/<master>[/db]`, with the primary's credentials
    /// before the hosts). Also DROVER_REDIS_URL or REDIS_URL.
    pub redis_url: Option<String>,
    /// Replicas that must confirm each store write (Redis `WAIT`) before it counts as done: with
    /// 1, a failover loses no acknowledged write, and writes fail (and are retried) while no
    /// replica answers. Default 0. Also DROVER_REDIS_WAIT_REPLICAS.
    pub redis_wait_replicas: Option<u32>,
    /// How long a write waits for its replicas (default 1000). Also DROVER_REDIS_WAIT_TIMEOUT_MS.
    pub redis_wait_timeout_ms: Option<u64>,
    /// How many shards workflows are spread over (default 1; at most 256): shard `S`'s keys begin
    /// `drover:{S}:`, one Redis Cluster slot each. A workflow's shard is its cluster's (its
    /// `[[clusters]]` entry's `shard`, else a hash of the name). Give the API and the workers the
    /// same value; it may grow, never shrink. Also DROVER_REDIS_SHARDS.
    pub redis_shards: Option<u16>,
    /// The most workflows one top-level workflow may create, its children's children included (0: no
    /// limit; default 10,000). The API refuses an input that asks for more at submission; a step that
    /// would start more fails. Give the API and the workers the same value. Also
    /// DROVER_MAX_DESCENDANTS.
    pub max_descendants: Option<u64>,
    pub api: drover_api::Config,
    pub worker: drover_worker::Config,
    pub kube: KubeConfig,
    /// More Kubernetes clusters (`[[clusters]]`), by name: a workflow submitted with
    /// `"cluster": "<name>"` acts on that one (its children too), and its semaphores and locks are
    /// that cluster's. Give the API and the workers the same list: the API refuses names it does
    /// not list, a worker fails a step of a cluster it cannot reach.
    pub clusters: Vec<ClusterConfig>,
    /// Secrets by reference (`[secrets]`): each entry maps a name that workflow inputs give as
    /// `{"secret": "<name>"}` to where the worker reads the value, with exactly one of
    /// `{ env = "VAR" }`, `{ file = "/path" }` and
    /// `{ kubernetes = { namespace = "...", name = "...", key = "..." } }` (through `[kube]`). Read
    /// at each use, so rotation needs no restart; only workers read them.
    pub secrets: drover_worker::secrets::Config,
    pub maas: MaasConfig,
    pub images: ImagesConfig,
    /// Ticketing webhooks the API takes (`[hooks]`: `[hooks.jira]`, `[hooks.servicenow]`,
    /// `[hooks.generic]` with their secrets by reference, and `[[hooks.rules]]`).
    pub hooks: drover_api::hooks::Config,
    /// Where workers write back to tickets, and the API re-reads a stale event's ticket
    /// (`[tickets.jira]`: url, email, api_token by secret reference; `[tickets.servicenow]`: url,
    /// user, password by secret reference).
    pub tickets: Option<drover_tickets::Config>,
    /// Where spans go (`[telemetry]`: `otlp_endpoint`, the OTLP/HTTP collector's base URL, and
    /// `service_name`); the standard `OTEL_*` variables apply too. Nothing set: no traces.
    pub telemetry: drover_telemetry::trace::Config,
}

/// Where workers keep disk images while they import them (`[images]`): `work_dir` (default
/// `<temp dir>/drover-images`; each import gets a directory below it, removed when it ends) on a
/// disk with room for the largest converted image, and the `qemu-img` to run (default from PATH).
/// Also DROVER_IMAGES_DIR and DROVER_QEMU_IMG.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    pub work_dir: Option<std::path::PathBuf>,
    pub qemu_img: Option<std::path::PathBuf>,
}

impl ImagesConfig {
    /// The images port these settings give.
    pub fn port(&self) -> drover_images::LocalImages {
        drover_images::LocalImages::new(
            self.work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("drover-images")),
            self.qemu_img
                .clone()
                .unwrap_or_else(|| drover_images::DEFAULT_QEMU_IMG.into()),
        )
    }
}

/// Where workers find MAAS (`[maas]`): the region's URL (`http://maas.example:5240/MAAS/`) and its API
/// key by secret reference (`api_key = { secret = "maas-api-key" }`, an entry of `[secrets]`). The
/// key is resolved when the process starts (a new key needs a restart). Nothing set: no MAAS, and
/// steps that need it fail saying so. The API uses it too, to check provisioning inputs' constraints
/// against MAAS at submission (`drover_kinds::admission`); without it, the API does not, and the
/// workflow's `preflight` step is the first to ask MAAS. The URL is also DROVER_MAAS_URL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaasConfig {
    pub url: Option<String>,
    pub api_key: Option<drover_workflows::ports::secrets::SecretRef>,
}

impl MaasConfig {
    /// Both set, or neither; the key must name a configured secret.
    pub fn validate(&self, secrets: &drover_worker::secrets::Config) -> Result<(), String> {
        match (&self.url, &self.api_key) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(
                "maas.api_key is missing: name the secret that holds MAAS's API \
                 key, api_key = { secret = \"maas-api-key\" }, and define it under [secrets]"
                    .into(),
            ),
            (None, Some(_)) => Err("maas.url is missing: give the region's URL, \
                 url = \"http://maas.example:5240/MAAS/\""
                .into()),
            (Some(_), Some(key)) if secrets.get(key.name()).is_none() => Err(format!(
                "maas.api_key names secret {:?}, which [secrets] does not define",
                key.name()
            )),
            _ => Ok(()),
        }
    }
}

/// Where workers find the Kubernetes cluster (`[kube]`). Nothing set: no cluster, and workflows that
/// need one fail with a message saying so.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    /// A kubeconfig file. Also DROVER_KUBECONFIG.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A plain API server URL without credentials (the lab). Also DROVER_KUBE_URL.
    pub url: Option<String>,
    /// Use the in-cluster service account, else $KUBECONFIG / ~/.kube/config. Also
    /// DROVER_KUBE_INFER=true.
    pub infer: bool,
    /// CDI's upload proxy, where image uploads go (`https://cdi-uploadproxy-cdi.apps.example`, the
    /// lab's `http://127.0.0.1:PORT`); default: the API server's URL. An https proxy is reached
    /// with the cluster's TLS settings. Also DROVER_UPLOAD_PROXY_URL.
    pub upload_proxy_url: Option<String>,
}

/// One named cluster of `[[clusters]]`: its `name` and exactly one of `kubeconfig` (a file),
/// `kubeconfig_secret` (a `[secrets]` name whose value is a kubeconfig's YAML), `url` (a plain URL,
/// the lab) and `infer = true`; `upload_proxy_url` as in `[kube]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(default)]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[serde(default)]
    pub kubeconfig_secret: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub infer: bool,
    #[serde(default)]
    pub upload_proxy_url: Option<String>,
    /// The shard this cluster's workflows live on (with `redis_shards` > 1); default: a hash of
    /// the name.
    #[serde(default)]
    pub shard: Option<u16>,
}

impl ClusterConfig {
    /// Where the cluster is, or what is wrong with the entry.
    pub fn target(&self) -> Result<ClusterTarget, String> {
        let set = [
            self.kubeconfig.is_some(),
            self.kubeconfig_secret.is_some(),
            self.url.is_some(),
            self.infer,
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(format!(
                "clusters {:?}: set exactly one of kubeconfig, kubeconfig_secret, url and infer",
                self.name
            ));
        }
        Ok(if let Some(path) = &self.kubeconfig {
            ClusterTarget::Ready(drover_kube::Target::Kubeconfig(path.clone()))
        } else if let Some(url) = &self.url {
            ClusterTarget::Ready(drover_kube::Target::Url(url.clone()))
        } else if let Some(secret) = &self.kubeconfig_secret {
            ClusterTarget::Secret(secret.clone())
        } else {
            ClusterTarget::Ready(drover_kube::Target::Infer)
        })
    }
}

/// Where a named cluster is: known now, or in a secret the worker reads at start.
pub enum ClusterTarget {
    Ready(drover_kube::Target),
    Secret(String),
}

/// `[[clusters]]` is sound: names are DNS labels (they become parts of semaphore and index
/// names), unique, and each entry says where its cluster is; secrets it names are defined.
pub fn validate_clusters(
    clusters: &[ClusterConfig],
    secrets: &drover_worker::secrets::Config,
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for c in clusters {
        let n = &c.name;
        let label = !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !label {
            return Err(format!(
                "clusters: name {n:?} must be 1-63 lowercase letters, digits or '-', starting \
                 and ending with a letter or digit"
            ));
        }
        if !seen.insert(n.clone()) {
            return Err(format!("clusters: {n:?} is listed twice"));
        }
        if let ClusterTarget::Secret(s) = c.target()?
            && secrets.get(&s).is_none()
        {
            return Err(format!(
                "clusters {n:?}: kubeconfig_secret names secret {s:?}, which [secrets] does not define"
            ));
        }
    }
    Ok(())
}

impl KubeConfig {
    pub fn target(&self) -> anyhow::Result<Option<drover_kube::Target>> {
        let set = [self.kubeconfig.is_some(), self.url.is_some(), self.infer]
            .iter()
            .filter(|s| **s)
            .count();
        if set > 1 {
            bail!("kube: set only one of kubeconfig, url and infer");
        }
        Ok(if let Some(path) = &self.kubeconfig {
            Some(drover_kube::Target::Kubeconfig(path.clone()))
        } else if let Some(url) = &self.url {
            Some(drover_kube::Target::Url(url.clone()))
        } else if self.infer {
            Some(drover_kube::Target::Infer)
        } else {
            None
        })
    }
}

impl Config {
    /// The workflow kinds this process knows, with the configured limits.
    pub fn registry(&self) -> drover_workflows::Registry {
        drover_kinds::builtin()
            .with_max_descendants(
                self.max_descendants
                    .unwrap_or(drover_workflows::DEFAULT_MAX_DESCENDANTS),
            )
            .with_clusters(self.clusters.iter().map(|c| c.name.clone()))
    }

    /// How to reach the store, checked.
    pub fn require_redis(&self) -> anyhow::Result<drover_store::Config> {
        let Some(url) = &self.redis_url else {
            bail!("no Redis configured: set redis_url in the config file, or DROVER_REDIS_URL")
        };
        drover_store::Endpoint::parse(url).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
        Ok(self.store_config(url))
    }

    /// The store's settings for `url`.
    pub fn store_config(&self, url: &str) -> drover_store::Config {
        let mut store = drover_store::Config::new(url);
        store.wait_replicas = self.redis_wait_replicas.unwrap_or(0);
        store.shards = self.redis_shards.unwrap_or(1);
        store.placement = self
            .clusters
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.shard?)))
            .collect();
        if let Some(ms) = self.redis_wait_timeout_ms {
            store.wait_timeout = std::time::Duration::from_millis(ms);
        }
        store
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_num<T: std::str::FromStr>(name: &str, into: &mut T) -> anyhow::Result<()> {
    let mut set = None;
    env_opt_num(name, &mut set)?;
    if let Some(v) = set {
        *into = v;
    }
    Ok(())
}

/// [`env_num`] for a setting that is unset by default.
fn env_opt_num<T: std::str::FromStr>(name: &str, into: &mut Option<T>) -> anyhow::Result<()> {
    if let Some(v) = env(name) {
        *into = Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number"))?,
        );
    }
    Ok(())
}

/// A config file that does not parse, said without quoting the file: toml's own message shows the
/// offending line, which may hold a token or a key (a literal where a secret reference belongs).
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" (line {line}, column {column})")
    });
    anyhow::anyhow!(
        "config file {}: {}{}",
        path.display(),
        e.message(),
        at.unwrap_or_default()
    )
}

/// Loads defaults <- file <- environment.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?
        }
        None => Config::default(),
    };
    if let Some(url) = env("DROVER_REDIS_URL").or_else(|| env("REDIS_URL")) {
        config.redis_url = Some(url);
    }
    if let Some(listen) = env("DROVER_API_LISTEN") {
        config.api.listen = listen;
    }
    if let Some(token) = env("DROVER_API_TOKEN") {
        config.api.tokens.push(drover_api::Token {
            name: "env-operator".into(),
            token,
            role: drover_api::Role::Operator,
        });
    }
    if let Some(token) = env("DROVER_API_VIEWER_TOKEN") {
        config.api.tokens.push(drover_api::Token {
            name: "env-viewer".into(),
            token,
            role: drover_api::Role::Viewer,
        });
    }
    if let Some(v) = env("DROVER_API_METRICS_AUTH") {
        config.api.metrics_auth = v
            .parse()
            .map_err(|_| anyhow::anyhow!("DROVER_API_METRICS_AUTH={v:?} must be true or false"))?;
    }
    env_opt_num(
        "DROVER_REDIS_WAIT_REPLICAS",
        &mut config.redis_wait_replicas,
    )?;
    env_opt_num(
        "DROVER_REDIS_WAIT_TIMEOUT_MS",
        &mut config.redis_wait_timeout_ms,
    )?;
    env_opt_num("DROVER_REDIS_SHARDS", &mut config.redis_shards)?;
    env_opt_num("DROVER_MAX_DESCENDANTS", &mut config.max_descendants)?;
    env_num("DROVER_WORKER_CONCURRENCY", &mut config.worker.concurrency)?;
    env_num("DROVER_WORKER_LEASE_MS", &mut config.worker.lease_ms)?;
    env_num(
        "DROVER_WORKER_IDLE_WAIT_MS",
        &mut config.worker.idle_wait_ms,
    )?;
    env_num(
        "DROVER_WORKER_RETENTION_SECS",
        &mut config.worker.retention_secs,
    )?;
    env_num(
        "DROVER_WORKER_SHUTDOWN_GRACE_MS",
        &mut config.worker.shutdown_grace_ms,
    )?;
    if let Some(v) = env("DROVER_WORKER_SCHEDULER") {
        config.worker.scheduler = v
            .parse()
            .map_err(|_| anyhow::anyhow!("DROVER_WORKER_SCHEDULER={v:?} must be true or false"))?;
    }
    if let Some(listen) = env("DROVER_WORKER_METRICS_LISTEN") {
        config.worker.metrics_listen = Some(listen);
    }
    if let Some(name) = env("DROVER_WORKER_NAME") {
        config.worker.name = Some(name);
    }
    if let Some(url) = env("DROVER_MAAS_URL") {
        config.maas.url = Some(url);
    }
    if let Some(path) = env("DROVER_KUBECONFIG") {
        config.kube.kubeconfig = Some(path.into());
    }
    if let Some(url) = env("DROVER_KUBE_URL") {
        config.kube.url = Some(url);
    }
    if let Some(v) = env("DROVER_KUBE_INFER") {
        config.kube.infer = match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => bail!("DROVER_KUBE_INFER={v:?} must be true or false"),
        };
    }
    if let Some(url) = env("DROVER_UPLOAD_PROXY_URL") {
        config.kube.upload_proxy_url = Some(url);
    }
    if let Some(dir) = env("DROVER_IMAGES_DIR") {
        config.images.work_dir = Some(dir.into());
    }
    if let Some(path) = env("DROVER_QEMU_IMG") {
        config.images.qemu_img = Some(path.into());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_when_the_file_is_parsed() {
        use drover_worker::secrets::Source;
        let config: Config = toml::from_str(
            r#"
            [secrets]
            maas-api-key = { env = "MAAS_API_KEY" }
            [secrets.ticketing]
            kubernetes = { namespace = "drover", name = "ticketing", key = "password" }
            "#,
        )
        .unwrap();
        assert_eq!(
            config.secrets.get("maas-api-key"),
            Some(&Source::Env("MAAS_API_KEY".into()))
        );
        assert!(matches!(
            config.secrets.get("ticketing"),
            Some(Source::Kubernetes(_))
        ));
        let e = toml::from_str::<Config>("[secrets]\nx = { env = \"A\", file = \"/b\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of"), "{e}");
    }

    #[test]
    fn the_upload_proxy_is_a_kube_setting() {
        let config: Config = toml::from_str(
            "[kube]\nurl = \"http://127.0.0.1:6443\"\nupload_proxy_url = \"https://cdi-uploadproxy.example\"\n",
        )
        .unwrap();
        assert_eq!(
            config.kube.upload_proxy_url.as_deref(),
            Some("https://cdi-uploadproxy.example")
        );
        assert_eq!(KubeConfig::default().upload_proxy_url, None);
    }

    #[test]
    fn telemetry_and_worker_metrics_are_settings() {
        let config: Config = toml::from_str(
            "[telemetry]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"drover-eu\"\n\
             [worker]\nmetrics_listen = \"127.0.0.1:9464\"\n[api]\nmetrics_auth = true\n",
        )
        .unwrap();
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(
            config.worker.metrics_listen.as_deref(),
            Some("127.0.0.1:9464")
        );
        assert!(config.api.metrics_auth);
        assert!(config.worker.validate().is_ok());
        let bad = drover_worker::Config {
            metrics_listen: Some("9464".into()),
            ..drover_worker::Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("metrics_listen"));
        assert!(toml::from_str::<Config>("[telemetry]\nendpoint = \"x\"\n").is_err());
    }

    #[test]
    fn sentinel_urls_and_wait_are_settings() {
        let config: Config = toml::from_str(
            "redis_url = \"redis+sentinel://:pw@s1:26379,s2:26379/drover/0\"\n\
             redis_wait_replicas = 1\nredis_wait_timeout_ms = 250\n",
        )
        .unwrap();
        let store = config.require_redis().unwrap();
        assert_eq!(store.wait_replicas, 1);
        assert_eq!(store.wait_timeout, std::time::Duration::from_millis(250));
        assert_eq!(
            redact_url(&store.url),
            "redis+sentinel://:***@s1:26379,s2:26379/drover/0"
        );
        let defaults = Config {
            redis_url: Some("redis://h:1/0".into()),
            ..Config::default()
        };
        assert_eq!(defaults.require_redis().unwrap().wait_replicas, 0);
        let bad = Config {
            redis_url: Some("redis+sentinel://:hunter2@s1:26379".into()),
            ..Config::default()
        };
        let e = bad.require_redis().unwrap_err().to_string();
        assert!(
            e.starts_with("redis_url: ") && e.contains("master group"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn clusters_are_checked() {
        let parse = |text: &str| -> Config { toml::from_str(text).unwrap() };
        let ok = parse(
            "[[clusters]]\nname = \"east\"\nurl = \"http://127.0.0.1:1\"\n\
             [[clusters]]\nname = \"west-2\"\nkubeconfig_secret = \"kc\"\n\
             [secrets]\nkc = { env = \"KC\" }\n",
        );
        assert_eq!(validate_clusters(&ok.clusters, &ok.secrets), Ok(()));
        assert!(matches!(
            ok.clusters[1].target(),
            Ok(ClusterTarget::Secret(s)) if s == "kc"
        ));
        for (text, says) in [
            ("[[clusters]]\nname = \"East\"\nurl = \"u\"\n", "lowercase"),
            ("[[clusters]]\nname = \"a/b\"\nurl = \"u\"\n", "lowercase"),
            ("[[clusters]]\nname = \"-a\"\nurl = \"u\"\n", "starting"),
            ("[[clusters]]\nname = \"a\"\n", "exactly one"),
            (
                "[[clusters]]\nname = \"a\"\nurl = \"u\"\ninfer = true\n",
                "exactly one",
            ),
            (
                "[[clusters]]\nname = \"a\"\nurl = \"u\"\n[[clusters]]\nname = \"a\"\nurl = \"v\"\n",
                "twice",
            ),
            (
                "[[clusters]]\nname = \"a\"\nkubeconfig_secret = \"nope\"\n",
                "does not define",
            ),
        ] {
            let c = parse(text);
            let e = validate_clusters(&c.clusters, &c.secrets).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(
            toml::from_str::<Config>("[[clusters]]\nname = \"a\"\nurl = \"u\"\ntoken = \"x\"\n")
                .is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
