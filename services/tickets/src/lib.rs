//! Drover's ticketing adapters: Jira Cloud's REST API v3 (`jira.rs`) and ServiceNow's Table API
//! (`servicenow.rs`) over reqwest, behind the workflows'
//! [`Tickets`](drover_workflows::ports::tickets::Tickets) port. [`Clients`] dispatches each call on
//! the ticket's system. Both use HTTP Basic, the password or API token read through the `Secrets`
//! port at each request (so rotation needs no restart) and never printed; failures are classified
//! into Transient (429, 5xx, no connection, with `Retry-After`) and Permanent (the system's own
//! message) in `error.rs`; reads are retried a little, writes never (`request.rs`); writes to one
//! ticket are paced by an in-process token bucket (`limit.rs`).
//!
//! Plain HTTP only for now: the workspace builds reqwest without a TLS backend, so
//! [`Config::validate`] refuses an `https://` URL with a message saying so (reach the real sites
//! through a TLS-terminating proxy, or add a TLS feature to the workspace's reqwest).

mod error;
mod jira;
mod limit;
mod request;
mod servicenow;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::secrets::{SecretRef, Secrets};
use drover_workflows::ports::tickets::{System, TicketError, TicketRef, TicketState, Tickets};
use serde::{Deserialize, Serialize};

pub use error::Error;

use request::{Endpoint, Settings};

/// The ticketing systems Drover talks to: the `[tickets]` section of Drover's configuration.
///
/// ```toml
/// [tickets]
/// timeout_ms = 10000
///
/// [tickets.jira]
/// url = "http://jira-proxy.example:8080"
/// email = "drover-bot@example.com"
/// api_token = { secret = "jira-api-token" }
/// writes_per_second_per_ticket = 2.0
///
/// [tickets.servicenow]
/// url = "http://servicenow-proxy.example:8080"
/// user = "drover.integration"
/// password = { secret = "servicenow-password" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Jira Cloud; tickets of `system: jira` are refused when absent.
    #[serde(default)]
    pub jira: Option<Jira>,
    /// ServiceNow; tickets of `system: servicenow` are refused when absent.
    #[serde(default)]
    pub servicenow: Option<ServiceNow>,
    /// Deadline of one request in milliseconds (default 10000). A write that takes longer is
    /// Transient with its outcome unknown; the engine's retry checks the marker first.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// A Jira Cloud site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jira {
    /// The site's base URL, `http://jira-proxy:8080` (the API is below it at `rest/api/3/`).
    pub url: String,
    /// The API user's email (the HTTP Basic user name).
    pub email: String,
    /// The API user's API token, by reference (`{ secret = "<name>" }` in `[secrets]`).
    pub api_token: SecretRef,
    /// Writes per second to one issue (default 2, burst 2); keep it under Jira's per-issue limit.
    #[serde(default = "default_writes_per_second")]
    pub writes_per_second_per_ticket: f64,
}

/// A ServiceNow instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNow {
    /// The instance's base URL (the Table API is below it at `api/now/table/`).
    pub url: String,
    /// The integration user (the HTTP Basic user name).
    pub user: String,
    /// Its password, by reference.
    pub password: SecretRef,
    /// Writes per second to one record (default 2, burst 2).
    #[serde(default = "default_writes_per_second")]
    pub writes_per_second_per_ticket: f64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_writes_per_second() -> f64 {
    2.0
}

impl Default for Config {
    fn default() -> Config {
        Config {
            jira: None,
            servicenow: None,
            timeout_ms: default_timeout_ms(),
        }
    }
}

impl Config {
    /// Checks everything that can be checked without a request: URLs (plain http, see the crate
    /// docs), user names, rates, the timeout.
    pub fn validate(&self) -> Result<(), Error> {
        self.endpoints(Arc::new(NoSecrets)).map(|_| ())
    }

    fn timeout(&self) -> Result<Duration, Error> {
        match self.timeout_ms {
            0 => Err(Error::Config(
                "tickets.timeout_ms must be at least 1".into(),
            )),
            ms => Ok(Duration::from_millis(ms)),
        }
    }

    fn endpoints(
        &self,
        secrets: Arc<dyn Secrets>,
    ) -> Result<(Option<Endpoint>, Option<Endpoint>), Error> {
        let timeout = self.timeout()?;
        let jira = self
            .jira
            .as_ref()
            .map(|j| Endpoint::new(j.settings(timeout), secrets.clone()))
            .transpose()?;
        let servicenow = self
            .servicenow
            .as_ref()
            .map(|s| Endpoint::new(s.settings(timeout), secrets))
            .transpose()?;
        Ok((jira, servicenow))
    }
}

