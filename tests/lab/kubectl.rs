//! kubectl against the lab: get nodes, get pods -A, cordon/uncordon, drain of a node full of
//! migratable VMs (it finishes because evictions trigger migrations), get vmis -o json.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::lab::support::{self, kubectl, ok_stdout};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_pods_and_vmis() {
    let lab = support::lab(60.0).await;
    let kc = support::kubeconfig(&lab, "kubectl-get");
    let nodes = ok_stdout(
        "kubectl get nodes",
        &kubectl(&kc, &["get", "nodes"], T).await,
    );
    assert!(
        nodes.lines().next().unwrap_or("").starts_with("NAME"),
        "{nodes}"
    );
    for w in 1..=8 {
        let line = nodes
            .lines()
            .find(|l| l.starts_with(&format!("worker-{w:02} ")))
            .unwrap_or_else(|| panic!("worker-{w:02} missing:\n{nodes}"));
        assert!(line.contains(" Ready "), "{line}");
    }
    let pods = ok_stdout(
        "kubectl get pods -A",
        &kubectl(&kc, &["get", "pods", "-A"], T).await,
    );
    assert_eq!(
        pods.lines()
            .filter(|l| l.starts_with("vmo-prod") && l.contains("virt-launcher-vm-"))
            .count(),
        160,
        "{pods}"
    );
    let vmis = ok_stdout(
        "kubectl get vmis -o json",
        &kubectl(&kc, &["get", "vmis", "-A", "-o", "json"], T).await,
    );
    let vmis: Value = serde_json::from_str(&vmis).expect("vmis json");
    let items = vmis["items"].as_array().expect("items");
    assert_eq!(items.len(), 160);
    assert!(items.iter().all(|v| {
        v["status"]["phase"] == "Running"
            && v["status"]["nodeName"]
                .as_str()
                .is_some_and(|n| n.starts_with("worker-"))
    }));
    let rwo = items
        .iter()
        .filter(|v| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "LiveMigratable"
                        && c["status"] == "False"
                        && c["reason"] == "DisksNotLiveMigratable"
                })
            })
        })
        .count();
    assert_eq!(rwo, 4, "four VMs sit on RWO volumes");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon() {
    let lab = support::lab(60.0).await;
    let kc = support::kubeconfig(&lab, "kubectl-cordon");
    ok_stdout(
        "kubectl cordon",
        &kubectl(&kc, &["cordon", "worker-02"], T).await,
    );
    let nodes = ok_stdout(
        "kubectl get nodes",
        &kubectl(&kc, &["get", "node", "worker-02"], T).await,
    );
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    assert_eq!(
        lab.get("nodes", "", "worker-02").expect("node")["spec"]["unschedulable"],
        true
    );
    ok_stdout(
        "kubectl uncordon",
        &kubectl(&kc, &["uncordon", "worker-02"], T).await,
    );
    let node = lab.get("nodes", "", "worker-02").expect("node");
    assert!(
        node["spec"].get("unschedulable").is_none_or(|u| u == false),
        "{}",
        node["spec"]
    );
    let audit = lab.audit();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.verb == "patch" && e.object == "nodes//worker-02" && e.outcome == 200)
            .count(),
        2,
        "{audit:?}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_through_migrations() {
    let lab = support::lab(120.0).await;
    let kc = support::kubeconfig(&lab, "kubectl-drain");
    let out = kubectl(
        &kc,
        &[
            "drain",
            "worker-03",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--pod-selector=kubevirt.io=virt-launcher",
            "--timeout=170s",
        ],
        Duration::from_secs(180),
    )
    .await;
    let text = ok_stdout("kubectl drain", &out);
    assert!(text.contains("node/worker-03 drained"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Eviction triggered evacuation of VMI"),
        "drain saw KubeVirt's 429s: {stderr}"
    );

    let pods = lab.list("pods", Some("vmo-prod"));
    assert!(
        !pods.iter().any(|p| p["spec"]["nodeName"] == "worker-03"),
        "no launcher pod left on worker-03"
    );
    let vmis = lab.list("virtualmachineinstances.kubevirt.io", Some("vmo-prod"));
    let moved: Vec<&Value> = vmis
        .iter()
        .filter(|v| {
            v["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("vm-03-"))
        })
        .collect();
    assert_eq!(moved.len(), 20);
    for v in &moved {
        assert_eq!(v["status"]["phase"], "Running");
        assert_ne!(v["status"]["nodeName"], "worker-03");
        assert_eq!(v["status"]["migrationState"]["completed"], true);
        assert_eq!(v["status"]["migrationState"]["sourceNode"], "worker-03");
    }
    // One successful migration per VM, and KubeVirt's limits held throughout.
    let migrations = lab.list(
        "virtualmachineinstancemigrations.kubevirt.io",
        Some("vmo-prod"),
    );
    let mut per_vmi: HashMap<String, usize> = HashMap::new();
    for m in &migrations {
        assert_eq!(m["status"]["phase"], "Succeeded", "{m}");
        assert_eq!(
            m["metadata"]["annotations"]["kubevirt.io/evacuationMigration"],
            "worker-03"
        );
        *per_vmi
            .entry(m["spec"]["vmiName"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert_eq!(per_vmi.len(), 20);
    assert!(per_vmi.values().all(|n| *n == 1), "{per_vmi:?}");
    let counters = lab.counters();
    assert!(
        counters.max_cluster <= 5 && counters.max_per_node.values().all(|n| *n <= 2),
        "{counters:?}"
    );
    assert_eq!(
        counters.max_per_node.get("worker-03"),
        Some(&2),
        "two outbound migrations at a time"
    );
    lab.shutdown().await;
}
