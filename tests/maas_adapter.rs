//! The MAAS adapter (`drover-maas`) against the lab's MAAS over real HTTP: signing, the typed
//! machine model and filters, allocation constraints and their refusals, the deploy and release
//! lifecycle, abort and mark broken/fixed, owner data, host network layouts (refused whole before
//! any change, applied idempotently), events, and the failure classes: 503 bursts retried
//! transparently (counted in the lab's audit), writes whose outcome is unknown never repeated,
//! timeouts and refused connections, and a bad API key that never shows in the error.
//!
//! Each test starts its own lab on 127.0.0.1:0 with a small inventory whose machines differ in
//! pool, zone, tags, CPUs and memory, at a time scale where a deploy takes a tenth of a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use drover_lab::scenario::{MachineSpec, Scenario};
use drover_lab::{Fault, Lab, LabConfig, LabHandle};
use drover_maas::{Client, Config, Retry};
use drover_workflows::ports::maas::{
    Allocation, Deployment, HostNetwork, Maas, MaasError, Machine, MachineFilter, Release,
    failure_reason, status,
};
use drover_workflows::ports::secrets::Secret;
use serde_json::json;

use crate::lab::support::wait_for;

/// Simulated seconds per real second: a 60 s deploy takes 0.1 s.
const SCALE: f64 = 600.0;

fn machine(
    hostname: &str,
    pool: &str,
    zone: &str,
    tags: &[&str],
    cpus: u32,
    gib: u64,
) -> MachineSpec {
    MachineSpec {
        hostname: hostname.into(),
        pool: pool.into(),
        zone: zone.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        cpu_count: cpus,
        memory: gib * 1024,
        ..MachineSpec::default()
    }
}

/// Seven machines, one of them deployed; allocation takes the first Ready match in this order.
fn scenario() -> Scenario {
    let mut s = Scenario::empty();
    s.name = "maas-adapter".into();
    s.time_scale = SCALE;
    let m = &mut s.maas;
    m.pools = vec!["vmo".into(), "spare".into()];
    m.zones = vec!["az1".into(), "az2".into(), "az3".into()];
    m.tags = vec!["control-plane".into()];
    m.deploy_secs = 60.0;
    m.deploy_jitter = 0.0;
    m.release_secs = 30.0;
    m.quick_erase_secs = 60.0;
    // A full erase takes ten real minutes: a release that is Ready within seconds was quick.
    m.erase_secs = 360_000.0;
    m.join_delay_secs = 30.0;
    m.node_ready_delay_secs = 30.0;
    m.node_timeout_minutes = 600.0;
    m.machines = vec![
        machine("small-01", "default", "az1", &["compute"], 8, 16),
        machine("vmo-01", "vmo", "az1", &["vmo-worker"], 32, 128),
        machine("vmo-02", "vmo", "az2", &["vmo-worker"], 32, 128),
        machine("gpu-01", "vmo", "az1", &["vmo-worker", "gpu"], 64, 256),
        machine("big-01", "default", "az1", &["compute"], 96, 512),
        machine("spare-01", "spare", "az1", &["vmo-worker"], 16, 64),
        MachineSpec {
            status: "deployed".into(),
            ..machine("deployed-01", "vmo", "az1", &["vmo-worker"], 64, 256)
        },
    ];
    s
}

async fn lab() -> LabHandle {
    Lab::start(LabConfig {
        scenario: scenario(),
        ..LabConfig::default()
    })
    .await
    .expect("lab starts")
}

/// Fast retries, so bursts cost milliseconds.
fn config(lab: &LabHandle) -> Config {
    Config {
        retry: Retry {
            attempts: 4,
            backoff: Duration::from_millis(20),
            max_wait: Duration::from_secs(2),
        },
        ..Config::new(lab.maas_url(), Secret::new(lab.maas_api_key()))
    }
}

/// A lab of its own and an adapter client for it.
async fn start() -> (LabHandle, Client) {
    let lab = lab().await;
    let maas = Client::new(config(&lab)).expect("client");
    (lab, maas)
}

/// An allocation of a machine with this tag.
fn tagged(tag: &str) -> Allocation {
    Allocation {
        tags: vec![tag.into()],
        ..Allocation::default()
    }
}

/// An allocation of a machine from this pool.
fn in_pool(pool: &str) -> Allocation {
    Allocation {
        pool: Some(pool.into()),
        ..Allocation::default()
    }
}

