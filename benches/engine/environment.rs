//! The engine benchmark's environment: one private Redis (the store's launcher), an admin
//! connection and the Drover store on it, `drover worker` processes of the release binary, CPU
//! meters over `/proc`, and the machine the figures were measured on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use drover_store::Store;
use drover_store::server::{Options, RedisServer};
use drover_worker::now_ms;
use redis::aio::MultiplexedConnection;

use super::figures::{Machine, Stat};
use super::plan::{CONCURRENCY, DEADLINE, IDLE_WAIT_MS};

/// A `drover worker` process of the release binary, SIGKILLed on drop.
pub struct WorkerProcess {
    pub name: String,
    child: Child,
}

impl WorkerProcess {
    pub fn spawn(
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
    pub fn cpu_secs(&self) -> f64 {
        process_cpu_secs(self.child.id()).unwrap_or(0.0)
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("worker {} exited early ({status}); see its log", self.name);
        }
        Ok(())
    }

    /// SIGKILL; returns when the process is gone, with the time of the kill (ms since the epoch).
    pub fn kill9(&mut self) -> Result<u64> {
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

/// A deployment's worker processes, started once and kept across the runs made with them, as a
/// deployment keeps its workers: between its runs they are stopped (SIGSTOP), so the other runs
/// have the box and a run's heap growth and start-up fall on no later run of the same deployment.
pub struct Deployment {
    pub procs: Vec<WorkerProcess>,
}

impl Deployment {
    /// Starts `n` worker processes (running: stop them once they are idle, see
    /// [`Bench::wait_idle`]).
    pub fn spawn(bench: &Bench, tag: &str, n: usize, lease_ms: u64) -> Result<Deployment> {
        Ok(Deployment {
            procs: bench.spawn_workers(tag, n, lease_ms)?,
        })
    }

    /// Resumes every process (one `kill` for all of them, so they resume together).
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    pub fn stop(&self) -> Result<()> {
        self.signal("STOP")
    }

    fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .args(self.procs.iter().map(|p| p.child.id().to_string()))
            .status()?;
        ensure!(status.success(), "kill -{name} of the workers failed");
        Ok(())
    }

    /// CPU seconds the processes have used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.procs.iter().map(WorkerProcess::cpu_secs).sum()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.procs
            .iter_mut()
            .try_for_each(WorkerProcess::check_alive)
    }
}

/// Everything the phases share: the Redis, an admin connection, the Drover store, the log folder
/// (worker logs stay there; the Redis's temporary directory goes with it).
pub struct Bench {
    redis: RedisServer,
    pub admin: MultiplexedConnection,
    pub store: Store,
    pub logs: PathBuf,
}

/// When a waited-for count was reached, and how many commands the bench spent polling for it.
pub struct Reached {
    pub at_ms: u64,
    pub polls: u64,
}

impl Bench {
    pub async fn start() -> Result<Bench> {
        let logs = std::env::temp_dir().join(format!("drover-engine-bench-{}", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let redis = RedisServer::start(Options::temporary())?;
        let client = redis::Client::open(redis.url())?;
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let admin = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if let Some(v) = listpack_value() {
            let mut conn = admin.clone();
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("hash-max-listpack-value")
                .arg(v)
                .query_async(&mut conn)
                .await?;
        }
        let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
        Ok(Bench {
            redis,
            admin,
            store,
            logs,
        })
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// Empties Redis, then connects a store to it as a deployment's first process does on an
    /// empty Redis: that records the store's markers (`meta:shards`, `meta:idx_top`). Without
    /// them every worker process of the next run would redo the `idx:top` backfill over the
    /// workflows submitted for it, inside the measured span.
    pub async fn flushall(&self) -> Result<()> {
        let mut conn = self.admin.clone();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        Store::connect(&drover_store::Config::new(self.redis.url())).await?;
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
    pub async fn commandstats(&self) -> Result<BTreeMap<String, Stat>> {
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

    pub fn drover_key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.store.prefix())
    }

    pub fn spawn_workers(&self, tag: &str, n: usize, lease_ms: u64) -> Result<Vec<WorkerProcess>> {
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
    pub async fn wait_idle(&self, n: usize) -> Result<()> {
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
    pub async fn wait_count(
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

/// `DROVER_BENCH_LISTPACK_VALUE`: Redis's `hash-max-listpack-value` for the run (default 64), to
/// measure what keeping records as listpacks costs a step.
fn listpack_value() -> Option<u64> {
    std::env::var("DROVER_BENCH_LISTPACK_VALUE")
        .ok()
        .and_then(|v| v.parse().ok())
}

impl Machine {
    /// Reads the machine, the Redis version, the date, the load and the code's revision.
    pub async fn probe(bench: &Bench) -> Result<Machine> {
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
            redis_config: listpack_value()
                .map(|v| format!("hash-max-listpack-value {v}"))
                .unwrap_or_default(),
        })
    }
}

/// The value of `field` in an INFO reply (`field:value` lines).
fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
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
pub struct CpuMeter {
    started: Instant,
    box_busy: f64,
    redis: f64,
    bench: f64,
}

/// What a [`CpuMeter`] saw, in CPU seconds.
pub struct CpuUse {
    pub redis: f64,
    pub bench: f64,
    /// Average cores kept busy by other processes meanwhile.
    pub others_cores: f64,
}

impl CpuMeter {
    pub async fn start(bench: &Bench) -> Result<CpuMeter> {
        Ok(CpuMeter {
            started: Instant::now(),
            box_busy: box_busy_secs(),
            redis: bench.redis_cpu().await?,
            bench: process_cpu_secs(std::process::id()).unwrap_or(0.0),
        })
    }

    /// `workers`: CPU seconds of the worker processes started during the phase.
    pub async fn stop(self, bench: &Bench, workers: f64) -> Result<CpuUse> {
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
