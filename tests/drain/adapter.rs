//! The Kubernetes/KubeVirt adapter (`drover-kube`) against the lab, without workflows or Redis: it
//! sees KubeVirt refuse an eviction at once instead of retrying, it watches a migration through
//! its phases instead of polling it, and its storage calls (classes, claims, a VM's volumes,
//! virt-api's volume hotplug, VolumeSnapshots) are idempotent as the port says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::ports::kube::{Kube, KubeError, NewPvc};

use crate::harness::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_sees_kubevirt_refuse_an_eviction_at_once() {
    let lab = Lab::start(LabConfig::reference().with_time_scale(60.0))
        .await
        .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    let kube = cluster.port();
    let pods = kube.list_pods("worker-05").await.unwrap();
    let launcher = pods
        .iter()
        .find(|p| p.labels.get("kubevirt.io").map(String::as_str) == Some("virt-launcher"))
        .expect("a virt-launcher pod");
    let started = std::time::Instant::now();
    let eviction = kube
        .evict_pod(&launcher.namespace, &launcher.name)
        .await
        .unwrap();
    assert!(
        matches!(
            eviction,
            drover_workflows::ports::kube::Eviction::Refused { .. }
        ),
        "{eviction:?}"
    );
    // kube's default client would retry the 429 for minutes.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// The adapter watches a migration instead of polling it: each call returns when the phase
/// changes, long before its window ends, and a watch the server cuts short is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_watches_a_migration_through_its_phases() {
    let lab = Lab::start(LabConfig::reference().with_time_scale(30.0))
        .await
        .unwrap();
    lab.inject(drover_lab::Fault::WatchDisconnect {
        after_ms: 50,
        count: 2,
    })
    .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    let kube = cluster.port();
    let m = kube
        .create_migration("vmo-prod", "vm-03-04-watched", "vm-03-04", &BTreeMap::new())
        .await
        .unwrap();
    let window = Duration::from_secs(60);
    let started = std::time::Instant::now();
    let mut phases = vec![m.phase];
    let end = loop {
        let m = kube
            .watch_migration("vmo-prod", "vm-03-04-watched", window)
            .await
            .unwrap()
            .expect("the migration exists");
        if m.is_finished() {
            break m;
        }
        // Not a poll: a call returns because the phase moved on (the window is far away).
        assert_ne!(
            phases.last(),
            Some(&m.phase),
            "returned without a change: {phases:?}"
        );
        phases.push(m.phase);
        assert!(
            started.elapsed() < window,
            "each call should return at a phase change, not at the end of its window: {phases:?}"
        );
    };
    assert_eq!(end.phase, "Succeeded", "{end:?}");
    assert!(phases.len() >= 3, "saw the phases go by: {phases:?}");
    assert!(
        started.elapsed() < window,
        "took {:?}: {phases:?}",
        started.elapsed()
    );
}

/// The reference lab at the drain tests' time scale (a hotplug phase or a claim binding takes one
/// simulator pass, 50 ms), and the adapter's port on it.
async fn storage_lab() -> (LabHandle, Arc<dyn Kube>) {
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap();
    (lab, cluster.port())
}

