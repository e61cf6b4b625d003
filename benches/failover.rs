//! The failover benchmark: what a Sentinel failover loses, with and without `WAIT`. Each round
//! starts a primary and two replicas (`appendfsync always`) under three Sentinels, has 16 tasks
//! submit workflows through the store as fast as they can (one store, connected through Sentinel),
//! SIGKILLs the primary after 1.5 s, keeps submitting until 1 s after Sentinel named the new
//! primary, and then looks up on the new primary every submission that was acknowledged. Lost =
//! acknowledged but not there. Rounds alternate between no `WAIT` (the default) and `WAIT 1`
//! (`redis_wait_replicas = 1`). The anchor of the throughput ratio is the same store without
//! `WAIT`, in the same run.
//!
//! Run from the repository root: `cargo bench --bench failover` (needs redis-server and
//! redis-sentinel; about two minutes). Not a test: it asserts nothing, and writes its figures into
//! BENCHMARKS.md between the `failover-bench` markers.

#[path = "shared/report.rs"]
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use drover_store::server::SentinelGroup;
use drover_store::{Store, Submission, now_ms};
use serde_json::json;

const COMMAND: &str = "cargo bench --bench failover";
const ROUNDS: usize = 3;
const SUBMITTERS: usize = 16;
const BEFORE_KILL: Duration = Duration::from_millis(1500);
const CUT: Duration = Duration::from_millis(200);

struct Round {
    wait: u32,
    /// The replicas' links were cut this long before the kill.
    cut: Option<Duration>,
    /// Acknowledged before the kill, per second.
    rate: f64,
    acked: usize,
    lost: usize,
    /// From the kill until Sentinel named the new primary.
    failover: Duration,
    /// The longest stretch without an acknowledgement, from the kill on.
    unavailable: Duration,
}

async fn round(wait: u32, cut: Option<Duration>) -> Result<Round> {
    let mut group = tokio::task::spawn_blocking(|| SentinelGroup::start("bench", 2, 3)).await??;
    let mut config = drover_store::Config::new(group.url());
    config.wait_replicas = wait;
    let store = Store::connect(&config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SUBMITTERS {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let registry = drover_kinds::builtin();
            let input = json!({"steps": 3});
            // (id, acknowledged at).
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sub = Submission::new("synthetic", input.clone());
                let id = uuid::Uuid::now_v7().to_string();
                if let Ok(s) = store.submit_new(&registry, id, sub, None, now_ms()).await {
                    acked.push((s.id, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            acked
        }));
    }
    tokio::time::sleep(BEFORE_KILL).await;
    let (failover, killed) = tokio::task::block_in_place(|| -> Result<_> {
        let old = group.primary_port()?;
        if let Some(cut) = cut {
            group.cut_replica_links()?;
            std::thread::sleep(cut);
        }
        let at = Instant::now();
        group.kill_primary()?;
        group.wait_failover(old)?;
        Ok((at.elapsed(), at))
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await?);
    }
    let mut times: Vec<Instant> = acked
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at >= killed)
        .collect();
    times.sort();
    let end = started.max(killed) + failover + Duration::from_secs(1);
    let unavailable = std::iter::once(killed)
        .chain(times)
        .chain(std::iter::once(end))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let before = acked.iter().filter(|(_, at)| *at < killed).count();
    let mut lost = 0;
    for chunk in acked.chunks(500) {
        for (id, _) in chunk {
            // The first call on a connection still pointed at the dead primary fails (transient),
            // and the next asks Sentinel again.
            let mut tries = 0;
            let found = loop {
                match store.get(id).await {
                    Err(e) if e.is_transient() && tries < 20 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other?,
                }
            };
            if found.is_none() {
                lost += 1;
            }
        }
    }
    Ok(Round {
        wait,
        cut,
        rate: before as f64 / BEFORE_KILL.as_secs_f64(),
        acked: acked.len(),
        lost,
        failover,
        unavailable,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let load = report::load_average();
    let started = Instant::now();
    let version = report::first_line("redis-server", &["--version"]);
    // Each scenario's rounds pair a no-WAIT round (the anchor) with a WAIT round right after it.
    let scenarios = [
        ("the primary is killed", None),
        (
            "the replicas' links are cut 200 ms before the kill",
            Some(CUT),
        ),
    ];
    let mut rounds = Vec::new();
    for (_, cut) in scenarios {
        for r in 0..ROUNDS * 2 {
            let wait = (r % 2) as u32;
            let round = round(wait, cut).await?;
            eprintln!(
                "cut {cut:?}, WAIT {wait}: {:.0}/s, {} acked, {} lost, failover {:?}, unavailable {:?}",
                round.rate, round.acked, round.lost, round.failover, round.unavailable
            );
            rounds.push(round);
        }
    }
    let mut report = String::new();
    report.push_str(&report::redis_header(
        COMMAND,
        &version,
        &load,
        started.elapsed().as_secs_f64(),
    ));
    for (name, cut) in scenarios {
        report.push_str(&format!(
            "**{name}** ({SUBMITTERS} submitters, one store through Sentinel, {} ms of submissions before the kill):\n\n\
             | round | WAIT | submissions/s before the kill | ratio to the no-WAIT round before it | acknowledged | lost | kill → new primary named | longest time without an acknowledgement after the kill |\n|---|---|---|---|---|---|---|---|\n",
            BEFORE_KILL.as_millis()
        ));
        let these: Vec<&Round> = rounds.iter().filter(|r| r.cut == cut).collect();
        for (i, r) in these.iter().enumerate() {
            let ratio = if r.wait == 1 {
                format!("{:.2}", r.rate / these[i - 1].rate)
            } else {
                "anchor".to_string()
            };
            report.push_str(&format!(
                "| {} | {} | {:.0} | {ratio} | {} | {} | {:.2} s | {:.2} s |\n",
                i / 2 + 1,
                if r.wait == 1 { "1 replica" } else { "off" },
                r.rate,
                r.acked,
                r.lost,
                r.failover.as_secs_f64(),
                r.unavailable.as_secs_f64(),
            ));
        }
        report.push('\n');
        for wait in [0, 1] {
            let (acked, lost) = these
                .iter()
                .filter(|r| r.wait == wait)
                .fold((0, 0), |(a, l), r| (a + r.acked, l + r.lost));
            report.push_str(&format!(
                "- WAIT {}: {lost} of {acked} acknowledged submissions lost over {ROUNDS} failovers.\n",
                if wait == 1 { "1 replica" } else { "off" },
            ));
        }
        report.push('\n');
    }
    report.push('\n');
    print!("{report}");
    report::write_section(
        "<!-- failover-bench:begin -->",
        "<!-- failover-bench:end -->",
        &report,
    )?;
    Ok(())
}
