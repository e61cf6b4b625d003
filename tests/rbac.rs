//! The worker's RBAC, proven against the lab's enforcement: the ServiceAccounts and roles of the
//! rendered dev overlay are applied to the lab with the real `kubectl apply`, the worker's token is
//! asked for with `kubectl create token`, and with RBAC on, workers holding only that token run a
//! drain (shutdown-restart: VMs stopped and started) and a volume attach and detach end to end.
//! Then, for each rule of the ClusterRole those flows used, the rule is removed and the flow that
//! used it is run again: it meets a 403 naming that resource. A rule none of the flows (drain,
//! attach and detach, import, a Kubernetes secret read) uses fails the test: it grants too much.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use drover_lab::kube::rbac::{Attributes, rule_matches};
use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::State;
use drover_workflows::ports::Ports;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::harness::*;
use crate::import::e2e::{Scratch, disk, import_input, s};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NS: &str = "vmo-prod";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The RBAC objects (and the namespace) of the rendered dev overlay.
fn rendered_rbac(dir: &Path) -> (std::path::PathBuf, Value) {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy/overlays/dev")])
        .output()
        .expect("run kubectl kustomize");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "drover-worker")
        .cloned()
        .expect("the worker's ClusterRole");
    let file = dir.join("rbac.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": docs})).unwrap(),
    )
    .unwrap();
    (file, role)
}

struct Rig {
    images: Scratch,
    _redis: Redis,
    store: drover_store::Store,
    lab: LabHandle,
    admin: reqwest::Client,
    _workers: Vec<InProcessWorker>,
}

impl Rig {
    /// Replaces the worker's ClusterRole's rules (as the admin).
    async fn set_rules(&self, role: &Value, rules: &[Value]) {
        let current = self
            .admin
            .get(format!(
                "{}/apis/rbac.authorization.k8s.io/v1/clusterroles/drover-worker",
                self.lab.kube_url()
            ))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let mut object = role.clone();
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        object["rules"] = json!(rules);
        let status = self
            .admin
            .put(format!(
                "{}/apis/rbac.authorization.k8s.io/v1/clusterroles/drover-worker",
                self.lab.kube_url()
            ))
            .json(&object)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
}

/// A flow of this test: a workflow that runs to success with the whole role.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flow {
    Drain,
    Attach,
    Import,
    Secret,
}

/// The worker's Kubernetes secret source over the cluster client (as the binary's).
struct ClusterSecrets(drover_kube::Cluster);

impl drover_worker::secrets::KubeSecrets for ClusterSecrets {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> drover_workflows::ports::BoxFuture<
        'a,
        Result<Vec<u8>, drover_workflows::ports::kube::KubeError>,
    > {
        Box::pin(self.0.read_secret(namespace, name, key))
    }
}

async fn run(rig: &Rig, flow: Flow, n: usize) -> String {
    let (kind, input) = match flow {
        // A step resolving a secret kept in a Kubernetes Secret.
        Flow::Secret => (
            "synthetic",
            json!({"steps": 1, "max_attempts": 20, "retry_ms": 100, "secret": {"secret": "rbac-token"}}),
        ),
        Flow::Import => {
            // A small vmdk (converted with qemu-img, uploaded through CDI) on VLAN 20.
            let image = disk(&rig.images, &format!("rbac-{n}.vmdk"), "vmdk", 64, 8);
            let mut input = import_input(&format!("rbac-{n}"), json!({"disk": s(&image)}));
            input["network_map"] = json!({"VM Network": "vlan20"});
            ("import-vm", input)
        }
        Flow::Drain => {
            // A plain pod on the node, which the drain evicts.
            let node = format!("worker-0{n}");
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-{n}"), "namespace": NS},
                "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]}});
            let status = rig
                .admin
                .post(format!(
                    "{}/api/v1/namespaces/{NS}/pods",
                    rig.lab.kube_url()
                ))
                .json(&pod)
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_success(), "{status}");
            (
                "drain-node",
                json!({"node": node, "non_migratable": "shutdown-restart",
                   "poll_ms": 100}),
            )
        }
        Flow::Attach => (
            "attach-volume",
            json!({"namespace": NS, "vm": format!("vm-0{}-00", n), "volume": "data", "size": "5Gi",
                   "storage_class": "px-rwx", "snapshot_first": true, "poll_ms": 50}),
        ),
    };
    submit(&rig.store, kind, input, 0).await
}

