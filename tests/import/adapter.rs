//! The Kubernetes/KubeVirt adapter's import calls (`drover-kube`) against the lab, without
//! workflows or Redis: DataVolumes (upload, http, blank) created idempotently and read back, a real
//! qcow2 (made by `qemu-img`) streamed to CDI's upload proxy, an http import from a loopback file
//! server, a VM on DataVolumes with pod and Multus NICs and its instance, NetworkAttachmentDefinition
//! lookups, and the storage a ResourceQuota leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::ports::kube::{
    DataVolumeInfo, DvSource, Kube, KubeError, NewDataVolume, NewVm, NewVmDisk, NewVmNic,
    Transferred,
};
use serde_json::json;

use crate::harness::wait_for;

const NS: &str = "vmo-prod";

/// The reference lab at a time scale where CDI's phases take a simulator pass or two, the
/// adapter's port on it (uploads to the proxy on the lab's own port, named explicitly as
/// `[kube] upload_proxy_url` would), and its kube client for the objects a test sets up.
async fn import_lab() -> (LabHandle, Arc<dyn Kube>, kube::Client) {
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .unwrap();
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .unwrap()
        .with_upload_proxy(&lab.kube_url())
        .unwrap();
    let client = cluster.client().clone();
    (lab, cluster.port(), client)
}

fn labels(owner: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("drover.io/created-by".to_string(), owner.to_string())])
}

