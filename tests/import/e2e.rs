//! `import-vm` and `migration-plan` end to end: real workers with the kube-rs adapter and the images
//! port over real qemu-img, against the lab over real HTTP, with real Redis. The tests make their
//! own images (qemu-img create, a written pattern) and OVAs (an OVF they write, a manifest from
//! sha256sum, the tar binary). What happened is read back from the lab's objects and counters and
//! from the work directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use drover_lab::{Lab, LabConfig, LabHandle};
use drover_workflows::State;
use drover_workflows::ports::Ports;
use serde_json::{Value, json};

use crate::harness::*;
use crate::provision::ended;

pub const NS: &str = "vmo-prod";
const MIB: u64 = 1024 * 1024;

/// A directory of its own, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("drover-import-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A disk image of `size_mib` with `data_mib` of a written pattern at its start, in `format`.
pub fn disk(dir: &Scratch, name: &str, format: &str, size_mib: u64, data_mib: u64) -> PathBuf {
    let raw = dir.path(&format!("{name}.pattern.raw"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&raw).unwrap();
        let mut block = vec![0u8; MIB as usize];
        for m in 0..data_mib {
            for (k, b) in block.iter_mut().enumerate() {
                *b = (k as u64 * 31 + m * 7) as u8 | 1;
            }
            f.write_all(&block).unwrap();
        }
        f.set_len(size_mib * MIB).unwrap();
    }
    let out = dir.path(name);
    if format == "raw" {
        std::fs::rename(&raw, &out).unwrap();
    } else {
        run(
            "qemu-img",
            &["convert", "-q", "-f", "raw", "-O", format, s(&raw), s(&out)],
        );
        std::fs::remove_file(&raw).unwrap();
    }
    out
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// An OVF as vSphere exports it: 2 vCPUs, 3 GiB, one disk, one NIC on "VM Network", and the
/// firmware `firmware` (`bios` or `efi`: vmw:Config, as VMware writes it).
fn ovf(disk_file: &str, disk_size: u64, capacity_mib: u64, firmware: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-20051473" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="{disk_file}" ovf:id="file1" ovf:size="{disk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="legacy-app">
    <Info>A virtual machine</Info>
    <Name>legacy-app</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>3072MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>3072</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// An OVA (`name`.ova) holding an OVF with `firmware`, a streamOptimized vmdk of `size_mib`, and
/// a SHA256 manifest; `corrupt_manifest` writes a wrong digest for the disk.
pub fn ova(
    dir: &Scratch,
    name: &str,
    firmware: &str,
    size_mib: u64,
    corrupt_manifest: bool,
) -> PathBuf {
    let src = dir.path(&format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let plain = disk(dir, &format!("{name}-plain.vmdk"), "vmdk", size_mib, 4);
    let disk_file = format!("{name}-disk1.vmdk");
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "vmdk",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&plain),
            s(&src.join(&disk_file)),
        ],
    );
    let size = std::fs::metadata(src.join(&disk_file)).unwrap().len();
    let ovf_file = format!("{name}.ovf");
    std::fs::write(
        src.join(&ovf_file),
        ovf(&disk_file, size, size_mib, firmware),
    )
    .unwrap();
    let mut manifest = String::new();
    for f in [&ovf_file, &disk_file] {
        let mut hex = sha256(&src.join(f));
        if corrupt_manifest && f == &disk_file {
            hex = hex.replace(&hex[..4], "0000");
        }
        manifest.push_str(&format!("SHA256({f})= {hex}\n"));
    }
    let mf = format!("{name}.mf");
    std::fs::write(src.join(&mf), manifest).unwrap();
    let out = dir.path(&format!("{name}.ova"));
    run(
        "tar",
        &[
            "--format=ustar",
            "-cf",
            s(&out),
            "-C",
            s(&src),
            &ovf_file,
            &mf,
            &disk_file,
        ],
    );
    out
}

/// The parts are held for their lifetime.
#[allow(dead_code)]
pub struct Rig {
    pub redis: Redis,
    pub store: drover_store::Store,
    pub lab: LabHandle,
    pub workers: Vec<InProcessWorker>,
    /// The images port's work root.
    pub work: Scratch,
}

/// Redis, the reference lab and `n` in-process workers with the kube and images ports.
pub async fn rig(name: &str, n: usize) -> Rig {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .expect("kube client");
    let work = Scratch::new(&format!("{name}-work"));
    let workers = (0..n)
        .map(|i| {
            let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
                .with_kube(cluster.clone().port())
                .with_images(Arc::new(drover_images::LocalImages::new(
                    work.0.clone(),
                    "qemu-img",
                )));
            InProcessWorker::start_with_ports(&store, worker_config(&format!("import-{i}")), ports)
        })
        .collect();
    Rig {
        redis,
        store,
        lab,
        workers,
        work,
    }
}

/// What is left in a work root: every file below it.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn dv(lab: &LabHandle, name: &str) -> Option<Value> {
    lab.get("datavolumes.cdi.kubevirt.io", NS, name)
}

