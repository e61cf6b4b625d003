//! python-libmaas against the lab's MAAS region: log in with the API key, allocate by tag, deploy
//! with cluster-join user data and wait for Deployed, see the machine join Kubernetes as a Node that
//! turns Ready, release it and see the Node go away; calls without parameters (`allocate()`,
//! `deploy()`, `release()`); a failed deployment and its reason among the events; owner data,
//! interfaces, power, abort, mark_broken and mark_fixed through the client's own objects.

use std::time::Duration;

use crate::lab::support;

const DEPLOY: &str = r##"
import sys
from maas.client import connect
client = connect(sys.argv[1], apikey=sys.argv[2])
machine = client.machines.allocate(tags=["vmo-worker"])
assert machine.status_name == "Allocated", machine.status_name
machine.deploy(user_data=b"#cloud-config\nruncmd:\n  - kubeadm join 10.20.30.11:6443 --token abc\n", distro_series="jammy", wait=True, wait_interval=0.2)
machine.refresh()
print(machine.system_id, machine.hostname, machine.status_name, machine.status_message, flush=True)
"##;

const RELEASE: &str = r#"
import sys
from maas.client import connect
client = connect(sys.argv[1], apikey=sys.argv[2])
machine = client.machines.get(system_id=sys.argv[3])
machine.release(quick_erase=True, erase=True, wait=True, wait_interval=0.2)
print(machine.status_name, flush=True)
"#;

const BAD_KEY: &str = r#"
import sys
from maas.client import connect
from maas.client.bones import CallError
client = connect(sys.argv[1], apikey="lab-consumer:lab-token:wrong")
try:
    client.machines.list()
except CallError as e:
    print(e.status, e.content.decode(), flush=True)
"#;

/// `allocate()` and `deploy()` without arguments: the client sends a multipart body with one
/// empty part, which MAAS takes as no parameters.
const NO_PARAMETERS: &str = r#"
import sys
from maas.client import connect
client = connect(sys.argv[1], apikey=sys.argv[2])
machine = client.machines.allocate()
assert machine.status_name == "Allocated", machine.status_name
machine.deploy(wait=True, wait_interval=0.2)
print(machine.hostname, machine.status_name, machine.osystem, machine.distro_series, machine.power_state.value, flush=True)
machine.release(wait=True, wait_interval=0.2)
print(machine.status_name, machine.owner, flush=True)
"#;

const LIFECYCLE: &str = r#"
import sys
from maas.client import connect
from maas.client.enum import InterfaceType, LinkMode, NodeStatus, PowerState
from maas.client.viscera.machines import FailedDeployment, FailedDiskErasing
client = connect(sys.argv[1], apikey=sys.argv[2])
origin = client._origin

# Owner data through the client's own save().
m = client.machines.allocate(tags=["vmo-worker"], agent_name="wf-9", comment="python")
m.owner_data = {"drover/workflow": "wf-9", "drover/attempt": "1"}
m.save()
m = client.machines.get(system_id=m.system_id)
assert m.owner_data == {"drover/workflow": "wf-9", "drover/attempt": "1"}, m.owner_data
# Dropping a key sends it with an empty value, which deletes it.
m.owner_data = {"drover/workflow": "wf-9"}
m.save()
m = client.machines.get(system_id=m.system_id)
assert m.owner_data == {"drover/workflow": "wf-9"}, m.owner_data
print("owner_data", sorted(m.owner_data.items()), flush=True)

# The VMO host network: bond, VLAN and bridge on it, a static link.
nics = m.interfaces
bond = origin.Interfaces.create(m, InterfaceType.BOND, name="bond0", parents=[nics.get_by_name("eno1"), nics.get_by_name("eno2")], bond_mode="802.3ad")
vlan = origin.Interfaces.create(m, InterfaceType.VLAN, vlan=5003, parent=bond)
bridge = origin.Interfaces.create(m, InterfaceType.BRIDGE, name="br0", parent=bond)
link = vlan.links.create(LinkMode.STATIC, subnet=3, ip_address="10.20.30.77")
assert (link.mode, link.ip_address) == (LinkMode.STATIC, "10.20.30.77"), link
vlan.refresh()
vlan.links[0].delete()
vlan.refresh()
assert [l.mode for l in vlan.links] == [LinkMode.LINK_UP], list(vlan.links)
print("interfaces", bond.type.value, sorted(p.name for p in bond.parents), vlan.name, bridge.name, flush=True)

# Power.
assert m.query_power_state() == PowerState.OFF
m.power_on()
assert m.power_state == PowerState.ON, m.power_state
m.power_off()
assert m.query_power_state() == PowerState.OFF

# A failed deployment: the client raises, the reason is an ERROR event.
try:
    m.deploy(wait=True, wait_interval=0.2)
    raise SystemExit("the deployment should have failed")
except FailedDeployment as e:
    print("failed", e, flush=True)
