//! The worker's [`Secrets`] port. `[secrets]` in the config file maps each secret's name to where its
//! value lives: an environment variable, a file, or a key of a Kubernetes Secret in the cluster the
//! worker already uses. [`ConfigSecrets`] reads the source each time a step asks, so a rotated file
//! or Secret is picked up without a restart. The value travels only inside [`Secret`] (which prints
//! as `<redacted>`); errors and logs name the secret and its source, never the value.
//!
//! The Kubernetes source is reached through [`KubeSecrets`], which the binary implements over the
//! kube adapter: this crate does not depend on the adapters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drover_workflows::ports::BoxFuture;
use drover_workflows::ports::kube::KubeError;
use drover_workflows::ports::secrets::{Secret, SecretError, Secrets};
use drover_workflows::{NAME_RULE, is_name};
use serde::Deserialize;
use tracing::debug;

/// `[secrets]` in the config file: each entry names a secret (the name inputs give as
/// `{"secret": "<name>"}`) and says where its value lives, with exactly one of `env`, `file` and
/// `kubernetes`:
///
/// ```toml
/// [secrets]
/// maas-api-key = { env = "MAAS_API_KEY" }
/// join-token = { file = "/run/secrets/join-token" }
/// ticketing = { kubernetes = { namespace = "drover", name = "ticketing", key = "password" } }
/// ```
///
/// Names follow [`is_name`]; they are checked when the file is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, Source>")]
pub struct Config(BTreeMap<String, Source>);

/// Where one secret's value lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SourceFields")]
pub enum Source {
    /// An environment variable of the worker process, used as it is.
    Env(String),
    /// A file, read at each use; trailing line breaks are not part of the value.
    File(PathBuf),
    /// A key of a Kubernetes Secret, read at each use through the cluster in `[kube]`; trailing line
    /// breaks are not part of the value (`kubectl create secret --from-file` keeps a file's).
    Kubernetes(KubeSecretKey),
}

/// One key of one Kubernetes Secret: `{ namespace = "drover", name = "maas", key = "api-key" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSecretKey {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Reads a key of a Kubernetes Secret. The binary implements it over the kube adapter.
pub trait KubeSecrets: Send + Sync {
    /// The (base64-decoded) bytes under `key` in Secret `namespace/name`.
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, KubeError>>;
}

/// The [`Secrets`] port over `[secrets]`.
pub struct ConfigSecrets {
    config: Config,
    kube: Option<Arc<dyn KubeSecrets>>,
}

/// The fields of one `[secrets]` entry as written; [`Source`] checks that exactly one is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFields {
    env: Option<String>,
    file: Option<PathBuf>,
    kubernetes: Option<KubeSecretKey>,
}

impl Config {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Source> {
        self.0.get(name)
    }

    /// Adds or replaces an entry (for programs that build their configuration in code).
    pub fn insert(&mut self, name: impl Into<String>, source: Source) -> Result<(), String> {
        let name = name.into();
        check_name(&name)?;
        self.0.insert(name, source);
        Ok(())
    }

    /// Checks what parsing cannot: a Kubernetes source needs a cluster (`has_cluster`: `[kube]` is
    /// set).
    pub fn validate(&self, has_cluster: bool) -> Result<(), String> {
        match self
            .0
            .iter()
            .find(|(_, s)| matches!(s, Source::Kubernetes(_)))
        {
            Some((name, _)) if !has_cluster => Err(format!(
                "secrets.{name} reads a Kubernetes Secret, but no cluster is configured: set [kube] \
                 (kubeconfig, url or infer)"
            )),
            _ => Ok(()),
        }
    }
}

impl TryFrom<BTreeMap<String, Source>> for Config {
    type Error = String;

    fn try_from(entries: BTreeMap<String, Source>) -> Result<Config, String> {
        for name in entries.keys() {
            check_name(name)?;
        }
        Ok(Config(entries))
    }
}

impl Source {
    /// What kind of source this is, for logs: `env`, `file` or `kubernetes`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Env(_) => "env",
            Source::File(_) => "file",
            Source::Kubernetes(_) => "kubernetes",
        }
    }
}

impl TryFrom<SourceFields> for Source {
    type Error = String;

