//! Lab performance figures (a benchmark, not a test): how long a 1,000-VM scenario takes to load and
//! how much memory it lives in, and get/list throughput against 200 VMIs with the lab confined to
//! one core (a current-thread runtime on its own thread). Run it in release mode:
//! `CARGO_TARGET_DIR=target-lab cargo run --release -p drover-lab --example bench`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drover_lab::scenario::{NodeSpec, StorageClassSpec, VmGroup};
use drover_lab::{Lab, LabConfig, Scenario};

fn scenario(nodes: usize, per_node: u32) -> Scenario {
    let mut s = Scenario::empty();
    s.name = format!("bench-{nodes}x{per_node}");
    s.storage_classes = vec![StorageClassSpec {
        name: "px-rwx".into(),
        default: true,
        ..StorageClassSpec::default()
    }];
    s.nodes = (0..nodes)
        .map(|i| NodeSpec {
            name: format!("w{i:03}"),
            ..NodeSpec::default()
        })
        .collect();
    s.vm_groups = vec![VmGroup {
        prefix: "vm".into(),
        namespace: "bench".into(),
        per_node,
        storage_class: "px-rwx".into(),
        ..VmGroup::default()
    }];
    s
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The lab runs on one thread: a current-thread runtime of its own.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lab_thread = std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let before = rss_mib();
            let t = Instant::now();
            let big = Lab::start(LabConfig {
                scenario: scenario(40, 25),
                ..LabConfig::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            let load = t.elapsed();
            let vmis = big.list("virtualmachineinstances.kubevirt.io", None).len();
            let rss = rss_mib() - before;
            big.shutdown().await;
            let lab = Lab::start(LabConfig {
                scenario: scenario(8, 25),
                ..LabConfig::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            tx.send((load, vmis, rss, lab.kube_url()))
                .map_err(|e| e.to_string())?;
            let _ = stop_rx.await;
            lab.shutdown().await;
            Ok(())
        })
    });
    let (load, vmis, rss, url) = rx.recv()?;
    println!(
        "load: {vmis} VMIs (1,000-VM scenario) loaded in {:.2} s, +{rss:.0} MiB RSS",
        load.as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (gets, lists, secs) = rt.block_on(async move {
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
        let done = Arc::new(AtomicU64::new(0));
        let listed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tasks = Vec::new();
        for worker in 0..32u64 {
            let (client, url, done, listed) = (client.clone(), url.clone(), done.clone(), listed.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = worker;
                while Instant::now() < deadline {
                    i += 1;
                    let node = i % 8;
                    let req = if i % 5 == 0 {
                        listed.fetch_add(1, Ordering::Relaxed);
                        format!("{url}/apis/kubevirt.io/v1/namespaces/bench/virtualmachineinstances?labelSelector=kubevirt.io%2FnodeName%3Dw{node:03}")
                    } else {
                        format!("{url}/apis/kubevirt.io/v1/namespaces/bench/virtualmachineinstances/vm-w{node:03}-{:02}", i % 25)
                    };
                    if let Ok(resp) = client.get(req).send().await
                        && resp.status().is_success() && resp.bytes().await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                }
            }));
        }
        let t = Instant::now();
        for task in tasks {
            let _ = task.await;
        }
        let total = done.load(Ordering::Relaxed);
        let lists = listed.load(Ordering::Relaxed);
        (total - lists.min(total), lists, t.elapsed().as_secs_f64())
    });
    println!(
        "throughput: {:.0} requests/s against 200 VMIs on one lab core ({gets} gets, {lists} lists of 25 by label, {secs:.1} s, 32 keep-alive clients)",
        (gets + lists) as f64 / secs
    );
    let _ = stop_tx.send(());
    lab_thread.join().map_err(|_| "lab thread panicked")??;
    Ok(())
}
