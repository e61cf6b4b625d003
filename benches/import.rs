//! The import benchmark: a vmdk full of data imported end to end as a VM, once with Drover (an
//! `import-vm` workflow on a worker process of the real `drover` binary: qemu-img info, qemu-img
//! convert to qcow2, the upload streamed to CDI's upload proxy, the VM) and once the way an
//! operator does it by hand (the anchor: `qemu-img convert -O qcow2`, then a DataVolume, an
//! UploadTokenRequest and `curl -T` of the qcow2 to the same lab's upload proxy). Runs alternate,
//! two of each, on the 2 GiB image; the worker's peak RSS (VmHWM) is also read after an import of
//! a 512 MiB image, to show whether it grows with the image.
//!
//! Run from the repository root: `cargo bench --bench import` (cargo builds the `drover` binary
//! with the bench, in the bench profile, and hands its path over as `CARGO_BIN_EXE_drover`; needs
//! redis-server, qemu-img and curl, as `.ci/run` installs them; about two minutes and 8 GiB of
//! scratch disk, removed at the end). Not a test: it asserts nothing, and writes its figures into
//! BENCHMARKS.md between the `import-bench` markers. Every wait has a deadline.

#[path = "shared/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drover_lab::{Lab, LabConfig, LabHandle};
use drover_store::server::{Options, RedisServer};
use drover_store::{Store, Submission};
use drover_worker::now_ms;
use serde_json::{Value, json};

const COMMAND: &str = "cargo bench --bench import";
const MIB: u64 = 1 << 20;
const NS: &str = "vmo-prod";
const RUN_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> Result<()> {
    let root = std::env::temp_dir().join(format!("drover-import-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let result = run(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    let report = result?;
    println!("{report}");
    report::write_section(
        "<!-- import-bench:start -->",
        "<!-- import-bench:end -->",
        &report,
    )
}

/// One import's figures.
struct Figures {
    what: String,
    secs: f64,
    /// Virtual size / wall time, MB/s.
    mb_per_s: f64,
    /// Where the time went (Drover: per step; anchor: convert, upload).
    parts: String,
    /// The worker's peak RSS, KiB (Drover only).
    peak_kib: Option<u64>,
    /// The worker's peak RSS once started and idle, before the submission, KiB (Drover only).
    idle_kib: Option<u64>,
    /// Bytes the lab's upload proxy accepted during the run (`cdi_uploaded_bytes`).
    uploaded: u64,
}

async fn run(root: &Path) -> Result<String> {
    let started = Instant::now();
    let load_before = report::load_average();
    let binary = Path::new(env!("CARGO_BIN_EXE_drover"));
    let redis = RedisServer::start(Options::temporary())?;
    let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0)).await?;
    let big = make_vmdk(root, "big", 2048)?;
    let small = make_vmdk(root, "small", 512)?;
    let work = root.join("work");
    let mut runs = Vec::new();
    for round in 0..2 {
        runs.push(
            drover(
                binary,
                &redis.url(),
                &store,
                &lab,
                &work,
                &big,
                2048,
                &format!("big-{round}"),
            )
            .await?,
        );
        runs.push(anchor(&lab, root, &big, 2048, &format!("anchor-{round}")).await?);
    }
    let small_run = drover(
        binary,
        &redis.url(),
        &store,
        &lab,
        &work,
        &small,
        512,
        "small",
    )
    .await?;
    lab.shutdown().await;

    let mut out = String::new();
    out.push_str(&format!(
        "## Import: a 2 GiB vmdk into a KubeVirt VM (Drover vs qemu-img convert + curl upload)\n\n\
         - Command: `{COMMAND}` (from the repository root; `bench` profile = release)\n\
         - Date: {} UTC; whole run {:.0} s\n\
         - Machine: nproc {}, CPU `{}`, load average {} at the start, {} at the end (the box is \
         shared)\n\
         - Tools: {}, {}\n\
         - Code: {}\n\n\
         Each vmdk is full of data (a written pattern, no zero clusters), so conversion and upload \
         move its whole virtual size. Both sides upload to the same lab's CDI upload proxy, which \
         checks the qcow2's header and counts the bytes (*uploaded*: the lab's \
         `cdi_uploaded_bytes` over the run); MB/s is the virtual size over the wall time from the \
         first byte read to the DataVolume Succeeded (Drover: submission to the VM running, which \
         adds validation, the DataVolume and the VM). Before each run the bench runs `sync` \
         (untimed), so no run pays for the writeback of what the set-up or an earlier run wrote. \
         Drover's parts are its steps' durations \
         from the workflow's history (those over 50 ms) and the `transfer` step's output.\n\n\
         | run | wall s | MB/s | uploaded | where the time went | worker peak RSS (idle before) |\n\
         |---|---|---|---|---|---|\n",
        report::date(),
        started.elapsed().as_secs_f64(),
        report::nproc(),
        report::cpu(),
        load_before,
        report::load_average(),
        report::first_line("qemu-img", &["--version"]),
        report::first_line("curl", &["--version"])
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        report::code_version(),
    ));
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    for f in runs.iter().chain(std::iter::once(&small_run)) {
        out.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.0} MiB | {} | {} |\n",
            f.what,
            f.secs,
            f.mb_per_s,
            f.uploaded as f64 / MIB as f64,
            f.parts,
            match (f.peak_kib, f.idle_kib) {
                (Some(p), Some(i)) => format!("{} ({})", mib(p), mib(i)),
                (Some(p), None) => mib(p),
                _ => "-".into(),
            }
        ));
    }
    out.push_str("\nRatios, Drover MB/s / anchor MB/s, each round (goal: at least 0.90):\n\n");
    let mut ratios = Vec::new();
    for pair in runs.chunks(2) {
        let r = pair[0].mb_per_s / pair[1].mb_per_s;
        ratios.push(r);
        out.push_str(&format!(
            "- {} vs {}: {:.2}\n",
            pair[0].what, pair[1].what, r
        ));
    }
    let peaks: Vec<u64> = runs
        .iter()
        .chain(std::iter::once(&small_run))
        .filter_map(|f| f.peak_kib)
        .collect();
    let idles: Vec<String> = runs
        .iter()
        .chain(std::iter::once(&small_run))
        .filter_map(|f| f.idle_kib.map(mib))
        .collect();
    out.push_str(&format!(
        "\nWorker peak RSS (VmHWM): {} (2 GiB imports) and {} (512 MiB import); the same \
         workers idle, before the submission: {}.\n",
        peaks[..peaks.len().saturating_sub(1)]
            .iter()
            .map(|k| mib(*k))
            .collect::<Vec<_>>()
            .join(", "),
        small_run.peak_kib.map_or("-".into(), mib),
        idles.join(", ")
    ));
    out.push_str(
        "\nThe anchor's upload uses `curl -T` (curl 7.88's `--data-binary @file` reads the whole \
         file into memory and refuses files over 1 GiB). Each worker process is new for its run, \
         so its peak RSS is that import's alone.\n",
    );
    Ok(out)
}

