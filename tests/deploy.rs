//! The two ways to run Drover, checked: the kustomize overlays (deploy/overlays/*) render with the
//! real `kubectl kustomize`, every object validates against the Kubernetes schema of its kind and
//! version (kubernetes-validate, strict) and the ScaledObject against KEDA's published CRD
//! (tests/deploy/validate.py), the pods follow the house rules (non-root, read-only root
//! filesystem, no Secret inlined, the config built from deploy/drover.example.toml, a worker grace
//! period longer than its drain and a lease); the rendered API and worker containers' environment
//! and config, run as processes, serve and drain a node of the lab; and the systemd units' commands
//! do the same on a plain host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::OPERATOR;
use crate::harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: [&str; 3] = ["dev", "production", "production-hpa"];
/// The oldest and the newest Kubernetes minor the manifests are checked against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// `kubectl kustomize deploy/overlays/<overlay>`, as objects.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy/overlays/{overlay}")])
        .output()
        .expect("run kubectl (apt-get install kubernetes-client)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = yaml_serde::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn pod_specs(docs: &[Value]) -> Vec<(&str, &Value)> {
    docs.iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap(),
                &d["spec"]["template"],
            )
        })
        .collect()
}

#[test]
fn every_overlay_renders_and_each_object_is_valid_for_its_kind_and_version() {
    let dir = std::env::temp_dir().join(format!("drover-deploy-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    for overlay in OVERLAYS {
        let (text, docs) = render(overlay);
        let file = dir.join(format!("{overlay}.yaml"));
        std::fs::write(&file, &text).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = Command::new("python3")
                .arg(format!("{ROOT}/tests/deploy/validate.py"))
                .arg(&file)
                .arg(format!(
                    "{ROOT}/tests/deploy/keda-scaledobject-v1alpha1.schema.yaml"
                ))
                .arg(version)
                .output()
                .expect("run python3");
            assert!(
                out.status.success(),
                "validate.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(
                reports.len(),
                docs.len(),
                "{overlay}: one report per object"
            );
            let bad: Vec<&Value> = reports
                .iter()
                .filter(|r| r["errors"] != json!([]))
                .collect();
            assert!(
                bad.is_empty(),
                "{overlay} on Kubernetes {version}: {bad:#?}"
            );
        }
        let kinds: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for expected in [
            "Namespace/drover",
            "ServiceAccount/drover-api",
            "ServiceAccount/drover-worker",
            "Service/drover-api",
            "Service/drover-redis",
            "Deployment/drover-api",
            "Deployment/drover-worker",
            "StatefulSet/drover-redis",
            "PodDisruptionBudget/drover-api",
        ] {
            assert!(
                kinds.iter().any(|k| k == expected),
                "{overlay}: no {expected} in {kinds:?}"
            );
        }
        let scaled = kinds.iter().any(|k| k == "ScaledObject/drover-worker");
        let hpa = kinds
            .iter()
            .any(|k| k == "HorizontalPodAutoscaler/drover-worker");
        if scaled {
            // The trigger asks for a metric the API exports (Prometheus scrapes /metrics).
            let query = find(&docs, "ScaledObject", "drover-worker")["spec"]["triggers"][0]
                ["metadata"]["query"]
                .as_str()
                .unwrap()
                .to_string();
            let metric = query
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| w.starts_with("drover_"))
                .unwrap();
            let exported =
                std::fs::read_to_string(format!("{ROOT}/services/telemetry/src/metrics.rs"))
                    .unwrap();
            assert!(
                exported.contains(&format!("\"{metric}\"")),
                "{overlay}: the KEDA query's {metric} is not a metric Drover exports"
            );
        }
        match overlay {
            "dev" => assert!(!scaled && !hpa, "dev scales by hand"),
            "production" => assert!(scaled && !hpa, "production scales on queue depth"),
            _ => assert!(hpa && !scaled, "production-hpa scales on CPU"),
        }
        house_rules(overlay, &docs);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What every overlay keeps, beyond the schemas.
fn house_rules(overlay: &str, docs: &[Value]) {
    // Secrets are referenced, never defined or inlined.
    assert!(
        docs.iter().all(|d| d["kind"] != "Secret"),
        "{overlay}: a Secret is defined in the manifests"
    );
    let example = std::fs::read_to_string(format!("{ROOT}/deploy/drover.example.toml")).unwrap();
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the config ConfigMap");
    assert_eq!(
        config["data"]["drover.toml"].as_str(),
        Some(example.as_str()),
        "{overlay}: the ConfigMap is deploy/drover.example.toml"
    );
    let config_name = config["metadata"]["name"].as_str().unwrap();
    let accounts: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for (name, template) in pod_specs(docs) {
        let spec = &template["spec"];
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{overlay} {name}"
        );
        if let Some(sa) = spec["serviceAccountName"].as_str() {
            assert!(
                accounts.contains(&sa),
                "{overlay} {name}: no ServiceAccount {sa}"
            );
        }
        for c in spec["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay} {name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay} {name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{overlay} {name}"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{overlay} {name}"
            );
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    assert!(
                        ["drover-api-tokens", "drover-redis"].contains(&secret),
                        "{overlay} {name}: Secret {secret} is not documented"
                    );
                }
                let value = e["value"].as_str().unwrap_or_default();
                assert!(
                    !e["name"].as_str().unwrap().contains("TOKEN") || value.is_empty(),
                    "{overlay} {name}: a token inlined in {}",
                    e["name"]
                );
            }
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert_eq!(cm, config_name, "{overlay} {name}: the generated config");
            }
        }
        if overlay != "dev" {
            let image = spec["containers"][0]["image"].as_str().unwrap();
            assert!(
                !image.ends_with(":latest") && image.contains(':'),
                "{overlay} {name}: image {image} is not pinned"
            );
        }
    }
    // Services and the PDB select pods that exist.
    for d in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Service" | "PodDisruptionBudget")))
    {
        let selector = match d["kind"].as_str() {
            Some("Service") => &d["spec"]["selector"],
            _ => &d["spec"]["selector"]["matchLabels"],
        };
        let matched = pod_specs(docs).iter().any(|(_, t)| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| t["metadata"]["labels"][k] == *v)
        });
        assert!(
            matched,
            "{overlay}: {} {} selects no pods",
            d["kind"], d["metadata"]["name"]
        );
    }
    // The worker outlives its own drain (shutdown_grace_ms) and a lease.
    let worker: toml::Value = toml::from_str(&example).unwrap();
    let grace_ms = worker["worker"]["shutdown_grace_ms"].as_integer().unwrap();
    let lease_ms = worker["worker"]["lease_ms"].as_integer().unwrap();
    let period = find(docs, "Deployment", "drover-worker")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        period * 1000 > grace_ms.max(lease_ms),
        "{overlay}: {period} s"
    );
    // The API's probes and port agree with where it listens.
    let api = &find(docs, "Deployment", "drover-api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(api["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(api["livenessProbe"]["httpGet"]["path"], "/healthz");
    let listen = env_value(api, "DROVER_API_LISTEN");
    assert_eq!(
        listen.rsplit(':').next().unwrap(),
        api["ports"][0]["containerPort"].to_string()
    );
}