pub fn vm(lab: &LabHandle, name: &str) -> Option<Value> {
    lab.get("virtualmachines.kubevirt.io", NS, name)
}

/// DataVolumes and VMs Drover made (its label), by name.
pub fn made_by_drover(lab: &LabHandle) -> Vec<String> {
    ["datavolumes.cdi.kubevirt.io", "virtualmachines.kubevirt.io"]
        .iter()
        .flat_map(|r| lab.list(r, Some(NS)))
        .filter(|o| o["metadata"]["labels"]["drover.io/created-by"].is_string())
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

pub fn import_input(name: &str, source: Value) -> Value {
    json!({"namespace": NS, "name": name, "source": source, "storage_class": "px-rwx",
           "network_map": {"VM Network": "pod"}, "poll_ms": 50, "stall_secs": 20,
           "ready_timeout_secs": 60})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmdk_is_converted_uploaded_and_runs_live_migratable() {
    let rig = rig("vmdk", 1).await;
    let data = Scratch::new("vmdk-data");
    let image = disk(&data, "web.vmdk", "vmdk", 256, 32);
    let mut input = import_input("web-01", json!({"disk": s(&image)}));
    input["network_map"] = json!({});
    let id = submit(&rig.store, "import-vm", input, 0).await;
    let v = ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let result = v.result.clone().unwrap();
    assert_eq!(result["running"], true, "{result}");
    assert_eq!(result["live_migratable"], true, "{result}");
    assert_eq!(result["created"].as_array().unwrap().len(), 2, "{result}");
    // The DataVolume got a qcow2 (converted from the vmdk), sized for the image plus overhead.
    let d = dv(&rig.lab, "web-01-disk-0").expect("the DataVolume");
    assert_eq!(d["status"]["phase"], "Succeeded");
    assert_eq!(
        d["metadata"]["annotations"]["lab.drover.dev/image-format"],
        "qcow2"
    );
    assert_eq!(
        d["metadata"]["annotations"]["lab.drover.dev/virtual-size"],
        (256 * MIB).to_string()
    );
    let uploaded: u64 = d["metadata"]["annotations"]["lab.drover.dev/uploaded-bytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((32 * MIB..256 * MIB).contains(&uploaded), "{uploaded}");
    assert_eq!(
        d["spec"]["storage"]["accessModes"],
        json!(["ReadWriteMany"])
    );
    // The VM: its disk, the pod network, BIOS, LiveMigrate, running.
    let m = vm(&rig.lab, "web-01").expect("the VM");
    let spec = &m["spec"]["template"]["spec"];
    assert_eq!(spec["evictionStrategy"], "LiveMigrate");
    assert!(
        spec["domain"]["firmware"]["bootloader"]["bios"].is_object(),
        "{spec}"
    );
    assert_eq!(spec["volumes"][0]["dataVolume"]["name"], "web-01-disk-0");
    assert!(spec["networks"][0]["pod"].is_object(), "{spec}");
    // The workflow saw the VMI Running; the VM's own status follows at KubeVirt's next pass.
    wait_for(Duration::from_secs(10), "the VM Running", || async {
        vm(&rig.lab, "web-01").unwrap()["status"]["printableStatus"] == "Running"
    })
    .await;
    // Nothing left in the work directory.
    assert_eq!(leftovers(&rig.work.0), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qcow2_boots_efi_on_a_multus_vlan() {
    let rig = rig("qcow2", 1).await;
    let data = Scratch::new("qcow2-data");
    let image = disk(&data, "db.qcow2", "qcow2", 128, 8);
    let input = json!({"namespace": NS, "name": "db-01", "source": {"disk": s(&image)},
                       "storage_class": "px-rwx", "firmware": "efi", "cpus": 4, "memory": "8Gi",
                       "network_map": {"default": "vlan20"}, "poll_ms": 50});
    let id = submit(&rig.store, "import-vm", input, 0).await;
    let v = ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let m = vm(&rig.lab, "db-01").expect("the VM");
    let spec = &m["spec"]["template"]["spec"];
    assert!(
        spec["domain"]["firmware"]["bootloader"]["efi"].is_object(),
        "{spec}"
    );
    assert_eq!(spec["domain"]["cpu"]["cores"], 4);
    assert_eq!(
        spec["networks"][0]["multus"]["networkName"],
        "vmo-prod/vlan20"
    );
    assert!(spec["domain"]["devices"]["interfaces"][0]["bridge"].is_object());
    // A qcow2 goes up as it is: no conversion.
    let d = dv(&rig.lab, "db-01-disk-0").unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["lab.drover.dev/uploaded-bytes"],
        std::fs::metadata(&image).unwrap().len().to_string()
    );
    assert_eq!(leftovers(&rig.work.0), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovas_import_with_bios_and_with_efi() {
    let rig = rig("ova", 2).await;
    let data = Scratch::new("ova-data");
    let mut ids = Vec::new();
    for (name, firmware) in [("app-bios", "bios"), ("app-efi", "efi")] {
        let package = ova(&data, name, firmware, 96, false);
        let input = import_input(name, json!({"ova": s(&package)}));
        ids.push((
            name,
            firmware,
            submit(&rig.store, "import-vm", input, 0).await,
        ));
    }
    for (name, firmware, id) in ids {
        let v = ended(&rig.store, &id, 120).await;
        assert_eq!(v.state, State::Succeeded, "{name}: {:?}", v.error);
        let m = vm(&rig.lab, name).expect("the VM");
        let domain = &m["spec"]["template"]["spec"]["domain"];
        assert!(
            domain["firmware"]["bootloader"][firmware].is_object(),
            "{name}: {domain}"
        );
        // The OVF's shape: 2 vCPUs, 3072 MiB.
        assert_eq!(domain["cpu"]["cores"], 2, "{domain}");
        assert_eq!(domain["memory"]["guest"], "3Gi", "{domain}");
        let d = dv(&rig.lab, &format!("{name}-disk-0")).unwrap();
        assert_eq!(
            d["metadata"]["annotations"]["lab.drover.dev/virtual-size"],
            (96 * MIB).to_string()
        );
    }
    assert_eq!(leftovers(&rig.work.0), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_with_the_reason_and_leave_nothing() {
    let rig = rig("bad", 2).await;
    let data = Scratch::new("bad-data");
    // A corrupt qcow2: its L1 table offset points past the end of the file.
    let corrupt = disk(&data, "corrupt.qcow2", "qcow2", 64, 1);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&corrupt)
            .unwrap();
        f.seek(SeekFrom::Start(40)).unwrap();
        f.write_all(&0x7fff_0000_0000u64.to_be_bytes()).unwrap();
    }
    let qed = dir_image(&data, "old.qed", "qed");
    let base = disk(&data, "base.qcow2", "qcow2", 64, 1);
    let overlay = data.path("overlay.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&overlay),
        ],
    );
    let tampered = ova(&data, "tampered", "bios", 64, true);
    let fine = ova(&data, "unmapped", "bios", 64, false);
    let cases = [
        ("bad-corrupt", json!({"disk": s(&corrupt)}), "corrupt"),
        (
            "bad-missing",
            json!({"disk": s(&data.path("nowhere.vmdk"))}),
            "does not exist",
        ),
        ("bad-format", json!({"disk": s(&qed)}), "a qed image"),
        ("bad-backing", json!({"disk": s(&overlay)}), "backing file"),
        (
            "bad-checksum",
            json!({"ova": s(&tampered)}),
            "checksum mismatch for tampered-disk1.vmdk",
        ),
    ];
    let mut ids = Vec::new();
    for (name, source, needle) in cases {
        let id = submit(&rig.store, "import-vm", import_input(name, source), 0).await;
        ids.push((name, needle, id));
    }
    // A network the mapping does not name.
    let mut unmapped = import_input("bad-network", json!({"ova": s(&fine)}));
    unmapped["network_map"] = json!({"Other": "pod"});
    ids.push((
        "bad-network",
        "network \"VM Network\" (of nic-0) is not mapped",
        submit(&rig.store, "import-vm", unmapped, 0).await,
    ));
    for (name, needle, id) in ids {
        let v = ended(&rig.store, &id, 60).await;
        assert_eq!(v.state, State::Failed, "{name}");
        let error = v.error.clone().unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains(needle), "{name}: {error}");
        assert!(vm(&rig.lab, name).is_none(), "{name}");
    }
    assert_eq!(made_by_drover(&rig.lab), Vec::<String>::new());
    assert_eq!(leftovers(&rig.work.0), Vec::<PathBuf>::new());
    // Nothing reached CDI.
    assert_eq!(rig.lab.cdi_counters().cdi_uploads, 0);
}

fn dir_image(dir: &Scratch, name: &str, format: &str) -> PathBuf {
    let p = dir.path(name);
    run("qemu-img", &["create", "-q", "-f", format, s(&p), "64M"]);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_upload_deletes_what_the_import_made() {
    let rig = rig("cancel", 1).await;
    // A 4 MB/s link: the upload of 24 MiB takes about 6 s.
    rig.lab.set_fault_rates(drover_lab::scenario::FaultRates {
        upload_mb_per_s: 4.0,
        ..Default::default()
    });
    let data = Scratch::new("cancel-data");
    let image = disk(&data, "big.raw", "raw", 24, 24);
    let mut input = import_input("big-01", json!({"disk": s(&image)}));
    input["network_map"] = json!({});
    let id = submit(&rig.store, "import-vm", input, 0).await;
    wait_for(Duration::from_secs(30), "the upload under way", || async {
        let v = rig.store.get(&id).await.unwrap().unwrap();
        v.progress
            .as_ref()
            .is_some_and(|p| p["phase"] == "uploading" && p["bytes"].as_u64() > Some(0))
    })
    .await;
    assert!(dv(&rig.lab, "big-01-disk-0").is_some());
    rig.store.cancel(&id, now_ms()).await.unwrap();
    let v = ended(&rig.store, &id, 30).await;
    assert_eq!(v.state, State::Cancelled, "{:?}", v.error);
    assert_eq!(made_by_drover(&rig.lab), Vec::<String>::new());
    assert_eq!(
        rig.lab.cdi_counters().cdi_uploads,
        0,
        "the upload never completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_imported_by_cdi_and_a_dead_one_fails_at_its_deadline() {
    let rig = rig("url", 1).await;
    let data = Scratch::new("url-data");
    disk(&data, "served.qcow2", "qcow2", 64, 4);
    let server = super::images::file_server(data.0.clone()).await;
    let mut good = import_input(
        "from-url",
        json!({"disk": format!("{}/served.qcow2", server.url)}),
    );
    good["network_map"] = json!({});
    let id = submit(&rig.store, "import-vm", good, 0).await;
    let v = ended(&rig.store, &id, 120).await;
    assert_eq!(v.state, State::Succeeded, "{:?}", v.error);
    let d = dv(&rig.lab, "from-url-disk-0").unwrap();
    assert!(
        d["spec"]["source"]["http"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/served.qcow2")
    );
    assert!(rig.lab.cdi_counters().cdi_imported_bytes > 0);

    // A URL that answers the probe's range reads but not CDI's importer (as a server behind a
    // proxy that went away): CDI retries for ever; Drover gives up after stall_secs with CDI's
    // reason, and deletes the DataVolume it made.
    let ranged = ranges_only(data.0.clone()).await;
    let mut dead = import_input(
        "dead-url",
        json!({"disk": format!("{}/served.qcow2", ranged.url)}),
    );
    dead["network_map"] = json!({});
    dead["stall_secs"] = json!(3);
    let id = submit(&rig.store, "import-vm", dead, 0).await;
    let v = ended(&rig.store, &id, 60).await;
    assert_eq!(v.state, State::Failed);
    let error = v.error.unwrap().to_string();
    assert!(
        error.contains("made no progress for 3 s") && error.contains("404"),
        "{error}"
    );
    assert!(dv(&rig.lab, "dead-url-disk-0").is_none());
}

/// A file server that answers only range requests (404 to a plain GET).
async fn ranges_only(root: PathBuf) -> super::images::FileServer {
    use axum::extract::{Path as UrlPath, State as AxState};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    async fn handle(
        method: axum::http::Method,
        state: AxState<PathBuf>,
        path: UrlPath<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        if headers.contains_key(header::RANGE) || method == axum::http::Method::HEAD {
            super::images::serve(state, path, headers).await
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::get(handle))
        .with_state(root);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    super::images::FileServer { url, task }
}
