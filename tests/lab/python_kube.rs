//! The Python `kubernetes` client against the lab: list nodes, and watch pods through a change.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::lab::support;

const LIST_NODES: &str = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
nodes = v1.list_node()
for n in nodes.items:
    ready = [c.status for c in n.status.conditions if c.type == "Ready"][0]
    print(n.metadata.name, ready, n.status.allocatable["memory"])
vmis = client.CustomObjectsApi().list_namespaced_custom_object("kubevirt.io", "v1", "vmo-prod", "virtualmachineinstances")
print("vmis", len(vmis["items"]))
"#;

const WATCH_PODS: &str = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
pods = v1.list_namespaced_pod("vmo-prod", label_selector="kubevirt.io=virt-launcher")
print("LISTED", len(pods.items), flush=True)
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_pod, "vmo-prod", resource_version=pods.metadata.resource_version, timeout_seconds=60):
    pod = ev["object"]
    if ev["type"] == "MODIFIED" and (pod.metadata.labels or {}).get("changed") == "yes":
        print("SAW", pod.metadata.name, flush=True)
        w.stop()
        sys.exit(0)
sys.exit(3)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lists_nodes() {
    support::require_python_module("kubernetes", "kubernetes");
    let lab = support::lab(60.0).await;
    let kc = support::kubeconfig(&lab, "py-nodes");
    let out = tokio::process::Command::new("python3")
        .args(["-c", LIST_NODES])
        .arg(&kc)
        .output()
        .await
        .expect("python runs");
    let text = support::ok_stdout("python list_node", &out);
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(text.contains("vmis 160"), "{text}");
    assert!(text.contains("worker-01 True 268435456Ki"), "{text}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_watches_pods_through_a_change() {
    support::require_python_module("kubernetes", "kubernetes");
    let lab = support::lab(60.0).await;
    let kc = support::kubeconfig(&lab, "py-watch");
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", WATCH_PODS])
        .arg(&kc)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("python lists in time")
        .expect("read")
        .unwrap_or_default();
    assert_eq!(first, "LISTED 160");
    let pod = lab
        .list("pods", Some("vmo-prod"))
        .into_iter()
        .next()
        .expect("a pod");
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let url = format!("{}/api/v1/namespaces/vmo-prod/pods/{name}", lab.kube_url());
    // The watch may not be established yet when the list returns: patch until the watcher reports.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let client = support::http();
    let saw = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the python watch never saw the change"
        );
        let resp = client
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(format!(
                r#"{{"metadata":{{"labels":{{"changed":"yes","nonce":"n{}"}}}}}}"#,
                rand::random::<u32>()
            ))
            .send()
            .await
            .expect("patch");
        assert_eq!(resp.status(), 200);
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            break line;
        }
    };
    assert_eq!(saw, format!("SAW {name}"));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("python exits")
        .expect("status");
    assert!(status.success());
    lab.shutdown().await;
}
