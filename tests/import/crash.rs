//! Workers of the real `drover` binary SIGKILLed in the middle of an import: once while qemu-img
//! converts, once while the image streams to CDI's upload proxy. A second worker takes over; the
//! import ends with one DataVolume, the VM running, no qemu-img left running and nothing left in
//! the work directory.

use std::path::PathBuf;
use std::time::Duration;

use drover_lab::{Lab, LabConfig};
use drover_workflows::State;
use serde_json::json;

use super::e2e::{NS, Scratch, disk, dv, leftovers, s, vm};
use crate::harness::*;
use crate::provision::ended;

/// qemu-img's own rate limit (`convert -r`) stands in for a slow datastore: the real qemu-img runs,
/// just slowly enough to be caught mid-way.
fn slow_qemu_img(dir: &Scratch) -> PathBuf {
    let path = dir.path("qemu-img-slow");
    std::fs::write(
        &path,
        "#!/bin/sh\nif [ \"$1\" = convert ]; then shift; exec qemu-img convert -r 12M \"$@\"; fi\nexec qemu-img \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Processes whose command line holds `needle` (qemu-img converting into a work directory).
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit(')').next()?.trim_start().starts_with('Z');
            (!zombie && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

async fn killed_during(phase: &str, name: &str, upload_mb_per_s: f64) {
    let redis = Redis::start();
    let store = redis.store().await;
    let lab = Lab::start(LabConfig::reference().with_time_scale(600.0))
        .await
        .expect("lab starts");
    if upload_mb_per_s > 0.0 {
        lab.set_fault_rates(drover_lab::scenario::FaultRates {
            upload_mb_per_s,
            ..Default::default()
        });
    }
    let data = Scratch::new(&format!("{name}-data"));
    let work = Scratch::new(&format!("{name}-work"));
    let logs = Scratch::new(&format!("{name}-logs"));
    let qemu = slow_qemu_img(&data);
    let image = disk(&data, "app.vmdk", "vmdk", 64, 48);
    let env = [
        ("DROVER_KUBE_URL", lab.kube_url()),
        ("DROVER_IMAGES_DIR", work.0.to_string_lossy().into_owned()),
        ("DROVER_QEMU_IMG", qemu.to_string_lossy().into_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = WorkerProcess::spawn_with(&redis.url(), &format!("{name}-1"), &logs.0, &env);
    let input = json!({"namespace": NS, "name": name, "source": {"disk": s(&image)},
                       "storage_class": "px-rwx", "poll_ms": 50, "stall_secs": 30});
    let id = submit(&store, "import-vm", input, 0).await;
    wait_for(Duration::from_secs(60), phase, || async {
        let v = store.get(&id).await.unwrap().unwrap();
        v.progress
            .as_ref()
            .is_some_and(|p| p["phase"] == phase && p["bytes"].as_u64() > Some(0))
    })
    .await;
    first.kill9();
    // The kernel takes qemu-img with its worker (PR_SET_PDEATHSIG), so nothing writes on: it is
    // gone well before the seconds of conversion it had left at 12 MB/s.
    wait_for(Duration::from_millis(1500), "qemu-img gone", || async {
        processes_with(&work.0.to_string_lossy()).is_empty()
    })
    .await;
    let _second = WorkerProcess::spawn_with(&redis.url(), &format!("{name}-2"), &logs.0, &env);
    let v = ended(&store, &id, 120).await;
    assert_eq!(
        v.state,
        State::Succeeded,
        "{:?}; log: {}",
        v.error,
        std::fs::read_to_string(logs.0.join(format!("{name}-2.log"))).unwrap_or_default()
    );
    // One DataVolume, uploaded once to the end; the VM runs; the work directory is empty.
    let dvs: Vec<String> = lab
        .list("datavolumes.cdi.kubevirt.io", Some(NS))
        .iter()
        .filter(|d| d["metadata"]["labels"]["drover.io/vm"] == name)
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dvs, [format!("{name}-disk-0")]);
    assert_eq!(dv(&lab, &dvs[0]).unwrap()["status"]["phase"], "Succeeded");
    assert_eq!(lab.cdi_counters().cdi_uploads, 1);
    if phase == "uploading" {
        // The cut-off upload's bytes reached the proxy, and it started over.
        let c = lab.cdi_counters();
        assert!(c.cdi_upload_received_bytes > c.cdi_uploaded_bytes, "{c:?}");
    }
    // The workflow saw the VMI Running; the VM's own status follows at KubeVirt's next pass.
    wait_for(Duration::from_secs(10), "the VM Running", || async {
        vm(&lab, name).unwrap()["status"]["printableStatus"] == "Running"
    })
    .await;
    assert_eq!(leftovers(&work.0), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_qemu_img_converts_is_replaced_and_the_import_ends_once() {
    killed_during("converting", "conv-kill", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_the_upload_is_replaced_and_the_upload_starts_over() {
    killed_during("uploading", "upload-kill", 8.0).await;
}