async fn ended(store: &drover_store::Store, id: &str, secs: u64) -> drover_store::WorkflowView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = store.get(id).await.unwrap().unwrap();
        if v.state.is_terminal() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} did not end: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn used_by(rule: &Value, granted: &[Attributes]) -> bool {
    granted.iter().any(|a| rule_matches(rule, a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_is_exactly_what_its_flows_use() {
    let dir = std::env::temp_dir().join(format!("drover-rbac-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    let admin_config = dir.join("admin.kubeconfig");
    lab.write_kubeconfig(&admin_config).unwrap();

    // The manifests' RBAC, applied as an operator would; the worker's token from TokenRequest.
    let (file, role) = rendered_rbac(&dir);
    kubectl(&admin_config, &["apply", "-f", file.to_str().unwrap()]);
    let token = kubectl(
        &admin_config,
        &["create", "token", "drover-worker", "-n", "drover"],
    )
    .trim()
    .to_string();
    assert!(token.starts_with("lab-sa-"), "{token}");
    let worker_config = dir.join("worker.kubeconfig");
    std::fs::write(
        &worker_config,
        lab.kubeconfig()
            .replace("token: drover-lab", &format!("token: {token}")),
    )
    .unwrap();
    lab.enforce_rbac(true);

    // An unknown token is 401; the worker's token cannot read what its role does not name.
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{}/api/v1/nodes", lab.kube_url()))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let denied = http
        .get(format!(
            "{}/api/v1/namespaces/{NS}/configmaps",
            lab.kube_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        format!(
            "configmaps is forbidden: User \"system:serviceaccount:drover:drover-worker\" cannot \
             list resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
        )
    );

    // Workers that hold only the worker's token.
    let redis = Redis::start();
    let store = redis.store().await;
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Kubeconfig(worker_config))
        .await
        .expect("kube client from the worker's kubeconfig");
    let work = Scratch::new("rbac-work");
    let mut secret_config = drover_worker::secrets::Config::default();
    secret_config
        .insert(
            "rbac-token",
            drover_worker::secrets::Source::Kubernetes(drover_worker::secrets::KubeSecretKey {
                namespace: "drover".into(),
                name: "rbac-token".into(),
                key: "token".into(),
            }),
        )
        .unwrap();
    let secrets: Arc<dyn drover_workflows::ports::secrets::Secrets> =
        Arc::new(drover_worker::secrets::ConfigSecrets::new(
            secret_config,
            Some(Arc::new(ClusterSecrets(cluster.clone()))),
        ));
    let workers = (0..2)
        .map(|i| {
            let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
                .with_kube(cluster.clone().port())
                .with_images(Arc::new(drover_images::LocalImages::new(
                    work.0.clone(),
                    "qemu-img",
                )))
                .with_secrets(secrets.clone());
            InProcessWorker::start_with_ports(&store, worker_config_named(i), ports)
        })
        .collect();
    let rig = Rig {
        images: Scratch::new("rbac-images"),
        _redis: redis,
        store,
        lab,
        admin: reqwest::Client::builder()
            .default_headers(
                [(
                    reqwest::header::AUTHORIZATION,
                    "Bearer drover-lab".parse().unwrap(),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .unwrap(),
        _workers: workers,
    };

    // A Secret a workflow's input names (the admin made it, as an operator would).
    let status = rig
        .admin
        .post(format!(
            "{}/api/v1/namespaces/drover/secrets",
            rig.lab.kube_url()
        ))
        .json(&json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "rbac-token", "namespace": "drover"},
            "data": {"token": "czNjcjN0LXZhbHVl"}}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");

    // With the whole role, every flow succeeds; what each used is recorded.
    rig.lab.rbac_granted();
    let mut used: Vec<(Flow, Vec<Attributes>)> = Vec::new();
    for (flow, n) in [
        (Flow::Drain, 1),
        (Flow::Attach, 1),
        (Flow::Import, 1),
        (Flow::Secret, 1),
    ] {
        let id = run(&rig, flow, n).await;
        let v = ended(&rig.store, &id, 120).await;
        assert_eq!(
            v.state,
            State::Succeeded,
            "{flow:?} as the worker: {:?}",
            v.error
        );
        used.push((flow, rig.lab.rbac_granted()));
    }
    // The one refusal so far is the configmaps probe above: the flows needed nothing else.
    assert_eq!(
        rig.lab.rbac_denials().len(),
        1,
        "{:?}",
        rig.lab.rbac_denials()
    );

    // Verb by verb, what the flows used: reported, not asserted (the deletes of decommissioning,
    // detaching and compensations are verbs of used rules that these flows do not reach).
    let all_granted: Vec<&Attributes> = used.iter().flat_map(|(_, g)| g).collect();
    let mut unused_verbs = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for verb in rule["verbs"].as_array().unwrap() {
            let mut single = rule.clone();
            single["verbs"] = json!([verb]);
            if !all_granted.iter().any(|a| rule_matches(&single, a)) {
                unused_verbs.push(format!("{} {}", verb, rule["resources"]));
            }
        }
    }
    eprintln!("verbs of the role these flows do not use: {unused_verbs:?}");

    // Each rule a flow used, removed: that flow meets a 403 for it.
    let rules = role["rules"].as_array().unwrap().clone();
    let mut unexercised = Vec::new();
    let mut next = [2usize; 4];
    for (i, rule) in rules.iter().enumerate() {
        let Some((flow, _)) = used.iter().find(|(_, g)| used_by(rule, g)) else {
            unexercised.push(rule.clone());
            continue;
        };
        let mut without = rules.clone();
        without.remove(i);
        rig.set_rules(&role, &without).await;
        let seen = rig.lab.rbac_denials().len();
        let slot = match flow {
            Flow::Drain => 0,
            Flow::Attach => 1,
            Flow::Import => 2,
            Flow::Secret => 3,
        };
        let n = next[slot];
        next[slot] += 1;
        let id = run(&rig, *flow, n).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let denials = rig.lab.rbac_denials();
            if denials[seen..]
                .iter()
                .any(|d| rule_matches(rule, &d.attributes))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "without rule {rule} the {flow:?} flow met no 403 for it; denials: {:?}",
                &denials[seen..]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Back to the whole role; the flow is cancelled and ends before the next rule.
        rig.set_rules(&role, &rules).await;
        let _ = rig.store.cancel(&id, drover_store::now_ms()).await;
        ended(&rig.store, &id, 120).await;
    }
    eprintln!(
        "rules no flow of this test exercises ({}): {}",
        unexercised.len(),
        serde_json::to_string(&unexercised).unwrap()
    );
    assert!(
        unexercised.is_empty(),
        "rules no flow uses grant too much: {unexercised:?}"
    );
    drop(work);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn worker_config_named(i: usize) -> drover_worker::Config {
    worker_config(&format!("rbac-{i}"))
}
