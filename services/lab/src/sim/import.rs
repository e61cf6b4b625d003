//! CDI's importer for DataVolumes with `spec.source.http`, for real: once the claim is bound and
//! the importer pod scheduled (`storage::SCHEDULE_SECS`), a task owned by the lab GETs the URL
//! (loopback hosts only, see `fetch`), streams the body through an `image::Meter` (counted, never
//! kept) with `status.progress` from bytes read over `Content-Length` ("45.23%", "N/A" without
//! one), checks the image as the importer does (`image::check_early` on the first bytes,
//! `image::validate` at the end), and makes the DataVolume Succeeded with the bytes, format and
//! virtual size in its annotations. A failure is what a crashing importer pod shows: the
//! DataVolume stays `ImportInProgress`, `status.restartCount` goes up, the `Running` condition is
//! `False`/`Error` with the importer's message, and the import is tried again after kubelet's
//! back-off (10 s doubling to 5 min, simulated time). It never gives up: a caller needs its own
//! deadline. The task stops when the DataVolume is deleted (or replaced) and when the lab stops;
//! the byte transfer itself runs at real speed whatever the time scale.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cdi::{ANN_FORMAT, ANN_IMPORTED_BYTES, ANN_VIRTUAL_SIZE, Importer, Key};
use crate::clock::SimTime;
use crate::error::Error;
use crate::fetch;
use crate::image::{self, Meter, Mode};
use crate::kube::resources::keys;
use crate::sim::storage;
use crate::state::Shared;

/// The importer pod's first restart back-off (kubelet's), simulated seconds.
pub const BACKOFF_SECS: f64 = 10.0;
/// The longest back-off, simulated seconds.
pub const MAX_BACKOFF_SECS: f64 = 300.0;
/// Real time between progress writes.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Read size.
const BUF: usize = 256 * 1024;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// One import to run.
#[derive(Debug, Clone)]
struct Job {
    ns: String,
    name: String,
    uid: String,
    url: String,
    available: u64,
}

/// Start an importer for every http DataVolume whose pod is due, stop those whose DataVolume is
/// gone or done. Tasks are spawned on the runtime the simulator runs on.
pub fn reconcile(shared: &Arc<Shared>, now: SimTime) {
    let (dvs, _) = shared.store.list_shared(keys::DATAVOLUMES, None, |d| {
        !matches!(s(d, "/status/phase"), "Succeeded" | "Failed")
            && d.pointer("/spec/source/http").is_some()
    });
    let mut wanted: HashMap<Key, Job> = HashMap::new();
    for dv in dvs {
        let started: f64 = s(&dv, "/metadata/annotations/lab.drover.dev~1started")
            .parse()
            .unwrap_or(f64::NAN);
        if started.is_nan() || now - started < storage::SCHEDULE_SECS {
            continue;
        }
        let job = Job {
            ns: s(&dv, "/metadata/namespace").to_string(),
            name: s(&dv, "/metadata/name").to_string(),
            uid: s(&dv, "/metadata/uid").to_string(),
            url: s(&dv, "/spec/source/http/url").to_string(),
            available: storage::requested_bytes(&dv)
                .unwrap_or(storage::DEFAULT_SIZE)
                .max(0.0) as u64,
        };
        wanted.insert((job.ns.clone(), job.name.clone()), job);
    }
    let mut importers = shared.cdi.importers();
    importers.retain(|key, i| {
        let keep = !i.task.is_finished() && wanted.get(key).is_some_and(|j| j.uid == i.uid);
        if !keep {
            i.task.abort();
        }
        keep
    });
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for (key, job) in wanted {
        if importers.contains_key(&key) {
            continue;
        }
        let uid = job.uid.clone();
        let task = runtime.spawn(run(shared.clone(), job));
        importers.insert(
            key,
            Importer {
                uid,
                task: task.abort_handle(),
            },
        );
    }
}

/// Stop a DataVolume's importer at once (it was deleted).
pub fn stop(shared: &Shared, ns: &str, name: &str) {
    shared
        .cdi
        .stop_importer(&(ns.to_string(), name.to_string()));
}

enum Outcome {
    Done,
    Gone,
    Failed(String),
}

