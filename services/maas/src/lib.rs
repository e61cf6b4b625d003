//! Drover's MAAS adapter: MAAS's REST API 2.0 over reqwest, implementing the workflows'
//! [`Maas`](drover_workflows::ports::maas::Maas) port. It signs every request with OAuth 1.0a
//! PLAINTEXT from an API key held as a [`Secret`] (`auth.rs`), decodes MAAS's JSON leniently into
//! the port's types (`model.rs`), has one file per operation family (`machines.rs`, `network.rs`,
//! `events.rs`), and classifies failures and retries what is safe to retry, honouring Retry-After
//! (`error.rs`, `request.rs`).
//!
//! Plain HTTP only for now: the workspace builds reqwest without a TLS backend, so an `https://`
//! URL is refused at construction with a message saying so.

mod auth;
mod error;
mod events;
mod machines;
mod model;
mod network;
mod request;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::maas::{
    Allocation, Deployment, Event, Interface, Maas, MaasError, Machine, MachineFilter, NewBond,
    NewBridge, NewLink, NewVlan, Release, Subnet, Vlan,
};
use drover_workflows::ports::secrets::Secret;

pub use error::Error;

/// How the adapter reaches MAAS.
#[derive(Debug, Clone)]
pub struct Config {
    /// MAAS's URL as its clients take it, `http://maas.example:5240/MAAS/`; the API is below it at
    /// `api/2.0/` (a URL that already ends in `api/2.0/` is taken as it is).
    pub url: String,
    /// `<consumer_key>:<token_key>:<token_secret>`, as `maas apikey` prints it.
    pub api_key: Secret,
    /// Deadline of one request. A call that takes longer is Transient, its outcome unknown (MAAS
    /// may still apply it). Default 60 s: MAAS answers power queries within about that.
    pub timeout: Duration,
    /// Deadline for opening a connection (default 10 s); nothing was sent when it passes.
    pub connect_timeout: Duration,
    pub retry: Retry,
}

/// The adapter's own retries of one call, before a Transient error goes to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Tries in all, the first included (default 4: gomaasapi's 1 + 4 retries, less one since the
    /// engine retries the step as well).
    pub attempts: u32,
    /// First wait without Retry-After (default 250 ms), doubled after each try.
    pub backoff: Duration,
    /// Longest wait here (default 10 s, MAAS's own Retry-After for 503). A longer Retry-After is
    /// not slept: the error carries it to the engine, which waits without holding a worker.
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// MAAS at `url` with `api_key` and the default deadlines and retries.
    pub fn new(url: impl Into<String>, api_key: Secret) -> Config {
        Config {
            url: url.into(),
            api_key,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: Retry::default(),
        }
    }
}

/// The adapter: an HTTP client, the API root and the key. Cheap to clone. Its `Debug` shows the
/// URL and `<redacted>` for the key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `<url>api/2.0/`.
    api: reqwest::Url,
    key: auth::ApiKey,
    retry: Retry,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.api.as_str())
            .field("api_key", &self.key)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Client {
    /// Checks the configuration (URL, key, retries) and builds the client; nothing is sent.
    pub fn new(config: Config) -> Result<Client, Error> {
        let key = auth::ApiKey::parse(&config.api_key)?;
        let mut url = reqwest::Url::parse(config.url.trim())
            .map_err(|e| Error::Config(format!("MAAS URL {:?}: {e}", config.url)))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(Error::Config(format!(
                    "MAAS URL {:?}: https needs TLS, which this build does not have (reqwest \
                     is built without a TLS backend); use http or add a TLS feature",
                    config.url
                )));
            }
            other => {
                return Err(Error::Config(format!(
                    "MAAS URL {:?}: scheme {other} is not http",
                    config.url
                )));
            }
        }
        if url.query().is_some() || url.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "MAAS URL {:?} must be a plain base URL such as http://maas:5240/MAAS/",
                config.url
            )));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        if !url.path().ends_with("/api/2.0/") {
            url = url
                .join("api/2.0/")
                .map_err(|e| Error::Config(format!("MAAS URL {:?}: {e}", config.url)))?;
        }
        if config.retry.attempts == 0 {
            return Err(Error::Config("retry.attempts must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("drover-maas/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            api: url,
            key,
            retry: config.retry,
        })
    }

    /// The port, for the worker's `Ports`.
    pub fn port(self) -> Arc<dyn Maas> {
        Arc::new(self)
    }

    /// The API root this client calls (`.../MAAS/api/2.0/`).
    pub fn api_url(&self) -> &str {
        self.api.as_str()
    }
}