/// Allocates a machine that must be there.
async fn allocate(maas: &Client, allocation: Allocation) -> Machine {
    maas.allocate(&allocation).await.expect("allocate")
}

/// Deploys with MAAS's defaults; the request must be accepted.
async fn deploy(maas: &Client, id: &str) -> Machine {
    maas.deploy(id, &Deployment::default())
        .await
        .expect("deploy")
}

/// Arms a fault in the lab.
fn inject(lab: &LabHandle, fault: Fault) {
    lab.inject(fault).expect("fault");
}

/// Asserts `e` is a conflict whose message contains `text`.
fn assert_conflict(e: &MaasError, text: &str) {
    assert!(
        matches!(e, MaasError::Conflict(m) if m.contains(text)),
        "{e}"
    );
}

async fn wait_status(maas: &Client, id: &str, want: u32) -> Machine {
    wait_for(
        &format!("machine {id} in status {want}"),
        Duration::from_secs(20),
        || async {
            let m = maas.get_machine(id).await.expect("get machine");
            m.is(want).then_some(m)
        },
    )
    .await
}

async fn by_hostname(maas: &Client, hostname: &str) -> Machine {
    let filter = MachineFilter {
        hostnames: vec![hostname.into()],
        ..MachineFilter::default()
    };
    let mut found = maas.list_machines(&filter).await.expect("list");
    assert_eq!(found.len(), 1, "{hostname}");
    found.remove(0)
}

/// The lab's audit of MAAS writes: (verb, object, outcome).
fn audit(lab: &LabHandle) -> Vec<(String, String, u16)> {
    lab.audit()
        .into_iter()
        .filter(|e| e.api == "maas")
        .map(|e| (e.verb, e.object, e.outcome))
        .collect()
}

fn outcomes(lab: &LabHandle, verb: &str) -> Vec<u16> {
    audit(lab)
        .into_iter()
        .filter(|(v, _, _)| v == verb)
        .map(|(_, _, o)| o)
        .collect()
}

/// A fault as the lab's admin API takes it (`POST /lab/faults`), so fields the lab adds with
/// defaults do not break these tests.
fn fault(spec: serde_json::Value) -> Fault {
    serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("fault {spec}: {e}"))
}

fn http_fault(
    method: &str,
    path: &str,
    status: u16,
    retry_after: Option<u64>,
    count: u32,
) -> Fault {
    fault(json!({
        "kind": "http", "api": "maas", "method": method, "path_contains": path,
        "status": status, "retry_after": retry_after, "count": count
    }))
}