async fn run(shared: Arc<Shared>, job: Job) {
    let mut stopping = shared.stopping.clone();
    if *stopping.borrow() {
        return;
    }
    loop {
        let outcome = tokio::select! {
            o = attempt(&shared, &job) => o,
            _ = stopping.changed() => return,
        };
        let message = match outcome {
            Outcome::Done | Outcome::Gone => return,
            Outcome::Failed(m) => m,
        };
        shared.cdi.import_failures.fetch_add(1, Ordering::Relaxed);
        let Some(restarts) = record_failure(&shared, &job, &message) else {
            return;
        };
        let exp = restarts.saturating_sub(1).min(16) as i32;
        let backoff = (BACKOFF_SECS * 2f64.powi(exp)).min(MAX_BACKOFF_SECS);
        tokio::select! {
            _ = tokio::time::sleep(shared.clock.real(backoff)) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// Change the DataVolume if it is still the one the job is for; `false` when it is gone.
fn write(shared: &Shared, job: &Job, f: impl FnOnce(&mut Value)) -> bool {
    shared
        .store
        .modify(keys::DATAVOLUMES, &job.ns, &job.name, |d| {
            if s(d, "/metadata/uid") != job.uid {
                return Err(Error::NotFound {
                    resource: keys::DATAVOLUMES.into(),
                    name: job.name.clone(),
                });
            }
            if !d["status"].is_object() {
                d["status"] = json!({});
            }
            f(d);
            Ok(())
        })
        .is_ok()
}

fn bound(name: &str) -> (String, String, String) {
    ("True".into(), "Bound".into(), format!("PVC {name} Bound"))
}

fn set_running(d: &mut Value, name: &str, running: (&str, &str, &str)) {
    let b = bound(name);
    d["status"]["phase"] = json!("ImportInProgress");
    d["status"]["claimName"] = json!(name);
    if d["status"]["restartCount"].as_u64().is_none() {
        d["status"]["restartCount"] = json!(0);
    }
    d["status"]["conditions"] = storage::conditions((&b.0, &b.1, &b.2), running, false);
}

/// Record a failed attempt; the restart count after it, `None` when the DataVolume is gone.
fn record_failure(shared: &Shared, job: &Job, message: &str) -> Option<u64> {
    let mut restarts = 0;
    write(shared, job, |d| {
        restarts = d["status"]["restartCount"].as_u64().unwrap_or(0) + 1;
        set_running(d, &job.name, ("False", "Error", message));
        d["status"]["restartCount"] = json!(restarts);
    })
    .then_some(restarts)
}

async fn attempt(shared: &Shared, job: &Job) -> Outcome {
    match shared
        .store
        .get_shared(keys::DATAVOLUMES, &job.ns, &job.name)
    {
        Some(d) if s(&d, "/metadata/uid") == job.uid => {
            if s(&d, "/status/phase") == "Succeeded" {
                return Outcome::Done;
            }
            if s(&d, "/status/phase") != "ImportInProgress" {
                let first = write(shared, job, |d| {
                    set_running(d, &job.name, ("True", "Pod is running", ""));
                    d["status"]["progress"] = json!("N/A");
                });
                if !first {
                    return Outcome::Gone;
                }
            }
        }
        _ => return Outcome::Gone,
    }
    let mut resp = match fetch::get(&job.url).await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed(format!(
                "Unable to connect to http data source: HTTP request errored: {e}"
            ));
        }
    };
    if resp.status != 200 {
        return Outcome::Failed(format!(
            "Unable to connect to http data source: expected status code 200, got {}. Status: {}",
            resp.status, resp.status_text
        ));
    }
    let total = resp.content_length;
    let progress_of = |bytes: u64| match total {
        Some(t) if t > 0 => storage::progress((bytes as f64 / t as f64).min(0.9999)),
        _ => "N/A".to_string(),
    };
    if !write(shared, job, |d| {
        set_running(d, &job.name, ("True", "Pod is running", ""));
        d["status"]["progress"] = json!(progress_of(0));
    }) {
        return Outcome::Gone;
    }
    let failed = |m: String| Outcome::Failed(format!("Unable to process data: {m}"));
    let mut meter = Meter::default();
    let mut buf = vec![0u8; BUF];
    let mut checked = false;
    let mut last = Instant::now();
    loop {
        let n = match resp.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return failed("unexpected EOF".into());
            }
            Err(e) => return failed(e.to_string()),
        };
        meter.feed(&buf[..n]);
        shared
            .cdi
            .imported_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        if !checked && meter.head_full() {
            checked = true;
            let probe = image::probe(&meter.head, None);
            if let Err(m) = image::check_early(&probe, total, job.available, Mode::Import) {
                return failed(m);
            }
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            let p = progress_of(meter.bytes);
            if !write(shared, job, |d| d["status"]["progress"] = json!(p)) {
                return Outcome::Gone;
            }
        }
    }
    let probe = meter.probe();
    let virtual_size = match image::validate(&probe, meter.bytes, job.available, Mode::Import) {
        Ok(v) => v,
        Err(m) => return failed(m),
    };
    let done = write(shared, job, |d| {
        let ann = &mut d["metadata"]["annotations"];
        ann[ANN_IMPORTED_BYTES] = json!(meter.bytes.to_string());
        ann[ANN_FORMAT] = json!(probe.format.name());
        ann[ANN_VIRTUAL_SIZE] = json!(virtual_size.to_string());
        storage::set_succeeded(d);
        d["status"]["conditions"][1]["message"] = json!("Import Complete");
    });
    if !done {
        return Outcome::Gone;
    }
    shared.cdi.imports.fetch_add(1, Ordering::Relaxed);
    Outcome::Done
}
