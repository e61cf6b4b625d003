//! One trace per workflow, across processes: a real `drover api` and two real worker processes
//! export their spans over OTLP/HTTP to a real receiver (`traces/otlp_receiver.py`, the
//! opentelemetry-proto types and Python's HTTP server); a drain against the lab must form one tree
//! (the submission at its root, the drain's step attempts under it, its migrations' attempts under
//! the step that started them, each Kubernetes call under its attempt) and the lab must have been
//! sent `traceparent` headers naming those calls.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_lab::{Lab, LabConfig};
use serde_json::{Value, json};

use crate::harness::*;
use crate::metrics::ApiProcess;

/// The Python OTLP/HTTP receiver; killed on drop.
struct Receiver {
    url: String,
    child: Child,
}

impl Receiver {
    fn start() -> Receiver {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the receiver's port");
        let port: u16 = line.trim().parse().expect("a port");
        Receiver {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    async fn spans(&self) -> Vec<Value> {
        reqwest::get(format!("{}/spans", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"][key].as_str()
}

fn is_step(span: &Value) -> bool {
    span["attributes"].get("attempt").is_some() && attr(span, "workflow_id").is_some()
}

#[tokio::test]
async fn a_drains_spans_form_one_tree_across_two_workers() {
    let receiver = Receiver::start();
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    let logs = std::env::temp_dir().join(format!("drover-traces-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let api = ApiProcess::spawn(&redis.url(), &logs.join("api.log"), &otel).await;
    let kube = lab.kube_url();
    let mut env = otel.to_vec();
    env.push(("DROVER_KUBE_URL", kube.as_str()));
    // Two steps at once each, so the drain's migrations spread over both processes.
    env.push(("DROVER_WORKER_CONCURRENCY", "2"));
    let workers = [
        WorkerProcess::spawn_with(&redis.url(), "traces-0", &logs, &env),
        WorkerProcess::spawn_with(&redis.url(), "traces-1", &logs, &env),
    ];
    let (drain, children) = api.drain_worker_04(&store).await;
    let children: BTreeSet<String> = children.into_iter().collect();
    let mut workflows = children.clone();
    workflows.insert(drain.clone());

    // Every workflow's every attempt is exported (the batch exporters flush every 100 ms).
    let mut attempts = 0;
    for id in &workflows {
        attempts += store
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .history
            .map_or(0, |h| h.len());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.spans().await;
        let steps = spans
            .iter()
            .filter(|s| is_step(s) && workflows.contains(attr(s, "workflow_id").unwrap()))
            .count();
        if steps >= attempts {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{steps} of {attempts} attempts' spans reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The bearer token that submitted the drain is in no span.
    assert!(
        !serde_json::to_string(&spans)
            .unwrap()
            .contains(crate::api::OPERATOR)
    );

    // The root: the API's submission span.
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == json!("submit drain-node"))
        .collect();
    assert_eq!(roots.len(), 1, "one submission span");
    let root = roots[0];
    assert_eq!(
        root["parent_span_id"],
        json!(""),
        "the submission is the root"
    );
    assert_eq!(root["service"], json!("drover-api"));
    assert_eq!(attr(root, "workflow_id"), Some(drain.as_str()));
    let trace = root["trace_id"].as_str().unwrap();
    let root_id = root["span_id"].as_str().unwrap();

    // Every attempt of the drain and of its migrations is in that one trace.
    let steps: Vec<&Value> = spans
        .iter()
        .filter(|s| is_step(s) && workflows.contains(attr(s, "workflow_id").unwrap()))
        .collect();
    assert_eq!(steps.len(), attempts, "one span per recorded attempt");
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    let mut pids = BTreeSet::new();
    for s in &steps {
        assert_eq!(s["trace_id"], json!(trace), "{s}");
        assert_eq!(s["service"], json!("drover-worker"));
        pids.insert(s["pid"].as_i64().unwrap());
        let parent = s["parent_span_id"].as_str().unwrap();
        if attr(s, "workflow_id") == Some(drain.as_str()) {
            assert_eq!(
                parent, root_id,
                "a drain attempt hangs off the submission: {s}"
            );
        } else {
            // A migration's attempts hang off the drain's attempt that started it.
            let p = by_id
                .get(parent)
                .unwrap_or_else(|| panic!("the parent of {s} was not exported"));
            assert!(is_step(p), "{p}");
            assert_eq!(attr(p, "workflow_id"), Some(drain.as_str()));
            let spawner = attr(p, "step").unwrap();
            assert!(
                attr(s, "workflow_id")
                    .unwrap()
                    .starts_with(&format!("{drain}.s")),
                "{s}"
            );
            assert!(!spawner.is_empty());
        }
    }
    let worker_pids: BTreeSet<i64> = workers.iter().map(|w| i64::from(w.pid())).collect();
    assert_eq!(pids, worker_pids, "attempts ran on both worker processes");

    // Each Kubernetes call of the trace is a client span under an attempt's span.
    let calls: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == json!(trace) && attr(s, "peer.service") == Some("kubernetes"))
        .collect();
    assert!(!calls.is_empty(), "no Kubernetes call in the trace");
    for c in &calls {
        assert_eq!(c["kind"], json!(3), "a client span: {c}");
        let parent = by_id
            .get(c["parent_span_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("the parent of {c} was not exported"));
        assert!(is_step(parent), "a call's parent is an attempt: {parent}");
    }
    let call_ids: BTreeSet<&str> = calls
        .iter()
        .map(|c| c["span_id"].as_str().unwrap())
        .collect();

    // The lab was told: each request it got carries the trace and names the call span that sent it.
    let traced = lab.traced();
    eprintln!(
        "{} workflows, {attempts} attempts on pids {pids:?}, {} Kubernetes calls, {} traceparents at the lab",
        workflows.len(),
        calls.len(),
        traced.len()
    );
    assert!(!traced.is_empty(), "the lab got no traceparent");
    for t in &traced {
        let parts: Vec<&str> = t.traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{t:?}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], trace, "{t:?} is outside the drain's trace");
        assert!(
            call_ids.contains(parts[2]),
            "{t:?} names no exported Kubernetes call span"
        );
    }
    assert_eq!(
        traced.len(),
        calls.len(),
        "one traceparent per Kubernetes call"
    );
}
