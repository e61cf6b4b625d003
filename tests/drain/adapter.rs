//! The Kubernetes/KubeVirt adapter (`drover-kube`) against the lab, without workflows or Redis: it
//! sees KubeVirt refuse an eviction at once instead of retrying, and it watches a migration through
//! its phases instead of polling it.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_lab::{Lab, LabConfig};

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