fn machine_fault(kind: &str, system_id: &str) -> Fault {
    fault(json!({"kind": kind, "machine": system_id, "count": 1}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_and_reads_machines() {
    let (lab, maas) = start().await;
    let all = maas
        .list_machines(&MachineFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 7);
    let gpu = by_hostname(&maas, "gpu-01").await;
    let got = maas.get_machine(&gpu.system_id).await.expect("get");
    assert_eq!(got, gpu);
    assert_eq!(
        (got.status, got.status_name.as_str(), got.owner.as_deref()),
        (status::READY, "Ready", None)
    );
    assert_eq!((got.pool.as_str(), got.zone.as_str()), ("vmo", "az1"));
    assert_eq!(got.tags, ["vmo-worker", "gpu"]);
    assert_eq!((got.cpu_count, got.memory_mib), (64, 256 * 1024));
    assert_eq!(got.power_state, "off");
    let eno1 = got.interface("eno1").expect("eno1");
    assert_eq!(eno1.kind, "physical");
    assert!(eno1.enabled && !eno1.mac_address.is_empty());
    assert_eq!(
        eno1.vlan.as_ref().map(|v| (v.vid, v.fabric_id)),
        Some((0, 0))
    );
    assert_eq!(eno1.links[0].mode, "auto");
    assert_eq!(
        eno1.links[0].subnet.as_ref().map(|s| s.cidr.as_str()),
        Some("192.168.0.0/22")
    );
    assert!(got.interface("eno2").is_some_and(|i| i.links.is_empty()));

    let deployed = by_hostname(&maas, "deployed-01").await;
    assert_eq!(deployed.status_name, "Deployed");
    assert_eq!(deployed.owner.as_deref(), Some("admin"));
    assert_eq!(deployed.power_state, "on");
    assert!(!deployed.ip_addresses.is_empty());

    let filter = |f: MachineFilter| {
        let maas = maas.clone();
        async move {
            let mut names: Vec<String> = maas
                .list_machines(&f)
                .await
                .expect("list")
                .into_iter()
                .map(|m| m.hostname)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(
        filter(MachineFilter {
            hostnames: vec!["vmo-01".into(), "vmo-02".into()],
            ..MachineFilter::default()
        })
        .await,
        ["vmo-01", "vmo-02"]
    );
    assert_eq!(
        filter(MachineFilter {
            system_ids: vec![gpu.system_id.clone()],
            ..MachineFilter::default()
        })
        .await,
        ["gpu-01"]
    );
    assert_eq!(
        filter(MachineFilter {
            statuses: vec![status::DEPLOYED],
            ..MachineFilter::default()
        })
        .await,
        ["deployed-01"]
    );
    assert_eq!(
        filter(MachineFilter {
            statuses: vec![status::READY, status::DEPLOYED],
            pool: Some("vmo".into()),
            tags: vec!["gpu".into()],
            ..MachineFilter::default()
        })
        .await,
        ["gpu-01"]
    );
    assert_eq!(
        filter(MachineFilter {
            owner: Some("admin".into()),
            ..MachineFilter::default()
        })
        .await,
        ["deployed-01"]
    );
    let e = maas
        .list_machines(&MachineFilter {
            statuses: vec![99],
            ..MachineFilter::default()
        })
        .await
        .expect_err("no status 99");
    assert!(
        matches!(&e, MaasError::Permanent(m) if m.contains("no status 99")),
        "{e}"
    );
    let e = maas.get_machine("zzzzzz").await.expect_err("unknown");
    assert!(
        matches!(&e, MaasError::NotFound(m) if m.contains("No Machine matches the given query.")),
        "{e}"
    );
    // Every call was measured by system, verb and status (this process's metrics).
    let m = crate::metrics::parse(&drover_telemetry::metrics().encode());
    let calls = "drover_outgoing_call_duration_seconds_count";
    assert!(
        m.sum(
            calls,
            &[("system", "maas"), ("verb", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert!(m.sum(calls, &[("system", "maas"), ("status", "404")]) >= 1.0);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_by_each_constraint_and_says_why_not() {
    let (lab, maas) = start().await;
    // Refusals first, while every machine is Ready.
    let e = maas
        .allocate(&tagged("nope"))
        .await
        .expect_err("unknown tag");
    assert!(
        matches!(&e, MaasError::Permanent(m) if m.contains("400") && m.contains("No such tag(s): 'nope'.")),
        "{e}"
    );
    let e = maas
        .allocate(&in_pool("nope"))
        .await
        .expect_err("unknown pool");
    assert!(
        matches!(&e, MaasError::Permanent(m) if m.contains("No such pool: 'nope'.")),
        "{e}"
    );
    let e = maas
        .allocate(&Allocation {
            zone: Some("az3".into()),
            ..Allocation::default()
        })
        .await
        .expect_err("empty zone");
    assert_eq!(
        e,
        MaasError::NoMatch(
            "No available machine matches constraints: [('zone', ['az3'])] (resolved to \"zone=az3\")"
                .into()
        )
    );

    // Each constraint picks the one machine only it allows.
    let cases: Vec<(Allocation, &str)> = vec![
        (
            Allocation {
                tags: vec!["gpu".into()],
                agent_name: Some("wf-alloc-1".into()),
                comment: Some("drover test".into()),
                ..Allocation::default()
            },
            "gpu-01",
        ),
        (
            Allocation {
                zone: Some("az2".into()),
                ..Allocation::default()
            },
            "vmo-02",
        ),
        (in_pool("spare"), "spare-01"),
        (
            Allocation {
                cpu_count: Some(90),
                ..Allocation::default()
            },
            "big-01",
        ),
        (
            Allocation {
                tags: vec!["vmo-worker".into()],
                not_tags: vec!["gpu".into()],
                memory_mib: Some(100_000),
                ..Allocation::default()
            },
            "vmo-01",
        ),
        (Allocation::default(), "small-01"),
    ];
    for (allocation, want) in cases {
        let m = maas.allocate(&allocation).await.expect("allocate");
        assert_eq!(m.hostname, want, "{allocation:?}");
        assert_eq!(
            (m.status, m.owner.as_deref()),
            (status::ALLOCATED, Some("admin"))
        );
    }
    let e = maas
        .allocate(&Allocation::default())
        .await
        .expect_err("all taken");
    assert_eq!(e, MaasError::NoMatch("No machine available.".into()));
    // The agent name finds the allocation again (what a crash between allocate and commit needs).
    let mine = maas
        .list_machines(&MachineFilter {
            agent_name: Some("wf-alloc-1".into()),
            ..MachineFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        mine.iter().map(|m| m.hostname.as_str()).collect::<Vec<_>>(),
        ["gpu-01"]
    );
    assert_eq!(
        outcomes(&lab, "allocate"),
        [400, 400, 409, 200, 200, 200, 200, 200, 200, 409]
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_until_deployed_and_releases_with_quick_erase() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, tagged("gpu")).await;
    // The lab creates a Node for user data that joins a cluster: that proves MAAS decoded the
    // base64 the adapter sent.
    let deployment = Deployment {
        distro_series: Some("jammy".into()),
        hwe_kernel: Some("ga-22.04".into()),
        user_data: Some("#cloud-config\nruncmd:\n  - kubeadm join 10.0.0.1:6443\n".into()),
        comment: Some("drover test".into()),
    };
    let deploying = maas
        .deploy(&m.system_id, &deployment)
        .await
        .expect("deploy");
    assert_eq!(deploying.status, status::DEPLOYING);
    let deployed = wait_status(&maas, &m.system_id, status::DEPLOYED).await;
    assert_eq!(deployed.status_name, "Deployed");
    assert_eq!(deployed.power_state, "on");
    assert!(!deployed.ip_addresses.is_empty());
    wait_for(
        "the Node of the deployed machine",
        Duration::from_secs(20),
        || async { lab.get("nodes", "", "gpu-01") },
    )
    .await;
    let e = maas
        .deploy(&m.system_id, &Deployment::default())
        .await
        .expect_err("deployed twice");
    assert_conflict(&e, "Can't deploy a machine that is in the 'Deployed' state");

    let releasing = maas
        .release(
            &m.system_id,
            &Release {
                erase: true,
                quick_erase: true,
                comment: Some("drover test".into()),
                ..Release::default()
            },
        )
        .await
        .expect("release");
    assert_eq!(releasing.status, status::RELEASING);
    // A full erase would take ten minutes here; a quick one a fraction of a second.
    let ready = wait_status(&maas, &m.system_id, status::READY).await;
    assert_eq!(ready.owner, None);
    // Releasing a Ready machine is a no-op, as in MAAS.
    let again = maas
        .release(&m.system_id, &Release::default())
        .await
        .expect("release again");
    assert_eq!(again.status, status::READY);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_marks_broken_and_fixed_and_reports_failed_deployments() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, in_pool("spare")).await;
    let id = m.system_id.clone();
    inject(&lab, machine_fault("maas_deploy_hang", &id));
    deploy(&maas, &id).await;
    let e = maas
        .deploy(&id, &Deployment::default())
        .await
        .expect_err("deploying");
    assert_conflict(&e, "'Deploying' state");
    let aborted = maas
        .abort(&id, Some("changed my mind"))
        .await
        .expect("abort");
    assert_eq!(aborted.status, status::ALLOCATED);
    let e = maas.abort(&id, None).await.expect_err("nothing to abort");
    assert_conflict(&e, "Cannot abort in current state");

    let broken = maas
        .mark_broken(&id, "bad disk")
        .await
        .expect("mark broken");
    assert_eq!(broken.status, status::BROKEN);
    assert_eq!(broken.error_description, "bad disk");
    let e = maas
        .mark_broken(&id, "again")
        .await
        .expect_err("already broken");
    assert!(
        matches!(e, MaasError::Conflict(_) | MaasError::Permanent(_)),
        "{e}"
    );
    let fixed = maas
        .mark_fixed(&id, Some("disk replaced"))
        .await
        .expect("mark fixed");
    assert_eq!(fixed.status, status::READY);
    let e = maas.mark_fixed(&id, None).await.expect_err("not broken");
    assert_conflict(&e, "Can't mark a non-broken node as 'Ready'.");

    // A deployment that fails: the machine's state says so, with MAAS's reason.
    inject(&lab, machine_fault("maas_deploy_failure", &id));
    deploy(&maas, &id).await;
    let failed = wait_status(&maas, &id, status::FAILED_DEPLOYMENT).await;
    assert!(
        failed.status_message.starts_with("Marking node failed"),
        "{failed:?}"
    );
    let reason = failure_reason(&failed, &[]);
    assert!(reason.contains("Installation failed"), "{reason}");
    let e = maas
        .deploy(&id, &Deployment::default())
        .await
        .expect_err("redeploy a failed machine");
    assert_conflict(&e, "'Failed deployment' state");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_data_is_set_filtered_and_deleted() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, Allocation::default()).await;
    let other = allocate(&maas, Allocation::default()).await;
    let set = |pairs: &[(&str, Option<&str>)]| -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect()
    };
    let got = maas
        .set_owner_data(
            &m.system_id,
            &set(&[
                ("drover/workflow", Some("wf-1")),
                ("drover/attempt", Some("1")),
            ]),
        )
        .await
        .expect("set");
    assert_eq!(
        got.owner_data.get("drover/workflow").map(String::as_str),
        Some("wf-1")
    );
    maas.set_owner_data(&other.system_id, &set(&[("drover/workflow", Some("wf-2"))]))
        .await
        .expect("set other");
    let mine = maas
        .list_machines(&MachineFilter {
            owner_data: [("drover/workflow".to_string(), "wf-1".to_string())].into(),
            ..MachineFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        mine.iter()
            .map(|m| m.system_id.as_str())
            .collect::<Vec<_>>(),
        [m.system_id.as_str()]
    );
    let got = maas
        .set_owner_data(&m.system_id, &set(&[("drover/attempt", None)]))
        .await
        .expect("delete a key");
    assert_eq!(
        got.owner_data,
        BTreeMap::from([("drover/workflow".to_string(), "wf-1".to_string())])
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_give_the_failure_reason() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, Allocation::default()).await;
    inject(&lab, machine_fault("maas_deploy_failure", &m.system_id));
    deploy(&maas, &m.system_id).await;
    let failed = wait_status(&maas, &m.system_id, status::FAILED_DEPLOYMENT).await;
    let events = maas.events(&m.system_id, 50).await.expect("events");
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.system_id == m.system_id));
    assert!(
        events.windows(2).all(|w| w[0].id > w[1].id),
        "newest first: {events:?}"
    );
    let reason = failure_reason(&failed, &events);
    assert!(reason.contains("nstallation fail"), "{reason}");
    assert_eq!(maas.events(&m.system_id, 1).await.expect("one").len(), 1);
    lab.shutdown().await;
}

fn vmo_layout() -> HostNetwork {
    serde_json::from_value(json!({
        "bond": {"name": "bond0", "nics": ["eno1", "eno2"], "mode": "802.3ad", "lacp_rate": "fast"},
        "bridge": {"name": "br0"},
        "vlans": [
            {"vid": 10, "link": {"subnet": "172.16.0.0/22"}},
            {"vid": 20, "link": {"subnet": "10.20.0.0/16", "mode": "static",
                                 "ip_address": "10.20.30.99", "default_gateway": true}}
        ]
    }))
    .expect("layout")
}

const INTERFACE_OPS: &[&str] = &["create_bond", "create_bridge", "create_vlan", "link_subnet"];

fn interface_writes(lab: &LabHandle) -> usize {
    audit(lab)
        .iter()
        .filter(|(v, _, _)| INTERFACE_OPS.contains(&v.as_str()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_is_checked_whole_then_built_once() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, tagged("vmo-worker")).await;
    let id = m.system_id.clone();
    let before = maas.interfaces(&id).await.expect("interfaces");
    assert_eq!(before, m.interfaces);

    // A layout naming a NIC the machine lacks, and a VLAN its fabric lacks: refused whole.
    let mut wrong = vmo_layout();
    wrong.bond.nics = vec!["eno1".into(), "eno3".into()];
    wrong.vlans[0].vid = 30;
    let e = maas
        .configure_network(&id, &wrong)
        .await
        .expect_err("misfit");
    let MaasError::Permanent(message) = &e else {
        panic!("{e:?}")
    };
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(
        message.contains("the machine has no interface eno3 for bond bond0 (it has eno1, eno2)"),
        "{message}"
    );
    assert!(message.contains("no VLAN 30"), "{message}");
    assert_eq!(interface_writes(&lab), 0);
    assert_eq!(maas.interfaces(&id).await.expect("interfaces"), before);

    // The VMO reference layout: bond0 of eno1+eno2, br0 on it, bond0.10 and bond0.20 linked.
    let after = maas
        .configure_network(&id, &vmo_layout())
        .await
        .expect("configure");
    let find = |name: &str| {
        after
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} in {after:?}"))
    };
    let bond = find("bond0");
    assert_eq!(
        (bond.kind.as_str(), bond.parents.clone()),
        ("bond", vec!["eno1".to_string(), "eno2".to_string()])
    );
    assert_eq!(find("eno1").children, ["bond0"]);
    assert_eq!(
        (find("br0").kind.as_str(), find("br0").parents.clone()),
        ("bridge", vec!["bond0".to_string()])
    );
    let v20 = find("bond0.20");
    assert_eq!(v20.kind, "vlan");
    assert_eq!(v20.vlan.as_ref().map(|v| v.vid), Some(20));
    assert_eq!(v20.links[0].mode, "static");
    assert_eq!(v20.links[0].ip_address.as_deref(), Some("10.20.30.99"));
    assert_eq!(
        v20.links[0].subnet.as_ref().map(|s| s.cidr.as_str()),
        Some("10.20.0.0/16")
    );
    assert_eq!(find("bond0.10").links[0].mode, "auto");
    let writes = interface_writes(&lab);
    assert_eq!(
        writes,
        6,
        "bond, bridge, two VLANs, two links: {:?}",
        audit(&lab)
    );

    // Applied again, it changes nothing.
    let again = maas
        .configure_network(&id, &vmo_layout())
        .await
        .expect("configure again");
    assert_eq!(again, after);
    assert_eq!(interface_writes(&lab), writes);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_refusals_transparently_and_bounded() {
    let (lab, maas) = start().await;
    // A burst of 503s shorter than the attempts: the caller sees a machine.
    inject(&lab, http_fault("POST", "op=allocate", 503, None, 3));
    let m = maas
        .allocate(&Allocation::default())
        .await
        .expect("allocate through 503s");
    assert_eq!(m.status, status::ALLOCATED);
    assert_eq!(outcomes(&lab, "allocate"), [503, 503, 503, 200]);

    // Retry-After is honoured.
    inject(&lab, http_fault("POST", "op=deploy", 503, Some(1), 1));
    let started = Instant::now();
    maas.deploy(&m.system_id, &Deployment::default())
        .await
        .expect("deploy through a 503");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(outcomes(&lab, "deploy"), [503, 200]);

    // A 409 with Retry-After is MAAS's database retry: repeated too.
    inject(&lab, http_fault("POST", "op=mark_broken", 409, Some(1), 1));
    maas.mark_broken(&m.system_id, "test")
        .await
        .expect("mark broken through a 409");
    assert_eq!(outcomes(&lab, "mark_broken"), [409, 200]);

    // Reads are retried as well (GETs are not audited: the faults are spent).
    inject(&lab, http_fault("GET", "/machines/", 503, None, 2));
    maas.list_machines(&MachineFilter::default())
        .await
        .expect("list through 503s");
    let armed: serde_json::Value = reqwest::get(format!("{}/lab/faults", lab.kube_url()))
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(armed["targeted"], json!([]), "every fault fired");

    // A longer burst: Transient after the bounded attempts, with MAAS's message.
    inject(&lab, http_fault("POST", "op=allocate", 503, None, 10));
    let e = maas
        .allocate(&Allocation::default())
        .await
        .expect_err("burst");
    let MaasError::Transient { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("503") && message.contains("after 4 attempts"),
        "{message}"
    );
    assert_eq!(
        outcomes(&lab, "allocate"),
        [503, 503, 503, 200, 503, 503, 503, 503]
    );

    // A Retry-After longer than the adapter waits goes to the engine at once.
    lab.clear_faults();
    inject(&lab, http_fault("POST", "op=allocate", 503, Some(30), 1));
    let e = maas
        .allocate(&Allocation::default())
        .await
        .expect_err("long retry-after");
    assert!(
        matches!(e, MaasError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(30)),
        "{e:?}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_unknown_outcome_are_not_repeated() {
    let (lab, maas) = start().await;
    let m = allocate(&maas, Allocation::default()).await;
    // A proxy's 504 on a deploy: Transient at once, never a failed deployment; the machine's
    // state decides (here the request never reached MAAS).
    inject(&lab, http_fault("POST", "op=deploy", 504, None, 1));
    let e = maas
        .deploy(&m.system_id, &Deployment::default())
        .await
        .expect_err("504");
    let MaasError::Transient { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(message.contains("read the machine's state"), "{message}");
    assert_eq!(outcomes(&lab, "deploy"), [504], "not repeated");
    assert_eq!(
        maas.get_machine(&m.system_id).await.expect("get").status,
        status::ALLOCATED
    );
    deploy(&maas, &m.system_id).await;

    // The same after MAAS applied the request: an allocation the caller never saw is found
    // again by its agent name (what a step does after a crash or a timeout), not made twice.
    inject(
        &lab,
        fault(json!({
            "kind": "maas_proxy_timeout", "method": "POST", "path_contains": "op=allocate",
            "applied": true, "count": 1
        })),
    );
    let e = maas
        .allocate(&Allocation {
            agent_name: Some("wf-timeout".into()),
            ..Allocation::default()
        })
        .await
        .expect_err("504 after the allocation");
    assert!(matches!(e, MaasError::Transient { .. }), "{e:?}");
    assert_eq!(outcomes(&lab, "allocate"), [200, 504], "not repeated");
    let found = maas
        .list_machines(&MachineFilter {
            agent_name: Some("wf-timeout".into()),
            ..MachineFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].status, status::ALLOCATED);
    // And a deploy MAAS started while the proxy gave up: Transient, and the machine deploys.
    inject(
        &lab,
        fault(json!({
            "kind": "maas_proxy_timeout", "method": "POST", "path_contains": "op=deploy",
            "applied": true, "count": 1
        })),
    );
    let e = maas
        .deploy(&found[0].system_id, &Deployment::default())
        .await
        .expect_err("504 after the deploy");
    assert!(matches!(e, MaasError::Transient { .. }), "{e:?}");
    wait_status(&maas, &found[0].system_id, status::DEPLOYED).await;
    assert_eq!(outcomes(&lab, "deploy"), [504, 200, 504], "not repeated");

    // A MAAS that accepts connections and never answers: reads are tried `attempts` times,
    // a deploy once; both come back Transient.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let mut c = config(&lab);
    c.url = format!("http://{addr}/MAAS/");
    c.timeout = Duration::from_millis(300);
    let silent_maas = Client::new(c.clone()).expect("client");
    let e = silent_maas
        .get_machine("abc123")
        .await
        .expect_err("timeout");
    assert!(
        matches!(&e, MaasError::Transient { message, .. } if message.contains("did not answer in time")),
        "{e:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "a read is retried");
    let e = silent_maas
        .deploy("abc123", &Deployment::default())
        .await
        .expect_err("timeout");
    assert!(
        matches!(&e, MaasError::Transient { message, .. } if message.contains("may have been applied")),
        "{e:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "a deploy is sent once");
    silent.abort();

    // Nothing listening: nothing was sent, so even a write is retried, then Transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    c.url = format!("http://{}/MAAS/", closed.local_addr().expect("addr"));
    drop(closed);
    let e = Client::new(c)
        .expect("client")
        .allocate(&Allocation::default())
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, MaasError::Transient { message, .. } if message.contains("cannot reach MAAS") && message.contains("after 4 attempts")),
        "{e:?}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_api_key_is_permanent_and_never_shown() {
    let lab = lab().await;
    let secret = "wrong-secret-hunter2";
    let mut c = config(&lab);
    c.api_key = Secret::new(format!("lab-consumer:lab-token:{secret}"));
    let maas = Client::new(c).expect("client");
    assert!(!format!("{maas:?}").contains(secret));
    let e = maas
        .list_machines(&MachineFilter::default())
        .await
        .expect_err("401");
    let MaasError::Permanent(message) = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("401") && message.contains("Invalid API key"),
        "{message}"
    );
    assert!(!message.contains(secret) && !format!("{e:?}").contains(secret));
    let e = maas
        .allocate(&Allocation::default())
        .await
        .expect_err("401");
    assert!(!e.to_string().contains(secret));
    assert_eq!(
        outcomes(&lab, "allocate"),
        [401],
        "a refused key is not retried"
    );
    lab.shutdown().await;
}
