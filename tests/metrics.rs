//! Prometheus `/metrics` on a real `drover api` and on real worker processes, read with the
//! Prometheus project's own parsers (Python's `prometheus_client`, OpenMetrics and classic text):
//! after a drain against the lab and a step whose worker is killed, the families exist with the
//! values the test's own actions caused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_lab::{Lab, LabConfig};
use drover_workflows::State;
use serde_json::{Value, json};

use crate::api::OPERATOR;
use crate::harness::*;

/// `drover api` as a process of the real binary; killed on drop.
pub struct ApiProcess {
    pub base: String,
    child: Child,
}

impl ApiProcess {
    pub async fn spawn(redis_url: &str, log: &Path, env: &[(&str, &str)]) -> ApiProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("api")
            .env("DROVER_REDIS_URL", redis_url)
            .env("DROVER_API_LISTEN", format!("127.0.0.1:{port}"))
            .env("DROVER_API_TOKEN", OPERATOR)
            .env("DROVER_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("api log"))
            .spawn()
            .expect("spawn drover api");
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("{base}/healthz");
        wait_for(Duration::from_secs(10), "the API to listen", || async {
            reqwest::get(&url).await.is_ok()
        })
        .await;
        ApiProcess { base, child }
    }

    /// Submits a workflow as an operator; returns its id.
    pub async fn submit(&self, kind: &str, input: Value) -> String {
        let reply = reqwest::Client::new()
            .post(format!("{}/v1/workflows", self.base))
            .bearer_auth(OPERATOR)
            .json(&json!({"kind": kind, "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = reply.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }
}

impl ApiProcess {
    /// Drains the lab's `worker-04` through the API and waits for it to succeed; returns its id
    /// and its children (one migration each).
    pub async fn drain_worker_04(&self, store: &drover_store::Store) -> (String, Vec<String>) {
        let drain = self
            .submit(
                "drain-node",
                json!({"node": "worker-04", "non_migratable": "fail", "poll_ms": 100}),
            )
            .await;
        let v = &wait_all_finished(store, std::slice::from_ref(&drain), Duration::from_secs(60))
            .await[0];
        assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
        let children = v.children.clone().unwrap_or_default();
        assert!(!children.is_empty(), "the drain migrated nothing");
        (drain, children)
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scrape as the Prometheus parsers read it: family name -> its samples.
pub struct Scrape {
    pub families: BTreeMap<String, (String, Vec<Sample>)>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.families
            .values()
            .flat_map(|(_, s)| s)
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of those samples' values.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).iter().map(|s| s.value).sum()
    }

    pub fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).map(|(t, _)| t.as_str())
    }
}

/// GETs `url`, checks the content type and parses the body.
pub async fn scrape(url: &str) -> Scrape {
    let reply = reqwest::get(url).await.unwrap();
    assert_eq!(reply.status(), 200, "{url}");
    let content_type = reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = reply.text().await.unwrap();
    parse(&body)
}

/// Parses an OpenMetrics text with the Python parsers (both must accept it).
pub fn parse(body: &str) -> Scrape {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parsers refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = BTreeMap::new();
    for f in parsed["families"].as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect();
        families.insert(
            f["name"].as_str().unwrap().to_string(),
            (f["type"].as_str().unwrap().to_string(), samples),
        );
    }
    let classic: Vec<String> = serde_json::from_value(parsed["classic"].clone()).unwrap();
    assert!(!classic.is_empty(), "the classic parser found nothing");
    Scrape { families }
}

fn logs_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn metrics_count_what_a_drain_and_a_killed_worker_did() {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    let logs = logs_dir("metrics");
    let api = ApiProcess::spawn(&redis.url(), &logs.join("api.log"), &[]).await;
    let api_metrics = format!("{}/metrics", api.base);

    // Nothing yet: the families exist, every state counts zero.
    let before = scrape(&api_metrics).await;
    assert_eq!(before.kind("drover_workflows"), Some("gauge"));
    assert_eq!(before.sum("drover_workflows", &[]), 0.0);
    assert_eq!(before.sum("drover_queue_tasks", &[]), 0.0);

    let kube = lab.kube_url();
    let port_a = free_port();
    let listen_a = format!("127.0.0.1:{port_a}");
    let mut worker_a = WorkerProcess::spawn_with(
        &redis.url(),
        "metrics-a",
        &logs,
        &[
            ("DROVER_KUBE_URL", kube.as_str()),
            ("DROVER_WORKER_METRICS_LISTEN", listen_a.as_str()),
        ],
    );
    let (_, children) = api.drain_worker_04(&store).await;
    let children = children.len();

    let a = scrape(&format!("http://{listen_a}/metrics")).await;
    // Every Kubernetes call of the drain went through the instrumented client.
    assert_eq!(
        a.kind("drover_outgoing_call_duration_seconds"),
        Some("histogram")
    );
    let kube_gets = a.sum(
        "drover_outgoing_call_duration_seconds_count",
        &[("system", "kubernetes"), ("verb", "GET"), ("status", "200")],
    );
    assert!(kube_gets >= 1.0, "no Kubernetes GET recorded");
    let kube_posts = a.sum(
        "drover_outgoing_call_duration_seconds_count",
        &[("system", "kubernetes"), ("verb", "POST")],
    );
    assert!(
        kube_posts >= children as f64,
        "{kube_posts} POSTs for {children} migrations"
    );
    // Steps of both kinds ran, each attempt timed and counted by outcome.
    for kind in ["drain-node", "migrate-vmi"] {
        let runs = a.sum("drover_step_duration_seconds_count", &[("kind", kind)]);
        let attempts = a.sum("drover_attempts_total", &[("kind", kind)]);
        assert!(runs >= 1.0, "{kind}: no step timed");
        // An attempt whose lease was lost (a stalled machine) is counted but not timed.
        let lost = a.sum(
            "drover_attempts_total",
            &[("kind", kind), ("outcome", "lease-lost")],
        );
        assert_eq!(
            runs,
            attempts - lost,
            "{kind}: every timed attempt is counted"
        );
        assert!(
            a.sum("drover_dispatch_latency_seconds_count", &[("kind", kind)]) >= runs,
            "{kind}: a step started without its dispatch latency"
        );
        assert!(a.sum("drover_step_duration_seconds_sum", &[("kind", kind)]) > 0.0);
    }
    assert!(a.sum("drover_attempts_total", &[("outcome", "done")]) >= (children + 1) as f64);
    assert_eq!(a.sum("drover_lease_expirations_total", &[]), 0.0);

    // A step holding a permit, cut off by SIGKILL: the API sees the permit and the lease, the next
    // worker reclaims the expired lease.
    let slow = api
        .submit(
            "synthetic",
            json!({"steps": 1, "min_ms": 3000, "max_ms": 3000,
                   "permits": [{"name": "metrics-test", "capacity": 2}]}),
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let during = loop {
        let s = scrape(&api_metrics).await;
        let held = s.sum(
            "drover_semaphore_permits_in_use",
            &[("semaphore", "metrics-test")],
        );
        if held == 1.0 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never held its permit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        during.sum(
            "drover_live_workflows",
            &[("kind", "synthetic"), ("state", "running")]
        ),
        1.0
    );
    assert_eq!(
        during.sum("drover_queue_tasks", &[("queue", "leased")]),
        1.0
    );
    worker_a.kill9();
    let port_b = free_port();
    let listen_b = format!("127.0.0.1:{port_b}");
    let _worker_b = WorkerProcess::spawn_with(
        &redis.url(),
        "metrics-b",
        &logs,
        &[
            ("DROVER_KUBE_URL", kube.as_str()),
            ("DROVER_WORKER_METRICS_LISTEN", listen_b.as_str()),
        ],
    );
    let v =
        &wait_all_finished(&store, std::slice::from_ref(&slow), Duration::from_secs(30)).await[0];
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let b = scrape(&format!("http://{listen_b}/metrics")).await;
    assert_eq!(b.kind("drover_lease_expirations"), Some("counter"));
    assert_eq!(b.sum("drover_lease_expirations_total", &[]), 1.0);
    assert_eq!(
        b.sum(
            "drover_attempts_total",
            &[("kind", "synthetic"), ("outcome", "done")]
        ),
        1.0
    );

    // Everything ended: the store's gauges say what the test did, and the permit is free.
    let after = scrape(&api_metrics).await;
    assert_eq!(
        after.sum("drover_workflows", &[("state", "succeeded")]),
        (children + 2) as f64
    );
    assert_eq!(after.sum("drover_live_workflows", &[]), 0.0);
    assert_eq!(after.sum("drover_queue_tasks", &[]), 0.0);
    assert!(
        after
            .samples(
                "drover_semaphore_permits_in_use",
                &[("semaphore", "metrics-test")]
            )
            .is_empty(),
        "a released semaphore is no longer listed"
    );
}

#[tokio::test]
async fn metrics_can_ask_for_a_viewer_token() {
    let redis = Redis::start();
    let logs = logs_dir("metrics-auth");
    let api = ApiProcess::spawn(
        &redis.url(),
        &logs.join("api.log"),
        &[("DROVER_API_METRICS_AUTH", "true")],
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", api.base);
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].is_string() && body["detail"].is_string());
    let ok = http.get(&url).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}
