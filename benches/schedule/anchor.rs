//! The anchor: apalis-cron 1.0, the apalis ecosystem's cron source, run as its README shows: one
//! `CronScheduler` (a `cron::Schedule`, UTC) per schedule feeding its own apalis `Worker`, all in
//! this process (1,000 workers, one tokio task each, on the bench's runtime). Each handler records
//! when it was entered; lateness is that instant minus the tick's time.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use apalis::prelude::{BoxDynError, Data, WorkerBuilder};
use apalis_cron::{CronScheduler, Tick};
use drover_worker::now_ms;

use super::Scenario;
use super::stats::{Run, process_cpu_secs};

/// How long after the window's last tick every tick must have reached its handler.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Kept after the last expected tick arrived, so that a tick fired twice is seen.
const GRACE: Duration = Duration::from_millis(500);

/// (schedule, tick time in s, handler entered in µs since the epoch).
type Ticks = Arc<Mutex<Vec<(usize, u64, u64)>>>;

/// What each worker's handler gets: its schedule's number and where to record.
#[derive(Clone)]
struct Probe {
    index: usize,
    ticks: Ticks,
}

async fn on_tick(tick: Tick, probe: Data<Probe>) -> Result<(), BoxDynError> {
    let at_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    probe.ticks.lock().unwrap_or_else(|p| p.into_inner()).push((
        probe.index,
        tick.get_timestamp(),
        at_us,
    ));
    Ok(())
}

/// Runs one scenario's cron expressions on apalis-cron for one window.
pub async fn run(scenario: &Scenario) -> Result<Run> {
    let me = std::process::id();
    let cpu_before = process_cpu_secs(me).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    let start_ms = scenario.window_start(now_ms() as i64);
    let end_ms = start_ms + scenario.window_ms() - 1;
    let ticks: Ticks = Arc::new(Mutex::new(Vec::new()));
    let mut expected = Vec::new();
    let mut handles = Vec::new();
    for i in 0..scenario.schedules {
        let expr = scenario.cron(i, start_ms);
        expected.push(super::drover::expected_fires(
            &scenario.compiled(i, start_ms, end_ms)?,
            start_ms,
            end_ms,
        ));
        let schedule =
            cron::Schedule::from_str(&expr).map_err(|e| anyhow!("cron {expr:?}: {e}"))?;
        let worker = WorkerBuilder::new(format!("anchor-{}", scenario.id(i)))
            .backend(CronScheduler::new(schedule))
            .data(Probe {
                index: i,
                ticks: ticks.clone(),
            })
            .build(on_tick);
        handles.push(tokio::spawn(worker.run()));
    }
    let spawned_ms = now_ms() as i64;
    if spawned_ms >= start_ms {
        bail!(
            "starting the apalis-cron workers took until {} ms after the window's start; raise the lead",
            spawned_ms - start_ms
        );
    }
    let total: usize = expected.iter().map(BTreeSet::len).sum();
    let in_window = |t: &(usize, u64, u64)| {
        let ms = t.1 as i64 * 1000;
        ms >= start_ms && ms <= end_ms
    };
    let mut all_since: Option<Instant> = None;
    loop {
        if handles.iter().any(|h| h.is_finished()) {
            bail!("an apalis-cron worker stopped before the window ended");
        }
        let seen = ticks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| in_window(t))
            .count();
        let now = now_ms() as i64;
        if now > end_ms && seen >= total {
            let since = *all_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= GRACE {
                break;
            }
        }
        if now > end_ms + SETTLE_DEADLINE.as_millis() as i64 {
            break; // what did not arrive counts as missed
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in &handles {
        h.abort();
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_after = process_cpu_secs(me).unwrap_or(f64::NAN);

    let recorded = std::mem::take(&mut *ticks.lock().unwrap_or_else(|p| p.into_inner()));
    let mut starts: Vec<Vec<i64>> = vec![Vec::new(); scenario.schedules];
    let mut run = Run::default();
    for t in recorded.iter().filter(|t| in_window(t)) {
        let (i, tick_s, at_us) = *t;
        let fire_ms = tick_s as i64 * 1000;
        starts[i].push(fire_ms);
        run.record(fire_ms, (at_us as i64 - fire_ms * 1000) as f64 / 1000.0);
    }
    for (exp, got) in expected.iter().zip(&starts) {
        run.check.add(exp, got);
    }
    run.cpu = vec![(
        "bench process (hosts the workers)".into(),
        cpu_after - cpu_before,
    )];
    run.cpu_wall_secs = wall;
    Ok(run)
}
