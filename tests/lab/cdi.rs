//! CDI, KubeVirt VMs on DataVolumes, Multus and ResourceQuota against the lab over real HTTP: the
//! upload proxy streams real images (`qemu-img create`, a raw pattern; reqwest and curl, plain,
//! async and multipart) and refuses what CDI refuses; http imports fetch from a loopback server
//! started here, count the bytes and restart on failure; a VM waits for its DataVolume, runs
//! migratable on RWX, stays Pending without its NetworkAttachmentDefinition; quotas refuse claims.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, Uri};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::lab::support::{self, send};

const NS: &str = "vmo-prod";
const DV: &str = "datavolumes.cdi.kubevirt.io";
const T: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// The `qemu-img` to make images with; fails clearly when there is none.
fn qemu_img() -> &'static str {
    if std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "qemu-img";
    }
    panic!("qemu-img is missing: install the Debian package qemu-utils");
}

/// `qemu-img create -f <format> <path> <size> [extra...]`, returning the file's bytes.
fn make_image(dir: &Path, name: &str, format: &str, size: &str, extra: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let out = std::process::Command::new(qemu_img())
        .current_dir(dir)
        .args(["create", "-q", "-f", format])
        .args(extra)
        .arg(&path)
        .arg(size)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).expect("image")
}

/// A raw disk of `len` bytes written with a pattern.
fn raw_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

fn dv_body(name: &str, source: Value, size: &str, class: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name},
        "spec": {"source": source, "storage": {"storageClassName": class, "accessModes": [mode], "resources": {"requests": {"storage": size}}}}
    })
}

async fn create(c: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    send(c.post(url).json(body)).await
}

async fn create_dv(lab: &drover_lab::LabHandle, c: &reqwest::Client, body: Value) {
    let url = format!(
        "{}/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes",
        lab.kube_url()
    );
    let (code, resp) = create(c, url, &body).await;
    assert_eq!(code, 201, "{resp}");
}

fn dv(lab: &drover_lab::LabHandle, name: &str) -> Value {
    lab.get(DV, NS, name).expect("datavolume")
}

async fn wait_phase(lab: &drover_lab::LabHandle, name: &str, phase: &str) -> Value {
    support::wait_for(&format!("{name} to be {phase}"), T, || async {
        let d = lab.get(DV, NS, name)?;
        (d["status"]["phase"] == phase).then_some(d)
    })
    .await
}

/// An upload DataVolume, UploadReady, and its token.
async fn upload_dv(
    lab: &drover_lab::LabHandle,
    c: &reqwest::Client,
    name: &str,
    size: &str,
) -> String {
    create_dv(
        lab,
        c,
        dv_body(name, json!({"upload": {}}), size, "px-rwx", "ReadWriteMany"),
    )
    .await;
    let url = format!(
        "{}/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{NS}/uploadtokenrequests",
        lab.kube_url()
    );
    let (code, utr) = create(
        c,
        url,
        &json!({"metadata": {"name": format!("{name}-token")}, "spec": {"pvcName": name}}),
    )
    .await;
    assert_eq!(code, 201, "{utr}");
    wait_phase(lab, name, "UploadReady").await;
    utr["status"]["token"].as_str().expect("token").to_string()
}

