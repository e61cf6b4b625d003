//! Provisioning inputs checked against MAAS at submission (`drover_kinds::admission`), with the
//! API's MAAS port on the lab's MAAS: an unknown pool, zone or tag, or constraints no machine
//! matches, get a 422 naming what to fix, and so do the inputs the kinds refuse by themselves (zero
//! nodes, malformed constraints, a literal secret, never repeated). Nothing is written to Redis (key
//! count and AOF size) or to MAAS (the lab's audit). While MAAS cannot be asked (503s, down, a
//! wrong API key, no answer), such a submission gets 503 with Retry-After and writes nothing; kinds
//! without constraints are not held up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_kinds::admission::MaasAdmission;
use drover_lab::{Lab, LabConfig};
use drover_workflows::Registry;
use drover_workflows::ports::maas::Maas;
use drover_workflows::ports::secrets::Secret;
use serde_json::{Value, json};

use super::{footprint, host, raw, request};
use crate::api::{OPERATOR, start_api_with};
use crate::harness::*;
use crate::provision::{JOIN_COMMAND, maas_client};

/// The kinds with the admission check the API has in `drover api` with `[maas]`.
fn admitting(maas: Arc<dyn Maas>) -> Registry {
    drover_kinds::builtin().with_admission(Arc::new(MaasAdmission::new(maas)))
}

/// A `provision-node` input with these constraints.
fn node(constraints: Value) -> Value {
    json!({"constraints": constraints, "join": {"secret": "join-command"}})
}

fn submit(kind: &str, input: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(&json!({"kind": kind, "input": input})).unwrap();
    request("POST", "/v1/workflows", Some(OPERATOR), &[], Some(&body))
}