    fn try_from(f: SourceFields) -> Result<Source, String> {
        let source = match (f.env, f.file, f.kubernetes) {
            (Some(var), None, None) => Source::Env(var),
            (None, Some(path), None) => Source::File(path),
            (None, None, Some(key)) => Source::Kubernetes(key),
            _ => {
                return Err(
                    "a secret's source is exactly one of env = \"VAR\", file = \"/path\" and \
                     kubernetes = { namespace, name, key }"
                        .into(),
                );
            }
        };
        match &source {
            Source::Env(var) if var.is_empty() || var.contains(['=', '\0']) => {
                Err(format!("{var:?} is not an environment variable name"))
            }
            Source::File(path) if path.as_os_str().is_empty() => {
                Err("a secret's file path is empty".into())
            }
            Source::Kubernetes(k) => {
                for (what, part) in [("namespace", &k.namespace), ("name", &k.name)] {
                    if !is_object_name(part) {
                        return Err(format!(
                            "kubernetes {what} {part:?} is not a Kubernetes object name (lowercase \
                             letters, digits, '-' and '.')"
                        ));
                    }
                }
                if !is_data_key(&k.key) {
                    return Err(format!(
                        "kubernetes key {:?} is not a Secret key (letters, digits, '-', '_' and '.')",
                        k.key
                    ));
                }
                Ok(source)
            }
            _ => Ok(source),
        }
    }
}

impl ConfigSecrets {
    /// `kube` reads the Kubernetes sources; without it they fail with a message saying so (a
    /// process checks [`Config::validate`] before it gets here).
    pub fn new(config: Config, kube: Option<Arc<dyn KubeSecrets>>) -> ConfigSecrets {
        ConfigSecrets { config, kube }
    }

    async fn resolve(&self, name: &str, source: &Source) -> Result<Secret, SecretError> {
        // Each failure names the secret and its source; none carries what was read.
        let invalid = |why: String| SecretError::Invalid(format!("{name:?} ({why})"));
        let unavailable = |why: String| SecretError::Unavailable(format!("{name:?} ({why})"));
        let value = match source {
            Source::Env(var) => match std::env::var_os(var) {
                None => return Err(invalid(format!("environment variable {var} is not set"))),
                Some(v) => v
                    .into_string()
                    .map_err(|_| invalid(format!("environment variable {var} is not UTF-8")))?,
            },
            Source::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    let why = format!("file {}: {e}", path.display());
                    // A file not there yet (a volume still being mounted) may appear.
                    if e.kind() == std::io::ErrorKind::NotFound {
                        unavailable(why)
                    } else {
                        invalid(why)
                    }
                })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| invalid(format!("file {} is not UTF-8", path.display())))?;
                trim_line_breaks(text)
            }
            Source::Kubernetes(k) => {
                let what = format!(
                    "Kubernetes Secret {}/{} key {:?}",
                    k.namespace, k.name, k.key
                );
                let kube = self.kube.as_ref().ok_or_else(|| {
                    invalid(format!("{what}: this worker has no cluster; set [kube]"))
                })?;
                let bytes =
                    kube.read(&k.namespace, &k.name, &k.key)
                        .await
                        .map_err(|e| match e {
                            KubeError::Transient { message, .. } => {
                                unavailable(format!("{what}: {message}"))
                            }
                            KubeError::NotFound(message) | KubeError::Permanent(message) => {
                                invalid(format!("{what}: {message}"))
                            }
                        })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| invalid(format!("{what} is not UTF-8")))?;
                trim_line_breaks(text)
            }
        };
        if value.is_empty() {
            return Err(invalid(format!("its {} source is empty", source.kind())));
        }
        Ok(Secret::new(value))
    }
}

impl Secrets for ConfigSecrets {
    // By hand rather than with #[async_trait]: the same signature the macro gives the trait.
    fn get<'life0, 'life1, 'async_trait>(
        &'life0 self,
        name: &'life1 str,
    ) -> BoxFuture<'async_trait, Result<Secret, SecretError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let source = self
                .config
                .get(name)
                .ok_or_else(|| SecretError::Unknown(name.to_string()))?;
            let result = self.resolve(name, source).await;
            match &result {
                Ok(_) => debug!(secret = name, source = source.kind(), "Secret resolved."),
                Err(e) => {
                    debug!(secret = name, source = source.kind(), error = %e, "Secret not resolved.")
                }
            }
            result
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if is_name(name) {
        Ok(())
    } else {
        Err(format!(
            "secret name {name:?} is not valid: names are {NAME_RULE}"
        ))
    }
}

/// Files and Secrets made with an editor or `echo` end in a line break that is not the secret.
fn trim_line_breaks(mut text: String) -> String {
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    text
}

fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn is_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeCluster;

    impl KubeSecrets for FakeCluster {
        fn read<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Vec<u8>, KubeError>> {
            Box::pin(async move {
                match (namespace, name, key) {
                    ("drover", "maas", "api-key") => Ok(b"kube-value\n".to_vec()),
                    ("drover", "down", _) => Err(KubeError::Transient {
                        message: "503 unavailable".into(),
                        retry_after: None,
                    }),
                    _ => Err(KubeError::NotFound(format!(
                        "Secret {namespace}/{name} has no key {key:?}"
                    ))),
                }
            })
        }
    }

    fn kube(name: &str, key: &str) -> Source {
        Source::Kubernetes(KubeSecretKey {
            namespace: "drover".into(),
            name: name.into(),
            key: key.into(),
        })
    }

    #[test]
    fn entries_parse_with_exactly_one_source_and_valid_names() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Config>(v);
        let config = parse(serde_json::json!({
            "a": {"env": "A"},
            "b": {"file": "/run/b"},
            "c": {"kubernetes": {"namespace": "drover", "name": "maas", "key": "api-key"}},
        }))
        .unwrap();
        assert_eq!(config.get("a"), Some(&Source::Env("A".into())));
        assert_eq!(config.get("b"), Some(&Source::File("/run/b".into())));
        assert_eq!(config.get("c"), Some(&kube("maas", "api-key")));
        assert!(config.validate(true).is_ok());
        let no_cluster = config.validate(false).unwrap_err();
        assert!(
            no_cluster.contains("secrets.c") && no_cluster.contains("[kube]"),
            "{no_cluster}"
        );
        let k = |namespace: &str, key: &str| serde_json::json!({"kubernetes": {"namespace": namespace, "name": "n", "key": key}});
        for (name, source, says) in [
            (
                "a",
                serde_json::json!({"env": "A", "file": "/b"}),
                "exactly one of",
            ),
            ("a", serde_json::json!({}), "exactly one of"),
            ("a", serde_json::json!({"vault": "x"}), "unknown field"),
            (
                "a b",
                serde_json::json!({"env": "A"}),
                "secret name \"a b\" is not valid",
            ),
            (
                "a",
                serde_json::json!({"env": ""}),
                "not an environment variable name",
            ),
            ("a", k("x/../y", "k"), "not a Kubernetes object name"),
            ("a", k("x", "a/b"), "not a Secret key"),
            (
                "a",
                serde_json::json!({"kubernetes": {"namespace": "x", "name": "n", "key": "k", "extra": 1}}),
                "unknown field",
            ),
        ] {
            let e = parse(serde_json::json!({ name: source }))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{name} {source}: {e}");
        }
    }

    #[tokio::test]
    async fn sources_resolve_at_each_use_and_errors_name_the_source_not_the_value() {
        let dir = std::env::temp_dir().join(format!("drover-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "file-value\r\n").unwrap();
        // A variable every process has, rather than setting one (set_var is unsafe with threads).
        let var = "PATH".to_string();
        let path = std::env::var(&var).unwrap();
        let mut config = Config::default();
        config.insert("from-env", Source::Env(var.clone())).unwrap();
        config
            .insert("from-file", Source::File(file.clone()))
            .unwrap();
        config.insert("from-kube", kube("maas", "api-key")).unwrap();
        config.insert("missing-key", kube("maas", "nope")).unwrap();
        config.insert("cluster-down", kube("down", "k")).unwrap();
        config
            .insert("unset", Source::Env("DROVER_TEST_SECRET_NEVER_SET".into()))
            .unwrap();
        config
            .insert("no-file", Source::File(dir.join("absent")))
            .unwrap();
        assert!(config.insert("bad name", Source::Env(var.clone())).is_err());
        let secrets = ConfigSecrets::new(config.clone(), Some(Arc::new(FakeCluster)));

        let get = |name: &'static str| secrets.get(name);
        assert_eq!(get("from-env").await.unwrap().expose(), path);
        assert_eq!(get("from-file").await.unwrap().expose(), "file-value");
        assert_eq!(get("from-kube").await.unwrap().expose(), "kube-value");
        // Rotation: the next use reads the new value.
        std::fs::write(&file, "rotated\n").unwrap();
        assert_eq!(get("from-file").await.unwrap().expose(), "rotated");

        assert_eq!(
            get("nobody").await.unwrap_err(),
            SecretError::Unknown("nobody".into())
        );
        let e = get("missing-key").await.unwrap_err();
        assert!(matches!(e, SecretError::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("has no key \"nope\""), "{e}");
        let e = get("cluster-down").await.unwrap_err();
        assert!(matches!(e, SecretError::Unavailable(_)), "{e:?}");
        let e = get("unset").await.unwrap_err();
        assert!(
            e.to_string().contains("\"unset\"") && e.to_string().contains("is not set"),
            "{e}"
        );
        let e = get("no-file").await.unwrap_err();
        assert!(matches!(e, SecretError::Unavailable(_)), "{e:?}");

        // An empty source is refused, and no message carries a value.
        std::fs::write(&file, "\n").unwrap();
        let e = get("from-file").await.unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let without_cluster = ConfigSecrets::new(config, None);
        let e = without_cluster.get("from-kube").await.unwrap_err();
        assert!(e.to_string().contains("[kube]"), "{e}");
        for e in [e, get("missing-key").await.unwrap_err()] {
            let text = format!("{e} {e:?}");
            for value in [path.as_str(), "file-value", "kube-value", "rotated"] {
                assert!(!text.contains(value), "{text}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
