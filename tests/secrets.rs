//! Secrets by reference, end to end, with the real `drover api` and `drover worker` processes logging
//! at debug level: workflows name secrets that the worker reads from an environment variable, a file
//! and a Kubernetes Secret in the lab; then every log line of both processes, every key and value in
//! Redis and every API response is searched for the values (and their base64): 0 hits. A literal
//! value in a secret field is refused with 422 without echo, and a secret the worker does not have
//! fails the workflow with a message that names it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_lab::{Lab, LabConfig};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::OPERATOR;
use crate::harness::*;

/// `drover api` as a child process with its stderr in `log`; SIGKILLed on drop if still running.
struct ApiProcess {
    base: String,
    log: PathBuf,
    child: Child,
}

impl ApiProcess {
    async fn spawn(redis_url: &str, config: &Path, dir: &Path) -> ApiProcess {
        let port = free_port();
        let log = dir.join("api.log");
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("api")
            .arg("--config")
            .arg(config)
            .env("DROVER_REDIS_URL", redis_url)
            .env("DROVER_API_LISTEN", format!("127.0.0.1:{port}"))
            .env("DROVER_API_TOKEN", OPERATOR)
            .env("DROVER_LOG", "debug")
            .env_remove("DROVER_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("api log"))
            .spawn()
            .expect("spawn drover api");
        let addr = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(10), "the API to listen", || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
        ApiProcess {
            base: format!("http://{addr}"),
            log,
            child,
        }
    }

    /// SIGTERM and wait, so everything it logged is in the file.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every API response body the test received, to be searched at the end.
struct Client {
    base: String,
    http: reqwest::Client,
    seen: Vec<String>,
}

impl Client {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(OPERATOR);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status();
        let text = resp.text().await.expect("API body");
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.seen.push(text);
        (status, value)
    }

    async fn submit(&mut self, input: Value) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/workflows",
                Some(&json!({"kind": "synthetic", "input": input})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Polls the workflow until it has ended; returns its detail view.
    async fn finished(&mut self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.call("GET", &format!("/v1/workflows/{id}"), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if ["succeeded", "failed", "cancelled"].contains(&body["state"].as_str().unwrap_or(""))
            {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "workflow {id} still open: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn random_value() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The base64 form, as a Kubernetes Secret carries it.
fn base64(value: &str) -> String {
    serde_json::to_value(ByteString(value.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Every key of Redis and every value under it, dumped by type.
async fn redis_dump(url: &str) -> Vec<Vec<u8>> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(!keys.is_empty(), "the workflows left nothing in Redis");
    let mut dump = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        let cmd = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
            "none" => continue, // expired between SCAN and TYPE
            other => panic!(
                "key {} has a type this dump does not read: {other}",
                String::from_utf8_lossy(&key)
            ),
        };
        let value: redis::Value = cmd.query_async(&mut con).await.unwrap();
        dump.push(key);
        dump.push(format!("{value:?}").into_bytes());
        flatten(&value, &mut dump);
    }
    dump
}

/// The byte strings inside a reply, so a value is found whatever `Debug` does to bytes.
fn flatten(value: &redis::Value, into: &mut Vec<Vec<u8>>) {
    match value {
        redis::Value::BulkString(b) => into.push(b.clone()),
        redis::Value::SimpleString(s) => into.push(s.clone().into_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().for_each(|v| flatten(v, into))
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, into);
            flatten(v, into);
        }),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_reach_steps_and_nothing_else() {
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!(
        "drover-secrets-{}-{}",
        redis.port,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Three values, one per source.
    let env_value = random_value();
    let file_value = random_value();
    let kube_value = random_value();
    let file = dir.join("join-token");
    std::fs::write(&file, format!("{file_value}\n")).unwrap();
    let lab = Lab::start(LabConfig::reference())
        .await
        .expect("lab starts");
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(cluster.client().clone(), "default");
    let mut object = Secret::default();
    object.metadata.name = Some("drover-test".into());
    object.data = Some(
        [(
            "token".to_string(),
            ByteString(format!("{kube_value}\n").into_bytes()),
        )]
        .into(),
    );
    secrets
        .create(&kube::api::PostParams::default(), &object)
        .await
        .expect("create the Secret in the lab");
    // A Secret whose data is not base64, which a real apiserver would never serve: it stands in for
    // any body the client cannot decode (kube-rs logs such a body whole, at warn level).
    let undecodable = random_value();
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/namespaces/default/secrets",
            lab.kube_url()
        ))
        .json(&json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "drover-undecodable"},
            "data": {"token": format!("{undecodable}!!")},
        }))
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{:?}", reply.text().await);
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[secrets]
maas-api-key = {{ env = "DROVER_TEST_MAAS_API_KEY" }}
join-token = {{ file = {file:?} }}

[secrets.ticketing]
kubernetes = {{ namespace = "default", name = "drover-test", key = "token" }}

[secrets.undecodable]
kubernetes = {{ namespace = "default", name = "drover-undecodable", key = "token" }}
"#
        ),
    )
    .unwrap();

    let mut api = ApiProcess::spawn(&redis.url(), &config, &dir).await;
    let config_path = config.to_str().unwrap();
    let kube_url = lab.kube_url();
    let mut worker = WorkerProcess::spawn_with(
        &redis.url(),
        "secrets-worker",
        &dir,
        &[
            ("DROVER_CONFIG", config_path),
            ("DROVER_LOG", "debug"),
            ("DROVER_KUBE_URL", &kube_url),
            ("DROVER_TEST_MAAS_API_KEY", &env_value),
        ],
    );
    let mut client = Client {
        base: api.base.clone(),
        http: reqwest::Client::new(),
        seen: Vec::new(),
    };

