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
//!
//! This file runs the phases in order and hands the figures to the report. The parts:
//! `engine/plan.rs` (the parameters), `engine/environment.rs` (Redis, worker processes, CPU
//! meters, the machine), `engine/measure.rs` (the phases), `engine/figures.rs` (what they produce)
//! and `engine/report.rs` (the BENCHMARKS.md section, rendered from figures alone; the integration
//! tests render it from fixed figures, see `tests/engine_bench.rs`).

#[path = "engine/environment.rs"]
mod environment;
#[path = "engine/figures.rs"]
mod figures;
#[path = "engine/measure.rs"]
mod measure;
#[path = "engine/plan.rs"]
mod plan;
#[path = "engine/report.rs"]
mod report;

use std::time::Instant;

use anyhow::Result;

use environment::{Bench, Deployment, load_average};
use figures::{Machine, Round, percentile};
use measure::{
    ApalisMode, apalis_throughput, dispatch_latency, drover_throughput, function_costs,
    latency_plan, recovery, script_ceiling,
};
use plan::{APALIS_JOBS, APALIS_SMALL_JOBS, LONG_LEASE_MS, ROUNDS};
use report::{Report, write_benchmarks};

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let bench = Bench::start().await?;
    let machine = Machine::probe(&bench).await?;
    println!("engine bench: {}", machine.one_line());

    // The two Drover deployments (1 and 4 worker processes) live through every round, as a
    // deployment's workers do, stopped between their runs.
    let mut one = Deployment::spawn(&bench, "tp1w", 1, LONG_LEASE_MS)?;
    let mut four = Deployment::spawn(&bench, "tp4w", 4, LONG_LEASE_MS)?;
    bench.wait_idle(5).await?;
    one.stop()?;
    four.stop()?;

    // One discarded pass of each workload first: Redis's first fill of its memory (page faults,
    // allocator growth) and each worker process's first run (its heap growing to its working size)
    // would otherwise fall on round 0, not on the cost of a step.
    let warm_1 = drover_throughput(&bench, &mut one, ROUNDS).await?;
    let warm_4 = drover_throughput(&bench, &mut four, ROUNDS).await?;
    let warm_apalis = apalis_throughput(&bench, ApalisMode::Stock, APALIS_JOBS, ROUNDS).await?;
    println!(
        "warm-up (discarded): drover 1w {}, drover 4w {}, apalis {}",
        warm_1.one_line(),
        warm_4.one_line(),
        warm_apalis.one_line()
    );
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let r = Round {
            drover_1: drover_throughput(&bench, &mut one, round).await?,
            drover_4: drover_throughput(&bench, &mut four, round).await?,
            apalis: apalis_throughput(&bench, ApalisMode::Stock, APALIS_JOBS, round).await?,
            apalis_small: apalis_throughput(&bench, ApalisMode::Stock, APALIS_SMALL_JOBS, round)
                .await?,
            apalis_lean: apalis_throughput(&bench, ApalisMode::Lean, APALIS_JOBS, round).await?,
        };
        println!(
            "round {round} (rate; redis-server + worker CPU per unit): drover 1w {}, drover 4w {}, apalis {}, apalis small backlog {}, apalis lean {}",
            r.drover_1.one_line(),
            r.drover_4.one_line(),
            r.apalis.one_line(),
            r.apalis_small.one_line(),
            r.apalis_lean.one_line()
        );
        rounds.push(r);
    }
    // The other phases start workers of their own and count idle ones.
    drop((one, four));

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