fn env_value(container: &Value, name: &str) -> String {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A container's environment as the kubelet gives it: Secrets from `secrets`, the pod's name, and
/// `$(VAR)` expanded from the variables before it.
fn container_env(
    container: &Value,
    secrets: &BTreeMap<(&str, &str), &str>,
    pod: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let key = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            secrets
                .get(&key)
                .unwrap_or_else(|| panic!("no secret {key:?}"))
                .to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.to_string()
        } else {
            panic!("an env source the test does not know: {e}");
        };
        env.push((name, value));
    }
    env
}

/// A process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mounts the pod's ConfigMap and emptyDirs under `dir`, rewrites the paths and the addresses the
/// cluster's DNS would resolve, and starts the container's command as a process of the real binary.
fn run_container(
    container: &Value,
    config_text: &str,
    env: Vec<(String, String)>,
    rewrites: &[(&str, String)],
    dir: &Path,
    log: &str,
) -> Killed {
    let etc = dir.join("etc-drover");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("drover.toml"), config_text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap()),
    )
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("DROVER_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join(log)).unwrap());
    for (k, mut v) in env {
        v = v.replace("/etc/drover", etc.to_str().unwrap());
        for (from, to) in rewrites {
            v = v.replace(from, to);
        }
        if v.starts_with("/var/lib/drover") {
            let mounted = dir.join(v.trim_start_matches('/'));
            std::fs::create_dir_all(&mounted).unwrap();
            v = mounted.to_str().unwrap().to_string();
        }
        cmd.env(k, v);
    }
    Killed(cmd.spawn().expect("start drover"))
}