fn new_dv(name: &str, source: DvSource, class: &str) -> NewDataVolume {
    NewDataVolume {
        namespace: NS.into(),
        name: name.into(),
        source,
        storage_class: class.into(),
        access_mode: if class == "px-rwo" {
            "ReadWriteOnce"
        } else {
            "ReadWriteMany"
        }
        .into(),
        volume_mode: None,
        size_bytes: 1 << 30,
        labels: labels("wf-1"),
    }
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "drover-import-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real qcow2 image of `virtual_size` bytes, made by `qemu-img`.
fn qcow2(dir: &Path, name: &str, virtual_size: &str) -> PathBuf {
    let path = dir.join(name);
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(virtual_size)
        .output()
        .expect("qemu-img (Debian's qemu-utils) is installed");
    assert!(out.status.success(), "qemu-img: {out:?}");
    path
}

async fn wait_for_phase(kube: &Arc<dyn Kube>, name: &str, phase: &str) -> DataVolumeInfo {
    let seen = Mutex::new(Vec::<String>::new());
    let (k, s) = (kube, &seen);
    wait_for(
        Duration::from_secs(20),
        &format!("DataVolume {name} to be {phase}"),
        || async move {
            let dv = k.get_data_volume(NS, name).await.unwrap();
            let mut s = s.lock().unwrap();
            if s.last() != Some(&dv.phase) {
                s.push(dv.phase.clone());
            }
            dv.phase == phase
        },
    )
    .await;
    kube.get_data_volume(NS, name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_uploads_a_qcow2_into_a_data_volume() {
    let (lab, kube, _) = import_lab().await;
    let new = new_dv("imported-disk-0", DvSource::Upload, "px-rwx");
    let first = kube.create_data_volume(&new).await.unwrap();
    assert_eq!(first.labels, new.labels);
    // A re-run's create finds the first and returns it; another workflow's gets it as it is.
    let mut other = new.clone();
    other.labels = labels("wf-2");
    assert_eq!(
        kube.create_data_volume(&other).await.unwrap().labels,
        new.labels
    );
    // What CDI was asked for: spec.source.upload and spec.storage.
    let stored = lab
        .get("datavolumes.cdi.kubevirt.io", NS, "imported-disk-0")
        .unwrap();
    assert_eq!(stored["spec"]["source"], json!({"upload": {}}));
    assert_eq!(
        stored["spec"]["storage"]["storageClassName"],
        json!("px-rwx")
    );
    assert_eq!(
        stored["spec"]["storage"]["accessModes"],
        json!(["ReadWriteMany"])
    );

    wait_for_phase(&kube, "imported-disk-0", "UploadReady").await;
    let dir = TempDir::new("upload");
    let image = qcow2(&dir.0, "disk.qcow2", "64M");
    let length = std::fs::metadata(&image).unwrap().len();
    let progress = Mutex::new(Vec::<Transferred>::new());
    let record = |t: Transferred| progress.lock().unwrap().push(t);
    let sent = kube
        .upload_image(NS, "imported-disk-0", &image, &record)
        .await
        .unwrap();
    assert_eq!(sent, length);
    let last = *progress.lock().unwrap().last().expect("progress was told");
    assert_eq!(
        last,
        Transferred {
            done: length,
            total: length
        }
    );

    let done = wait_for_phase(&kube, "imported-disk-0", "Succeeded").await;
    assert_eq!(done.labels, new.labels);
    // CDI's Running condition is False once the upload server is done: "Completed".
    assert!(
        done.message
            .as_deref()
            .is_none_or(|m| m.starts_with("Completed")),
        "{done:?}"
    );
    let stored = lab
        .get("datavolumes.cdi.kubevirt.io", NS, "imported-disk-0")
        .unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["lab.drover.dev/uploaded-bytes"],
        json!(length.to_string()),
        "{stored}"
    );

    kube.delete_data_volume(NS, "imported-disk-0")
        .await
        .unwrap();
    kube.delete_data_volume(NS, "imported-disk-0")
        .await
        .unwrap();
    let gone = kube.get_data_volume(NS, "imported-disk-0").await;
    assert!(matches!(gone, Err(KubeError::NotFound(_))), "{gone:?}");
}

/// CDI's upload server refuses what is not a disk image (400, permanent, with its words); a token
/// for a DataVolume that is not there gets a 503 (transient); a file that is not there is the
/// caller's (permanent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_proxy_refuses_what_is_not_an_image() {
    let (_lab, kube, _) = import_lab().await;
    kube.create_data_volume(&new_dv("not-an-image", DvSource::Upload, "px-rwx"))
        .await
        .unwrap();
    wait_for_phase(&kube, "not-an-image", "UploadReady").await;
    let dir = TempDir::new("refused");
    let text = dir.0.join("notes.txt");
    std::fs::write(&text, b"#!/bin/sh\necho this is not a disk image\n").unwrap();
    let refused = kube.upload_image(NS, "not-an-image", &text, &|_| {}).await;
    match &refused {
        Err(KubeError::Permanent(m)) => assert!(m.contains("refused the image"), "{m}"),
        other => panic!("expected a permanent refusal: {other:?}"),
    }
    // The DataVolume waits for a good image.
    let dv = kube.get_data_volume(NS, "not-an-image").await.unwrap();
    assert_eq!(dv.phase, "UploadReady");

    // CDI's proxy answers a token for a claim that is not there 503 (a DataVolume whose claim
    // is still to come looks the same): transient.
    let image = qcow2(&dir.0, "disk.qcow2", "16M");
    let missing = kube
        .upload_image(NS, "no-such-data-volume", &image, &|_| {})
        .await;
    assert!(
        matches!(&missing, Err(KubeError::Transient { message, .. }) if message.contains("503")),
        "{missing:?}"
    );
    let no_file = kube
        .upload_image(NS, "not-an-image", &dir.0.join("absent.qcow2"), &|_| {})
        .await;
    assert!(
        matches!(no_file, Err(KubeError::Permanent(_))),
        "{no_file:?}"
    );
}

/// A file server on the loopback interface: `GET`/`HEAD` of `/<name>` serve the file, anything
/// else 404. Returns its base URL and how many requests it answered.
async fn serve_files(dir: PathBuf) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (dir, count) = (dir.clone(), count.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                count.fetch_add(1, Ordering::Relaxed);
                let file = Path::new(path.trim_start_matches('/'))
                    .file_name()
                    .map(|n| dir.join(n));
                let body = match file.map(std::fs::read) {
                    Some(Ok(body)) if matches!(method, "GET" | "HEAD") => body,
                    _ => {
                        let _ = socket
                            .write_all(
                                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                };
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: \
                     {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(header.as_bytes()).await;
                if method == "GET" {
                    let _ = socket.write_all(&body).await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, served)
}

/// CDI's importer fetches an http source: the DataVolume goes to Succeeded; one whose URL answers
/// 404 does not, and its importer's restarts and CDI's reason show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_imports_an_http_source() {
    let (lab, kube, _) = import_lab().await;
    let dir = TempDir::new("http");
    qcow2(&dir.0, "disk.qcow2", "32M");
    let (base, served) = serve_files(dir.0.clone()).await;

    let url = format!("{base}/disk.qcow2");
    let new = new_dv("http-disk-0", DvSource::Http { url: url.clone() }, "px-rwo");
    kube.create_data_volume(&new).await.unwrap();
    let stored = lab
        .get("datavolumes.cdi.kubevirt.io", NS, "http-disk-0")
        .unwrap();
    assert_eq!(stored["spec"]["source"], json!({"http": {"url": url}}));
    let done = wait_for_phase(&kube, "http-disk-0", "Succeeded").await;
    assert_eq!(done.labels, new.labels);
    assert!(
        served.load(Ordering::Relaxed) >= 1,
        "the importer fetched the image"
    );

    let broken = new_dv(
        "http-disk-404",
        DvSource::Http {
            url: format!("{base}/missing.qcow2"),
        },
        "px-rwo",
    );
    kube.create_data_volume(&broken).await.unwrap();
    let k = &kube;
    wait_for(
        Duration::from_secs(20),
        "the failing importer to be restarted, with CDI's reason",
        || async move {
            let dv = k.get_data_volume(NS, "http-disk-404").await.unwrap();
            dv.restart_count >= 1 && dv.message.is_some()
        },
    )
    .await;
    let dv = kube.get_data_volume(NS, "http-disk-404").await.unwrap();
    assert_ne!(dv.phase, "Succeeded", "{dv:?}");
}

async fn create_nad(client: &kube::Client, name: &str) {
    let r = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), NS, &r);
    let mut nad = kube::core::DynamicObject::new(name, &r).within(NS);
    nad.data = json!({"spec": {"config": json!({
        "cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": "br10", "vlan": 10
    }).to_string()}});
    api.create(&kube::api::PostParams::default(), &nad)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_finds_network_attachment_definitions() {
    let (_lab, kube, client) = import_lab().await;
    assert!(!kube.network_exists(NS, "vlan-10").await.unwrap());
    create_nad(&client, "vlan-10").await;
    assert!(kube.network_exists(NS, "vlan-10").await.unwrap());
    assert!(!kube.network_exists("default", "vlan-10").await.unwrap());
}

/// A VM on a DataVolume, with a pod NIC and a Multus bridge, EFI: created once (a second create
/// returns it, labels and all), started once its DataVolume is ready, its instance read, and
/// deleted idempotently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_creates_a_vm_on_a_data_volume() {
    let (lab, kube, client) = import_lab().await;
    create_nad(&client, "vlan-10").await;
    kube.create_data_volume(&new_dv("web-disk-0", DvSource::Blank, "px-rwx"))
        .await
        .unwrap();
    let new = NewVm {
        namespace: NS.into(),
        name: "web".into(),
        cpu_cores: 2,
        memory_bytes: 2 << 30,
        firmware: "efi".into(),
        running: true,
        eviction_strategy: "LiveMigrate".into(),
        disks: vec![NewVmDisk {
            name: "disk-0".into(),
            data_volume: "web-disk-0".into(),
            bus: "virtio".into(),
        }],
        nics: vec![
            NewVmNic {
                name: "nic-0".into(),
                multus: None,
                model: "virtio".into(),
                mac_address: None,
            },
            NewVmNic {
                name: "nic-1".into(),
                multus: Some(format!("{NS}/vlan-10")),
                model: "e1000e".into(),
                mac_address: Some("02:00:00:00:10:01".into()),
            },
        ],
        labels: labels("wf-1"),
    };
    let made = kube.create_vm(&new).await.unwrap();
    assert_eq!(made.labels, new.labels);
    assert_eq!(made.eviction_strategy.as_deref(), Some("LiveMigrate"));
    assert_eq!(
        made.volumes
            .iter()
            .map(|v| (v.name.as_str(), v.claim.as_deref()))
            .collect::<Vec<_>>(),
        [("disk-0", Some("web-disk-0"))]
    );
    let other = NewVm {
        labels: labels("wf-2"),
        ..new.clone()
    };
    assert_eq!(kube.create_vm(&other).await.unwrap().labels, new.labels);

    // What KubeVirt was asked for.
    let stored = lab.get("virtualmachines.kubevirt.io", NS, "web").unwrap();
    let spec = &stored["spec"];
    assert_eq!(spec["runStrategy"], "Always");
    let template = &spec["template"];
    assert_eq!(template["metadata"]["labels"]["kubevirt.io/vm"], "web");
    let domain = &template["spec"]["domain"];
    assert_eq!(
        domain["firmware"]["bootloader"],
        json!({"efi": {"secureBoot": false}})
    );
    assert_eq!(domain["devices"]["disks"][0]["bootOrder"], 1);
    assert_eq!(
        domain["devices"]["interfaces"][1],
        json!({"name": "nic-1", "bridge": {}, "model": "e1000e", "macAddress": "02:00:00:00:10:01"})
    );
    assert_eq!(
        template["spec"]["networks"],
        json!([
            {"name": "nic-0", "pod": {}},
            {"name": "nic-1", "multus": {"networkName": "vmo-prod/vlan-10"}},
        ])
    );

    let k = &kube;
    wait_for(
        Duration::from_secs(20),
        "the VM's instance to run",
        || async move {
            matches!(k.get_vmi(NS, "web").await, Ok(v) if v.phase == "Running" && v.node.is_some())
        },
    )
    .await;
    let vmi = kube.get_vmi(NS, "web").await.unwrap();
    // Its disk is ReadWriteMany: KubeVirt reports it live-migratable.
    wait_for(
        Duration::from_secs(20),
        "the LiveMigratable condition",
        || async move {
            matches!(k.get_vmi(NS, "web").await, Ok(v) if v.live_migratable.is_some())
        },
    )
    .await;
    assert_eq!(
        kube.get_vmi(NS, "web").await.unwrap().live_migratable,
        Some(Ok(())),
        "{vmi:?}"
    );
    let vm = kube.get_vm(NS, "web").await.unwrap();
    assert_eq!(vm.labels, new.labels);

    kube.delete_vm(NS, "web").await.unwrap();
    kube.delete_vm(NS, "web").await.unwrap();
    let gone = kube.get_vm(NS, "web").await;
    assert!(matches!(gone, Err(KubeError::NotFound(_))), "{gone:?}");
    wait_for(
        Duration::from_secs(20),
        "the instance to go with its VM",
        || async move { matches!(k.get_vmi(NS, "web").await, Err(KubeError::NotFound(_))) },
    )
    .await;
    kube.delete_data_volume(NS, "web-disk-0").await.unwrap();
    kube.delete_data_volume(NS, "web-disk-0").await.unwrap();
    let missing = kube.get_vmi(NS, "no-such-vm").await;
    assert!(
        matches!(missing, Err(KubeError::NotFound(_))),
        "{missing:?}"
    );
}

/// A ResourceQuota's `requests.storage` and per-class limits, in bytes, with what the namespace's
/// claims use (the quota controller's `status.used`); a class it does not name has only the overall
/// limit, and a namespace without a quota none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_reads_what_a_resource_quota_leaves() {
    use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let (_lab, kube, client) = import_lab().await;
    let ns = "import-quota";
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.into());
    namespaces
        .create(&kube::api::PostParams::default(), &namespace)
        .await
        .unwrap();
    assert!(
        kube.storage_quota(ns, "px-rwx")
            .await
            .unwrap()
            .limits
            .is_empty()
    );
    let mut quota = ResourceQuota {
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([
                ("requests.storage".to_string(), Quantity("100Gi".into())),
                (
                    "px-rwx.storageclass.storage.k8s.io/requests.storage".to_string(),
                    Quantity("50Gi".into()),
                ),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    quota.metadata.name = Some("storage".into());
    let api: kube::Api<ResourceQuota> = kube::Api::namespaced(client.clone(), ns);
    api.create(&kube::api::PostParams::default(), &quota)
        .await
        .unwrap();

    let rwx = kube.storage_quota(ns, "px-rwx").await.unwrap();
    let mut got: Vec<_> = rwx
        .limits
        .iter()
        .map(|l| (l.quota.as_str(), l.resource.as_str(), l.hard_bytes))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "storage",
                "px-rwx.storageclass.storage.k8s.io/requests.storage",
                50 << 30
            ),
            ("storage", "requests.storage", 100 << 30),
        ]
    );
    let rwo = kube.storage_quota(ns, "px-rwo").await.unwrap();
    assert_eq!(
        rwo.limits
            .iter()
            .map(|l| l.resource.as_str())
            .collect::<Vec<_>>(),
        ["requests.storage"]
    );

    // A claim of the class counts against both.
    kube.create_pvc(&drover_workflows::ports::kube::NewPvc {
        namespace: ns.into(),
        name: "data".into(),
        storage_class: "px-rwx".into(),
        access_mode: "ReadWriteMany".into(),
        size_bytes: 2 << 30,
        volume_mode: None,
        labels: BTreeMap::new(),
    })
    .await
    .unwrap();
    let k = &kube;
    wait_for(
        Duration::from_secs(20),
        "the quota to count the claim",
        || async move {
            let q = k.storage_quota(ns, "px-rwx").await.unwrap();
            q.limits.len() == 2 && q.limits.iter().all(|l| l.used_bytes == 2 << 30)
        },
    )
    .await;
}
