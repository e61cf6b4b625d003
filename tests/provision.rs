//! Provisioning end to end: `provision-node`, `scale-out`, `decommission-node` and `replace-node` on
//! real workers, against the lab's MAAS and Kubernetes over real HTTP (the drover-maas and kube-rs
//! adapters), with real Redis. What happened is read back from MAAS (through the adapter: machine
//! states, owner data, events) and from the lab's audit (every MAAS call with its answer).
//!
//! The lab runs at 600 simulated seconds per real second: a deploy (about 12 simulated minutes)
//! takes about 1.2 s, a quick erase a quarter of a second.

mod crash;
mod fleet;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_lab::scenario::{MachineSpec, Scenario};
use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::State;
use drover_workflows::ports::Ports;
use drover_workflows::ports::maas::{Maas, Machine, MachineFilter, status};
use drover_workflows::ports::secrets::Secret;
use serde_json::{Value, json};

use crate::harness::*;

/// Simulated seconds per real second.
pub const SCALE: f64 = 600.0;

/// What tests give the join secret; the lab joins a machine whose user data says "join".
pub const JOIN_COMMAND: &str = "kubeadm join 10.20.30.5:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:0f";

/// The parts are held for their lifetime.
#[allow(dead_code)]
pub struct Rig {
    pub redis: Redis,
    pub store: drover_store::Store,
    pub lab: LabHandle,
    pub maas: Arc<dyn Maas>,
    pub workers: Vec<InProcessWorker>,
    pub dir: PathBuf,
}

/// The reference scenario with `extra` more Ready machines in pool `spare` (it has four).
pub fn scenario(extra: usize) -> Scenario {
    let mut s = drover_lab::scenario::reference_architecture();
    for i in 5..5 + extra {
        s.maas.machines.push(MachineSpec {
            hostname: format!("spare-{i:02}"),
            pool: "spare".into(),
            zone: if i % 2 == 0 { "az2" } else { "az1" }.into(),
            tags: vec!["vmo-worker".into()],
            status: "ready".into(),
            ip: format!("10.20.30.{}", 40 + i),
            ..MachineSpec::default()
        });
    }
    s
}

/// A MAAS client of the lab, as a worker has it.
pub fn maas_client(lab: &LabHandle) -> Arc<dyn Maas> {
    drover_maas::Client::new(drover_maas::Config::new(
        lab.maas_url(),
        Secret::new(lab.maas_api_key()),
    ))
    .expect("maas client")
    .port()
}

/// The `[secrets]` every worker here has: the join command, in a file.
pub fn secrets(dir: &std::path::Path) -> (drover_worker::secrets::Config, PathBuf) {
    let path = dir.join("join-command");
    std::fs::write(&path, format!("{JOIN_COMMAND}\n")).unwrap();
    let mut config = drover_worker::secrets::Config::default();
    config
        .insert(
            "join-command",
            drover_worker::secrets::Source::File(path.clone()),
        )
        .unwrap();
    (config, path)
}

pub async fn rig(workers: usize, scenario: Scenario) -> Rig {
    let redis = Redis::start();
    let store = redis.store().await;
    let mut config = LabConfig::reference().with_time_scale(SCALE);
    config.scenario = Scenario {
        time_scale: SCALE,
        ..scenario
    };
    let lab = Lab::start(config).await.expect("lab starts");
    let dir = crate::lab::support::temp_dir("provision");
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .expect("kube client");
    let maas = maas_client(&lab);
    let (secret_config, _) = secrets(&dir);
    let workers = (0..workers)
        .map(|i| {
            let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
                .with_kube(cluster.clone().port())
                .with_maas(maas.clone())
                .with_secrets(Arc::new(drover_worker::secrets::ConfigSecrets::new(
                    secret_config.clone(),
                    None,
                )));
            InProcessWorker::start_with_ports(&store, worker_config(&format!("prov-{i}")), ports)
        })
        .collect();
    Rig {
        redis,
        store,
        lab,
        maas,
        workers,
        dir,
    }
}

/// A provision-node input for a spare machine, polling every 100 ms (a simulated minute).
pub fn provision_input() -> Value {
    json!({
        "constraints": {"pool": "spare", "tags": ["vmo-worker"], "cpu_count": 32},
        "join": {"secret": "join-command"},
        "labels": {"drover.io/provisioned": "true"},
        "taints": [{"key": "drover.io/new", "effect": "PreferNoSchedule"}],
        "poll_ms": 100,
    })
}

pub async fn machines(maas: &dyn Maas) -> Vec<Machine> {
    maas.list_machines(&MachineFilter::default())
        .await
        .expect("list machines")
}

