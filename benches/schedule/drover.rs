//! Drover's side: a private Redis, two `drover worker` processes of the release binary (each runs
//! its scheduler, the default), and the schedules written through the store the way
//! `POST /v1/schedules` writes them. Lateness is read back from each schedule's log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use drover_store::Store;
use drover_store::schedule::{Put, PutMode, SCHEDULE_LABEL, fire_workflow, next_fire};
use drover_store::server::{Options, RedisServer};
use drover_worker::now_ms;
use drover_workflows::schedule::{Compiled, ScheduleSpec};
use futures::StreamExt;

use super::Scenario;
use super::stats::{Run, process_cpu_secs};

/// Steps each worker runs at once.
pub const CONCURRENCY: usize = 16;
/// Worker processes (each with a scheduler).
pub const WORKERS: usize = 2;
/// How long the workers may take to start.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long after the window's last fire time every fire time must have been acted on.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Schedule writes in flight while setting up.
const WRITES: usize = 32;

/// A `drover worker` process, SIGKILLed on drop.
struct Worker {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "worker {} exited early ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    fn cpu_secs(&self) -> f64 {
        process_cpu_secs(self.child.id()).unwrap_or(f64::NAN)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis, the store on it, and the worker processes.
pub struct Drover {
    redis: RedisServer,
    pub store: Store,
    workers: Vec<Worker>,
    registry: drover_workflows::Registry,
}

impl Drover {
    pub async fn start(logs: &Path) -> Result<Drover> {
        let redis = RedisServer::start(Options::temporary())?;
        let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
        let mut workers = Vec::new();
        for n in 0..WORKERS {
            let name = format!("sched-bench-{n}");
            let log = logs.join(format!("{name}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_drover"))
                .arg("worker")
                .env("DROVER_REDIS_URL", redis.url())
                .env("DROVER_WORKER_NAME", &name)
                .env("DROVER_WORKER_CONCURRENCY", CONCURRENCY.to_string())
                .env("DROVER_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("cannot spawn {}", env!("CARGO_BIN_EXE_drover")))?;
            workers.push(Worker { name, child, log });
        }
        // Each worker says so once its claims and its scheduler are running.
        let t0 = Instant::now();
        for w in &mut workers {
            loop {
                w.check_alive()?;
                let text = std::fs::read_to_string(&w.log).unwrap_or_default();
                if text.contains("Worker started.") {
                    break;
                }
                ensure!(
                    t0.elapsed() < START_DEADLINE,
                    "worker {} did not start in {} s",
                    w.name,
                    START_DEADLINE.as_secs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Drover {
            redis,
            store,
            workers,
            registry: drover_kinds::builtin(),
        })
    }

    /// `redis-server --version`, first words.
    pub fn redis_version() -> String {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|_| "redis-server".into())
    }

    /// CPU seconds of each worker so far.
    pub fn worker_cpu(&self) -> Vec<f64> {
        self.workers.iter().map(Worker::cpu_secs).collect()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.workers.iter_mut().try_for_each(Worker::check_alive)
    }

    /// Redis's own CPU seconds so far (`INFO cpu`: user + system of the server).
    pub async fn redis_cpu(&self) -> Result<f64> {
        let mut conn = self.store.connection();
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| anyhow!("INFO cpu has no {name}"))
        };
        Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
    }