#[tokio::test]
async fn the_rendered_containers_serve_the_api_and_drain_a_node_of_the_lab() {
    let (_, docs) = render("dev");
    let redis = Redis::start();
    let store = redis.store().await;
    let password = "redis-password-0123456789";
    let mut conn = store.connection();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut conn)
        .await
        .unwrap();
    let lab = drover_lab::Lab::start(drover_lab::LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("drover-pods-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    lab.write_kubeconfig(&kubeconfig).unwrap();
    let secrets = BTreeMap::from([
        (("drover-api-tokens", "operator"), OPERATOR),
        (("drover-api-tokens", "viewer"), "viewer-token-0123456789"),
        (("drover-redis", "password"), password),
    ]);
    let config_text =
        docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["drover.toml"]
            .as_str()
            .unwrap()
            .to_string();
    let port = free_port();
    let redis_addr = redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches("/0")
        .to_string();
    let metrics_port = free_port();
    let rewrites = [
        ("drover-redis:6379", redis_addr),
        ("0.0.0.0:8080", format!("127.0.0.1:{port}")),
        ("0.0.0.0:9464", format!("127.0.0.1:{metrics_port}")),
    ];
    let api = &find(&docs, "Deployment", "drover-api")["spec"]["template"]["spec"]["containers"][0];
    let _api = run_container(
        api,
        &config_text,
        container_env(api, &secrets, "drover-api-0"),
        &rewrites,
        &dir.join("api"),
        "api.log",
    );
    let worker =
        &find(&docs, "Deployment", "drover-worker")["spec"]["template"]["spec"]["containers"][0];
    let mut env = container_env(worker, &secrets, "drover-worker-0");
    // Outside a pod, the in-cluster config falls back to $KUBECONFIG: the lab.
    env.push(("KUBECONFIG".into(), kubeconfig.to_str().unwrap().into()));
    let _worker = run_container(
        worker,
        &config_text,
        env,
        &rewrites,
        &dir.join("worker"),
        "worker.log",
    );

    // The probes answer as the kubelet asks them.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = api["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the API's readiness probe",
        || async {
            http.get(format!("{base}{ready}"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let live = api["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert_eq!(
        http.get(format!("{base}{live}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The operator token from the Secret submits a drain; the worker drains the lab's node.
    let input = crate::drain::drain_input("worker-03", "shutdown-restart");
    let id = submit_as_operator(&http, &base, "drain-node", input).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let view = loop {
        let w = store.get(&id).await.unwrap().unwrap();
        if w.state.is_terminal() {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the drain did not end: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        view.state,
        drover_workflows::State::Succeeded,
        "{:?}",
        view.error
    );
    let migrated = view.result.as_ref().unwrap()["migrated"]
        .as_array()
        .unwrap();
    assert!(!migrated.is_empty());
    assert!(
        lab.list("virtualmachineinstances.kubevirt.io", None)
            .iter()
            .all(|v| v["status"]["nodeName"] != "worker-03"),
        "every VM moved off worker-03 through the lab's API"
    );
    // The worker serves its metrics where its pod's annotations say.
    let scraped = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains("drover_"), "{scraped}");
    let history = view.history.unwrap();
    assert!(
        history.iter().all(|h| h["worker"] == "drover-worker-0"),
        "the worker took its name from the pod: {history:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `POST /v1/workflows` with the operator token; the new workflow's id.
async fn submit_as_operator(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    input: Value,
) -> String {
    let resp = http
        .post(format!("{base}/v1/workflows"))
        .bearer_auth(OPERATOR)
        .json(&json!({"kind": kind, "input": input}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `KEY=value` lines of a systemd unit's `[Service]` section.
fn unit(path: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/{path}")).unwrap();
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
        {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Starts a unit's ExecStart with the binary and config paths of this checkout and the
/// EnvironmentFile's variables.
fn exec_start(unit: &BTreeMap<String, String>, env_file: &Path, log: &Path) -> Killed {
    let words: Vec<String> = unit["ExecStart"]
        .split_whitespace()
        .map(|w| match w {
            "/usr/local/bin/drover" => env!("CARGO_BIN_EXE_drover").to_string(),
            "/etc/drover/drover.toml" => format!("{ROOT}/deploy/drover.example.toml"),
            w => w.to_string(),
        })
        .collect();
    assert_eq!(
        unit.get("EnvironmentFile").map(String::as_str),
        Some("-/etc/drover/secrets.env"),
        "the unit reads its secrets from an EnvironmentFile"
    );
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for line in std::fs::read_to_string(env_file).unwrap().lines() {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    Killed(cmd.spawn().expect("start the unit's command"))
}

#[tokio::test]
async fn the_systemd_units_run_the_api_and_a_worker_on_a_plain_host() {
    let redis = Redis::start();
    let store = redis.store().await;
    let dir: PathBuf = std::env::temp_dir().join(format!("drover-units-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let env_file = dir.join("secrets.env");
    std::fs::write(
        &env_file,
        format!(
            "DROVER_REDIS_URL={}\nDROVER_API_TOKEN={OPERATOR}\nDROVER_API_LISTEN=127.0.0.1:{port}\n\
             DROVER_LOG=warn\n",
            redis.url()
        ),
    )
    .unwrap();
    let api_unit = unit("drover-api.service");
    let worker_unit = unit("drover-worker.service");
    let mut api = exec_start(&api_unit, &env_file, &dir.join("api.log"));
    let mut worker = exec_start(&worker_unit, &env_file, &dir.join("worker.log"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(20), "the API", || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let id = submit_as_operator(&http, &base, "synthetic", json!({"steps": 3})).await;
    wait_for(
        Duration::from_secs(30),
        "the workflow to succeed",
        || async {
            store
                .get(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|w| w.state == drover_workflows::State::Succeeded)
        },
    )
    .await;
    // systemd stops them with KillSignal (SIGTERM) and waits TimeoutStopSec.
    for (unit, Killed(child)) in [(&api_unit, &mut api), (&worker_unit, &mut worker)] {
        assert_eq!(unit.get("KillSignal").map(String::as_str), Some("SIGTERM"));
        let timeout: u64 = unit["TimeoutStopSec"].parse().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "stopped cleanly: {status}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stopped within TimeoutStopSec"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