pub async fn machine(maas: &dyn Maas, hostname: &str) -> Machine {
    machines(maas)
        .await
        .into_iter()
        .find(|m| m.hostname == hostname)
        .unwrap_or_else(|| panic!("no machine {hostname}"))
}

/// MAAS calls of `op` (allocate, deploy, release...) that succeeded, from the lab's audit.
pub fn maas_calls(lab: &LabHandle, op: &str) -> usize {
    lab.audit()
        .iter()
        .filter(|e| e.api == "maas" && e.verb == op && e.outcome == 200)
        .count()
}

/// Machines nobody should hold after a provisioning ended: allocated or mid-deployment.
pub async fn leaked(maas: &dyn Maas) -> Vec<String> {
    machines(maas)
        .await
        .into_iter()
        .filter(|m| {
            matches!(
                m.status,
                status::ALLOCATED | status::DEPLOYING | status::FAILED_DEPLOYMENT
            )
        })
        .map(|m| format!("{} ({})", m.hostname, m.status_name))
        .collect()
}

/// Waits for a machine to settle in `status` (a release takes a while).
pub async fn wait_status(maas: &dyn Maas, hostname: &str, want: u32) -> Machine {
    let mut last = None;
    for _ in 0..300 {
        let m = machine(maas, hostname).await;
        if m.status == want {
            return m;
        }
        last = Some(m.status_name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("machine {hostname} never reached status {want}; last {last:?}")
}

fn node(lab: &LabHandle, name: &str) -> Option<Value> {
    lab.get("nodes", "", name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_node_joins_and_runs_vms() {
    let rig = rig(2, scenario(0)).await;
    let id = submit(&rig.store, "provision-node", provision_input(), 0).await;
    let v = &ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().expect("result");
    let hostname = result["node"].as_str().expect("node").to_string();
    assert_eq!(result["machine"]["hostname"], hostname.as_str());
    assert_eq!(result["attempts"].as_array().unwrap().len(), 1, "{result}");
    assert_eq!(result["failed_deployments"], 0);
    for d in ["total", "provision", "deploy", "join"] {
        assert!(result["durations_ms"][d].as_u64().unwrap() > 0, "{result}");
    }

    // MAAS: deployed, holding this workflow's name; the one allocation of the one attempt.
    let m = machine(rig.maas.as_ref(), &hostname).await;
    assert_eq!(m.status, status::DEPLOYED);
    assert_eq!(m.pool, "spare");
    assert_eq!(
        m.owner_data.get("drover-workflow").map(String::as_str),
        Some(id.as_str())
    );
    assert_eq!(maas_calls(&rig.lab, "allocate"), 1);
    assert_eq!(maas_calls(&rig.lab, "deploy"), 1);

    // Kubernetes: Ready, schedulable for VMs, with the input's label and taint.
    let n = node(&rig.lab, &hostname).expect("the node registered");
    assert_eq!(n["metadata"]["labels"]["drover.io/provisioned"], "true");
    assert_eq!(n["metadata"]["labels"]["kubevirt.io/schedulable"], "true");
    let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "drover.io/new" && t["effect"] == "PreferNoSchedule"),
        "{taints:?}"
    );
    // The join command never shows in the workflow's record.
    let record = serde_json::to_string(v).unwrap();
    assert!(!record.contains("abcdef.0123456789abcdef"));

    // A VM pinned to the new node runs there.
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "on-new-node"},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {
                "nodeSelector": {"kubernetes.io/hostname": hostname},
                "domain": {"cpu": {"cores": 2}, "resources": {"requests": {"memory": "4Gi"}}, "devices": {"disks": [{"name": "root", "disk": {}}]}},
                "volumes": [{"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}}]
            }}
        }
    });
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachines",
            rig.lab.kube_url()
        ))
        .json(&vm)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    wait_for(
        Duration::from_secs(20),
        "the VM to run on the new node",
        || async {
            rig.lab
                .get(
                    "virtualmachineinstances.kubevirt.io",
                    "vmo-prod",
                    "on-new-node",
                )
                .is_some_and(|v| {
                    v["status"]["phase"] == "Running"
                        && v["status"]["nodeName"] == hostname.as_str()
                })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_the_deployment_releases_the_machine() {
    let rig = rig(2, scenario(0)).await;
    let id = submit(&rig.store, "provision-node", provision_input(), 0).await;
    let maas = rig.maas.clone();
    let deploying = wait_for_value(Duration::from_secs(20), "a machine deploying", || {
        let maas = maas.clone();
        async move {
            machines(maas.as_ref())
                .await
                .into_iter()
                .find(|m| m.status == status::DEPLOYING)
        }
    })
    .await;
    let reply = rig.store.cancel(&id, now_ms()).await.unwrap();
    assert!(
        matches!(reply, drover_store::ControlResult::Ok(_)),
        "{reply:?}"
    );
    let v = &ended(&rig.store, &id, 30).await;
    assert_eq!(v.state, State::Cancelled, "{:?}", v.error);
    let m = wait_status(rig.maas.as_ref(), &deploying.hostname, status::READY).await;
    assert!(m.owner.is_none() && m.owner_data.is_empty(), "{m:?}");
    assert!(leaked(rig.maas.as_ref()).await.is_empty());
    assert!(node(&rig.lab, &deploying.hostname).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_503_and_409_change_nothing() {
    let rig = rig(2, scenario(0)).await;
    // Random 503 bursts (MAAS's "no rack controller" with Retry-After) on any call, and for sure
    // a burst on the allocation and two 409s (MAAS's serialisation failures) on the deploy.
    rig.lab.set_fault_rates(drover_lab::scenario::FaultRates {
        maas_503: 0.1,
        maas_503_burst: 3,
        maas_409: 0.1,
        ..Default::default()
    });
    for (op, status, count) in [("op=allocate", 503, 3), ("op=deploy", 409, 2)] {
        rig.lab
            .inject(drover_lab::Fault::Http {
                api: drover_lab::Api::Maas,
                method: Some("POST".into()),
                path_contains: Some(op.into()),
                status,
                retry_after: Some(1),
                message: None,
                count,
            })
            .unwrap();
    }
    let id = submit(&rig.store, "provision-node", provision_input(), 0).await;
    let v = &ended(&rig.store, &id, 90).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let audit = rig.lab.audit();
    let refused = |code: u16| {
        audit
            .iter()
            .filter(|e| e.api == "maas" && e.outcome == code)
            .count()
    };
    assert!(refused(503) > 0, "no 503 was injected");
    assert!(refused(409) > 0, "no 409 was injected");
    assert_eq!(maas_calls(&rig.lab, "allocate"), 1, "one machine, once");
    assert_eq!(maas_calls(&rig.lab, "deploy"), 1);
    assert!(leaked(rig.maas.as_ref()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployment_is_retried_on_another_machine_and_a_twice_failed_one_marked_broken() {
    let rig = rig(2, scenario(0)).await;
    // spare-01 fails every deployment; the first attempt takes it (MAAS allocates in id order).
    rig.lab
        .inject(drover_lab::Fault::MaasDeployFailure {
            machine: Some("spare-01".into()),
            count: 10,
        })
        .unwrap();
    let mut input = provision_input();
    input["constraints"] = json!({"pool": "spare"});
    // The first failure released spare-01; the second attempt may take it again (it is the
    // first Ready one once erased) and then marks it broken.
    input["broken_after"] = json!(2);
    let id = submit(&rig.store, "provision-node", input, 0).await;
    let v = &ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    let attempts = result["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{result}");
    let first = &attempts[0];
    assert_eq!(first["hostname"], "spare-01");
    assert_eq!(first["deployed"], false);
    let reason = first["reason"].as_str().unwrap();
    assert!(
        reason.contains("Marking node failed") || reason.contains("nstall"),
        "MAAS's reason is kept: {reason}"
    );
    assert_ne!(result["node"], "spare-01");
    assert_eq!(
        maas_calls(&rig.lab, "allocate"),
        attempts.len(),
        "one allocation per attempt"
    );
    // spare-01 ends broken once it failed twice, else released.
    let failures_on_01 = attempts
        .iter()
        .filter(|a| a["hostname"] == "spare-01")
        .count();
    let m = machine(rig.maas.as_ref(), "spare-01").await;
    if failures_on_01 >= 2 {
        assert_eq!(m.status, status::BROKEN, "{m:?}");
    } else {
        assert_ne!(m.status, status::BROKEN, "{m:?}");
    }
    assert!(leaked(rig.maas.as_ref()).await.is_empty());
}

/// Waits (at most `secs` seconds) for workflow `id` to end; its final view.
pub async fn ended(store: &drover_store::Store, id: &str, secs: u64) -> drover_store::WorkflowView {
    wait_all_finished(store, &[id.to_string()], Duration::from_secs(secs))
        .await
        .remove(0)
}

/// Waits until `f` returns Some.
pub async fn wait_for_value<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts of VMIs per node.
pub fn vmis_per_node(lab: &LabHandle) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for v in lab.list("virtualmachineinstances.kubevirt.io", None) {
        if let Some(n) = v["status"]["nodeName"].as_str() {
            *per.entry(n.to_string()).or_default() += 1;
        }
    }
    per
}