m.refresh()
events = client.events.query(system_ids=[m.system_id], level=client.events.ERROR)
reasons = [e.description for e in events if e.event_type == "Marking node failed"]
assert len(reasons) == 1 and m.status_message == "Marking node failed - " + reasons[0], (reasons, m.status_message)
print("reason", reasons[0], flush=True)

# Broken by its owner (released first), then fixed: Ready.
m.mark_broken(comment="flaky install")
assert (m.status, m.owner, m.owner_data) == (NodeStatus.BROKEN, None, {}), (m.status, m.owner_data)
m.mark_fixed()
assert m.status == NodeStatus.READY, m.status

# Abort a deployment: Allocated again.
m = client.machines.allocate(tags=["vmo-worker"])
m.deploy()
m.abort(comment="wrong image")
assert (m.status, m.power_state) == (NodeStatus.ALLOCATED, PowerState.OFF), (m.status, m.power_state)

# A disk erase that fails.
try:
    m.release(erase=True, quick_erase=True, wait=True, wait_interval=0.2)
    raise SystemExit("the erase should have failed")
except FailedDiskErasing as e:
    print("erase", e, flush=True)
print("ok", flush=True)
"#;

async fn python(script: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .args(["-c", script])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python-libmaas finishes in time")
    .expect("python runs");
    support::ok_stdout("python-libmaas", &out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmaas_allocate_deploy_join_release() {
    support::require_python_module("maas.client", "python-libmaas");
    let lab = support::lab(120.0).await;
    let (url, key) = (lab.maas_url(), lab.maas_api_key());
    let out = python(DEPLOY, &[&url, &key]).await;
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&fields[2..], ["Deployed", "Deployed"], "{out}");
    let (system_id, hostname) = (fields[0].to_string(), fields[1].to_string());
    assert!(hostname.starts_with("spare-"), "allocated a spare: {out}");

    let node = support::wait_for(
        "the deployed machine to join as a Ready node",
        Duration::from_secs(30),
        || async {
            let n = lab.get("nodes", "", &hostname)?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(n)
        },
    )
    .await;
    assert_eq!(node["spec"]["providerID"], format!("maas:///{system_id}"));
    assert_eq!(
        node["metadata"]["labels"]["kubevirt.io/schedulable"],
        "true"
    );

    let released = python(RELEASE, &[&url, &key, &system_id]).await;
    assert_eq!(released.trim(), "Ready");
    support::wait_for(
        "the released machine's node to go away",
        Duration::from_secs(30),
        || async { lab.get("nodes", "", &hostname).is_none().then_some(()) },
    )
    .await;
    let deploys = lab
        .audit()
        .into_iter()
        .filter(|e| e.api == "maas" && e.verb == "deploy" && e.outcome == 200)
        .count();
    assert_eq!(deploys, 1, "no machine deployed twice");

    let denied = python(BAD_KEY, &[&url]).await;
    assert_eq!(denied.trim(), "401 Authorization Error: Invalid API key.");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmaas_calls_without_parameters() {
    support::require_python_module("maas.client", "python-libmaas");
    let lab = support::lab(300.0).await;
    let out = python(NO_PARAMETERS, &[&lab.maas_url(), &lab.maas_api_key()]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines
            .first()
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>()),
        Some(vec!["Deployed", "ubuntu", "jammy", "on"]),
        "{out}"
    );
    assert_eq!(lines.get(1), Some(&"Ready None"), "{out}");
    let empty_bodies = lab
        .audit()
        .into_iter()
        .filter(|e| e.api == "maas" && matches!(e.verb.as_str(), "allocate" | "deploy" | "release"))
        .map(|e| (e.verb, e.outcome))
        .collect::<Vec<_>>();
    assert_eq!(
        empty_bodies,
        [
            ("allocate".to_string(), 200),
            ("deploy".to_string(), 200),
            ("release".to_string(), 200)
        ]
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmaas_owner_data_interfaces_power_and_failures() {
    support::require_python_module("maas.client", "python-libmaas");
    let lab = support::lab(600.0).await;
    lab.inject(drover_lab::Fault::MaasDeployFailure {
        machine: None,
        count: 1,
    })
    .expect("fault");
    lab.inject(drover_lab::Fault::MaasEraseFailure {
        machine: None,
        count: 1,
    })
    .expect("fault");
    let out = python(LIFECYCLE, &[&lab.maas_url(), &lab.maas_api_key()]).await;
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {out}"))
            .to_string()
    };
    assert_eq!(
        line("owner_data"),
        "owner_data [('drover/workflow', 'wf-9')]"
    );
    assert_eq!(
        line("interfaces"),
        "interfaces bond ['eno1', 'eno2'] bond0.20 br0"
    );
    assert!(line("failed").ends_with("failed to deploy."), "{out}");
    assert_eq!(
        line("reason"),
        "reason Installation failed (refer to the installation log for more information)."
    );
    assert!(line("erase").ends_with("failed to erase disk."), "{out}");
    assert_eq!(out.lines().last(), Some("ok"));
    lab.shutdown().await;
}