    // Each source reaches the steps: they report the length of what they resolved.
    let mut ids = Vec::new();
    for (name, value) in [
        ("maas-api-key", &env_value),
        ("join-token", &file_value),
        ("ticketing", &kube_value),
    ] {
        let id = client
            .submit(json!({"steps": 2, "secret": {"secret": name}}))
            .await;
        let done = client.finished(&id).await;
        assert_eq!(done["state"], "succeeded", "{name}: {done}");
        assert_eq!(done["input"]["secret"], json!({"secret": name}), "{done}");
        let steps = done["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{done}");
        for step in steps {
            assert_eq!(
                step["output"]["secret_bytes"],
                json!(value.len()),
                "{name}: {done}"
            );
        }
        ids.push(id);
    }

    // A literal where a secret goes: 422, and the reply does not repeat it.
    let (status, body) = client
        .call(
            "POST",
            "/v1/workflows",
            Some(&json!({"kind": "synthetic", "input": {"steps": 1, "secret": "hunter2-literal"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    assert!(
        body.to_string().contains("this field is a secret"),
        "{body}"
    );

    // A secret the worker does not have, and one it cannot decode: the workflow fails, naming it.
    for (name, says) in [
        ("no-such-secret", "is configured on this worker"),
        ("undecodable", "could not be decoded"),
    ] {
        let id = client
            .submit(json!({"steps": 1, "secret": {"secret": name}}))
            .await;
        let failed = client.finished(&id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        let error = failed["error"].to_string();
        assert!(error.contains(name) && error.contains(says), "{failed}");
        ids.push(id);
    }

    // Every other read the API offers.
    client.call("GET", "/v1/workflows", None).await;
    client
        .call("GET", "/v1/workflows?state=succeeded", None)
        .await;
    client
        .call("GET", "/v1/workflows?kind=synthetic&limit=1", None)
        .await;
    for id in &ids {
        let (_, detail) = client
            .call("GET", &format!("/v1/workflows/{id}"), None)
            .await;
        for child in detail["children"].as_array().into_iter().flatten() {
            client
                .call(
                    "GET",
                    &format!("/v1/workflows/{}", child.as_str().unwrap()),
                    None,
                )
                .await;
        }
    }

    // Stop both processes so every line they logged is on disk.
    worker.terminate();
    assert!(
        worker.wait_exit(Duration::from_secs(20)).await,
        "the worker did not stop cleanly"
    );
    api.stop();
    let worker_log = std::fs::read_to_string(&worker.log).unwrap();
    let api_log = std::fs::read_to_string(&api.log).unwrap();
    // The logs are the real, verbose ones: the worker logged each resolution (by name).
    for name in ["maas-api-key", "join-token", "ticketing"] {
        assert!(
            worker_log
                .lines()
                .any(|l| l.contains("Secret resolved.") && l.contains(name)),
            "no debug line for {name} in the worker log:\n{worker_log}"
        );
    }
    assert_eq!(
        api_log.matches("Workflow submitted.").count(),
        5,
        "the API log is not the one written:\n{api_log}"
    );

    let dump = redis_dump(&redis.url()).await;
    // The dump holds what the workflows wrote: inputs with the names, outputs with the lengths.
    for control in ["maas-api-key", "secret_bytes", "no-such-secret"] {
        assert!(
            dump.iter().any(|b| contains(b, control)),
            "{control} not in the Redis dump"
        );
    }
    if std::env::var_os("DROVER_TEST_SHOW_LOGS").is_some() {
        eprintln!("{worker_log}");
    }
    let mut hits = Vec::new();
    for value in [&env_value, &file_value, &kube_value, &undecodable] {
        for needle in [value.clone(), base64(value)] {
            for (place, lines) in [("worker log", &worker_log), ("API log", &api_log)] {
                hits.extend(
                    lines
                        .lines()
                        .filter(|l| l.contains(&needle))
                        .map(|l| format!("{place}: {l}")),
                );
            }
            hits.extend(
                client
                    .seen
                    .iter()
                    .filter(|r| r.contains(&needle))
                    .map(|r| format!("API response: {r}")),
            );
            hits.extend(
                dump.iter()
                    .filter(|b| contains(b, &needle))
                    .map(|b| format!("Redis: {}", String::from_utf8_lossy(b))),
            );
        }
    }
    assert!(hits.is_empty(), "secret values found:\n{}", hits.join("\n"));
    assert!(client.seen.len() > 10 && worker_log.lines().count() > 10);

    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_worker_refuses_a_kubernetes_secret_without_a_cluster() {
    let dir = std::env::temp_dir().join(format!(
        "drover-secrets-nokube-{}-{}",
        free_port(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        "redis_url = \"redis://127.0.0.1:1/0\"\n[secrets]\nticketing = { kubernetes = { namespace = \"default\", name = \"t\", key = \"k\" } }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("worker")
        .arg("--config")
        .arg(&config)
        .env_remove("DROVER_KUBE_URL")
        .env_remove("DROVER_KUBECONFIG")
        .env_remove("DROVER_REDIS_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("secrets.ticketing") && stderr.contains("[kube]"),
        "{stderr}"
    );
    // A second source in one entry stops every role at load.
    std::fs::write(&config, "[secrets]\nx = { env = \"A\", file = \"/b\" }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("api")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("exactly one of"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