fn new_pvc(name: &str, class: &str, access_mode: &str) -> NewPvc {
    NewPvc {
        namespace: "vmo-prod".into(),
        name: name.into(),
        storage_class: class.into(),
        access_mode: access_mode.into(),
        size_bytes: 2 << 30,
        volume_mode: None,
        labels: BTreeMap::from([("drover.io/created-by".to_string(), "wf-1".to_string())]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_reads_storage_classes_and_a_vms_volumes() {
    let (_lab, kube) = storage_lab().await;
    for class in ["px-rwx", "px-rwo"] {
        let sc = kube.get_storage_class(class).await.unwrap();
        assert_eq!(
            (sc.name.as_str(), sc.provisioner.as_str()),
            (class, "pxd.portworx.com")
        );
    }
    let missing = kube.get_storage_class("no-such-class").await;
    assert!(
        matches!(missing, Err(KubeError::NotFound(_))),
        "{missing:?}"
    );

    let vm = kube.get_vm("vmo-prod", "vm-01-00").await.unwrap();
    assert!(vm.running, "{vm:?}");
    assert_eq!(vm.printable_status, "Running");
    // The reference VMs set no evictionStrategy of their own: the KubeVirt CR's default applies.
    assert_eq!(vm.eviction_strategy.as_deref(), Some("LiveMigrate"));
    let volumes: Vec<_> = vm
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.claim.as_deref(), v.hotpluggable))
        .collect();
    assert_eq!(
        volumes,
        [
            ("rootdisk", Some("vm-01-00-root"), false),
            ("cloudinitdisk", None, false)
        ]
    );
    let root = kube.get_pvc("vmo-prod", "vm-01-00-root").await.unwrap();
    assert_eq!(root.phase, "Bound");
    assert_eq!(root.storage_class.as_deref(), Some("px-rwx"));
    assert_eq!(root.access_modes, ["ReadWriteMany"]);
    let statuses = kube
        .vmi_volume_status("vmo-prod", "vm-01-00")
        .await
        .unwrap();
    assert!(
        statuses.iter().any(|s| s.name == "rootdisk" && !s.hotplug),
        "{statuses:?}"
    );

    let missing = kube.get_vm("vmo-prod", "no-such-vm").await;
    assert!(
        matches!(missing, Err(KubeError::NotFound(_))),
        "{missing:?}"
    );
    let missing = kube.vmi_volume_status("vmo-prod", "no-such-vm").await;
    assert!(
        matches!(missing, Err(KubeError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_creates_and_deletes_a_claim_idempotently() {
    let (_lab, kube) = storage_lab().await;
    let new = new_pvc("vm-01-00-data", "px-rwo", "ReadWriteOnce");
    let first = kube.create_pvc(&new).await.unwrap();
    assert_eq!(first.labels, new.labels);
    assert_eq!(first.request_bytes, 2 << 30);
    assert_eq!(first.storage_class.as_deref(), Some("px-rwo"));
    // A second create (a re-run) finds the first claim and returns it, labels and all.
    let again = kube.create_pvc(&new).await.unwrap();
    assert_eq!(
        (again.name.as_str(), &again.labels),
        ("vm-01-00-data", &new.labels)
    );
    // Another workflow's create of the same name gets the claim as it is: its labels tell.
    let mut other = new.clone();
    other.labels = BTreeMap::from([("drover.io/created-by".to_string(), "wf-2".to_string())]);
    assert_eq!(kube.create_pvc(&other).await.unwrap().labels, new.labels);

    let k = &kube;
    wait_for(
        Duration::from_secs(10),
        "the claim to bind",
        || async move { k.get_pvc("vmo-prod", "vm-01-00-data").await.unwrap().phase == "Bound" },
    )
    .await;
    let bound = kube.get_pvc("vmo-prod", "vm-01-00-data").await.unwrap();
    assert_eq!(bound.access_modes, ["ReadWriteOnce"]);
    assert_eq!(bound.request_bytes, 2 << 30);

    kube.delete_pvc("vmo-prod", "vm-01-00-data").await.unwrap();
    kube.delete_pvc("vmo-prod", "vm-01-00-data").await.unwrap();
    let gone = kube.get_pvc("vmo-prod", "vm-01-00-data").await;
    assert!(matches!(gone, Err(KubeError::NotFound(_))), "{gone:?}");
}

/// virt-api's addvolume hotplugs a claim into a running VM and persists it in the template; the
/// VMI's volumeStatus walks to Ready; a second add and a second remove are no-ops; the status
/// entry goes once the volume is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_hotplugs_a_volume_into_a_running_vm_and_out_again() {
    let (lab, kube) = storage_lab().await;
    let (ns, vm) = ("vmo-prod", "vm-01-00");
    kube.create_pvc(&new_pvc("vm-01-00-data", "px-rwx", "ReadWriteMany"))
        .await
        .unwrap();
    kube.add_volume(ns, vm, "data", "vm-01-00-data")
        .await
        .unwrap();
    kube.add_volume(ns, vm, "data", "vm-01-00-data")
        .await
        .unwrap();

    let template = kube.get_vm(ns, vm).await.unwrap().volumes;
    let data: Vec<_> = template.iter().filter(|v| v.name == "data").collect();
    assert_eq!(data.len(), 1, "added once: {template:?}");
    assert_eq!(data[0].claim.as_deref(), Some("vm-01-00-data"));
    assert!(data[0].hotpluggable);
    // The request virt-api got: AddVolumeOptions with a SCSI disk and a hotpluggable claim.
    let disks = lab.get("virtualmachines.kubevirt.io", ns, vm).unwrap()["spec"]["template"]["spec"]
        ["domain"]["devices"]["disks"]
        .clone();
    assert!(
        disks
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "data" && d["disk"]["bus"] == "scsi"),
        "{disks}"
    );

    let k = &kube;
    let phases = std::sync::Mutex::new(Vec::<String>::new());
    let seen = &phases;
    wait_for(
        Duration::from_secs(10),
        "the volume to be Ready",
        || async move {
            let statuses = k.vmi_volume_status(ns, vm).await.unwrap();
            let Some(s) = statuses.iter().find(|s| s.name == "data") else {
                return false;
            };
            assert!(s.hotplug, "{s:?}");
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&s.phase) {
                seen.push(s.phase.clone());
            }
            s.phase == "Ready"
        },
    )
    .await;
    let phases = phases.into_inner().unwrap();
    assert!(phases.len() >= 2, "walked through phases: {phases:?}");
    let ready = kube.vmi_volume_status(ns, vm).await.unwrap();
    let ready = ready.iter().find(|s| s.name == "data").unwrap();
    assert_eq!(ready.reason, "VolumeReady");
    assert!(!ready.message.is_empty());

    kube.remove_volume(ns, vm, "data").await.unwrap();
    kube.remove_volume(ns, vm, "data").await.unwrap();
    let template = kube.get_vm(ns, vm).await.unwrap().volumes;
    assert!(template.iter().all(|v| v.name != "data"), "{template:?}");
    wait_for(
        Duration::from_secs(10),
        "the status entry to go",
        || async move {
            let statuses = k.vmi_volume_status(ns, vm).await.unwrap();
            statuses.iter().all(|s| s.name != "data")
        },
    )
    .await;

    // Each second request met virt-api's 409 once and took it as done, without retrying it.
    let audit = lab.audit();
    let answers: Vec<_> = audit
        .iter()
        .filter(|e| e.verb == "addvolume" || e.verb == "removevolume")
        .map(|e| (e.verb.as_str(), e.outcome))
        .collect();
    assert_eq!(
        answers,
        [
            ("addvolume", 202),
            ("addvolume", 409),
            ("removevolume", 202),
            ("removevolume", 409)
        ]
    );

    let missing = kube
        .add_volume(ns, "no-such-vm", "data", "vm-01-00-data")
        .await;
    assert!(
        matches!(missing, Err(KubeError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_snapshots_a_claim_and_deletes_the_snapshot_idempotently() {
    let (_lab, kube) = storage_lab().await;
    let ns = "vmo-prod";
    let made = kube
        .create_snapshot(ns, "vm-01-00-root-snap", "vm-01-00-root", None)
        .await
        .unwrap();
    assert_eq!(made.source_pvc, "vm-01-00-root");
    let again = kube
        .create_snapshot(ns, "vm-01-00-root-snap", "vm-01-00-root", None)
        .await
        .unwrap();
    assert_eq!(again.name, "vm-01-00-root-snap");
    let k = &kube;
    wait_for(
        Duration::from_secs(10),
        "the snapshot to be ready",
        || async move {
            k.get_snapshot(ns, "vm-01-00-root-snap")
                .await
                .unwrap()
                .ready_to_use
        },
    )
    .await;
    assert_eq!(
        kube.get_snapshot(ns, "vm-01-00-root-snap")
            .await
            .unwrap()
            .error,
        None
    );

    // A snapshot of a claim that does not exist fails, and says why.
    kube.create_snapshot(ns, "orphan-snap", "no-such-claim", Some("px-csi-snapclass"))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the snapshot to fail",
        || async move {
            k.get_snapshot(ns, "orphan-snap")
                .await
                .unwrap()
                .error
                .is_some()
        },
    )
    .await;
    let failed = kube.get_snapshot(ns, "orphan-snap").await.unwrap();
    assert!(!failed.ready_to_use);
    assert!(failed.error.unwrap().contains("no-such-claim"));

    for name in ["vm-01-00-root-snap", "orphan-snap"] {
        kube.delete_snapshot(ns, name).await.unwrap();
        kube.delete_snapshot(ns, name).await.unwrap();
        let gone = kube.get_snapshot(ns, name).await;
        assert!(matches!(gone, Err(KubeError::NotFound(_))), "{gone:?}");
    }
}