    /// How late a `BLPOP` on an empty list returns after its timeout on this Redis (the scheduler
    /// waits for the next due time in one): `n` samples started at random phases, ms; with Redis's
    /// `hz`.
    pub async fn blpop_overshoot(&self, n: usize, timeout: Duration) -> Result<(Vec<f64>, String)> {
        let client = redis::Client::open(self.redis.url())?;
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let hz: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("hz")
            .query_async(&mut conn)
            .await?;
        let mut late = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..100))).await;
            let t = Instant::now();
            let _: Option<(String, String)> = redis::cmd("BLPOP")
                .arg("schedule-bench:nothing")
                .arg(timeout.as_secs_f64())
                .query_async(&mut conn)
                .await?;
            late.push(t.elapsed().saturating_sub(timeout).as_secs_f64() * 1000.0);
        }
        late.sort_by(f64::total_cmp);
        Ok((late, hz.get(1).cloned().unwrap_or_else(|| "?".into())))
    }

    async fn zcard(&self, key: &str) -> Result<u64> {
        let mut conn = self.store.connection();
        Ok(redis::cmd("ZCARD")
            .arg(format!("{}{key}", self.store.prefix()))
            .query_async(&mut conn)
            .await?)
    }

    /// Runs one scenario: writes its schedules, waits until every fire time of the window has
    /// been acted on and every started workflow has ended, and reads the logs back.
    pub async fn run(&mut self, scenario: &Scenario) -> Result<Run> {
        let succeeded_before = self.zcard("idx:state:succeeded").await?;
        let cpu_before = self.worker_cpu();
        let redis_before = self.redis_cpu().await?;
        let t0 = Instant::now();
        // The window starts on a whole second, at least the lead after now; the schedules are
        // written before it, with `start_at` and `end_at` bounding their fire times to it.
        let start_ms = scenario.window_start(now_ms() as i64);
        let end_ms = start_ms + scenario.window_ms() - 1;
        let specs = (0..scenario.schedules)
            .map(|i| Ok((scenario.id(i), scenario.spec(i, start_ms, end_ms)?)))
            .collect::<Result<Vec<(String, ScheduleSpec)>>>()?;
        let registry = &self.registry;
        let store = &self.store;
        let writes: Vec<Result<()>> = futures::stream::iter(specs.iter())
            .map(|(id, spec)| async move {
                // As the API's `create`: compile, check the workflow it starts at its first fire
                // time, then write it with its first fire time after now.
                let compiled = Compiled::compile(spec).map_err(|e| anyhow!("{id}: {e}"))?;
                let now = now_ms();
                let first = compiled
                    .next_after(now as i64)
                    .map_or(now as i64, |f| f.at_ms);
                fire_workflow(registry, store, id, &compiled, first, "", now)
                    .map_err(|e| anyhow!("{id}: {e}"))?;
                let put = store
                    .schedule_put(
                        id,
                        &serde_json::to_value(spec)?,
                        "allow-all",
                        next_fire(id, &compiled, now as i64),
                        PutMode::Create,
                        false,
                        None,
                        now,
                    )
                    .await?;
                ensure!(
                    put == Put::Created,
                    "{id}: the schedule was not created ({put:?})"
                );
                Ok(())
            })
            .buffer_unordered(WRITES)
            .collect()
            .await;
        writes.into_iter().collect::<Result<()>>()?;
        let written_ms = now_ms() as i64;
        ensure!(
            written_ms < start_ms,
            "writing the schedules took until {} ms after the window's start; raise the lead",
            written_ms - start_ms
        );

        // Every fire time of the window acted on: no schedule left in the due index (each has no
        // fire time after `end_at`).
        let deadline =
            Duration::from_millis((end_ms - now_ms() as i64).max(0) as u64) + SETTLE_DEADLINE;
        let waited = Instant::now();
        loop {
            self.check_alive()?;
            let past_end = now_ms() as i64 > end_ms;
            if past_end && self.zcard("sched:due").await? == 0 {
                break;
            }
            ensure!(
                waited.elapsed() < deadline,
                "the schedulers had not acted on every fire time {} s after the window",
                SETTLE_DEADLINE.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(if past_end { 50 } else { 500 })).await;
        }

        // Read the logs: every `started` entry of a due fire time.
        let mut run = Run::default();
        let mut started_entries = 0u64;
        let mut labelled = 0u64;
        for (id, spec) in &specs {
            let compiled = Compiled::compile(spec).map_err(|e| anyhow!("{id}: {e}"))?;
            let expected = expected_fires(&compiled, start_ms, end_ms);
            let log = self
                .store
                .schedule_log(id, drover_store::schedule::LOG_MAX)
                .await?;
            let mut starts = Vec::new();
            for e in &log {
                let (Some(fire), Some(due), Some(at)) = (
                    e["fire_ms"].as_i64(),
                    e["due_ms"].as_i64(),
                    e["at_ms"].as_i64(),
                ) else {
                    continue; // a control entry (created)
                };
                if e["action"] != "started" || e["mode"] != "due" {
                    run.check.other += 1;
                    continue;
                }
                started_entries += 1;
                starts.push(fire);
                run.record(fire, (at - due) as f64);
            }
            run.check.add(&expected, &starts);
            labelled += self
                .zcard(&format!("idx:label:{SCHEDULE_LABEL}={id}"))
                .await?;
        }
        // A workflow carrying the schedule's label without a log entry would be a second start.
        run.check.duplicated += labelled.saturating_sub(started_entries) as usize;

        // The started workflows ran: wait for them to end (they are one instant step each).
        let waited = Instant::now();
        let succeeded = loop {
            let n = self.zcard("idx:state:succeeded").await? - succeeded_before;
            if n >= labelled {
                break n;
            }
            self.check_alive()?;
            ensure!(
                waited.elapsed() < SETTLE_DEADLINE,
                "only {n} of {labelled} started workflows succeeded within {} s",
                SETTLE_DEADLINE.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let wall = t0.elapsed().as_secs_f64();
        let cpu_after = self.worker_cpu();
        let redis_after = self.redis_cpu().await?;
        let mut cpu: Vec<(String, f64)> = cpu_before
            .iter()
            .zip(&cpu_after)
            .enumerate()
            .map(|(n, (a, b))| (format!("worker {n}"), b - a))
            .collect();
        cpu.push(("redis-server".into(), redis_after - redis_before));
        run.cpu = cpu;
        run.cpu_wall_secs = wall;
        run.workflows = Some((labelled, succeeded));
        Ok(run)
    }
}

/// The fire times of a compiled spec in `[start_ms, end_ms]`.
pub fn expected_fires(compiled: &Compiled, start_ms: i64, end_ms: i64) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let mut after = start_ms - 1;
    while let Some(f) = compiled.next_after(after) {
        if f.at_ms > end_ms {
            break;
        }
        out.insert(f.at_ms);
        after = f.at_ms;
    }
    out
}
