//! The engine benchmark. In one run, against one private `redis-server` (free loopback port,
//! `--save "" --appendonly no`, killed at the end), it measures:
//! 1. Drover's no-op step transitions per second with 1 and with 4 `drover worker` processes of the
//!    release binary (pre-submitted multi-step `synthetic` workflows, timed until all succeeded);
//! 2. the anchor, apalis-redis 1.0 no-op jobs per second on the same Redis (stock config with the
//!    same backlog; also a small backlog and its fastest config), and the ratio;
//! 3. the limit, the FCALL / EVALSHA ceiling of that Redis (one and several connections, with and
//!    without pipelining);
//! 4. Redis round trips (client-issued commands) and command executions per committed step, from
//!    `INFO commandstats` deltas, CPU per step, and Redis time per Drover function (SLOWLOG);
//! 5. dispatch latency (previous step's end -> next step's claim) at half the measured peak load
//!    (and at a tenth, as a control for the box's scheduling noise);
//! 6. recovery time after `kill -9` of a worker holding a lease, relative to the lease TTL.
//!
//! Run it from the repository root with `cargo bench --bench engine` (needs `redis-server` on PATH;
//! about 80 s on a 2-core box, plus the build). Benchmarks are not tests: nothing here asserts a
//! target. The figures are printed and written into BENCHMARKS.md between the `engine-bench`
//! markers, with the machine and the command; hand-written notes outside the markers are kept.
//! Every phase is bounded by a count and a deadline. Worker logs stay in
//! `$TMPDIR/drover-engine-bench-<pid>/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use apalis::prelude::{BoxDynError, TaskSink, WorkerBuilder, WorkerBuilderExt};
use drover_store::{Store, Submission, WorkflowView};
use drover_workflows::State;
use futures::{StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// The command that produced the figures, as BENCHMARKS.md records it.
const COMMAND: &str = "cargo bench --bench engine";
/// Throughput rounds (Drover 1 and 4 workers, apalis stock with two backlogs, apalis lean);
/// figures are medians over rounds, ratios are taken within a round.
const ROUNDS: usize = 5;
/// Workflows pre-submitted per Drover throughput run, and their (no-op) steps.
const TP_WORKFLOWS: usize = 4_000;
const TP_STEPS: usize = 5;
/// Workflows (of [`TP_STEPS`] steps) run by one worker with Redis's SLOWLOG recording every call.
const COST_WORKFLOWS: usize = 1_000;
/// Steps run at once per worker process (Drover) and per worker (apalis).
const CONCURRENCY: usize = 32;
/// Jobs pre-pushed per apalis run: the anchor has the same backlog as a Drover run has ready
/// workflows. apalis-redis promotes every due job in one Lua `unpack`, which fails from about 8,000
/// due jobs on, so the backlog stays below that.
const APALIS_JOBS: usize = TP_WORKFLOWS;
/// A small backlog for apalis: its stock config removes every locked job from the whole queue list
/// (`LREM`), so its cost per job grows with the backlog.
const APALIS_SMALL_JOBS: usize = 1_500;
/// How long each script-ceiling configuration is driven, and how often: a ceiling is the best of
/// its tries (a try that another process interrupts says nothing about Redis).
const CEILING_WINDOW: Duration = Duration::from_millis(600);
const CEILING_TRIES: usize = 3;
const PIPELINE_DEPTH: usize = 64;
/// Paced submission for the latency measurement.
const LATENCY_WINDOW: Duration = Duration::from_secs(8);
const LATENCY_STEPS: usize = 5;
/// Lease used by the throughput and latency workers (no step there comes near it).
const LONG_LEASE_MS: u64 = 15_000;
/// Crash recovery: lease TTL, how long the step runs, and when (after its claim) the worker dies.
const RECOVERY_LEASE_MS: u64 = 1_500;
const RECOVERY_STEP_MS: u64 = 2_500;
const KILL_AFTER_MS: [u64; 3] = [600, 900, 1_300];
/// No single wait in the bench lasts longer than this.
const DEADLINE: Duration = Duration::from_secs(90);
/// Idle wait of the worker processes (DROVER_WORKER_IDLE_WAIT_MS), the default.
const IDLE_WAIT_MS: u64 = 1_000;

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let bench = Bench::start().await?;
    let machine = Machine::probe(&bench).await?;
    println!("engine bench: {}", machine.one_line());

    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let r = Round {
            drover_1: drover_throughput(&bench, 1, round).await?,
            drover_4: drover_throughput(&bench, 4, round).await?,
            apalis: apalis_throughput(&bench, ApalisMode::Stock, APALIS_JOBS, round).await?,
            apalis_small: apalis_throughput(&bench, ApalisMode::Stock, APALIS_SMALL_JOBS, round)
                .await?,
            apalis_lean: apalis_throughput(&bench, ApalisMode::Lean, APALIS_JOBS, round).await?,
        };
        println!(
            "round {round}: drover 1w {:.0}/s, drover 4w {:.0}/s, apalis {:.0}/s, apalis small backlog {:.0}/s, apalis lean {:.0}/s",
            r.drover_1.per_sec(),
            r.drover_4.per_sec(),
            r.apalis.per_sec(),
            r.apalis_small.per_sec(),
            r.apalis_lean.per_sec()
        );
        rounds.push(r);
    }

    let costs = function_costs(&bench).await?;
    for c in &costs {
        println!(
            "redis time: {} x{}: mean {:.1} us, p99 {} us",
            c.name, c.calls, c.mean_us, c.p99_us
        );
    }

    let ceiling = script_ceiling(&bench).await?;
    for row in &ceiling {
        println!(
            "ceiling: {} x{} connections, {} in flight: {:.0}/s",
            row.call.name(),
            row.connections,
            row.depth,
            row.per_sec
        );
    }

    let mut latencies = Vec::new();
    for (label, workers, rate) in latency_plan(&rounds) {
        let l = dispatch_latency(&bench, label, workers, rate).await?;
        println!(
            "latency at {:.0} steps/s offered ({label}), {workers} worker(s): p50 {} ms, p99 {} ms",
            l.offered,
            percentile(&l.gaps, 50.0),
            percentile(&l.gaps, 99.0)
        );
        latencies.push(l);
    }

    let recovery = recovery(&bench).await?;
    for t in &recovery {
        println!(
            "recovery: killed {} ms into the step, re-claimed {} ms later",
            t.kill_after_ms, t.recovery_ms
        );
    }

    let report = Report {
        machine,
        rounds,
        costs,
        ceiling,
        latencies,
        recovery,
        elapsed: started.elapsed(),
        load_end: load_average(),
        logs: bench.logs.clone(),
    };
    let markdown = report.markdown();
    println!("\n{markdown}");
    let path = write_benchmarks(&markdown)?;
    println!("written to {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The environment: a private Redis, worker processes, the machine.

/// A private redis-server on a free loopback port, killed (and its directory removed) on drop.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl RedisServer {
    fn start(dir: &Path) -> Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (install it: apt-get install redis-server)")?;
        let server = RedisServer { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `drover worker` process of the release binary, SIGKILLed on drop.
struct WorkerProcess {
    name: String,
    child: Child,
}

impl WorkerProcess {
    fn spawn(
        url: &str,
        name: &str,
        concurrency: usize,
        lease_ms: u64,
        logs: &Path,
    ) -> Result<WorkerProcess> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("worker")
            .env("DROVER_REDIS_URL", url)
            .env("DROVER_WORKER_NAME", name)
            .env("DROVER_WORKER_CONCURRENCY", concurrency.to_string())
            .env("DROVER_WORKER_LEASE_MS", lease_ms.to_string())
            .env("DROVER_WORKER_IDLE_WAIT_MS", IDLE_WAIT_MS.to_string())
            .env("DROVER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot spawn {}", env!("CARGO_BIN_EXE_drover")))?;
        Ok(WorkerProcess {
            name: name.to_string(),
            child,
        })
    }

    /// CPU seconds the process has used so far (user + system).
    fn cpu_secs(&self) -> f64 {
        process_cpu_secs(self.child.id()).unwrap_or(0.0)
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("worker {} exited early ({status}); see its log", self.name);
        }
        Ok(())
    }

    /// SIGKILL; returns when the process is gone, with the time of the kill (ms since the epoch).
    fn kill9(&mut self) -> Result<u64> {
        let at = now_ms();
        self.child.kill()?;
        self.child.wait()?;
        Ok(at)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the phases share: the Redis, an admin connection, the Drover store, the log folder.
struct Bench {
    redis: RedisServer,
    admin: MultiplexedConnection,
    store: Store,
    logs: PathBuf,
}

/// When a waited-for count was reached, and how many commands the bench spent polling for it.
struct Reached {
    at_ms: u64,
    polls: u64,
}

impl Bench {
    async fn start() -> Result<Bench> {
        let logs = std::env::temp_dir().join(format!("drover-engine-bench-{}", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let redis = RedisServer::start(&logs)?;
        let client = redis::Client::open(redis.url())?;
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let admin = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
        Ok(Bench {
            redis,
            admin,
            store,
            logs,
        })
    }

    fn url(&self) -> String {
        self.redis.url()
    }

    async fn flushall(&self) -> Result<()> {
        let mut conn = self.admin.clone();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        Ok(())
    }

    async fn info(&self, section: &str) -> Result<String> {
        let mut conn = self.admin.clone();
        Ok(redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await?)
    }

    async fn info_field(&self, section: &str, field: &str) -> Result<String> {
        let info = self.info(section).await?;
        info_value(&info, field)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("INFO {section} has no {field}"))
    }

    /// Calls and microseconds per command since the server started
    /// (`cmdstat_<name>:calls=N,usec=M,...`).
    async fn commandstats(&self) -> Result<BTreeMap<String, Stat>> {
        let info = self.info("commandstats").await?;
        let field = |rest: &str, name: &str| -> Option<u64> {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Ok(info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let stat = Stat {
                    calls: field(rest, "calls")?,
                    usec: field(rest, "usec")?,
                };
                Some((name.to_string(), stat))
            })
            .collect())
    }

    /// CPU seconds redis-server has used (user + system, all threads).
    async fn redis_cpu(&self) -> Result<f64> {
        let info = self.info("cpu").await?;
        let field = |name: &str| -> Result<f64> {
            let value = info_value(&info, name).ok_or_else(|| anyhow!("INFO cpu has no {name}"))?;
            Ok(value.parse()?)
        };
        Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
    }

    fn drover_key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.store.prefix())
    }

    fn spawn_workers(&self, tag: &str, n: usize, lease_ms: u64) -> Result<Vec<WorkerProcess>> {
        (0..n)
            .map(|i| {
                WorkerProcess::spawn(
                    &self.url(),
                    &format!("{tag}-{i}"),
                    CONCURRENCY,
                    lease_ms,
                    &self.logs,
                )
            })
            .collect()
    }

    /// Waits until `n` clients block on the wake list: every worker has started and gone idle.
    async fn wait_idle(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let blocked: usize = self
                .info_field("clients", "blocked_clients")
                .await?
                .parse()?;
            if blocked >= n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "only {blocked} of {n} workers went idle within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls `<cmd> key` every 2 ms until it reaches `n`, checking `alive` in between.
    async fn wait_count(
        &self,
        cmd: &str,
        key: &str,
        n: u64,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<Reached> {
        let mut conn = self.admin.clone();
        let deadline = Instant::now() + DEADLINE;
        let mut polls = 0;
        loop {
            let count: u64 = redis::cmd(cmd).arg(key).query_async(&mut conn).await?;
            polls += 1;
            if count >= n {
                return Ok(Reached {
                    at_ms: now_ms(),
                    polls,
                });
            }
            alive()?;
            ensure!(
                Instant::now() < deadline,
                "{cmd} {key} reached only {count} of {n} within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// What the figures were measured on.
struct Machine {
    nproc: String,
    cpu: String,
    redis_version: String,
    date: String,
    load: String,
    revision: String,
    rustc: String,
}

impl Machine {
    async fn probe(bench: &Bench) -> Result<Machine> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        // This bench, its output and the lab (which no phase runs) do not count as changes to the
        // code measured.
        let dirty = !output(
            "git",
            &[
                "status",
                "--porcelain",
                "--",
                ".",
                ":!benches",
                ":!BENCHMARKS.md",
                ":!services/lab",
            ],
        )
        .unwrap_or_default()
        .is_empty();
        let revision = output("git", &["rev-parse", "--short", "HEAD"])
            .map(|r| {
                if dirty {
                    format!("{r} plus uncommitted changes")
                } else {
                    r
                }
            })
            .unwrap_or_else(|| "unknown".into());
        Ok(Machine {
            nproc: output("nproc", &[]).unwrap_or_else(|| "?".into()),
            cpu,
            redis_version: bench.info_field("server", "redis_version").await?,
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "?".into()),
            load: load_average(),
            revision,
            rustc: output("rustc", &["--version"]).unwrap_or_else(|| "?".into()),
        })
    }

    fn one_line(&self) -> String {
        format!(
            "nproc {}, {}, redis-server {}, {}, load {}",
            self.nproc, self.cpu, self.redis_version, self.date, self.load
        )
    }
}

/// The value of `field` in an INFO reply (`field:value` lines).
fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The trimmed stdout of a command run in the repository, if it succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Busy CPU seconds of the whole box, all cores, from the `cpu` line of /proc/stat.
fn box_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        output("getconf", &["CLK_TCK"])
            .and_then(|t| t.parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU used during a phase: by redis-server, by the bench process, and by everything else on the
/// box apart from the phase's worker processes (other people's builds and tests).
struct CpuMeter {
    started: Instant,
    box_busy: f64,
    redis: f64,
    bench: f64,
}

struct CpuUse {
    redis: f64,
    bench: f64,
    /// Average cores kept busy by other processes meanwhile.
    others_cores: f64,
}

impl CpuMeter {
    async fn start(bench: &Bench) -> Result<CpuMeter> {
        Ok(CpuMeter {
            started: Instant::now(),
            box_busy: box_busy_secs(),
            redis: bench.redis_cpu().await?,
            bench: process_cpu_secs(std::process::id()).unwrap_or(0.0),
        })
    }

    /// `workers`: CPU seconds of the worker processes started during the phase.
    async fn stop(self, bench: &Bench, workers: f64) -> Result<CpuUse> {
        let redis = bench.redis_cpu().await? - self.redis;
        let own = process_cpu_secs(std::process::id()).unwrap_or(0.0) - self.bench;
        let others = box_busy_secs() - self.box_busy - redis - own - workers;
        Ok(CpuUse {
            redis,
            bench: own,
            others_cores: others.max(0.0) / self.started.elapsed().as_secs_f64().max(1e-9),
        })
    }
}

fn now_ms() -> u64 {
    drover_worker::now_ms()
}

// ---------------------------------------------------------------------------------------------
// Drover: submitting and reading workflows.

fn noop_input(steps: usize) -> Value {
    json!({"steps": steps, "min_ms": 0, "max_ms": 0})
}

/// Submits one workflow per id through `Store::submit`, 64 at a time.
async fn submit_all(store: &Store, ids: &[String], input: &Value) -> Result<()> {
    let registry = drover_kinds::builtin();
    futures::stream::iter(ids)
        .map(|id| {
            let registry = &registry;
            async move {
                let submission = Submission::new("synthetic", input.clone());
                let submitted = store
                    .submit_new(registry, id.clone(), submission, None, now_ms())
                    .await?;
                ensure!(submitted.created, "workflow {id} already existed");
                Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
}

async fn read_views(store: &Store, ids: &[String]) -> Result<Vec<WorkflowView>> {
    futures::stream::iter(ids)
        .map(|id| async move {
            store
                .get(id)
                .await?
                .ok_or_else(|| anyhow!("workflow {id} vanished"))
        })
        .buffered(32)
        .try_collect()
        .await
}

/// One history entry: one attempt of one step.
struct Attempt {
    step: u64,
    start_ms: u64,
    end_ms: u64,
    outcome: String,
    worker: String,
}

fn attempts(view: &WorkflowView) -> Vec<Attempt> {
    let num = |h: &Value, k: &str| h[k].as_u64().unwrap_or(0);
    view.history
        .iter()
        .flatten()
        .map(|h| Attempt {
            step: num(h, "step"),
            start_ms: num(h, "start_ms"),
            end_ms: num(h, "end_ms"),
            outcome: h["outcome"].as_str().unwrap_or("").to_string(),
            worker: h["worker"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// What the histories of a finished run say.
struct RunCheck {
    /// Committed steps (history entries with outcome "done").
    committed: u64,
    /// Earliest claim of any step.
    first_start_ms: u64,
    /// Anything but "every workflow succeeded with each step committed exactly once".
    anomalies: Vec<String>,
}

fn check_run(views: &[WorkflowView], steps: usize) -> RunCheck {
    let mut check = RunCheck {
        committed: 0,
        first_start_ms: u64::MAX,
        anomalies: Vec::new(),
    };
    for v in views {
        let history = attempts(v);
        let done = history.iter().filter(|a| a.outcome == "done").count();
        check.committed += done as u64;
        if let Some(first) = history.iter().map(|a| a.start_ms).min() {
            check.first_start_ms = check.first_start_ms.min(first);
        }
        if v.state != State::Succeeded || done != steps || history.len() != steps {
            let outcomes: Vec<&str> = history.iter().map(|a| a.outcome.as_str()).collect();
            check
                .anomalies
                .push(format!("{} {:?}: {outcomes:?}", v.id, v.state));
        }
    }
    check
}

// ---------------------------------------------------------------------------------------------
// 1, 2 and 4: throughput and Redis commands per unit of work.

/// One throughput run.
struct Throughput {
    /// Committed steps (Drover) or completed jobs (apalis).
    units: u64,
    /// From the first claim (Drover) or handler call (apalis) until the bench saw the last unit
    /// done.
    span: Duration,
    /// From spawning the workers until the same moment (includes process start).
    wall: Duration,
    calls: Calls,
    /// CPU seconds used meanwhile by redis-server, and by the worker processes (Drover) or the
    /// bench process that hosts the apalis worker.
    redis_cpu: f64,
    worker_cpu: f64,
    /// Average cores other processes on the box kept busy meanwhile.
    others_cores: f64,
    anomalies: Vec<String>,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        self.units as f64 / self.span.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per unit of work.
    fn cpu_us(&self, secs: f64) -> f64 {
        secs * 1e6 / self.units.max(1) as f64
    }

    /// CPU microseconds per unit, redis-server and workers together: unlike the rate, this hardly
    /// moves when other processes compete for the cores.
    fn total_cpu_us(&self) -> f64 {
        self.cpu_us(self.redis_cpu + self.worker_cpu)
    }
}

/// One line of `INFO commandstats`.
#[derive(Clone, Copy, Default)]
struct Stat {
    calls: u64,
    usec: u64,
}

/// Redis commands executed during a run, by name, the bench's own polling taken out.
#[derive(Default)]
struct Calls {
    by_command: BTreeMap<String, u64>,
    /// Microseconds Redis spent in client-sent commands (a script's time includes its calls).
    usec: u64,
}

impl Calls {
    fn between(
        before: &BTreeMap<String, Stat>,
        after: &BTreeMap<String, Stat>,
        own: &[(&str, u64)],
    ) -> Calls {
        let delta = |k: &String, v: &Stat| {
            let b = before.get(k).copied().unwrap_or_default();
            Stat {
                calls: v.calls.saturating_sub(b.calls),
                usec: v.usec.saturating_sub(b.usec),
            }
        };
        let deltas: BTreeMap<String, Stat> = after
            .iter()
            .map(|(k, v)| (k.clone(), delta(k, v)))
            .collect();
        let mut by_command: BTreeMap<String, u64> =
            deltas.iter().map(|(k, v)| (k.clone(), v.calls)).collect();
        for (name, n) in own {
            if let Some(v) = by_command.get_mut(*name) {
                *v = v.saturating_sub(*n);
            }
        }
        by_command.retain(|_, v| *v > 0);
        let usec = deltas
            .iter()
            .filter(|(k, _)| is_top_level(k) && !own.iter().any(|(o, _)| o == k))
            .map(|(_, v)| v.usec)
            .sum();
        Calls { by_command, usec }
    }

    /// Commands a client sent: script and function calls, blocking pops, connection commands.
    /// Everything else is counted as executed inside a script (neither Drover's worker nor
    /// apalis-redis' worker path sends other commands on their own).
    fn round_trips(&self) -> u64 {
        self.top_level().iter().map(|(_, n)| n).sum()
    }

    fn executions(&self) -> u64 {
        self.by_command.values().sum()
    }

    fn top_level(&self) -> Vec<(&str, u64)> {
        self.by_command
            .iter()
            .filter(|(k, _)| is_top_level(k))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    fn inner(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .by_command
            .iter()
            .filter(|(k, _)| !is_top_level(k))
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

fn is_top_level(command: &str) -> bool {
    const TOP: [&str; 20] = [
        "fcall",
        "fcall_ro",
        "eval",
        "evalsha",
        "eval_ro",
        "evalsha_ro",
        "blpop",
        "brpop",
        "blmove",
        "brpoplpush",
        "bzpopmin",
        "bzpopmax",
        "blmpop",
        "bzmpop",
        "hello",
        "ping",
        "select",
        "info",
        "auth",
        "subscribe",
    ];
    const TOP_FAMILIES: [&str; 5] = ["client|", "function|", "script|", "config|", "command|"];
    TOP.contains(&command) || TOP_FAMILIES.iter().any(|f| command.starts_with(f))
}

async fn drover_throughput(bench: &Bench, workers: usize, round: usize) -> Result<Throughput> {
    bench.flushall().await?;
    let ids: Vec<String> = (0..TP_WORKFLOWS)
        .map(|i| format!("tp{workers}w-r{round}-{i:05}"))
        .collect();
    submit_all(&bench.store, &ids, &noop_input(TP_STEPS)).await?;

    let before = bench.commandstats().await?;
    let meter = CpuMeter::start(bench).await?;
    let spawned = Instant::now();
    let mut procs =
        bench.spawn_workers(&format!("tp{workers}w-r{round}"), workers, LONG_LEASE_MS)?;
    let reached = bench
        .wait_count(
            "ZCARD",
            &bench.drover_key("idx:state:succeeded"),
            TP_WORKFLOWS as u64,
            || procs.iter_mut().try_for_each(WorkerProcess::check_alive),
        )
        .await?;
    let wall = spawned.elapsed();
    let worker_cpu = procs.iter().map(WorkerProcess::cpu_secs).sum();
    let cpu = meter.stop(bench, worker_cpu).await?;
    let after = bench.commandstats().await?;
    drop(procs);

    let check = check_run(&read_views(&bench.store, &ids).await?, TP_STEPS);
    Ok(Throughput {
        units: check.committed,
        span: Duration::from_millis(reached.at_ms.saturating_sub(check.first_start_ms)),
        wall,
        calls: Calls::between(&before, &after, &[("zcard", reached.polls), ("info", 3)]),
        redis_cpu: cpu.redis,
        worker_cpu,
        others_cores: cpu.others_cores,
        anomalies: check.anomalies,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum ApalisMode {
    /// `Config::default()`: batch 10, task locks and pub/sub events on.
    Stock,
    /// Locks and events off, the fastest stock configuration.
    Lean,
}

/// When the first apalis job started (ms since the epoch; 0 before the first).
static APALIS_FIRST_MS: AtomicU64 = AtomicU64::new(0);

async fn noop_job(_job: u32) -> Result<(), BoxDynError> {
    if APALIS_FIRST_MS.load(Ordering::Relaxed) == 0 {
        let _ = APALIS_FIRST_MS.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }
    Ok(())
}

async fn apalis_throughput(
    bench: &Bench,
    mode: ApalisMode,
    jobs: usize,
    round: usize,
) -> Result<Throughput> {
    bench.flushall().await?;
    let mut config = apalis_redis::Config::default().queue("bench-apalis");
    if mode == ApalisMode::Lean {
        config = config.lock_tasks(false).emit_events(false);
    }
    let conn = apalis_redis::connect(bench.url()).await?;
    let mut storage = apalis_redis::RedisStorage::<u32>::new(conn).with_config(config.clone());
    storage
        .push_bulk((0..jobs as u32).collect())
        .await
        .map_err(|e| anyhow!("apalis push_bulk: {e}"))?;

    let before = bench.commandstats().await?;
    let meter = CpuMeter::start(bench).await?;
    APALIS_FIRST_MS.store(0, Ordering::Relaxed);
    let spawned = Instant::now();
    let worker = WorkerBuilder::new(format!("bench-apalis-{jobs}-r{round}"))
        .backend(storage)
        .concurrency(CONCURRENCY)
        .build(noop_job);
    let handle = tokio::spawn(worker.run());
    let reached = bench
        .wait_count("SCARD", &config.done_jobs_set(), jobs as u64, || {
            ensure!(
                !handle.is_finished(),
                "the apalis worker stopped before finishing its jobs"
            );
            Ok(())
        })
        .await;
    let wall = spawned.elapsed();
    let cpu = meter.stop(bench, 0.0).await?;
    let after = bench.commandstats().await?;
    handle.abort();
    let reached = reached?;
    let first = APALIS_FIRST_MS.load(Ordering::Relaxed);
    Ok(Throughput {
        units: jobs as u64,
        span: Duration::from_millis(reached.at_ms.saturating_sub(first)),
        wall,
        calls: Calls::between(&before, &after, &[("scard", reached.polls), ("info", 3)]),
        redis_cpu: cpu.redis,
        // The apalis worker runs inside the bench process.
        worker_cpu: cpu.bench,
        others_cores: cpu.others_cores,
        anomalies: Vec::new(),
    })
}

/// One round of the comparison, run back to back.
struct Round {
    drover_1: Throughput,
    drover_4: Throughput,
    /// Stock config, backlog [`APALIS_JOBS`]: the anchor.
    apalis: Throughput,
    /// Stock config, backlog [`APALIS_SMALL_JOBS`].
    apalis_small: Throughput,
    apalis_lean: Throughput,
}

/// The latency runs: each deployment at half its own measured peak (the better one first, the
/// headline), and one worker at a tenth of its peak as a control for the box's scheduling noise.
fn latency_plan(rounds: &[Round]) -> Vec<(&'static str, usize, f64)> {
    let one = median(rounds.iter().map(|r| r.drover_1.per_sec()).collect());
    let four = median(rounds.iter().map(|r| r.drover_4.per_sec()).collect());
    let (best, other) = if four > one {
        ((4, four), (1, one))
    } else {
        ((1, one), (4, four))
    };
    vec![
        ("half the measured peak", best.0, best.1 / 2.0),
        ("half this deployment's peak", other.0, other.1 / 2.0),
        ("a tenth of the 1-worker peak (control)", 1, one / 10.0),
    ]
}

/// Redis time of one kind of client-sent command (a Drover function by name), from the SLOWLOG.
struct FunctionCost {
    name: String,
    calls: u64,
    /// Calls per committed step.
    per_step: f64,
    mean_us: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Runs [`COST_WORKFLOWS`] workflows on one worker with `slowlog-log-slower-than 0`, so Redis logs
/// the execution time of every command; groups the worker's calls by function.
async fn function_costs(bench: &Bench) -> Result<Vec<FunctionCost>> {
    bench.flushall().await?;
    let ids: Vec<String> = (0..COST_WORKFLOWS)
        .map(|i| format!("cost-{i:05}"))
        .collect();
    submit_all(&bench.store, &ids, &noop_input(TP_STEPS)).await?;
    let mut conn = bench.admin.clone();
    let config = |name: &str, value: &str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(name).arg(value);
        cmd
    };
    let _: () = config("slowlog-max-len", "200000")
        .query_async(&mut conn)
        .await?;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await?;
    let _: () = config("slowlog-log-slower-than", "0")
        .query_async(&mut conn)
        .await?;
    let mut procs = bench.spawn_workers("cost", 1, LONG_LEASE_MS)?;
    let waited = bench
        .wait_count(
            "ZCARD",
            &bench.drover_key("idx:state:succeeded"),
            COST_WORKFLOWS as u64,
            || procs.iter_mut().try_for_each(WorkerProcess::check_alive),
        )
        .await;
    let _: () = config("slowlog-log-slower-than", "10000")
        .query_async(&mut conn)
        .await?;
    drop(procs);
    waited?;
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await?;
    let steps = check_run(&read_views(&bench.store, &ids).await?, TP_STEPS).committed;

    let mut by_name: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in &log {
        if let Some((name, us)) = slowlog_entry(entry) {
            by_name.entry(name).or_default().push(us);
        }
    }
    Ok(by_name
        .into_iter()
        .filter(|(name, _)| name.starts_with("drover_"))
        .map(|(name, mut us)| {
            us.sort_unstable();
            FunctionCost {
                calls: us.len() as u64,
                per_step: us.len() as f64 / steps.max(1) as f64,
                mean_us: us.iter().sum::<u64>() as f64 / us.len().max(1) as f64,
                p50_us: percentile(&us, 50.0),
                p99_us: percentile(&us, 99.0),
                name,
            }
        })
        .collect())
}

/// A SLOWLOG entry (`[id, time, duration us, [args..], ..]`) as (function or command name, us).
fn slowlog_entry(entry: &redis::Value) -> Option<(String, u64)> {
    let redis::Value::Array(fields) = entry else {
        return None;
    };
    let us = match fields.get(2)? {
        redis::Value::Int(us) => *us as u64,
        _ => return None,
    };
    let redis::Value::Array(args) = fields.get(3)? else {
        return None;
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).to_lowercase()),
        redis::Value::SimpleString(s) => Some(s.to_lowercase()),
        _ => None,
    };
    let command = text(args.first()?)?;
    let name = if command == "fcall" {
        text(args.get(1)?)?
    } else {
        command
    };
    Some((name, us))
}

// ---------------------------------------------------------------------------------------------
// 3: the script-call ceiling.

#[derive(Clone, Copy)]
enum ScriptCall {
    Fcall,
    Evalsha,
}

impl ScriptCall {
    fn name(self) -> &'static str {
        match self {
            ScriptCall::Fcall => "FCALL",
            ScriptCall::Evalsha => "EVALSHA",
        }
    }

    fn cmd(self, sha: &str) -> redis::Cmd {
        let mut cmd = match self {
            ScriptCall::Fcall => redis::cmd("FCALL"),
            ScriptCall::Evalsha => redis::cmd("EVALSHA"),
        };
        match self {
            ScriptCall::Fcall => cmd.arg("bench_noop").arg(0),
            ScriptCall::Evalsha => cmd.arg(sha).arg(0),
        };
        cmd
    }
}

struct CeilingRow {
    call: ScriptCall,
    connections: usize,
    /// Calls in flight per connection (1: request-reply; more: one pipeline of that many).
    depth: usize,
    per_sec: f64,
}

async fn script_ceiling(bench: &Bench) -> Result<Vec<CeilingRow>> {
    bench.flushall().await?;
    let mut conn = bench.admin.clone();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg("#!lua name=bench\nredis.register_function('bench_noop', function(keys, args) return 1 end)")
        .query_async(&mut conn)
        .await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut conn)
        .await?;
    let mut rows = Vec::new();
    for call in [ScriptCall::Fcall, ScriptCall::Evalsha] {
        for (connections, depth) in [(1, 1), (4, 1), (1, PIPELINE_DEPTH), (4, PIPELINE_DEPTH)] {
            let mut per_sec: f64 = 0.0;
            for _ in 0..CEILING_TRIES {
                let rate = hammer(&bench.url(), call.cmd(&sha), connections, depth).await?;
                per_sec = per_sec.max(rate);
            }
            rows.push(CeilingRow {
                call,
                connections,
                depth,
                per_sec,
            });
        }
    }
    Ok(rows)
}

/// Sends `cmd` over `connections` connections for [`CEILING_WINDOW`]; returns calls per second.
async fn hammer(url: &str, cmd: redis::Cmd, connections: usize, depth: usize) -> Result<f64> {
    let client = redis::Client::open(url)?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let mut pipe = redis::pipe();
    for _ in 0..depth {
        pipe.add_command(cmd.clone());
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (cmd, pipe) = (cmd.clone(), pipe.clone());
            tokio::spawn(async move {
                let mut calls = 0u64;
                while start.elapsed() < CEILING_WINDOW {
                    if depth == 1 {
                        let _: i64 = cmd.query_async(&mut conn).await?;
                    } else {
                        let _: Vec<i64> = pipe.query_async(&mut conn).await?;
                    }
                    calls += depth as u64;
                }
                Ok::<u64, redis::RedisError>(calls)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// 5: dispatch latency under a paced load.

struct Latency {
    /// What the offered load is relative to.
    label: &'static str,
    workers: usize,
    /// Offered load, steps per second.
    offered: f64,
    /// Committed steps per second over the run.
    achieved: f64,
    /// Per step k > 0: claim of step k minus the recorded end of step k-1, ms, sorted.
    gaps: Vec<u64>,
    /// Step 0: claim minus submission, ms, sorted.
    first: Vec<u64>,
    /// Average cores other processes on the box kept busy meanwhile.
    others_cores: f64,
    anomalies: Vec<String>,
}

async fn dispatch_latency(
    bench: &Bench,
    label: &'static str,
    workers: usize,
    steps_per_sec: f64,
) -> Result<Latency> {
    bench.flushall().await?;
    let tag = format!("lat{workers}w-{}", now_ms() % 100_000);
    let mut procs = bench.spawn_workers(&tag, workers, LONG_LEASE_MS)?;
    bench.wait_idle(workers).await?;

    let input = noop_input(LATENCY_STEPS);
    let workflows_per_sec = steps_per_sec / LATENCY_STEPS as f64;
    let mut ids: Vec<String> = Vec::new();
    let meter = CpuMeter::start(bench).await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < LATENCY_WINDOW {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * workflows_per_sec) as usize;
        let batch: Vec<String> = (ids.len()..due).map(|i| format!("{tag}-{i:06}")).collect();
        submit_all(&bench.store, &batch, &input).await?;
        ids.extend(batch);
    }
    bench
        .wait_count(
            "ZCARD",
            &bench.drover_key("idx:state:succeeded"),
            ids.len() as u64,
            || procs.iter_mut().try_for_each(WorkerProcess::check_alive),
        )
        .await?;
    let cpu = meter
        .stop(bench, procs.iter().map(WorkerProcess::cpu_secs).sum())
        .await?;
    drop(procs);

    let views = read_views(&bench.store, &ids).await?;
    let check = check_run(&views, LATENCY_STEPS);
    let mut gaps = Vec::new();
    let mut first = Vec::new();
    let mut last_end = 0;
    for v in &views {
        let done: BTreeMap<u64, Attempt> = attempts(v)
            .into_iter()
            .filter(|a| a.outcome == "done")
            .map(|a| (a.step, a))
            .collect();
        for (step, a) in &done {
            last_end = last_end.max(a.end_ms);
            match step.checked_sub(1) {
                None => first.push(a.start_ms.saturating_sub(v.created_ms)),
                Some(prev) => {
                    if let Some(p) = done.get(&prev) {
                        gaps.push(a.start_ms.saturating_sub(p.end_ms));
                    }
                }
            }
        }
    }
    gaps.sort_unstable();
    first.sort_unstable();
    let span_ms = last_end.saturating_sub(check.first_start_ms).max(1);
    Ok(Latency {
        label,
        workers,
        offered: steps_per_sec,
        achieved: check.committed as f64 * 1000.0 / span_ms as f64,
        gaps,
        first,
        others_cores: cpu.others_cores,
        anomalies: check.anomalies,
    })
}

// ---------------------------------------------------------------------------------------------
// 6: recovery after kill -9.

struct RecoveryTrial {
    kill_after_ms: u64,
    /// From the SIGKILL to the step's next claim (by the surviving worker).
    recovery_ms: u64,
    victim: String,
    rescuer: String,
    outcomes: Vec<String>,
}

async fn recovery(bench: &Bench) -> Result<Vec<RecoveryTrial>> {
    bench.flushall().await?;
    let mut procs = bench.spawn_workers("rec", 2, RECOVERY_LEASE_MS)?;
    bench.wait_idle(2).await?;
    let input = json!({"steps": 1, "min_ms": RECOVERY_STEP_MS, "max_ms": RECOVERY_STEP_MS});
    let mut trials = Vec::new();
    for (trial, kill_after_ms) in KILL_AFTER_MS.into_iter().enumerate() {
        let id = format!("rec-{trial}");
        submit_all(&bench.store, std::slice::from_ref(&id), &input).await?;
        let (victim, claimed_ms) = wait_leased(&bench.store, &id).await?;
        let kill_at = claimed_ms + kill_after_ms;
        tokio::time::sleep(Duration::from_millis(kill_at.saturating_sub(now_ms()))).await;
        let slot = procs.iter().position(|p| p.name == victim).ok_or_else(|| {
            anyhow!("the lease holder {victim} is not one of the bench's workers")
        })?;
        let killed_ms = procs[slot].kill9()?;

        let view = wait_finished(&bench.store, &id).await?;
        let history = attempts(&view);
        let rerun = history
            .iter()
            .find(|a| a.outcome == "done")
            .ok_or_else(|| anyhow!("{id} finished {:?} without a committed step", view.state))?;
        trials.push(RecoveryTrial {
            kill_after_ms,
            recovery_ms: rerun.start_ms.saturating_sub(killed_ms),
            victim,
            rescuer: rerun.worker.clone(),
            outcomes: history.iter().map(|a| a.outcome.clone()).collect(),
        });
        procs[slot] = WorkerProcess::spawn(
            &bench.url(),
            &format!("rec-r{trial}"),
            CONCURRENCY,
            RECOVERY_LEASE_MS,
            &bench.logs,
        )?;
        bench.wait_idle(2).await?;
    }
    Ok(trials)
}

/// Waits until the workflow's step is leased; returns the holder and the claim time.
async fn wait_leased(store: &Store, id: &str) -> Result<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = store
            .get(id)
            .await?
            .ok_or_else(|| anyhow!("{id} vanished"))?;
        if let Some(worker) = view.lease_worker {
            return Ok((worker, view.updated_ms));
        }
        ensure!(
            Instant::now() < deadline,
            "{id} was not claimed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_finished(store: &Store, id: &str) -> Result<WorkflowView> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = store
            .get(id)
            .await?
            .ok_or_else(|| anyhow!("{id} vanished"))?;
        if view.state.is_terminal() {
            return Ok(view);
        }
        ensure!(Instant::now() < deadline, "{id} did not finish within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

struct Report {
    machine: Machine,
    rounds: Vec<Round>,
    costs: Vec<FunctionCost>,
    ceiling: Vec<CeilingRow>,
    /// The first is the headline: the better deployment at half its peak.
    latencies: Vec<Latency>,
    recovery: Vec<RecoveryTrial>,
    elapsed: Duration,
    load_end: String,
    logs: PathBuf,
}

const BEGIN: &str =
    "<!-- engine-bench:begin (written by benches/engine.rs; edit outside the markers) -->";
const END: &str = "<!-- engine-bench:end -->";

impl Report {
    fn markdown(&self) -> String {
        let mut md = String::new();
        self.header(&mut md);
        self.summary(&mut md);
        self.throughput(&mut md);
        self.ceiling_table(&mut md);
        self.commands(&mut md);
        self.costs_table(&mut md);
        self.latency_section(&mut md);
        self.recovery_section(&mut md);
        self.method(&mut md);
        md
    }

    fn header(&self, md: &mut String) {
        let m = &self.machine;
        let _ = writeln!(md, "## Engine benchmark (`benches/engine.rs`)\n");
        let _ = writeln!(
            md,
            "- Command: `{COMMAND}` (from the repository root; `bench` profile = release)"
        );
        let _ = writeln!(
            md,
            "- Date: {}; whole run {:.0} s",
            m.date,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "- Machine: nproc {}, CPU `{}`, load average {} at the start, {} at the end (the box is shared)",
            m.nproc, m.cpu, m.load, self.load_end
        );
        let _ = writeln!(
            md,
            "- Redis: redis-server {} started by the bench on a free loopback port, `--save \"\" --appendonly no`",
            m.redis_version
        );
        let _ = writeln!(md, "- Code: drover {}, {}\n", m.revision, m.rustc);
    }

    /// The lowest and highest per-round ratio of `drover` to the anchor.
    fn ratio_range(&self, drover: impl Fn(&Round) -> f64) -> String {
        let ratios: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| drover(r) / r.apalis.per_sec())
            .collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(0.0, f64::max);
        format!("{min:.2}-{max:.2}x")
    }

    /// The median over rounds of `f`.
    fn med(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(f).collect())
    }

    fn summary(&self, md: &mut String) {
        let d1 = stats(self.rounds.iter().map(|r| r.drover_1.per_sec()));
        let d4 = stats(self.rounds.iter().map(|r| r.drover_4.per_sec()));
        let ap = stats(self.rounds.iter().map(|r| r.apalis.per_sec()));
        let small = stats(self.rounds.iter().map(|r| r.apalis_small.per_sec()));
        let lean = stats(self.rounds.iter().map(|r| r.apalis_lean.per_sec()));
        let r1 = self.med(|r| r.drover_1.per_sec() / r.apalis.per_sec());
        let r4 = self.med(|r| r.drover_4.per_sec() / r.apalis.per_sec());
        let best = |r: &Round| r.drover_1.per_sec().max(r.drover_4.per_sec());
        let r_small = self.med(|r| best(r) / r.apalis_small.per_sec());
        let r_lean = self.med(|r| best(r) / r.apalis_lean.per_sec());
        let cpu1 = self.med(|r| r.drover_1.total_cpu_us());
        let cpu4 = self.med(|r| r.drover_4.total_cpu_us());
        let cpu_ap = self.med(|r| r.apalis.total_cpu_us());
        let cpu_small = self.med(|r| r.apalis_small.total_cpu_us());
        let cpu_lean = self.med(|r| r.apalis_lean.total_cpu_us());
        let rt1 = self.med(|r| per_unit(r.drover_1.calls.round_trips(), &r.drover_1));
        let rt4 = self.med(|r| per_unit(r.drover_4.calls.round_trips(), &r.drover_4));
        let rt_ap = self.med(|r| per_unit(r.apalis.calls.round_trips(), &r.apalis));
        let ex1 = self.med(|r| per_unit(r.drover_1.calls.executions(), &r.drover_1));
        let ex_ap = self.med(|r| per_unit(r.apalis.calls.executions(), &r.apalis));
        let rcpu1 = self.med(|r| r.drover_1.cpu_us(r.drover_1.redis_cpu));
        let wcpu1 = self.med(|r| r.drover_1.cpu_us(r.drover_1.worker_cpu));
        let rcpu_ap = self.med(|r| r.apalis.cpu_us(r.apalis.redis_cpu));
        let wcpu_ap = self.med(|r| r.apalis.cpu_us(r.apalis.worker_cpu));
        let rec: Vec<f64> = self.recovery.iter().map(|t| t.recovery_ms as f64).collect();
        let rec_med = median(rec.clone());
        let rec_max = rec.iter().copied().fold(0.0, f64::max);

        let mut row = |cells: [&str; 6]| {
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        };
        row([
            "#",
            "measure",
            "figure",
            "compared with",
            "target",
            "verdict",
        ]);
        row(["---"; 6]);
        let c = CONCURRENCY;
        row([
            "1",
            &format!("Drover no-op step transitions/s, 1 worker process x {c}"),
            &format!("**{}** ({})", int(d1.0), d1.range()),
            "",
            "",
            "",
        ]);
        row([
            "1",
            &format!("Drover no-op step transitions/s, 4 worker processes x {c}"),
            &format!("**{}** ({})", int(d4.0), d4.range()),
            "",
            "",
            "",
        ]);
        row([
            "2",
            &format!(
                "apalis-redis 1.0 no-op jobs/s, stock config, concurrency {c}, backlog {APALIS_JOBS} (**anchor**)"
            ),
            &format!("**{}** ({})", int(ap.0), ap.range()),
            "",
            "",
            "",
        ]);
        row([
            "2",
            &format!("apalis-redis 1.0 no-op jobs/s, stock config, backlog {APALIS_SMALL_JOBS}"),
            &format!("{} ({})", int(small.0), small.range()),
            "",
            "",
            "",
        ]);
        row([
            "2",
            &format!("apalis-redis 1.0 no-op jobs/s, locks and events off, backlog {APALIS_JOBS}"),
            &format!("{} ({})", int(lean.0), lean.range()),
            "",
            "",
            "",
        ]);
        row([
            "2",
            "Drover / apalis anchor, same round (median of per-round ratios; range)",
            &format!(
                "**{r1:.2}x** (1 worker; {}), **{r4:.2}x** (4 workers; {})",
                self.ratio_range(|r| r.drover_1.per_sec()),
                self.ratio_range(|r| r.drover_4.per_sec())
            ),
            "anchor",
            ">= 2x",
            verdict(r1.max(r4) >= 2.0),
        ]);
        row([
            "2",
            "CPU per unit, redis-server + workers (hardly moved by the box's noise)",
            &format!("Drover {cpu1:.0} us/step (1 worker), {cpu4:.0} us/step (4 workers)"),
            &format!(
                "apalis {cpu_ap:.0} us/job (anchor), {cpu_small:.0} (backlog {APALIS_SMALL_JOBS}), {cpu_lean:.0} (lean)"
            ),
            "",
            "",
        ]);
        row([
            "2",
            "CPU efficiency: anchor CPU per job / Drover CPU per step (1 worker)",
            &format!("{:.2}x", cpu_ap / cpu1.max(1e-9)),
            "anchor",
            "",
            "",
        ]);
        row([
            "2",
            "Drover (better deployment) / other apalis configs",
            &format!(
                "{r_small:.2}x (stock, backlog {APALIS_SMALL_JOBS}), {r_lean:.2}x (locks and events off)"
            ),
            "",
            "",
            "",
        ]);
        let fcall = |connections: usize, depth: usize| {
            self.ceiling
                .iter()
                .find(|c| {
                    matches!(c.call, ScriptCall::Fcall)
                        && c.connections == connections
                        && c.depth == depth
                })
                .map_or(0.0, |c| c.per_sec)
        };
        row([
            "3",
            "Redis ceiling: trivial FCALL calls/s",
            &format!(
                "{} (1 connection, request-reply), {} (4 connections, request-reply), {} (4 connections x {PIPELINE_DEPTH} pipelined)",
                int(fcall(1, 1)),
                int(fcall(4, 1)),
                int(fcall(4, PIPELINE_DEPTH))
            ),
            "limit; all rows in section 3",
            "",
            "",
        ]);
        row([
            "4",
            "Redis round trips per committed step",
            &format!("**{rt1:.2}** (1 worker), {rt4:.2} (4 workers)"),
            &format!("apalis {rt_ap:.2} per job"),
            "<= 4",
            verdict(rt1.max(rt4) <= 4.0),
        ]);
        row([
            "4",
            "Redis command executions per step, including those inside functions",
            &format!("{ex1:.1} (1 worker)"),
            &format!("apalis {ex_ap:.1} per job"),
            "",
            "",
        ]);
        row([
            "4",
            "CPU per step: redis-server / worker process (1 worker)",
            &format!("{rcpu1:.0} us / {wcpu1:.0} us"),
            &format!("apalis {rcpu_ap:.0} us / {wcpu_ap:.0} us per job"),
            "",
            "",
        ]);
        if let Some(l) = self.latencies.first() {
            let p99 = percentile(&l.gaps, 99.0);
            row([
                "5",
                &format!(
                    "Dispatch latency p50 / p99, {} worker(s) at {} steps/s ({})",
                    l.workers,
                    int(l.offered),
                    l.label
                ),
                &format!("**{} / {p99} ms**", percentile(&l.gaps, 50.0)),
                &format!(
                    "submit -> step 0 claim: {} / {} ms; other loads in section 5",
                    percentile(&l.first, 50.0),
                    percentile(&l.first, 99.0)
                ),
                "p99 < 20 ms",
                verdict(p99 < 20),
            ]);
        }
        row([
            "6",
            &format!(
                "Recovery after SIGKILL of the lease holder, lease TTL {RECOVERY_LEASE_MS} ms"
            ),
            &format!(
                "**{} ms** median = {:.2} x TTL (max {:.2} x)",
                int(rec_med),
                rec_med / RECOVERY_LEASE_MS as f64,
                rec_max / RECOVERY_LEASE_MS as f64
            ),
            "apalis default: 300 s orphan timeout",
            "",
            "",
        ]);
        let _ = writeln!(md);
    }

    fn throughput(&self, md: &mut String) {
        let _ = writeln!(md, "### 1-2. Throughput by round\n");
        let _ = writeln!(
            md,
            "Per second over the measured span (first claim or handler call -> last unit seen done); \
             in brackets the wall time from spawning the workers, which includes process start, and the \
             average number of cores other processes on the box kept busy meanwhile.\n"
        );
        let _ = writeln!(
            md,
            "| round | Drover 1 worker | Drover 4 workers | apalis stock (anchor) | apalis stock, backlog {APALIS_SMALL_JOBS} | apalis lean | Drover/anchor 1w | 4w |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for (i, r) in self.rounds.iter().enumerate() {
            let cell = |t: &Throughput| {
                format!(
                    "{} ({:.2} s; others {:.1})",
                    int(t.per_sec()),
                    t.wall.as_secs_f64(),
                    t.others_cores
                )
            };
            let _ = writeln!(
                md,
                "| {i} | {} | {} | {} | {} | {} | {:.2}x | {:.2}x |",
                cell(&r.drover_1),
                cell(&r.drover_4),
                cell(&r.apalis),
                cell(&r.apalis_small),
                cell(&r.apalis_lean),
                r.drover_1.per_sec() / r.apalis.per_sec(),
                r.drover_4.per_sec() / r.apalis.per_sec()
            );
        }
        let anomalies: Vec<&String> = self
            .rounds
            .iter()
            .flat_map(|r| r.drover_1.anomalies.iter().chain(&r.drover_4.anomalies))
            .collect();
        let _ = writeln!(
            md,
            "\nDrover runs: {TP_WORKFLOWS} workflows x {TP_STEPS} no-op steps each ({} transitions); apalis runs: \
             {APALIS_JOBS} jobs (anchor, lean) or {APALIS_SMALL_JOBS}. Workflows not succeeded with each step committed exactly once: {}{}\n",
            int((TP_WORKFLOWS * TP_STEPS) as f64),
            anomalies.len(),
            anomalies
                .first()
                .map(|a| format!(" (first: `{a}`)"))
                .unwrap_or_default()
        );
    }

    fn ceiling_table(&self, md: &mut String) {
        let _ = writeln!(md, "### 3. Script-call ceiling of this Redis\n");
        let _ = writeln!(
            md,
            "A function / script that only returns 1, driven from this box (client and server share the \
             2 cores) for {} ms, best of {CEILING_TRIES} tries per row. Request-reply on one connection \
             is bounded by the client's round trip (tokio, the multiplexed connection, loopback), not by \
             Redis; the pipelined rows show what Redis itself can execute.\n",
            CEILING_WINDOW.as_millis()
        );
        if let Some(r) = self.rounds.first() {
            let t = &r.drover_1;
            let fcalls = t.calls.by_command.get("fcall").copied().unwrap_or(0);
            let _ = writeln!(
                md,
                "For scale: in round 0 the 1-worker Drover run made {} FCALLs/s of {:.1} us of Redis time \
                 each on average.\n",
                int(fcalls as f64 / t.span.as_secs_f64().max(1e-9)),
                t.calls.usec as f64 / t.calls.round_trips().max(1) as f64
            );
        }
        let _ = writeln!(
            md,
            "| call | connections | in flight per connection | calls/s |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for c in &self.ceiling {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.call.name(),
                c.connections,
                if c.depth == 1 {
                    "1 (request-reply)".to_string()
                } else {
                    format!("{} (pipeline)", c.depth)
                },
                int(c.per_sec)
            );
        }
        let _ = writeln!(md);
    }

    fn commands(&self, md: &mut String) {
        let _ = writeln!(md, "### 4. Redis commands per unit of work (round 0)\n");
        let _ = writeln!(
            md,
            "`INFO commandstats` deltas over the measured run, the bench's own polling taken out. Redis counts \
             commands run inside functions and scripts too, so they are split: *round trips* are the commands \
             clients sent (FCALL/EVALSHA, blocking pops, connection setup), *executions* are all of them. \
             *Redis us* is the time commandstats books to the client-sent commands; CPU is from `INFO cpu` \
             (redis-server) and `/proc/<pid>/stat` (the worker processes; for apalis, the bench process that \
             hosts its worker).\n"
        );
        let _ = writeln!(
            md,
            "| run | round trips / unit | client-sent commands / unit | executions / unit | most executed inside scripts | Redis us / unit | CPU us / unit: redis-server, workers |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        let Some(r) = self.rounds.first() else {
            return;
        };
        for (name, t) in [
            ("Drover 1 worker (per step)", &r.drover_1),
            ("Drover 4 workers (per step)", &r.drover_4),
            ("apalis stock (per job)", &r.apalis),
            ("apalis stock, small backlog (per job)", &r.apalis_small),
            ("apalis lean (per job)", &r.apalis_lean),
        ] {
            let top: Vec<String> = t
                .calls
                .top_level()
                .iter()
                .map(|(k, n)| format!("{} {:.3}", k.replace('|', "\\|"), per_unit(*n, t)))
                .collect();
            let inner: Vec<String> = t
                .calls
                .inner()
                .iter()
                .take(6)
                .map(|(k, n)| format!("{k} {:.2}", per_unit(*n, t)))
                .collect();
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {} | {:.1} | {} | {:.1} | {:.0}, {:.0} |",
                per_unit(t.calls.round_trips(), t),
                top.join(", "),
                per_unit(t.calls.executions(), t),
                inner.join(", "),
                per_unit(t.calls.usec, t),
                t.cpu_us(t.redis_cpu),
                t.cpu_us(t.worker_cpu)
            );
        }
        let _ = writeln!(md);
    }

    fn costs_table(&self, md: &mut String) {
        let _ = writeln!(md, "#### Redis time per Drover function call\n");
        let _ = writeln!(
            md,
            "{COST_WORKFLOWS} workflows x {TP_STEPS} no-op steps on 1 worker process with `slowlog-log-slower-than 0`, \
             so Redis logs the execution time of every call (the logging itself adds a little).\n"
        );
        let _ = writeln!(
            md,
            "| function | calls | per step | mean | p50 | p99 | Redis us per step |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for c in &self.costs {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {:.1} us | {} us | {} us | {:.1} |",
                c.name,
                c.calls,
                c.per_step,
                c.mean_us,
                c.p50_us,
                c.p99_us,
                c.mean_us * c.per_step
            );
        }
        let _ = writeln!(md);
    }

    fn latency_section(&self, md: &mut String) {
        let _ = writeln!(md, "### 5. Dispatch latency\n");
        let _ = writeln!(
            md,
            "Workflows of {LATENCY_STEPS} no-op steps submitted at an even pace (every 10 ms) for {} s to idle \
             workers (x {CONCURRENCY} each). Latency of step k > 0 = its claim (history `start_ms`) minus the \
             recorded end of step k-1 (`end_ms`, taken just before the commit), so it holds the commit round \
             trip, the wake-up and the claim. Millisecond timestamps.\n",
            LATENCY_WINDOW.as_secs()
        );
        let _ = writeln!(
            md,
            "| workers | offered steps/s | achieved | other processes (cores busy) | between | samples | p50 | p90 | p99 | max |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for l in &self.latencies {
            for (name, v) in [
                ("step k-1 end -> step k claim", &l.gaps),
                ("submit -> step 0 claim", &l.first),
            ] {
                let _ = writeln!(
                    md,
                    "| {} | {} ({}) | {} | {:.2} | {name} | {} | {} ms | {} ms | {} ms | {} ms |",
                    l.workers,
                    int(l.offered),
                    l.label,
                    int(l.achieved),
                    l.others_cores,
                    v.len(),
                    percentile(v, 50.0),
                    percentile(v, 90.0),
                    percentile(v, 99.0),
                    v.last().copied().unwrap_or(0)
                );
            }
        }
        let anomalies: usize = self.latencies.iter().map(|l| l.anomalies.len()).sum();
        let _ = writeln!(md, "\nWorkflows not succeeded cleanly: {anomalies}\n");
    }

    fn recovery_section(&self, md: &mut String) {
        let _ = writeln!(md, "### 6. Recovery after kill -9\n");
        let _ = writeln!(
            md,
            "Two worker processes, lease {RECOVERY_LEASE_MS} ms (renewed every third), idle wait {IDLE_WAIT_MS} ms; a \
             one-step workflow whose step runs {RECOVERY_STEP_MS} ms; the process holding its lease gets SIGKILL at \
             the given time after the claim. Recovery = the re-run's claim (history `start_ms`) minus the kill. \
             Expected: the lease runs out between TTL - TTL/3 and TTL after the kill.\n"
        );
        let _ = writeln!(
            md,
            "| killed after | recovery | x TTL | victim -> rescuer | history |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for t in &self.recovery {
            let _ = writeln!(
                md,
                "| {} ms | {} ms | {:.2} | {} -> {} | {} |",
                t.kill_after_ms,
                t.recovery_ms,
                t.recovery_ms as f64 / RECOVERY_LEASE_MS as f64,
                t.victim,
                t.rescuer,
                t.outcomes.join(", ")
            );
        }
        let _ = writeln!(md);
    }

    fn method(&self, md: &mut String) {
        let _ = writeln!(md, "### Method\n");
        let _ = writeln!(
            md,
            "- Drover: workflows of kind `synthetic` with `min_ms = max_ms = 0` are submitted with `Store::submit` \
             before the workers start; workers are `drover worker` processes (release binary) with \
             `DROVER_WORKER_CONCURRENCY={CONCURRENCY}`, lease {LONG_LEASE_MS} ms; done when every workflow is in \
             `idx:state:succeeded`; committed steps counted from the histories."
        );
        let _ = writeln!(
            md,
            "- apalis: `RedisStorage::<u32>::new(apalis_redis::connect(url))` with its own queue name, \
             `push_bulk` of all jobs, then one in-process `WorkerBuilder::new(..).backend(storage).concurrency({CONCURRENCY})` \
             with a no-op handler that notes its first call; done when its done set holds every job. Lean = \
             `lock_tasks(false).emit_events(false)`. `FLUSHALL` between runs; each round runs Drover 1 worker, \
             Drover 4 workers, apalis stock ({APALIS_JOBS} and {APALIS_SMALL_JOBS} jobs) and apalis lean back to back."
        );
        let _ = writeln!(
            md,
            "- The box is a noisy shared 2-core machine that also runs redis-server, the workers and the bench: \
             compare figures of the same run (ratios), not across runs. Worker logs: `{}`.",
            self.logs.display()
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn per_unit(n: u64, t: &Throughput) -> f64 {
    n as f64 / t.units.max(1) as f64
}

/// Median, min and max.
struct Stats(f64, f64, f64);

impl Stats {
    fn range(&self) -> String {
        format!("median of {ROUNDS}; {}-{}", int(self.1), int(self.2))
    }
}

fn stats(values: impl Iterator<Item = f64>) -> Stats {
    let v: Vec<f64> = values.collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    Stats(median(v), min, max)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// 12345.6 -> "12,346".
fn int(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Replaces the section between the markers of BENCHMARKS.md (creating the file if needed).
fn write_benchmarks(section: &str) -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let block = format!("{BEGIN}\n{section}{END}\n");
    let text = match std::fs::read_to_string(&path) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                let rest = old[e + END.len()..].trim_start_matches('\n');
                let gap = if rest.is_empty() { "" } else { "\n" };
                format!("{}{block}{gap}{rest}", &old[..b])
            }
            _ => format!("{}\n\n{block}", old.trim_end()),
        },
        Err(_) => format!("# Benchmarks\n\n{block}"),
    };
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