impl Jira {
    fn settings(&self, timeout: Duration) -> Settings<'_> {
        Settings {
            system: System::Jira,
            section: "tickets.jira",
            url: &self.url,
            user: ("email", &self.email),
            password: &self.api_token,
            writes_per_second: self.writes_per_second_per_ticket,
            timeout,
        }
    }
}

impl ServiceNow {
    fn settings(&self, timeout: Duration) -> Settings<'_> {
        Settings {
            system: System::Servicenow,
            section: "tickets.servicenow",
            url: &self.url,
            user: ("user", &self.user),
            password: &self.password,
            writes_per_second: self.writes_per_second_per_ticket,
            timeout,
        }
    }
}

/// The ticketing port over the configured systems. Cheap to clone. Its `Debug` shows URLs, user
/// names and secret names, never a secret's value.
#[derive(Clone)]
pub struct Clients {
    jira: Slot,
    servicenow: Slot,
}

/// One system: configured and usable, not configured, or configured wrongly (a `Config` that was
/// not validated first), which every call then reports.
#[derive(Clone)]
enum Slot {
    Ready(Arc<Endpoint>),
    Absent,
    Invalid(String),
}

impl Clients {
    /// Clients for the configured systems; nothing is sent. Call [`Config::validate`] first: a
    /// system whose settings do not validate answers every call with a Permanent error saying why.
    pub fn new(config: Config, secrets: Arc<dyn Secrets>) -> Clients {
        let slot = |settings: Option<Settings<'_>>| match settings {
            None => Slot::Absent,
            Some(s) => match Endpoint::new(s, secrets.clone()) {
                Ok(e) => Slot::Ready(Arc::new(e)),
                Err(e) => Slot::Invalid(e.to_string()),
            },
        };
        match config.timeout() {
            Ok(timeout) => Clients {
                jira: slot(config.jira.as_ref().map(|j| j.settings(timeout))),
                servicenow: slot(config.servicenow.as_ref().map(|s| s.settings(timeout))),
            },
            Err(e) => Clients {
                jira: Slot::Invalid(e.to_string()),
                servicenow: Slot::Invalid(e.to_string()),
            },
        }
    }

    /// The port, for the worker's `Ports`.
    pub fn port(self) -> Arc<dyn Tickets> {
        Arc::new(self)
    }

    /// The endpoint of a ticket's system.
    fn endpoint(&self, ticket: &TicketRef) -> Result<&Endpoint, TicketError> {
        let slot = match ticket.system {
            System::Jira => &self.jira,
            System::Servicenow => &self.servicenow,
        };
        match slot {
            Slot::Ready(e) => Ok(e),
            Slot::Absent => Err(TicketError::Permanent(format!(
                "no [tickets.{}] configured",
                ticket.system.as_str()
            ))),
            Slot::Invalid(why) => Err(TicketError::Permanent(why.clone())),
        }
    }
}

#[async_trait]
impl Tickets for Clients {
    async fn read(&self, ticket: &TicketRef) -> Result<TicketState, TicketError> {
        let e = self.endpoint(ticket)?;
        match ticket.system {
            System::Jira => jira::read(e, ticket).await,
            System::Servicenow => servicenow::read(e, ticket).await,
        }
    }

    async fn has_marker(&self, ticket: &TicketRef, marker: &str) -> Result<bool, TicketError> {
        let e = self.endpoint(ticket)?;
        match ticket.system {
            System::Jira => jira::has_marker(e, ticket, marker).await,
            System::Servicenow => servicenow::has_marker(e, ticket, marker).await,
        }
    }

    async fn comment(
        &self,
        ticket: &TicketRef,
        text: &str,
        marker: &str,
    ) -> Result<(), TicketError> {
        let e = self.endpoint(ticket)?;
        match ticket.system {
            System::Jira => jira::comment(e, ticket, text, marker).await,
            System::Servicenow => servicenow::comment(e, ticket, text, marker).await,
        }
    }

