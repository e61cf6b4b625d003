//! The engine benchmark's phases, each against the shared Redis (flushed first) and returning its
//! figures: throughput of Drover and of apalis-redis (1, 2, 4), Redis time per Drover function (4),
//! the script-call ceiling (3), dispatch latency under a paced load (5) and recovery after kill -9
//! (6). Nothing here renders.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use apalis::prelude::{BoxDynError, TaskSink, WorkerBuilder, WorkerBuilderExt};
use drover_store::{Store, Submission, WorkflowView};
use drover_worker::now_ms;
use drover_workflows::State;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::environment::{Bench, CpuMeter, Deployment, WorkerProcess};
use super::figures::{
    Calls, CeilingRow, FunctionCost, Latency, RecoveryTrial, Round, ScriptCall, Throughput, median,
    percentile,
};
use super::plan::*;

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

/// The deployment's worker processes (stopped) run `TP_WORKFLOWS` pre-submitted workflows to the
/// end, then are stopped again.
pub async fn drover_throughput(
    bench: &Bench,
    deployment: &mut Deployment,
    round: usize,
) -> Result<Throughput> {
    let workers = deployment.procs.len();
    bench.flushall().await?;
    let ids: Vec<String> = (0..TP_WORKFLOWS)
        .map(|i| format!("tp{workers}w-r{round}-{i:05}"))
        .collect();
    submit_all(&bench.store, &ids, &noop_input(TP_STEPS)).await?;

    let before = bench.commandstats().await?;
    let meter = CpuMeter::start(bench).await?;
    let workers_before = deployment.cpu_secs();
    let resumed = Instant::now();
    deployment.resume()?;
    let reached = bench
        .wait_count(
            "ZCARD",
            &bench.drover_key("idx:state:succeeded"),
            TP_WORKFLOWS as u64,
            || deployment.check_alive(),
        )
        .await;
    deployment.stop()?;
    let reached = reached?;
    let wall = resumed.elapsed();
    let worker_cpu = deployment.cpu_secs() - workers_before;
    let cpu = meter.stop(bench, worker_cpu).await?;
    let after = bench.commandstats().await?;

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

/// Which apalis-redis configuration.
#[derive(Clone, Copy, PartialEq)]
pub enum ApalisMode {
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

/// One in-process apalis-redis worker runs `jobs` pre-pushed no-op jobs.
pub async fn apalis_throughput(
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

/// Runs [`COST_WORKFLOWS`] workflows on one worker with `slowlog-log-slower-than 0`, so Redis logs
/// the execution time of every command; groups the worker's calls by function.
pub async fn function_costs(bench: &Bench) -> Result<Vec<FunctionCost>> {
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

/// The call of a script that only returns 1: the `bench_noop` function, or `sha` by EVALSHA.
fn script_cmd(call: ScriptCall, sha: &str) -> redis::Cmd {
    let mut cmd = match call {
        ScriptCall::Fcall => redis::cmd("FCALL"),
        ScriptCall::Evalsha => redis::cmd("EVALSHA"),
    };
    match call {
        ScriptCall::Fcall => cmd.arg("bench_noop").arg(0),
        ScriptCall::Evalsha => cmd.arg(sha).arg(0),
    };
    cmd
}

/// Every row of the ceiling: FCALL and EVALSHA, 1 and 4 connections, request-reply and pipelined.
pub async fn script_ceiling(bench: &Bench) -> Result<Vec<CeilingRow>> {
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
                let rate = hammer(&bench.url(), script_cmd(call, &sha), connections, depth).await?;
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

/// The latency runs: each deployment at half its own measured peak (the better one first, the
/// headline), and one worker at a tenth of its peak as a control for the box's scheduling noise.
pub fn latency_plan(rounds: &[Round]) -> Vec<(&'static str, usize, f64)> {
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

/// Submits workflows at `steps_per_sec` to `workers` idle worker processes for `LATENCY_WINDOW`
/// and reads the gaps between steps from the histories.
pub async fn dispatch_latency(
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

/// Two worker processes; for each of `KILL_AFTER_MS`, the lease holder of a one-step workflow is
/// SIGKILLed that long after its claim, and the survivor's re-run is timed (then the victim is
/// replaced).
pub async fn recovery(bench: &Bench) -> Result<Vec<RecoveryTrial>> {
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
