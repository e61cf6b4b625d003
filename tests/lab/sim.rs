//! Simulated behaviour through the public API: storage phases (PVC binding, CDI progress,
//! snapshots), volume hotplug, faults aimed at nodes and migrations, aborting a migration by
//! deleting it, the admin endpoints (audit, counters, faults) and scenario files with a time scale.

use std::time::Duration;

use serde_json::{Value, json};

use drover_lab::{Lab, LabConfig, Scenario};

use crate::lab::support::{self, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_imports_snapshots_and_hotplug() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let dv = json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "rhel9"},
        "spec": {"source": {"registry": {"url": "docker://quay.io/containerdisks/rhel9"}}, "storage": {"storageClassName": "px-rwx", "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "30Gi"}}}}
    });
    let (code, _) = send(
        c.post(format!(
            "{base}/apis/cdi.kubevirt.io/v1beta1/namespaces/vmo-prod/datavolumes"
        ))
        .json(&dv),
    )
    .await;
    assert_eq!(code, 201);
    let mut seen_progress = Vec::new();
    support::wait_for("the import to succeed", Duration::from_secs(30), || {
        let d = lab.get("datavolumes.cdi.kubevirt.io", "vmo-prod", "rhel9");
        let phase = d
            .as_ref()
            .map(|d| d["status"]["phase"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        if phase == "ImportInProgress" {
            seen_progress.push(
                d.as_ref()
                    .map(|d| d["status"]["progress"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default(),
            );
        }
        async move { (phase == "Succeeded").then_some(()) }
    })
    .await;
    assert!(
        seen_progress
            .iter()
            .any(|p| p.ends_with('%') && p.contains('.') && p != "100.0%"),
        "{seen_progress:?}"
    );
    let d = lab
        .get("datavolumes.cdi.kubevirt.io", "vmo-prod", "rhel9")
        .expect("dv");
    assert_eq!(d["status"]["progress"], "100.0%");
    let pvc = lab
        .get("persistentvolumeclaims", "vmo-prod", "rhel9")
        .expect("pvc");
    assert_eq!(pvc["status"]["phase"], "Bound");

    let snap = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "s1"}, "spec": {"source": {"persistentVolumeClaimName": "rhel9"}, "volumeSnapshotClassName": "px-csi-snapclass"}});
    let (code, _) = send(
        c.post(format!(
            "{base}/apis/snapshot.storage.k8s.io/v1/namespaces/vmo-prod/volumesnapshots"
        ))
        .json(&snap),
    )
    .await;
    assert_eq!(code, 201);
    let s = support::wait_for(
        "the snapshot to be ready",
        Duration::from_secs(10),
        || async {
            let s = lab.get("volumesnapshots.snapshot.storage.k8s.io", "vmo-prod", "s1")?;
            (s["status"]["readyToUse"] == true).then_some(s)
        },
    )
    .await;
    assert_eq!(s["status"]["restoreSize"], "30Gi");

    // A VM with a DataVolume template provisions (the import runs) before its VMI starts.
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "imported"},
        "spec": {
            "runStrategy": "Always",
            "dataVolumeTemplates": [{"metadata": {"name": "imported-root"}, "spec": {"source": {"registry": {"url": "docker://quay.io/containerdisks/rhel9"}}, "storage": {"storageClassName": "px-rwx", "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}}}}],
            "template": {"spec": {
                "domain": {"cpu": {"cores": 2}, "resources": {"requests": {"memory": "4Gi"}}, "devices": {"disks": [{"name": "root", "disk": {}}], "interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "root", "dataVolume": {"name": "imported-root"}}]
            }}
        }
    });
    let (code, _) = send(
        c.post(format!(
            "{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachines"
        ))
        .json(&vm),
    )
    .await;
    assert_eq!(code, 201);
    support::wait_for("the VM to provision", Duration::from_secs(10), || async {
        let vm = lab.get("virtualmachines.kubevirt.io", "vmo-prod", "imported")?;
        (vm["status"]["printableStatus"] == "Provisioning").then_some(())
    })
    .await;
    assert!(
        lab.get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "imported"
        )
        .is_none()
    );
    let vmi = support::wait_for(
        "the imported VM to run",
        Duration::from_secs(30),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "imported",
            )?;
            (v["status"]["phase"] == "Running").then_some(v)
        },
    )
    .await;
    let live = vmi["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "LiveMigratable")
        .cloned()
        .expect("LiveMigratable");
    assert_eq!(
        live["status"], "True",
        "an RWX DataVolume is migratable: {live}"
    );

    // Upload: DataVolume with an upload source, a token, the image through the upload proxy.
    let up = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "win2022"}, "spec": {"source": {"upload": {}}, "storage": {"resources": {"requests": {"storage": "60Gi"}}}}});
    let (code, _) = send(
        c.post(format!(
            "{base}/apis/cdi.kubevirt.io/v1beta1/namespaces/vmo-prod/datavolumes"
        ))
        .json(&up),
    )
    .await;
    assert_eq!(code, 201);
    let (code, utr) = send(
        c.post(format!(
            "{base}/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/vmo-prod/uploadtokenrequests"
        ))
        .json(&json!({"metadata": {"name": "t1"}, "spec": {"pvcName": "win2022"}})),
    )
    .await;
    assert_eq!(code, 201, "{utr}");
    let token = utr["status"]["token"].as_str().expect("token").to_string();
    support::wait_for(
        "the upload server to be ready",
        Duration::from_secs(10),
        || async {
            let d = lab.get("datavolumes.cdi.kubevirt.io", "vmo-prod", "win2022")?;
            (d["status"]["phase"] == "UploadReady").then_some(())
        },
    )
    .await;
    let resp = c
        .post(format!("{base}/v1beta1/upload"))
        .header("authorization", "Bearer nope")
        .body(vec![0u8; 1024])
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 401);
    let resp = c
        .post(format!("{base}/v1beta1/upload"))
        .header("authorization", format!("Bearer {token}"))
        .body(vec![0u8; 65536])
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    support::wait_for(
        "the upload to complete",
        Duration::from_secs(10),
        || async {
            let d = lab.get("datavolumes.cdi.kubevirt.io", "vmo-prod", "win2022")?;
            (d["status"]["phase"] == "Succeeded" && d["status"]["progress"] == "100.0%")
                .then_some(())
        },
    )
    .await;

    let add = json!({"name": "data1", "disk": {"disk": {"bus": "scsi"}}, "volumeSource": {"persistentVolumeClaim": {"claimName": "rhel9"}}});
    let url = format!(
        "{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-01-04/addvolume"
    );
    let (code, _) = send(c.put(&url).json(&add)).await;
    assert_eq!(code, 202);
    let (code, body) = send(c.put(&url).json(&add)).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            409,
            Some("Unable to add volume [data1] because volume with that name already exists")
        )
    );
    let (code, body) = send(c.put(&url).json(&json!({"name": "x"}))).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("AddVolumeOptions requires disk to not be nil"))
    );
    let status = support::wait_for(
        "the hotplugged volume to be ready",
        Duration::from_secs(10),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "vm-01-04",
            )?;
            v["status"]["volumeStatus"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "data1" && s["phase"] == "Ready")
                .cloned()
        },
    )
    .await;
    assert_eq!(status["reason"], "VolumeReady");
    assert_eq!(
        status["message"],
        "Successfully attach hotplugged volume data1 to VM"
    );
    let vm = lab
        .get("virtualmachines.kubevirt.io", "vmo-prod", "vm-01-04")
        .expect("vm");
    assert!(
        vm["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "data1" && v["persistentVolumeClaim"]["hotpluggable"] == true)
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_admin_endpoints_and_audit() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    // A node going NotReady is not a migration target; a migration aimed there cannot be placed.
    let (code, _) = send(
        c.post(format!("{base}/lab/faults"))
            .json(&json!({"kind": "node_not_ready", "node": "worker-02"})),
    )
    .await;
    assert_eq!(code, 201);
    let kc = support::kubeconfig(&lab, "faults");
    let nodes = support::ok_stdout(
        "kubectl get nodes",
        &support::kubectl(&kc, &["get", "node", "worker-02"], Duration::from_secs(30)).await,
    );
    assert!(nodes.contains("NotReady"), "{nodes}");
    let migrate = |vm: &str, body: Value| {
        c.put(format!("{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/{vm}/migrate")).json(&body)
    };
    let (code, _) = send(migrate(
        "vm-01-06",
        json!({"addedNodeSelector": {"kubernetes.io/hostname": "worker-02"}}),
    ))
    .await;
    assert_eq!(code, 202);
    let m = support::wait_for(
        "the unplaceable migration to time out",
        Duration::from_secs(30),
        || async {
            lab.list(
                "virtualmachineinstancemigrations.kubevirt.io",
                Some("vmo-prod"),
            )
            .into_iter()
            .find(|m| m["spec"]["vmiName"] == "vm-01-06" && m["status"]["phase"] == "Failed")
        },
    )
    .await;
    assert!(
        m["status"]["migrationState"]["failureReason"]
            .as_str()
            .unwrap_or("")
            .contains("unschedulable"),
        "{m}"
    );

    // Deleting a running migration aborts it.
    let (code, _) = send(
        c.post(format!("{base}/lab/faults"))
            .json(&json!({"kind": "unschedulable_target", "count": 1})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = send(migrate("vm-01-07", json!({}))).await;
    assert_eq!(code, 202);
    let name = support::wait_for(
        "the stuck migration to be admitted",
        Duration::from_secs(10),
        || async {
            lab.list(
                "virtualmachineinstancemigrations.kubevirt.io",
                Some("vmo-prod"),
            )
            .into_iter()
            .find(|m| m["spec"]["vmiName"] == "vm-01-07" && m["status"]["phase"] == "Scheduling")
            .and_then(|m| m["metadata"]["name"].as_str().map(String::from))
        },
    )
    .await;
    let (code, _) = send(c.delete(format!(
        "{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachineinstancemigrations/{name}"
    )))
    .await;
    assert_eq!(code, 200);
    let vmi = support::wait_for(
        "the abort to be recorded",
        Duration::from_secs(10),
        || async {
            let v = lab.get(
                "virtualmachineinstances.kubevirt.io",
                "vmo-prod",
                "vm-01-07",
            )?;
            (v["status"]["migrationState"]["abortStatus"] == "Succeeded").then_some(v)
        },
    )
    .await;
    assert_eq!(vmi["status"]["nodeName"], "worker-01");

    let (code, audit) = send(c.get(format!("{base}/lab/audit?api=kube&verb=migrate"))).await;
    assert_eq!(code, 200);
    let entries = audit.as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{audit}");
    assert!(
        entries.iter().all(
            |e| e["outcome"] == 202 && e["client"].as_str().unwrap_or("").contains("127.0.0.1")
        )
    );
    let (code, deleted) = send(c.get(format!(
        "{base}/lab/audit?verb=delete&object=virtualmachineinstancemigrations"
    )))
    .await;
    assert_eq!((code, deleted.as_array().map(Vec::len)), (200, Some(1)));
    let (code, counters) = send(c.get(format!("{base}/lab/counters"))).await;
    assert_eq!(code, 200);
    assert!(
        counters["max_cluster"].as_u64().is_some_and(|n| n >= 1),
        "{counters}"
    );
    let (code, faults) = send(c.get(format!("{base}/lab/faults"))).await;
    assert_eq!(
        (code, faults["targeted"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    // A second migration of a VMI already migrating fails at once, as KubeVirt refuses it.
    let vmim = |name: &str| json!({"metadata": {"name": name}, "spec": {"vmiName": "vm-01-10"}});
    let url =
        format!("{base}/apis/kubevirt.io/v1/namespaces/vmo-prod/virtualmachineinstancemigrations");
    assert_eq!(send(c.post(&url).json(&vmim("m-first"))).await.0, 201);
    assert_eq!(send(c.post(&url).json(&vmim("m-second"))).await.0, 201);
    let second = support::wait_for(
        "the duplicate migration to fail",
        Duration::from_secs(10),
        || async {
            let m = lab.get(
                "virtualmachineinstancemigrations.kubevirt.io",
                "vmo-prod",
                "m-second",
            )?;
            (m["status"]["phase"] == "Failed").then_some(m)
        },
    )
    .await;
    assert_eq!(
        second["status"]["conditions"][0]["message"],
        "VMI is not eligible for migration because another migration job is in progress."
    );

    // Random rates: every Kubernetes request fails while kube_503 is 1.0; latency jitter delays.
    let (code, _) = send(
        c.put(format!("{base}/lab/faults/rates"))
            .json(&json!({"kube_503": 1.0})),
    )
    .await;
    assert_eq!(code, 200);
    let resp = c
        .get(format!("{base}/api/v1/nodes"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 503);
    let (code, _) = send(
        c.put(format!("{base}/lab/faults/rates"))
            .json(&json!({"latency_jitter_ms": 400})),
    )
    .await;
    assert_eq!(code, 200);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            c.get(format!("{base}/api/v1/nodes"))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
    }
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "jitter adds latency: {:?}",
        started.elapsed()
    );
    assert_eq!(send(c.delete(format!("{base}/lab/faults"))).await.0, 200);

    let (code, body) = send(
        c.post(format!("{base}/lab/faults"))
            .json(&json!({"kind": "bogus"})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let kubeconfig = c
        .get(format!("{base}/lab/kubeconfig"))
        .send()
        .await
        .expect("kubeconfig")
        .text()
        .await
        .expect("text");
    assert!(
        kubeconfig.contains(&format!("server: {base}")),
        "{kubeconfig}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_file_and_time_scale() {
    support::crypto();
    let dir = support::temp_dir("scenario");
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        r#"
name = "tiny"
time_scale = 600.0
namespaces = ["default", "apps"]

[migrations]
parallel_per_cluster = 1
parallel_outbound_per_node = 1

[[storage_classes]]
name = "shared"
default = true

[[nodes]]
name = "n1"
memory_gib = 64

[[nodes]]
name = "n2"
memory_gib = 64

[[vm_groups]]
prefix = "app"
namespace = "apps"
nodes = ["n1"]
per_node = 3
memory_gib = 4.0

[[maas.machines]]
hostname = "n1"
status = "deployed"
"#,
    )
    .expect("scenario written");
    let lab = Lab::start(LabConfig::from_file(&path).expect("scenario parses"))
        .await
        .expect("lab");
    assert_eq!(lab.scenario().name, "tiny");
    assert_eq!(
        lab.list("virtualmachineinstances.kubevirt.io", Some("apps"))
            .len(),
        3
    );
    let kc = support::kubeconfig(&lab, "tiny");
    let out = support::kubectl(
        &kc,
        &[
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--pod-selector=kubevirt.io=virt-launcher",
            "--timeout=60s",
        ],
        Duration::from_secs(90),
    )
    .await;
    support::ok_stdout("kubectl drain n1", &out);
    let counters = lab.counters();
    assert_eq!(
        counters.max_cluster, 1,
        "parallel_per_cluster = 1 held: {counters:?}"
    );
    assert!(
        lab.list("virtualmachineinstances.kubevirt.io", Some("apps"))
            .iter()
            .all(|v| v["status"]["nodeName"] == "n2")
    );
    lab.shutdown().await;
    assert!(Scenario::from_toml("time_scale = 0.0").is_err());
    assert!(LabConfig::from_file(&dir.join("missing.json")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_watch_disconnects() {
    let lab = support::lab(120.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let vm_url = |action: &str| {
        format!(
            "{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-02-03/{action}"
        )
    };
    let (code, body) = send(c.put(vm_url("stop")).body("{}")).await;
    assert_eq!(code, 202, "{body}");
    support::wait_for("the VM to stop", Duration::from_secs(10), || async {
        let vm = lab.get("virtualmachines.kubevirt.io", "vmo-prod", "vm-02-03")?;
        (vm["status"]["printableStatus"] == "Stopped"
            && lab
                .get(
                    "virtualmachineinstances.kubevirt.io",
                    "vmo-prod",
                    "vm-02-03",
                )
                .is_none())
        .then_some(())
    })
    .await;
    let (code, body) = send(c.put(vm_url("stop")).body("{}")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (409, Some("VM is not running"))
    );
    let (code, _) = send(c.put(vm_url("start")).body("{}")).await;
    assert_eq!(code, 202);
    let vmi = support::wait_for("the VM to run again", Duration::from_secs(10), || async {
        let v = lab.get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "vm-02-03",
        )?;
        (v["status"]["phase"] == "Running").then_some(v)
    })
    .await;
    assert!(
        vmi["status"]["nodeName"]
            .as_str()
            .is_some_and(|n| n.starts_with("worker-"))
    );
    let vm = lab
        .get("virtualmachines.kubevirt.io", "vmo-prod", "vm-02-03")
        .expect("vm");
    assert_eq!(vm["spec"]["runStrategy"], "Always");

    // A watch cut by a fault ends early; the client resumes from its last resourceVersion.
    lab.inject(drover_lab::Fault::WatchDisconnect {
        after_ms: 200,
        count: 1,
    })
    .expect("fault");
    let started = std::time::Instant::now();
    let resp = c
        .get(format!(
            "{base}/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=30"
        ))
        .send()
        .await
        .expect("watch");
    let _ = resp.text().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the watch was cut early"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_on_a_lost_node_restart_elsewhere() {
    let lab = support::lab(600.0).await;
    lab.inject(drover_lab::Fault::NodeNotReady {
        node: "worker-05".into(),
    })
    .expect("fault");
    for vm in ["vm-05-00", "vm-05-19"] {
        let vmi = support::wait_for(
            "the VM to restart on a healthy node",
            Duration::from_secs(30),
            || async {
                let v = lab.get("virtualmachineinstances.kubevirt.io", "vmo-prod", vm)?;
                (v["status"]["phase"] == "Running" && v["status"]["nodeName"] != "worker-05")
                    .then_some(v)
            },
        )
        .await;
        assert!(
            vmi["status"]["migrationState"].is_null(),
            "{vm} restarted, not migrated"
        );
    }
    assert!(
        lab.list("pods", Some("vmo-prod"))
            .iter()
            .all(|p| p["spec"]["nodeName"] != "worker-05"),
        "no launcher pod left on the lost node"
    );
    lab.shutdown().await;
}

/// A rebooted node is Ready before virt-handler runs on it again, and takes no VM until then: a
/// migration pinned there waits for a target and lands once the node is schedulable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebooted_node_takes_vms_once_virt_handler_runs() {
    support::crypto();
    let mut config = LabConfig::default().with_time_scale(60.0);
    config.scenario.reboot.boot_secs = 60.0;
    config.scenario.reboot.virt_handler_start_secs = 150.0;
    let lab = Lab::start(config).await.expect("lab starts");
    let c = support::http();
    let base = lab.kube_url();
    let node = || lab.get("nodes", "", "worker-02").expect("worker-02");
    let ready = |n: &Value| {
        n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let schedulable = |n: &Value| n["metadata"]["labels"]["kubevirt.io/schedulable"] == "true";
    let boot_id = node()["status"]["nodeInfo"]["bootID"].clone();
    let launchers: Vec<String> = lab
        .list("pods", Some("vmo-prod"))
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"] == "worker-02"
                && p["metadata"]["labels"]["kubevirt.io"] == "virt-launcher"
        })
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(launchers.len(), 20);

    let (code, body) = send(
        c.post(format!("{base}/lab/faults"))
            .json(&json!({"kind": "node_reboot", "node": "worker-02"})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let n = node();
    assert!(!ready(&n) && !schedulable(&n), "{n}");

    let (code, body) = send(
        c.put(format!("{base}/apis/subresources.kubevirt.io/v1/namespaces/vmo-prod/virtualmachines/vm-01-06/migrate"))
            .json(&json!({"addedNodeSelector": {"kubernetes.io/hostname": "worker-02"}})),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let migration = || {
        lab.list(
            "virtualmachineinstancemigrations.kubevirt.io",
            Some("vmo-prod"),
        )
        .into_iter()
        .find(|m| m["spec"]["vmiName"] == "vm-01-06")
    };

    let n = support::wait_for("worker-02 Ready again", Duration::from_secs(20), || async {
        let n = node();
        ready(&n).then_some(n)
    })
    .await;
    assert!(!schedulable(&n), "virt-handler is not up yet: {n}");
    assert_ne!(n["status"]["nodeInfo"]["bootID"], boot_id, "a new boot");
    let m = migration().expect("the migration exists");
    assert!(
        m["status"]["phase"] != "Succeeded" && m["status"]["phase"] != "Failed",
        "no target while virt-handler is down: {m}"
    );

    let m = support::wait_for(
        "the pinned migration to land on worker-02",
        Duration::from_secs(30),
        || async { migration().filter(|m| m["status"]["phase"] == "Succeeded") },
    )
    .await;
    assert_eq!(m["status"]["migrationState"]["targetNode"], "worker-02");
    assert!(schedulable(&node()));
    // The VMs that were still on worker-02 went down with it and were started again, not migrated.
    let vmi = lab
        .get(
            "virtualmachineinstances.kubevirt.io",
            "vmo-prod",
            "vm-02-00",
        )
        .expect("vm-02-00 runs again");
    assert_eq!(vmi["status"]["phase"], "Running", "{vmi}");
    assert!(vmi["status"]["migrationState"].is_null(), "{vmi}");
    let survivors: Vec<&String> = launchers
        .iter()
        .filter(|name| {
            lab.get("pods", "vmo-prod", name)
                .is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "launcher pods survived the reboot: {survivors:?}"
    );
    lab.shutdown().await;
}