    async fn transition(&self, ticket: &TicketRef, to: &str) -> Result<(), TicketError> {
        let e = self.endpoint(ticket)?;
        match ticket.system {
            System::Jira => jira::transition(e, ticket, to).await,
            System::Servicenow => servicenow::transition(e, ticket, to).await,
        }
    }
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("jira", &self.jira)
            .field("servicenow", &self.servicenow)
            .finish()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Ready(e) => f
                .debug_struct("Endpoint")
                .field("url", &e.base_url())
                .field("user", &e.user())
                .field("secret", &e.password_ref().name())
                .field("writes_per_second_per_ticket", &e.writes_per_second())
                .finish(),
            Slot::Absent => f.write_str("None"),
            Slot::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
        }
    }
}

/// Secrets for `validate`, which builds endpoints but sends nothing.
struct NoSecrets;

#[async_trait]
impl Secrets for NoSecrets {
    async fn get(
        &self,
        name: &str,
    ) -> Result<
        drover_workflows::ports::secrets::Secret,
        drover_workflows::ports::secrets::SecretError,
    > {
        Err(drover_workflows::ports::secrets::SecretError::Unknown(
            name.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Drover {
        tickets: Config,
    }

    #[test]
    fn config_parses_validates_and_never_holds_a_value() {
        let text = r#"
            [tickets]
            [tickets.jira]
            url = "http://jira:8080"
            email = "bot@example.com"
            api_token = { secret = "jira-api-token" }
            [tickets.servicenow]
            url = "http://sn:8080/"
            user = "drover.integration"
            password = { secret = "sn-password" }
            writes_per_second_per_ticket = 0.5
        "#;
        let c = toml::from_str::<Drover>(text).unwrap().tickets;
        assert_eq!(c.timeout_ms, 10_000);
        let jira = c.jira.as_ref().unwrap();
        assert_eq!(
            (jira.api_token.name(), jira.writes_per_second_per_ticket),
            ("jira-api-token", 2.0)
        );
        assert_eq!(
            c.servicenow.as_ref().unwrap().writes_per_second_per_ticket,
            0.5
        );
        c.validate().unwrap();
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());

        // A literal secret is refused without being echoed; unknown fields are refused.
        let literal = text.replace(r#"{ secret = "jira-api-token" }"#, r#""hunter2-literal""#);
        // (toml's Display quotes the source line; Drover's loader prints `message()` only.)
        let e = toml::from_str::<Drover>(&literal).err().unwrap();
        assert!(e.message().contains("this field is a secret"), "{e}");
        assert!(!e.message().contains("hunter2"), "{e}");
        assert!(toml::from_str::<Config>("[jira]\nurl = \"http://j\"\nemail = \"e\"\napi_token = { secret = \"t\" }\ntoken = 1\n").is_err());

        let bad = |edit: fn(&mut Config)| {
            let mut c = c.clone();
            edit(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let e = bad(|c| c.jira.as_mut().unwrap().url = "https://x.atlassian.net".into());
        assert!(
            e.contains("tickets.jira.url") && e.contains("https needs TLS"),
            "{e}"
        );
        assert!(bad(|c| c.timeout_ms = 0).contains("timeout_ms"));
        assert!(
            bad(|c| c.servicenow.as_mut().unwrap().writes_per_second_per_ticket = 0.0)
                .contains("tickets.servicenow.writes_per_second_per_ticket")
        );
        assert!(
            bad(|c| c.servicenow.as_mut().unwrap().user = " ".into())
                .contains("tickets.servicenow.user")
        );
    }

    #[tokio::test]
    async fn unconfigured_and_invalid_systems_are_permanent() {
        let clients = Clients::new(
            Config {
                jira: Some(Jira {
                    url: "https://x.atlassian.net".into(),
                    email: "bot@example.com".into(),
                    api_token: SecretRef::new("jira-api-token"),
                    writes_per_second_per_ticket: 2.0,
                }),
                ..Config::default()
            },
            Arc::new(NoSecrets),
        );
        let t = |system| TicketRef {
            system,
            key: "OPS-1".into(),
            display: "OPS-1".into(),
        };
        assert_eq!(
            clients.read(&t(System::Servicenow)).await.unwrap_err(),
            TicketError::Permanent("no [tickets.servicenow] configured".into())
        );
        let e = clients
            .read(&t(System::Jira))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("https needs TLS"), "{e}");
        let shown = format!("{clients:?}");
        assert!(
            shown.contains("Invalid") && shown.contains("servicenow: None"),
            "{shown}"
        );
    }
}
