//! Test harness: private Redis servers that can be killed and restarted on the same data, worker
//! processes of the real binary, in-process workers and API servers, and waiting on conditions with
//! deadlines instead of bare sleeps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_store::probe::RedisProbe;
use drover_store::server::{Aof, Options, RedisServer};
use drover_store::{Store, Submission};
use drover_workflows::ports::Ports;
use serde_json::Value;
use tokio::sync::watch;

/// A private redis-server on a free loopback port in a temporary directory, killed on drop
/// (`drover_store::server`, the launcher that `drover dev` and the benchmarks use too). A missing
/// redis-server is a failure with instructions, not a skip.
pub struct Redis {
    pub port: u16,
    server: RedisServer,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    /// With `aof_always`, every acknowledged write is on disk before the reply (appendfsync always).
    pub fn start_with(aof_always: bool) -> Redis {
        let aof = if aof_always { Aof::Always } else { Aof::Off };
        let server = RedisServer::start(Options::temporary().aof(aof))
            .unwrap_or_else(|e| panic!("{e}; the tests need a real Redis"));
        Redis {
            port: server.port(),
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// SIGKILL: no shutdown save, no goodbye.
    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// Starts again on the same port and data directory; returns once it has loaded its data.
    pub fn restart(&mut self) {
        self.server.restart().expect("redis-server restarts");
    }

    pub async fn store(&self) -> Store {
        Store::connect(&drover_store::Config::new(self.url()))
            .await
            .expect("connect store")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub use drover_worker::now_ms;

/// Waits until `cond` holds, failing the test with `what` after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker settings for tests: short leases so crash recovery is quick.
pub fn worker_config(name: &str) -> drover_worker::Config {
    drover_worker::Config {
        concurrency: 8,
        lease_ms: 1500,
        idle_wait_ms: 500,
        shutdown_grace_ms: 5000,
        name: Some(name.to_string()),
        ..drover_worker::Config::default()
    }
}

/// A worker runtime inside the test process; stops on drop.
pub struct InProcessWorker {
    stop: watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<Result<(), drover_worker::Error>>>,
}

impl InProcessWorker {
    pub fn start(store: &Store, config: drover_worker::Config) -> InProcessWorker {
        let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
            .with_probe(Arc::new(RedisProbe::new(store.clone())));
        InProcessWorker::start_with_ports(store, config, ports)
    }

    pub fn start_with_ports(
        store: &Store,
        config: drover_worker::Config,
        ports: Ports,
    ) -> InProcessWorker {
        let (stop, rx) = watch::channel(false);
        let mut rx2 = rx.clone();
        let handle = tokio::spawn(drover_worker::run(
            store.clone(),
            drover_kinds::builtin(),
            ports,
            config,
            async move {
                let _ = rx2.wait_for(|s| *s).await;
            },
        ));
        drop(rx);
        InProcessWorker {
            stop,
            handle: Some(handle),
        }
    }

    /// Graceful stop: no new claims, running steps finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// A worker process of the real binary.
pub struct WorkerProcess {
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    child: Child,
}

impl WorkerProcess {
    pub fn spawn(redis_url: &str, name: &str, log_dir: &Path) -> WorkerProcess {
        WorkerProcess::spawn_with(redis_url, name, log_dir, &[])
    }

    /// With extra environment (`DROVER_KUBE_URL` for the lab, say), which overrides the defaults
    /// here (a 1.5 s lease, 8 steps at once, warnings only).
    pub fn spawn_with(
        redis_url: &str,
        name: &str,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log = log_dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("worker")
            .env("DROVER_REDIS_URL", redis_url)
            .env("DROVER_WORKER_NAME", name)
            .env("DROVER_WORKER_LEASE_MS", "1500")
            .env("DROVER_WORKER_CONCURRENCY", "8")
            .env("DROVER_WORKER_IDLE_WAIT_MS", "300")
            .env("DROVER_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log"))
            .spawn()
            .expect("spawn drover worker");
        WorkerProcess {
            name: name.to_string(),
            log,
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful stop an orchestrator sends.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not exit within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Submits a workflow straight through the store, the way the API does.
pub async fn submit(store: &Store, kind: &str, input: Value, priority: i32) -> String {
    store
        .submit_new(
            &drover_kinds::builtin(),
            uuid_like(),
            Submission::new(kind, input).priority(priority),
            None,
            now_ms(),
        )
        .await
        .expect("submit")
        .id
}

/// A random id in the form the API gives workflows (a UUID).
pub fn uuid_like() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Waits until every workflow in `ids` has ended; returns their final views.
pub async fn wait_all_finished(
    store: &Store,
    ids: &[String],
    timeout: Duration,
) -> Vec<drover_store::WorkflowView> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::with_capacity(ids.len());
        let mut open = 0;
        for id in ids {
            let v = store
                .get(id)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("workflow {id} vanished"));
            if !v.state.is_terminal() {
                open += 1;
            }
            views.push(v);
        }
        if open == 0 {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} workflows still open after {timeout:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