/// A raw file of `mib` MiB full of a pattern, converted to a monolithic sparse vmdk.
fn make_vmdk(root: &Path, name: &str, mib: u64) -> Result<PathBuf> {
    use std::io::Write;
    let raw = root.join(format!("{name}.raw"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&raw)?);
    let mut block = vec![0u8; MIB as usize];
    for m in 0..mib {
        for (k, b) in block.iter_mut().enumerate() {
            *b = (k as u64).wrapping_mul(31).wrapping_add(m) as u8 | 1;
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    drop(f);
    let vmdk = root.join(format!("{name}.vmdk"));
    sh(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            s(&raw),
            s(&vmdk),
        ],
    )?;
    std::fs::remove_file(&raw)?;
    Ok(vmdk)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| program.to_string())?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes the dirty page cache out (what the vmdks' making and the previous run wrote), so that
/// no run pays for another's writeback. Not timed.
fn settle() -> Result<()> {
    sh("sync", &[]).map(drop)
}

/// VmHWM of a process, KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Worker(Child);

impl Worker {
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.0.try_wait()? {
            bail!("the drover worker exited early ({status})");
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::too_many_arguments)]
async fn drover(
    binary: &Path,
    redis_url: &str,
    store: &Store,
    lab: &LabHandle,
    work: &Path,
    image: &Path,
    mib: u64,
    name: &str,
) -> Result<Figures> {
    settle()?;
    let mut worker = Worker(
        Command::new(binary)
            .arg("worker")
            .env("DROVER_REDIS_URL", redis_url)
            .env("DROVER_KUBE_URL", lab.kube_url())
            .env("DROVER_IMAGES_DIR", work)
            .env("DROVER_WORKER_NAME", format!("bench-{name}"))
            .env("DROVER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the drover worker")?,
    );
    // Started and idle (connected, waiting for work) before the clock starts.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    worker.check_alive()?;
    let idle = peak_kib(worker.0.id());
    let uploaded_before = lab.cdi_counters().cdi_uploaded_bytes;
    let vm = format!("bench-{name}");
    let input = json!({"namespace": NS, "name": vm, "source": {"disk": s(image)},
                       "storage_class": "px-rwx", "poll_ms": 100});
    let id = format!("0192f0c1-7d2e-7a4b-9c3d-{:012x}", now_ms());
    let t0 = Instant::now();
    store
        .submit_new(
            &drover_kinds::builtin(),
            id.clone(),
            Submission::new("import-vm", input),
            None,
            now_ms(),
        )
        .await?;
    let view = loop {
        let v = store.get(&id).await?.context("the import vanished")?;
        if v.state.is_terminal() {
            break v;
        }
        if t0.elapsed() > RUN_DEADLINE {
            bail!(
                "the import {id} did not end in {} s",
                RUN_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = t0.elapsed().as_secs_f64();
    let peak = peak_kib(worker.0.id());
    drop(worker);
    let uploaded = lab.cdi_counters().cdi_uploaded_bytes - uploaded_before;
    if view.state != drover_workflows::State::Succeeded {
        bail!("the import {id} ended {:?}: {:?}", view.state, view.error);
    }
    // Step durations from the history: each attempt's start and end.
    let mut parts = Vec::new();
    let names = view.step_names.clone().unwrap_or_default();
    for h in view.history.clone().unwrap_or_default() {
        if let (Some(step), Some(a), Some(b)) = (
            h["step"].as_u64().and_then(|i| names.get(i as usize)),
            h["start_ms"].as_u64(),
            h["end_ms"].as_u64(),
        ) && b > a + 50
        {
            parts.push(format!("{step} {:.2} s", (b - a) as f64 / 1000.0));
        }
    }
    // The transfer step's own account of each disk: bytes, seconds, MB/s.
    let transfer = names
        .iter()
        .position(|n| n == "transfer")
        .and_then(|i| view.outputs.as_ref()?.get(&i).cloned())
        .unwrap_or(Value::Null);
    for d in transfer["disks"].as_array().into_iter().flatten() {
        if let (Some(bytes), Some(secs), Some(mbps)) = (
            d["bytes"].as_u64(),
            d["secs"].as_f64(),
            d["mb_per_s"].as_f64(),
        ) {
            parts.push(format!(
                "upload of {:.0} MiB in {secs:.2} s ({mbps:.0} MB/s)",
                bytes as f64 / MIB as f64
            ));
        }
    }
    Ok(Figures {
        what: format!("Drover {name} ({} MiB)", mib),
        secs,
        mb_per_s: (mib * MIB) as f64 / secs / 1e6,
        parts: parts.join(", "),
        peak_kib: peak,
        idle_kib: idle,
        uploaded,
    })
}

async fn anchor(
    lab: &LabHandle,
    root: &Path,
    image: &Path,
    mib: u64,
    name: &str,
) -> Result<Figures> {
    let http = reqwest::Client::new();
    let api = lab.kube_url();
    let dv = format!("anchor-{name}");
    let qcow2 = root.join(format!("{name}.qcow2"));
    let uploaded_before = lab.cdi_counters().cdi_uploaded_bytes;
    settle()?;
    let t0 = Instant::now();
    sh(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "vmdk",
            "-O",
            "qcow2",
            s(image),
            s(&qcow2),
        ],
    )?;
    let convert = t0.elapsed().as_secs_f64();
    let size = format!("{}Mi", (mib * 1066).div_ceil(1000));
    let body = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": dv, "namespace": NS},
        "spec": {"source": {"upload": {}}, "storage": {"storageClassName": "px-rwx",
                 "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}}});
    let resp = http
        .post(format!(
            "{api}/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes"
        ))
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("create DataVolume: {}", resp.text().await?);
    }
    let ready = Instant::now();
    loop {
        let d: Value = http
            .get(format!(
                "{api}/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{dv}"
            ))
            .send()
            .await?
            .json()
            .await?;
        if d["status"]["phase"] == "UploadReady" {
            break;
        }
        if ready.elapsed() > RUN_DEADLINE {
            bail!("DataVolume {dv} never UploadReady");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token: Value = http
        .post(format!(
            "{api}/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{NS}/uploadtokenrequests"
        ))
        .json(
            &json!({"apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
                      "metadata": {"name": dv, "namespace": NS}, "spec": {"pvcName": dv}}),
        )
        .send()
        .await?
        .json()
        .await?;
    let token = token["status"]["token"]
        .as_str()
        .context("no upload token")?
        .to_string();
    let u0 = Instant::now();
    sh(
        "curl",
        &[
            "-sS",
            "--fail",
            "-X",
            "POST",
            "-T",
            s(&qcow2),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{api}/v1beta1/upload"),
        ],
    )?;
    let upload = u0.elapsed().as_secs_f64();
    let secs = t0.elapsed().as_secs_f64();
    let uploaded = lab.cdi_counters().cdi_uploaded_bytes - uploaded_before;
    let bytes = std::fs::metadata(&qcow2)?.len();
    std::fs::remove_file(&qcow2)?;
    Ok(Figures {
        what: format!("anchor {name} ({} MiB)", mib),
        secs,
        mb_per_s: (mib * MIB) as f64 / secs / 1e6,
        parts: format!(
            "convert {convert:.2} s, upload of {:.0} MiB in {upload:.2} s ({:.0} MB/s)",
            bytes as f64 / MIB as f64,
            bytes as f64 / upload / 1e6
        ),
        peak_kib: None,
        idle_kib: None,
        uploaded,
    })
}