/// POST an image to the upload proxy: status and text.
async fn upload(
    lab: &drover_lab::LabHandle,
    c: &reqwest::Client,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let resp = c
        .post(format!("{}{path}", lab.kube_url()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload");
    let code = resp.status().as_u16();
    (code, resp.text().await.expect("text"))
}

fn annotation(d: &Value, key: &str) -> String {
    d["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn condition(obj: &Value, kind: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_real_images_and_count_the_bytes() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let dir = support::temp_dir("cdi-upload");
    // A qcow2 made by qemu-img, through reqwest to /v1beta1/upload.
    let qcow2 = make_image(&dir, "disk.qcow2", "qcow2", "1G", &[]);
    let token = upload_dv(&lab, &c, "up-qcow2", "2Gi").await;
    let (code, text) = upload(&lab, &c, "/v1beta1/upload", &token, qcow2.clone()).await;
    assert_eq!((code, text.as_str()), (200, ""));
    let d = dv(&lab, "up-qcow2");
    assert_eq!(d["status"]["phase"], "Succeeded", "{d}");
    assert_eq!(d["status"]["progress"], "100.0%");
    assert_eq!(
        annotation(&d, "lab.drover.dev/uploaded-bytes"),
        qcow2.len().to_string()
    );
    assert_eq!(annotation(&d, "lab.drover.dev/image-format"), "qcow2");
    assert_eq!(
        annotation(&d, "lab.drover.dev/virtual-size"),
        GIB.to_string()
    );
    // Done is done: CDI's proxy turns a second upload away.
    let (code, text) = upload(&lab, &c, "/v1beta1/upload", &token, qcow2.clone()).await;
    assert_eq!(
        (code, text.as_str()),
        (
            503,
            "rejecting Upload Request for PVC up-qcow2 that already finished uploading"
        )
    );

    // A raw pattern with curl --data-binary to /v1beta1/upload-async, as the benchmark sends it.
    let raw = raw_pattern(8 * MIB);
    let raw_path = dir.join("disk.raw");
    std::fs::write(&raw_path, &raw).expect("raw written");
    let token = upload_dv(&lab, &c, "up-raw", "1Gi").await;
    let head = c
        .head(format!("{}/v1beta1/upload-async", lab.kube_url()))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200, "virtctl's async probe");
    let curl = std::process::Command::new("curl").arg("--version").output();
    if curl.is_ok_and(|o| o.status.success()) {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .args(["-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", raw_path.display()))
            .arg(format!("{}/v1beta1/upload-async", lab.kube_url()))
            .output()
            .await
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let (code, _) = upload(&lab, &c, "/v1beta1/upload-async", &token, raw.clone()).await;
        assert_eq!(code, 200);
    }
    let d = wait_phase(&lab, "up-raw", "Succeeded").await;
    assert_eq!(
        (
            annotation(&d, "lab.drover.dev/uploaded-bytes"),
            annotation(&d, "lab.drover.dev/image-format"),
            annotation(&d, "lab.drover.dev/virtual-size")
        ),
        (raw.len().to_string(), "raw".into(), raw.len().to_string())
    );

    // The same raw image as a multipart form (its `file` part) to /v1beta1/upload-form.
    let token = upload_dv(&lab, &c, "up-form", "1Gi").await;
    let boundary = "lab-boundary-42";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\nx\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"disk.raw\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    form.extend_from_slice(&raw);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = c
        .post(format!("{}/v1beta1/upload-form", lab.kube_url()))
        .header("authorization", format!("Bearer {token}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .expect("form upload");
    assert_eq!(resp.status(), 200);
    let d = dv(&lab, "up-form");
    assert_eq!(
        annotation(&d, "lab.drover.dev/uploaded-bytes"),
        raw.len().to_string()
    );

    let total = (qcow2.len() + 2 * raw.len()) as u64;
    let counters = lab.cdi_counters();
    assert_eq!(counters.cdi_uploaded_bytes, total);
    assert_eq!(counters.cdi_uploads, 3);
    for path in ["/lab/counters", "/lab/status"] {
        let (code, body) = send(c.get(format!("{}{path}", lab.kube_url()))).await;
        assert_eq!(
            (code, body["cdi_uploaded_bytes"].as_u64()),
            (200, Some(total)),
            "{path}"
        );
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_cdi_refuses_leave_the_data_volume_upload_ready() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let dir = support::temp_dir("cdi-refuse");
    let token = upload_dv(&lab, &c, "up-bad", "1Gi").await;
    let text_file = "not a disk, just some text\n".repeat(40).into_bytes();
    let vmdk = make_image(&dir, "disk.vmdk", "vmdk", "64M", &[]);
    make_image(&dir, "base.qcow2", "qcow2", "64M", &[]);
    let overlay = make_image(
        &dir,
        "overlay.qcow2",
        "qcow2",
        "64M",
        &["-b", "base.qcow2", "-F", "qcow2"],
    );
    let too_big = make_image(&dir, "big.qcow2", "qcow2", "2G", &[]);
    let mut tar = vec![0u8; 10240];
    tar[..8].copy_from_slice(b"disk.img");
    tar[257..263].copy_from_slice(b"ustar\0");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "text",
            text_file.clone(),
            format!(
                "not a disk image: {} bytes is not a whole number of 512-byte sectors",
                text_file.len()
            ),
        ),
        (
            "vmdk",
            vmdk,
            "Invalid format vmdk for image /scratch/tmpimage".into(),
        ),
        (
            "backing file",
            overlay,
            "Image /scratch/tmpimage is invalid because it has invalid backing file base.qcow2"
                .into(),
        ),
        (
            "too large",
            too_big,
            format!(
                "Virtual image size {} is larger than the reported available storage {GIB}. A larger PVC is required.",
                2 * GIB
            ),
        ),
        ("tar", tar, "not a disk image: a tar archive".into()),
    ];
    for (what, body, message) in cases {
        let (code, text) = upload(&lab, &c, "/v1beta1/upload", &token, body).await;
        assert_eq!(
            (code, text),
            (400, format!("Saving stream failed: {message}")),
            "{what}"
        );
        let d = dv(&lab, "up-bad");
        assert_eq!(d["status"]["phase"], "UploadReady", "{what}: {d}");
        assert_eq!(
            annotation(&d, "lab.drover.dev/uploaded-bytes"),
            "",
            "{what}"
        );
    }
    assert_eq!(lab.cdi_counters().cdi_uploads_refused, 5);

    // A client killed mid-way: nothing recorded. While it sends, a second upload is turned away.
    let mut conn = tokio::net::TcpStream::connect(lab.addr())
        .await
        .expect("connect");
    conn.write_all(
        format!(
            "POST /v1beta1/upload HTTP/1.1\r\nHost: lab\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            64 * MIB
        )
        .as_bytes(),
    )
    .await
    .expect("head");
    let before = lab.cdi_counters().cdi_upload_received_bytes;
    conn.write_all(&vec![0u8; MIB]).await.expect("first MiB");
    support::wait_for("the proxy to read", T, || async {
        (lab.cdi_counters().cdi_upload_received_bytes > before).then_some(())
    })
    .await;
    let (code, text) = upload(&lab, &c, "/v1beta1/upload", &token, vec![0u8; 4096]).await;
    assert_eq!((code, text.as_str()), (503, "upload in progress"));
    drop(conn);
    let good = raw_pattern(4 * MIB);
    let deadline = Instant::now() + T;
    loop {
        let (code, text) = upload(&lab, &c, "/v1beta1/upload", &token, good.clone()).await;
        if code == 200 {
            break;
        }
        assert_eq!((code, text.as_str()), (503, "upload in progress"));
        assert!(Instant::now() < deadline, "the cut-off upload never ended");
        let d = dv(&lab, "up-bad");
        assert_eq!(d["status"]["phase"], "UploadReady");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = dv(&lab, "up-bad");
    assert_eq!(d["status"]["phase"], "Succeeded");
    assert_eq!(
        annotation(&d, "lab.drover.dev/uploaded-bytes"),
        good.len().to_string()
    );
    assert_eq!(lab.cdi_counters().cdi_uploaded_bytes, good.len() as u64);
    lab.shutdown().await;
}

/// A loopback file server: `/slow/<name>` sends the file in 8 parts 150 ms apart, with its length.
async fn file_server(files: HashMap<String, Vec<u8>>) -> String {
    async fn serve(State(files): State<Arc<HashMap<String, Vec<u8>>>>, uri: Uri) -> Response<Body> {
        let path = uri.path();
        let (slow, name) = match path.strip_prefix("/slow") {
            Some(rest) => (true, rest),
            None => (false, path),
        };
        let Some(data) = files.get(name).cloned() else {
            let mut r = Response::new(Body::from("404 page not found\n"));
            *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
            return r;
        };
        let len = data.len();
        let body = if slow {
            let part = len.div_ceil(8).max(1);
            let chunks: Vec<Vec<u8>> = data.chunks(part).map(<[u8]>::to_vec).collect();
            Body::from_stream(futures::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, std::io::Error>(c)
            }))
        } else {
            Body::from(data)
        };
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-length", len.to_string().parse().expect("header"));
        r
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(serve)
        .with_state(Arc::new(files));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_imports_fetch_count_and_restart_on_failure() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let dir = support::temp_dir("cdi-import");
    let raw = raw_pattern(4 * MIB);
    let qcow2 = make_image(&dir, "disk.qcow2", "qcow2", "512M", &[]);
    let mut tar = vec![0u8; 10240];
    tar[257..263].copy_from_slice(b"ustar\0");
    let server = file_server(HashMap::from([
        ("/disk.raw".to_string(), raw.clone()),
        ("/disk.qcow2".to_string(), qcow2.clone()),
        ("/disk.tar".to_string(), tar),
    ]))
    .await;
    let http = |path: &str| json!({"http": {"url": format!("{server}{path}")}});
    create_dv(
        &lab,
        &c,
        dv_body(
            "imp-raw",
            http("/slow/disk.raw"),
            "1Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    create_dv(
        &lab,
        &c,
        dv_body(
            "imp-qcow2",
            http("/disk.qcow2"),
            "1Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    create_dv(
        &lab,
        &c,
        dv_body(
            "imp-404",
            http("/missing.img"),
            "1Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    create_dv(
        &lab,
        &c,
        dv_body(
            "imp-tar",
            http("/disk.tar"),
            "1Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    create_dv(
        &lab,
        &c,
        dv_body(
            "imp-remote",
            json!({"http": {"url": "http://images.example/x.qcow2"}}),
            "1Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    // The slow one shows CDI's progress on its way.
    let mut seen = Vec::new();
    let d = support::wait_for("imp-raw to succeed", T, || {
        let d = lab.get(DV, NS, "imp-raw").unwrap_or(Value::Null);
        if d["status"]["phase"] == "ImportInProgress" {
            seen.push(d["status"]["progress"].as_str().unwrap_or("").to_string());
        }
        async move { (d["status"]["phase"] == "Succeeded").then_some(d) }
    })
    .await;
    assert!(
        seen.iter()
            .any(|p| p.ends_with('%') && p.contains('.') && p != "0.00%"),
        "{seen:?}"
    );
    assert_eq!(d["status"]["progress"], "100.0%");
    assert_eq!(
        (
            annotation(&d, "lab.drover.dev/imported-bytes"),
            annotation(&d, "lab.drover.dev/image-format")
        ),
        (raw.len().to_string(), "raw".to_string())
    );
    let d = wait_phase(&lab, "imp-qcow2", "Succeeded").await;
    assert_eq!(
        (
            annotation(&d, "lab.drover.dev/imported-bytes"),
            annotation(&d, "lab.drover.dev/image-format"),
            annotation(&d, "lab.drover.dev/virtual-size")
        ),
        (
            qcow2.len().to_string(),
            "qcow2".to_string(),
            (512 * MIB).to_string()
        )
    );
    assert!(lab.cdi_counters().cdi_imported_bytes >= (raw.len() + qcow2.len()) as u64);
    assert_eq!(lab.cdi_counters().cdi_imports, 2);

    // Failures: the importer restarts, the DataVolume stays ImportInProgress and says why.
    for (name, message) in [
        (
            "imp-404",
            "Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found".to_string(),
        ),
        (
            "imp-tar",
            "Unable to process data: not a disk image: a tar archive".to_string(),
        ),
        (
            "imp-remote",
            "Unable to connect to http data source: HTTP request errored: Get \"http://images.example/x.qcow2\": dial tcp: lookup images.example: no such host".to_string(),
        ),
    ] {
        let d = support::wait_for(&format!("{name} to restart twice"), T, || async {
            let d = lab.get(DV, NS, name)?;
            (d["status"]["restartCount"].as_u64() >= Some(2)).then_some(d)
        })
        .await;
        assert_eq!(d["status"]["phase"], "ImportInProgress", "{name}: {d}");
        let running = condition(&d, "Running");
        assert_eq!(
            (&running["status"], &running["reason"], &running["message"]),
            (&json!("False"), &json!("Error"), &json!(message)),
            "{name}"
        );
        assert_eq!(condition(&d, "Ready")["status"], "False");
    }
    assert!(lab.cdi_counters().cdi_import_failures >= 6);
    // A deleted DataVolume's importer stops (and its claim goes with it).
    let url = format!(
        "{}/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/imp-404",
        lab.kube_url()
    );
    assert_eq!(send(c.delete(url)).await.0, 200);
    support::wait_for("imp-404's claim to go", T, || async {
        lab.get("persistentvolumeclaims", NS, "imp-404")
            .is_none()
            .then_some(())
    })
    .await;
    lab.shutdown().await;
}

async fn create_vm(lab: &drover_lab::LabHandle, c: &reqwest::Client, vm: &Value) {
    let url = format!(
        "{}/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines",
        lab.kube_url()
    );
    let (code, body) = create(c, url, vm).await;
    assert_eq!(code, 201, "{body}");
}

async fn create_pvc(
    lab: &drover_lab::LabHandle,
    c: &reqwest::Client,
    ns: &str,
    pvc: &Value,
) -> (u16, Value) {
    let url = format!(
        "{}/api/v1/namespaces/{ns}/persistentvolumeclaims",
        lab.kube_url()
    );
    create(c, url, pvc).await
}

fn pvc_body(name: &str, class: &str, mode: &str, size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": [mode], "volumeMode": "Block", "resources": {"requests": {"storage": size}}}})
}

/// A converted VM's spec: EFI, 2 cores, guest memory, disks on three buses, masquerade on the pod
/// network and a bridge on a Multus network, evictionStrategy LiveMigrate.
fn vm_body(name: &str, strategy: Value, volumes: Value, nad: &str) -> Value {
    let mut spec = json!({
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "evictionStrategy": "LiveMigrate",
            "domain": {
                "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
                "cpu": {"cores": 2},
                "memory": {"guest": "2Gi"},
                "devices": {
                    "disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "data", "disk": {"bus": "scsi"}}, {"name": "swap", "disk": {"bus": "sata"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}, {"name": "vlan", "bridge": {}}]
                }
            },
            "networks": [{"name": "default", "pod": {}}, {"name": "vlan", "multus": {"networkName": nad}}],
            "volumes": volumes
        }}
    });
    for (k, v) in strategy.as_object().expect("strategy").clone() {
        spec[k] = v;
    }
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name}, "spec": spec})
}

fn vm_status(lab: &drover_lab::LabHandle, name: &str) -> String {
    lab.get("virtualmachines.kubevirt.io", NS, name)
        .map(|v| {
            v["status"]["printableStatus"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

async fn wait_vm(lab: &drover_lab::LabHandle, name: &str, printable: &str) {
    support::wait_for(&format!("{name} to be {printable}"), T, || async {
        (vm_status(lab, name) == printable).then_some(())
    })
    .await;
}

async fn running_vmi(lab: &drover_lab::LabHandle, name: &str) -> Value {
    support::wait_for(&format!("{name}'s VMI to run"), T, || async {
        let v = lab.get("virtualmachineinstances.kubevirt.io", NS, name)?;
        (v["status"]["phase"] == "Running").then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_wait_for_their_volumes_then_run() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let server = file_server(HashMap::from([(
        "/root.raw".to_string(),
        raw_pattern(2 * MIB),
    )]))
    .await;
    for name in ["conv-data", "conv-swap"] {
        let (code, body) = create_pvc(
            &lab,
            &c,
            NS,
            &pvc_body(name, "px-rwx", "ReadWriteMany", "1Gi"),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    create_dv(
        &lab,
        &c,
        dv_body(
            "conv-root",
            json!({"http": {"url": format!("{server}/slow/root.raw")}}),
            "10Gi",
            "px-rwx",
            "ReadWriteMany",
        ),
    )
    .await;
    let volumes = json!([
        {"name": "root", "dataVolume": {"name": "conv-root"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "conv-data"}},
        {"name": "swap", "persistentVolumeClaim": {"claimName": "conv-swap"}}
    ]);
    create_vm(
        &lab,
        &c,
        &vm_body(
            "conv-01",
            json!({"runStrategy": "Always"}),
            volumes,
            "vmo-prod/vlan20",
        ),
    )
    .await;
    // While the import runs: Provisioning, and no VMI.
    wait_vm(&lab, "conv-01", "Provisioning").await;
    wait_phase(&lab, "conv-root", "ImportInProgress").await;
    assert_eq!(vm_status(&lab, "conv-01"), "Provisioning");
    assert!(
        lab.get("virtualmachineinstances.kubevirt.io", NS, "conv-01")
            .is_none()
    );
    let vmi = running_vmi(&lab, "conv-01").await;
    assert_eq!(dv(&lab, "conv-root")["status"]["phase"], "Succeeded");
    assert!(
        vmi["status"]["nodeName"]
            .as_str()
            .is_some_and(|n| n.starts_with("worker-")),
        "{vmi}"
    );
    assert_eq!(condition(&vmi, "LiveMigratable")["status"], "True", "{vmi}");
    wait_vm(&lab, "conv-01", "Running").await;

    // A Halted VM on an RWO claim: Stopped, started through virt-api, not migratable.
    let (code, _) = create_pvc(
        &lab,
        &c,
        NS,
        &pvc_body("conv-02-root", "px-rwo", "ReadWriteOnce", "10Gi"),
    )
    .await;
    assert_eq!(code, 201);
    let rwo = json!([{"name": "root", "persistentVolumeClaim": {"claimName": "conv-02-root"}}]);
    let mut vm = vm_body("conv-02", json!({"running": false}), rwo, "vlan20");
    vm["spec"]["template"]["spec"]["domain"]["firmware"] = json!({"bootloader": {"bios": {}}});
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"] =
        json!([{"name": "root", "disk": {"bus": "sata"}}]);
    create_vm(&lab, &c, &vm).await;
    wait_vm(&lab, "conv-02", "Stopped").await;
    assert!(
        lab.get("virtualmachineinstances.kubevirt.io", NS, "conv-02")
            .is_none()
    );
    let start = format!(
        "{}/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/conv-02/start",
        lab.kube_url()
    );
    assert_eq!(send(c.put(start).json(&json!({}))).await.0, 202);
    let vmi = running_vmi(&lab, "conv-02").await;
    let live = condition(&vmi, "LiveMigratable");
    assert_eq!(
        (&live["status"], &live["reason"]),
        (&json!("False"), &json!("DisksNotLiveMigratable")),
        "{live}"
    );

    // Claims not bound, claims missing.
    let (code, _) = create_pvc(
        &lab,
        &c,
        NS,
        &pvc_body("conv-03-root", "gold", "ReadWriteMany", "10Gi"),
    )
    .await;
    assert_eq!(code, 201);
    let pending = json!([{"name": "root", "persistentVolumeClaim": {"claimName": "conv-03-root"}}]);
    create_vm(
        &lab,
        &c,
        &vm_body(
            "conv-03",
            json!({"runStrategy": "Always"}),
            pending,
            "vlan20",
        ),
    )
    .await;
    let missing = json!([{"name": "root", "dataVolume": {"name": "nowhere"}}]);
    create_vm(
        &lab,
        &c,
        &vm_body(
            "conv-04",
            json!({"runStrategy": "Always"}),
            missing,
            "vlan20",
        ),
    )
    .await;
    wait_vm(&lab, "conv-03", "WaitingForVolumeBinding").await;
    wait_vm(&lab, "conv-04", "ErrorPvcNotFound").await;

    // A deleted VM takes its VMI (and launcher pod) with it.
    let url = format!(
        "{}/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/conv-01",
        lab.kube_url()
    );
    assert_eq!(send(c.delete(url)).await.0, 200);
    support::wait_for("conv-01's VMI to go", T, || async {
        lab.get("virtualmachineinstances.kubevirt.io", NS, "conv-01")
            .is_none()
            .then_some(())
    })
    .await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_without_their_network_attachment_definition_do_not_start() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let kc = support::kubeconfig(&lab, "cdi-nad");
    create_vm(
        &lab,
        &c,
        &vm_body(
            "conv-nad",
            json!({"runStrategy": "Always"}),
            json!([]),
            "vmo-prod/vlan99",
        ),
    )
    .await;
    let message = "failed to render launch manifest: failed to locate network attachment definition vmo-prod/vlan99";
    let vmi = support::wait_for("the VMI to say why", T, || async {
        let v = lab.get("virtualmachineinstances.kubevirt.io", NS, "conv-nad")?;
        (condition(&v, "Synchronized")["message"] == message).then_some(v)
    })
    .await;
    let sync = condition(&vmi, "Synchronized");
    assert_eq!(
        (&vmi["status"]["phase"], &sync["status"], &sync["reason"]),
        (&json!("Pending"), &json!("False"), &json!("FailedCreate"))
    );
    let vm = support::wait_for("the VM to say why", T, || async {
        let v = lab.get("virtualmachines.kubevirt.io", NS, "conv-nad")?;
        (condition(&v, "Synchronized")["message"] == message).then_some(v)
    })
    .await;
    assert_eq!(vm["status"]["printableStatus"], "Starting");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lab.get("virtualmachineinstances.kubevirt.io", NS, "conv-nad")
            .expect("vmi")["status"]["phase"],
        "Pending"
    );

    // kubectl creates the NetworkAttachmentDefinition and lists it; the VMI then runs.
    let dir = support::temp_dir("cdi-nad-file");
    let file = dir.join("nad.json");
    let config = r#"{"cniVersion":"0.3.1","name":"vlan99","type":"bridge","bridge":"br0","vlan":99,"ipam":{}}"#;
    std::fs::write(
        &file,
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": "vlan99", "namespace": NS}, "spec": {"config": config}}).to_string(),
    )
    .expect("nad file");
    let path = file.display().to_string();
    support::ok_stdout(
        "kubectl create -f nad.json",
        &support::kubectl(&kc, &["create", "-f", &path], T).await,
    );
    let listed = support::ok_stdout(
        "kubectl get net-attach-def",
        &support::kubectl(&kc, &["get", "net-attach-def", "-n", NS], T).await,
    );
    assert!(
        ["vlan20", "vlan21", "vlan99"]
            .iter()
            .all(|n| listed.lines().any(|l| l.starts_with(n))),
        "{listed}"
    );
    let vmi = running_vmi(&lab, "conv-nad").await;
    assert_eq!(condition(&vmi, "Synchronized"), Value::Null, "{vmi}");
    wait_vm(&lab, "conv-nad", "Running").await;
    assert_eq!(
        condition(
            &lab.get("virtualmachines.kubevirt.io", NS, "conv-nad")
                .expect("vm"),
            "Synchronized"
        ),
        Value::Null
    );

    // kube-rs lists them too (the reference scenario's vlan20 that its VMs use among them).
    let mut config = kube::Config::new(lab.kube_url().parse().expect("url"));
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("kube client");
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    let nads: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, NS, &ar);
    let names: Vec<String> = nads
        .list(&Default::default())
        .await
        .expect("list nads")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["vlan20", "vlan21", "vlan99"]);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_claims_and_data_volumes_over_them() {
    let lab = support::lab(600.0).await;
    let c = support::http();
    let base = lab.kube_url();
    let ns = "quota-lab";
    let (code, _) = create(
        &c,
        format!("{base}/api/v1/namespaces"),
        &json!({"metadata": {"name": ns}}),
    )
    .await;
    assert_eq!(code, 201);
    let hard = json!({
        "requests.storage": "25Gi",
        "persistentvolumeclaims": "5",
        "px-rwo.storageclass.storage.k8s.io/requests.storage": "2Gi"
    });
    let (code, body) = create(
        &c,
        format!("{base}/api/v1/namespaces/{ns}/resourcequotas"),
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "storage"}, "spec": {"hard": hard}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    for name in ["c1", "c2"] {
        let (code, body) = create_pvc(
            &lab,
            &c,
            ns,
            &pvc_body(name, "px-rwx", "ReadWriteMany", "10Gi"),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = create_pvc(
        &lab,
        &c,
        ns,
        &pvc_body("c3", "px-rwx", "ReadWriteMany", "10Gi"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str(), body["message"].as_str()),
        (
            403,
            Some("Forbidden"),
            Some(
                "persistentvolumeclaims \"c3\" is forbidden: exceeded quota: storage, requested: requests.storage=10Gi, used: requests.storage=20Gi, limited: requests.storage=25Gi"
            )
        )
    );
    let (code, body) = create_pvc(
        &lab,
        &c,
        ns,
        &pvc_body("r1", "px-rwo", "ReadWriteOnce", "3Gi"),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                "persistentvolumeclaims \"r1\" is forbidden: exceeded quota: storage, requested: px-rwo.storageclass.storage.k8s.io/requests.storage=3Gi, used: px-rwo.storageclass.storage.k8s.io/requests.storage=0, limited: px-rwo.storageclass.storage.k8s.io/requests.storage=2Gi"
            )
        )
    );
    let dvs = format!("{base}/apis/cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes");
    let big = dv_body(
        "d1",
        json!({"blank": {}}),
        "10Gi",
        "px-rwx",
        "ReadWriteMany",
    );
    let (code, body) = create(&c, dvs.clone(), &big).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                "datavolumes.cdi.kubevirt.io \"d1\" is forbidden: exceeded quota: storage, requested: requests.storage=10Gi, used: requests.storage=20Gi, limited: requests.storage=25Gi"
            )
        )
    );
    let quota = support::wait_for("the quota's status", T, || async {
        let q = lab.get("resourcequotas", ns, "storage")?;
        (q["status"]["used"]["requests.storage"] == "20Gi").then_some(q)
    })
    .await;
    assert_eq!(quota["status"]["hard"], hard);
    assert_eq!(
        quota["status"]["used"],
        json!({"requests.storage": "20Gi", "persistentvolumeclaims": "2", "px-rwo.storageclass.storage.k8s.io/requests.storage": "0"})
    );
    // Room again once a claim goes; the DataVolume's claim counts.
    let url = format!("{base}/api/v1/namespaces/{ns}/persistentvolumeclaims/c2");
    assert_eq!(send(c.delete(url)).await.0, 200);
    let (code, body) = create(&c, dvs, &big).await;
    assert_eq!(code, 201, "{body}");
    support::wait_for("the DataVolume's claim to count", T, || async {
        let q = lab.get("resourcequotas", ns, "storage")?;
        (q["status"]["used"]["persistentvolumeclaims"] == "2"
            && q["status"]["used"]["requests.storage"] == "20Gi")
            .then_some(())
    })
    .await;
    let (code, _) = create_pvc(
        &lab,
        &c,
        ns,
        &pvc_body("c4", "px-rwx", "ReadWriteMany", "6Gi"),
    )
    .await;
    assert_eq!(code, 403);
    lab.shutdown().await;
}