#[async_trait]
impl Maas for Client {
    async fn list_machines(&self, filter: &MachineFilter) -> Result<Vec<Machine>, MaasError> {
        machines::list(self, filter).await
    }

    async fn get_machine(&self, system_id: &str) -> Result<Machine, MaasError> {
        machines::get(self, system_id).await
    }

    async fn allocate(&self, allocation: &Allocation) -> Result<Machine, MaasError> {
        machines::allocate(self, allocation).await
    }

    async fn deploy(&self, system_id: &str, deployment: &Deployment) -> Result<Machine, MaasError> {
        machines::deploy(self, system_id, deployment).await
    }

    async fn release(&self, system_id: &str, release: &Release) -> Result<Machine, MaasError> {
        machines::release(self, system_id, release).await
    }

    async fn abort(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, MaasError> {
        machines::act(self, system_id, "abort", comment).await
    }

    async fn mark_broken(&self, system_id: &str, comment: &str) -> Result<Machine, MaasError> {
        machines::act(self, system_id, "mark_broken", Some(comment)).await
    }

    async fn mark_fixed(
        &self,
        system_id: &str,
        comment: Option<&str>,
    ) -> Result<Machine, MaasError> {
        machines::act(self, system_id, "mark_fixed", comment).await
    }

    async fn set_owner_data(
        &self,
        system_id: &str,
        data: &BTreeMap<String, Option<String>>,
    ) -> Result<Machine, MaasError> {
        machines::set_owner_data(self, system_id, data).await
    }

    async fn interfaces(&self, system_id: &str) -> Result<Vec<Interface>, MaasError> {
        network::interfaces(self, system_id).await
    }

    async fn vlans(&self, fabric_id: u64) -> Result<Vec<Vlan>, MaasError> {
        network::vlans(self, fabric_id).await
    }

    async fn subnets(&self) -> Result<Vec<Subnet>, MaasError> {
        network::subnets(self).await
    }

    async fn create_bond(&self, system_id: &str, bond: &NewBond) -> Result<Interface, MaasError> {
        network::create_bond(self, system_id, bond).await
    }

    async fn create_bridge(
        &self,
        system_id: &str,
        bridge: &NewBridge,
    ) -> Result<Interface, MaasError> {
        network::create_bridge(self, system_id, bridge).await
    }

    async fn create_vlan(&self, system_id: &str, vlan: &NewVlan) -> Result<Interface, MaasError> {
        network::create_vlan(self, system_id, vlan).await
    }

    async fn link_subnet(
        &self,
        system_id: &str,
        interface: u64,
        link: &NewLink,
    ) -> Result<Interface, MaasError> {
        network::link_subnet(self, system_id, interface, link).await
    }

    async fn events(&self, system_id: &str, limit: u32) -> Result<Vec<Event>, MaasError> {
        events::query(self, system_id, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_redaction() {
        let key = Secret::new("ck:tk:very-secret-value");
        for (given, api) in [
            ("http://maas:5240/MAAS/", "http://maas:5240/MAAS/api/2.0/"),
            ("http://maas:5240/MAAS", "http://maas:5240/MAAS/api/2.0/"),
            (
                "http://maas:5240/MAAS/api/2.0/",
                "http://maas:5240/MAAS/api/2.0/",
            ),
        ] {
            let c = Client::new(Config::new(given, key.clone())).unwrap();
            assert_eq!(c.api_url(), api);
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("very-secret-value") && !shown.contains("tk"),
                "{shown}"
            );
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let config = format!("{:?}", Config::new("http://m/MAAS/", key.clone()));
        assert!(!config.contains("very-secret-value"), "{config}");
        let e = Client::new(Config::new("https://maas/MAAS/", key.clone())).unwrap_err();
        assert!(e.to_string().contains("https needs TLS"), "{e}");
        assert!(Client::new(Config::new("maas:5240", key)).is_err());
    }
}