#[tokio::test]
async fn provisioning_inputs_maas_would_refuse_get_a_422_saying_what_to_fix_and_write_nothing() {
    let redis = Redis::start_with(true);
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference())
        .await
        .expect("lab starts");
    let api = start_api_with(&store, admitting(maas_client(&lab)), |_| {}).await;
    let addr = host(&api.base);

    type Case<'a> = (&'a str, &'a str, Value, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "an unknown pool",
            "provision-node",
            node(json!({"pool": "nope"})),
            &["constraints.pool: MAAS says: No such pool: 'nope'."],
        ),
        (
            "an unknown zone",
            "scale-out",
            json!({"count": 2, "node": node(json!({"pool": "spare", "zone": "az9"}))}),
            &["node.constraints.zone", "'az9'"],
        ),
        (
            "an unknown tag",
            "replace-node",
            json!({"node": "worker-01", "with": node(json!({"tags": ["vmo-worker", "nvme"]}))}),
            &["with.constraints.tags", "'nvme'"],
        ),
        (
            "an unknown tag for the surge nodes",
            "rolling-maintenance",
            json!({"nodes": ["worker-01"], "surge": 1, "surge_node": node(json!({"tags": ["gpus"]}))}),
            &["surge_node.constraints.tags", "'gpus'"],
        ),
        (
            "a tag no machine has",
            "provision-node",
            node(json!({"tags": ["gpu"]})),
            &[
                "constraints: no machine matches",
                "MAAS has no machine with tags [\"gpu\"]; change the pool, zone or tags",
            ],
        ),
        (
            "more CPUs than any machine has",
            "provision-node",
            node(json!({"pool": "spare", "cpu_count": 4096})),
            &[
                "cpu_count 4096 is more than any machine in pool \"spare\" has (at most 64, among 4)",
            ],
        ),
        (
            "not_tags that exclude every machine",
            "scale-out",
            json!({"count": 1, "node": node(json!({"pool": "spare", "not_tags": ["vmo-worker"]}))}),
            &[
                "node.constraints: no machine matches",
                "every machine in pool \"spare\" (4) has one of not_tags [\"vmo-worker\"]",
            ],
        ),
        (
            "zero nodes",
            "scale-out",
            json!({"count": 0, "node": node(json!({"pool": "spare"}))}),
            &["count must be between 1 and 256"],
        ),
        (
            "cpu_count that is not a number",
            "provision-node",
            node(json!({"pool": "spare", "cpu_count": "x"})),
            &["constraints.cpu_count", "invalid type: string \"x\""],
        ),
        (
            "an unknown constraint",
            "scale-out",
            json!({"count": 1, "node": node(json!({"pool": "spare", "cpus": 4}))}),
            &["node.constraints", "unknown field `cpus`"],
        ),
        (
            "a pool name MAAS cannot have",
            "provision-node",
            node(json!({"pool": "no spaces"})),
            &["pool \"no spaces\" is not a MAAS name"],
        ),
        (
            "a literal join command",
            "provision-node",
            json!({"constraints": {"pool": "spare"}, "join": JOIN_COMMAND}),
            &["join: this field is a secret"],
        ),
    ];
    let before = footprint(&store).await;
    let mut failures = Vec::new();
    for (label, kind, input, needles) in &cases {
        let reply = raw(&addr, &submit(kind, input)).await;
        let body = reply.json();
        let detail = body["detail"].as_str().unwrap_or_default();
        if reply.status != 422 || body["error"] != "invalid input" {
            failures.push(format!(
                "{label}: expected 422 invalid input, got {} {body}",
                reply.status
            ));
        }
        for needle in *needles {
            if !detail.contains(needle) {
                failures.push(format!("{label}: the detail lacks {needle:?}: {detail}"));
            }
        }
        let text = String::from_utf8_lossy(&reply.body);
        if text.contains("0123456789abcdef") || text.contains("kubeadm") {
            failures.push(format!(
                "{label}: the reply repeats the join command: {text}"
            ));
        }
        let after = footprint(&store).await;
        if after != before {
            failures.push(format!("{label}: wrote to Redis: {before:?} -> {after:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // What MAAS has is accepted, in each kind that carries constraints.
    let good = node(
        json!({"pool": "spare", "zone": "az2", "tags": ["vmo-worker"],
        "not_tags": ["gpu", "no-such-tag"], "cpu_count": 32, "memory_mib": 131072}),
    );
    for (kind, input) in [
        ("provision-node", good.clone()),
        ("scale-out", json!({"count": 2, "node": good.clone()})),
        (
            "replace-node",
            json!({"node": "worker-01", "with": good.clone()}),
        ),
    ] {
        let reply = raw(&addr, &submit(kind, &input)).await;
        assert_eq!(reply.status, 201, "{kind}: {}", reply.json());
    }
    assert_ne!(footprint(&store).await, before);
    // The check only read: MAAS saw no write.
    let writes: Vec<_> = lab
        .audit()
        .into_iter()
        .filter(|e| e.api == "maas")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn while_maas_cannot_be_asked_provisioning_gets_503_with_retry_after_and_nothing_is_written()
{
    let redis = Redis::start_with(true);
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference())
        .await
        .expect("lab starts");
    let api = start_api_with(&store, admitting(maas_client(&lab)), |_| {}).await;
    let addr = host(&api.base);
    let good = node(json!({"pool": "spare"}));
    let unchecked = |reply: &super::Reply, retry_after: &str, label: &str| {
        let body = reply.json();
        assert_eq!(reply.status, 503, "{label}: {body}");
        assert_eq!(body["error"], "admission unavailable", "{label}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("nothing was written"), "{label}: {detail}");
        assert!(
            !detail.contains("127.0.0.1") && !detail.contains("MAAS/api"),
            "{label}: a 503 does not show internals: {detail}"
        );
        assert_eq!(reply.header("retry-after"), Some(retry_after), "{label}");
    };
    let before = footprint(&store).await;

    // MAAS answers 503 with a Retry-After longer than the adapter waits: the client gets it.
    lab.inject(drover_lab::Fault::Http {
        api: drover_lab::Api::Maas,
        method: Some("GET".into()),
        path_contains: Some("machines".into()),
        status: 503,
        retry_after: Some(30),
        message: None,
        count: 1,
    })
    .unwrap();
    let reply = raw(&addr, &submit("provision-node", &good)).await;
    unchecked(&reply, "30", "MAAS answers 503");
    assert_eq!(footprint(&store).await, before);
    // Once MAAS answers, the same submission is accepted.
    let reply = raw(&addr, &submit("provision-node", &good)).await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    let before = footprint(&store).await;

    // A MAAS that refuses Drover's API key refuses every listing: MAAS's fault, not the input's,
    // even for a pool MAAS does not have.
    let wrong_key: Arc<dyn Maas> = drover_maas::Client::new(drover_maas::Config::new(
        lab.maas_url(),
        Secret::new("wrong:wrong:wrong"),
    ))
    .unwrap()
    .port();
    let locked_out = start_api_with(&store, admitting(wrong_key), |_| {}).await;
    let reply = raw(
        &host(&locked_out.base),
        &submit("provision-node", &node(json!({"pool": "nope"}))),
    )
    .await;
    unchecked(&reply, "10", "a wrong API key");
    assert_eq!(footprint(&store).await, before);

    // MAAS accepts the connection and never answers: cut off at admission_timeout_ms.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_maas: Arc<dyn Maas> = drover_maas::Client::new(drover_maas::Config::new(
        format!("http://{}/MAAS/", silent.local_addr().unwrap()),
        Secret::new(lab.maas_api_key()),
    ))
    .unwrap()
    .port();
    let impatient = start_api_with(&store, admitting(silent_maas), |c| {
        c.admission_timeout_ms = 300;
    })
    .await;
    let started = Instant::now();
    let reply = raw(&host(&impatient.base), &submit("provision-node", &good)).await;
    unchecked(&reply, "10", "a MAAS that never answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(footprint(&store).await, before);

    // MAAS is down: provisioning waits for it, other kinds do not.
    lab.shutdown().await;
    let reply = raw(
        &addr,
        &submit("scale-out", &json!({"count": 1, "node": good})),
    )
    .await;
    unchecked(&reply, "10", "MAAS down");
    assert_eq!(footprint(&store).await, before);
    let reply = raw(&addr, &submit("synthetic", &json!({"steps": 1}))).await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    drop(silent);
}

#[tokio::test]
async fn drover_api_with_maas_configured_checks_constraints_and_never_shows_the_key() {
    let redis = Redis::start();
    let lab = Lab::start(LabConfig::reference())
        .await
        .expect("lab starts");
    let dir = crate::lab::support::temp_dir("admission");
    let key_path = dir.join("maas-key");
    std::fs::write(&key_path, format!("{}\n", lab.maas_api_key())).unwrap();
    let port = free_port();
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        format!(
            r#"redis_url = "{}"
[api]
listen = "127.0.0.1:{port}"
tokens = [{{ name = "ops", token = "{OPERATOR}", role = "operator" }}]
[secrets]
maas-api-key = {{ file = "{}" }}
[maas]
url = "{}"
api_key = {{ secret = "maas-api-key" }}
"#,
            redis.url(),
            key_path.display(),
            lab.maas_url()
        ),
    )
    .unwrap();
    let log_path = dir.join("api.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["api", "--config"])
        .arg(&config)
        .env_remove("DROVER_LOG_FORMAT")
        .env("DROVER_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(10), "the API to listen", || async {
        tokio::net::TcpStream::connect(&addr).await.is_ok()
    })
    .await;
    let reply = raw(
        &addr,
        &submit("provision-node", &node(json!({"pool": "nope"}))),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.json());
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("constraints.pool: MAAS says: No such pool: 'nope'."),
        "{}",
        reply.json()
    );
    let reply = raw(
        &addr,
        &submit("provision-node", &node(json!({"pool": "spare"}))),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("Submissions are checked against MAAS"),
        "{text}"
    );
    // The key's parts (consumer key, token key, token secret) appear nowhere in the log.
    for part in lab.maas_api_key().split(':') {
        assert!(
            !text.contains(part),
            "the MAAS API key is in the log:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
