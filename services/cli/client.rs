//! The client side of the CLI: which Drover to talk to, and a thin HTTP client over the REST API.
//!
//! Like a kubeconfig, a contexts file (`$DROVER_CONTEXTS`, else
//! `$XDG_CONFIG_HOME/drover/contexts.yaml`, else `~/.config/drover/contexts.yaml`) names servers
//! and where their tokens are; `current-context` picks one. Flags win over the environment, which
//! wins over the file: `--server`/`DROVER_SERVER`, `--context`/`DROVER_CONTEXT`, and
//! `DROVER_TOKEN` for the token. A token is never taken from a flag (it would land in shell
//! history) and never printed: `context list` shows where each token comes from, not the token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The contexts file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One Drover API and its token's source (at most one of `token`, `token-file`, `token-env`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    pub name: String,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl Context {
    /// Where the token comes from, for display (never the token itself).
    pub fn token_source(&self) -> String {
        match (&self.token, &self.token_file, &self.token_env) {
            (Some(_), _, _) => "inline".into(),
            (_, Some(f), _) => format!("file {}", f.display()),
            (_, _, Some(v)) => format!("env {v}"),
            _ => "none".into(),
        }
    }

    fn read_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f).with_context(|| {
                format!(
                    "context {:?}: cannot read its token file {}",
                    self.name,
                    f.display()
                )
            })?;
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(v) = &self.token_env {
            let t = std::env::var(v).map_err(|_| {
                anyhow!(
                    "context {:?} takes its token from ${v}, which is not set",
                    self.name
                )
            })?;
            return Ok(Some(t));
        }
        Ok(None)
    }
}

impl Contexts {
    /// The contexts file's path.
    pub fn path() -> PathBuf {
        if let Some(p) = std::env::var_os("DROVER_CONTEXTS") {
            return PathBuf::from(p);
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("drover").join("contexts.yaml")
    }

    /// Reads the file; a missing file is an empty set of contexts.
    pub fn load(path: &Path) -> anyhow::Result<Contexts> {
        match std::fs::read_to_string(path) {
            Ok(text) => yaml_serde::from_str(&text)
                .with_context(|| format!("{} is not a valid contexts file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the file readable by its owner only (it may hold tokens), replacing it whole.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = yaml_serde::to_string(self)?;
        let tmp = path.with_extension("yaml.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds or replaces the context of that name.
    pub fn upsert(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(c) => *c = context,
            None => self.contexts.push(context),
        }
    }
}

/// The flags every client command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// The Drover API's URL (http://host:port). Also DROVER_SERVER; else the context's server.
    #[arg(long, global = true, env = "DROVER_SERVER")]
    pub server: Option<String>,
    /// The context to use from the contexts file. Also DROVER_CONTEXT; else its current-context.
    #[arg(long, global = true, env = "DROVER_CONTEXT")]
    pub context: Option<String>,
}

impl Target {
    /// The client these flags, the environment and the contexts file give.
    pub fn client(&self) -> anyhow::Result<Client> {
        let path = Contexts::path();
        let contexts = Contexts::load(&path)?;
        let chosen = match self.context.as_ref().or(contexts.current_context.as_ref()) {
            Some(name) => Some(contexts.get(name).ok_or_else(|| {
                anyhow!(
                    "no context {name:?} in {}; `drover context list` shows the contexts",
                    path.display()
                )
            })?),
            None => None,
        };
        let server = match (&self.server, chosen) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => c.server.clone(),
            (None, None) => bail!(
                "no Drover server: pass --server URL, set DROVER_SERVER, or add a context with \
                 `drover context set NAME --server URL`"
            ),
        };
        let token = match std::env::var("DROVER_TOKEN") {
            Ok(t) if !t.is_empty() => Some(t),
            _ => match chosen {
                Some(c) => c.read_token()?,
                None => None,
            },
        };
        Client::new(&server, token)
    }
}

/// A refusal or failure of the API, with what it said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{status} {error}: {detail}")]
    Api {
        status: u16,
        error: String,
        detail: String,
    },
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
}

/// The REST API over HTTP.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            // The workspace's reqwest carries no TLS backend (see ARCHITECTURE.md).
            bail!(
                "server {server:?}: this build speaks plain HTTP only; reach a TLS endpoint \
                 through a local proxy or `kubectl port-forward`"
            );
        }
        if !base.starts_with("http://") {
            bail!("server {server:?} must be an http:// URL");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client { http, base, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Unreachable {
            server: self.base.clone(),
            message: e.without_url().to_string(),
        }
    }

    /// Sends a request (a JSON body when given) and returns the JSON answer of a 2xx.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, Error> {
        let mut req = self.request(method, path).timeout(Duration::from_secs(60));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(json)
        } else {
            Err(api_error(status.as_u16(), &json))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    /// Opens a server-sent event stream.
    pub async fn events(&self, path: &str) -> Result<Events, Error> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(api_error(status.as_u16(), &json));
        }
        Ok(Events {
            resp,
            buf: String::new(),
        })
    }
}

