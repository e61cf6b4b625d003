//! python-libmaas against the lab's MAAS region: log in with the API key, allocate by tag, deploy
//! with cluster-join user data and wait for Deployed, see the machine join Kubernetes as a Node that
//! turns Ready, release it and see the Node go away.

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