fn api_error(status: u16, body: &Value) -> Error {
    Error::Api {
        status,
        error: body["error"].as_str().unwrap_or("error").to_string(),
        detail: match &body["detail"] {
            Value::String(s) => s.clone(),
            Value::Null => body.as_str().unwrap_or_default().to_string(),
            other => other.to_string(),
        },
    }
}

/// A server-sent event stream: (event name, JSON data) one at a time.
pub struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    /// The next event; None when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        loop {
            if let Some((name, data)) = take_event(&mut self.buf) {
                if data.is_empty() {
                    continue; // a comment (keep-alive) or an event without data
                }
                let value = serde_json::from_str(&data).with_context(|| {
                    format!("the server sent an event that is not JSON: {data}")
                })?;
                return Ok(Some((name, value)));
            }
            match self.resp.chunk().await? {
                Some(chunk) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                None => return Ok(None),
            }
        }
    }
}

/// Removes the first complete event (up to a blank line) from `buf`: its name (default
/// `message`) and its data lines joined by newlines, as the SSE format defines them.
fn take_event(buf: &mut String) -> Option<(String, String)> {
    let at = buf.find("\n\n")?;
    let block: String = buf.drain(..at + 2).collect();
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_string(),
            "data" => data.push(value),
            _ => {} // comments (empty field), id, retry
        }
    }
    Some((name, data.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_with_comments_skipped() {
        let mut buf = String::from(
            ": keep-alive\n\nevent: workflow\nid: 1\ndata: {\"a\":\ndata: 1}\n\nevent: end\ndata:{}\n\npartial",
        );
        assert_eq!(
            take_event(&mut buf),
            Some(("message".into(), String::new()))
        );
        assert_eq!(
            take_event(&mut buf),
            Some(("workflow".into(), "{\"a\":\n1}".into()))
        );
        assert_eq!(take_event(&mut buf), Some(("end".into(), "{}".into())));
        assert_eq!(take_event(&mut buf), None);
        assert_eq!(buf, "partial");
    }

    #[test]
    fn contexts_round_trip_and_show_no_token() {
        let dir = std::env::temp_dir().join(format!("drover-ctx-{}", std::process::id()));
        let path = dir.join("contexts.yaml");
        let mut c = Contexts::default();
        c.upsert(Context {
            name: "lab".into(),
            server: "http://127.0.0.1:8080".into(),
            token: Some("s3cret-token-value".into()),
            token_file: None,
            token_env: None,
        });
        c.current_context = Some("lab".into());
        c.save(&path).unwrap();
        let back = Contexts::load(&path).unwrap();
        assert_eq!(back.contexts, c.contexts);
        assert_eq!(back.get("lab").unwrap().token_source(), "inline");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only");
        }
        assert!(
            Contexts::load(&dir.join("missing.yaml"))
                .unwrap()
                .contexts
                .is_empty()
        );
        std::fs::write(&path, "contexts: [{name: a, server: x, tokn: y}]").unwrap();
        let e = Contexts::load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("tokn"), "{e:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
