//! The failover benchmark: what a Sentinel failover loses, with and without `WAIT`. Each round
//! starts a primary and two replicas (`appendfsync always`) under three Sentinels, has 16 tasks
//! submit workflows through one store as fast as they can, brings a fault after 1.5 s, keeps
//! submitting until 1 s after Sentinel named the new primary, and then looks up on the primary
//! Sentinel names every submission that was acknowledged. Lost = acknowledged but not there. The
//! faults: the primary is SIGKILLed; the replicas' links are cut 200 ms before the SIGKILL; or the
//! primary is partitioned from its replicas and the Sentinels (they reach it through a proxy that
//! stops forwarding) while the submitters, on a store given the primary's own URL, still reach it,
//! until the partition heals and Sentinel makes it a replica of the new primary. Rounds alternate
//! between no `WAIT` (the default) and `WAIT 1` (`redis_wait_replicas = 1`); the anchor of the
//! throughput ratio is the same store without `WAIT`, in the same run.
//!
//! Run from the repository root: `cargo bench --bench failover` (needs redis-server and
//! redis-sentinel; about three minutes). Not a test: it asserts nothing, and writes its figures
//! into BENCHMARKS.md between the `failover-bench` markers.

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

/// What happens to the primary.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL.
    Kill,
    /// The replicas' links are cut [`CUT`] before the SIGKILL.
    CutThenKill,
    /// The primary is cut off from its replicas and the Sentinels (they reach it through a proxy
    /// that stops forwarding) while clients still reach it directly; it keeps running.
    Partition,
}

impl Fault {
    fn title(self) -> &'static str {
        match self {
            Fault::Kill => "the primary is killed",
            Fault::CutThenKill => "the replicas' links are cut 200 ms before the kill",
            Fault::Partition => {
                "the primary is partitioned from its replicas and the Sentinels; the submitters \
                 reach it directly (a store on its own URL, not through Sentinel)"
            }
        }
    }
}

struct Round {
    wait: u32,
    fault: Fault,
    /// Acknowledged before the fault, per second.
    rate: f64,
    acked: usize,
    lost: usize,
    /// From the fault until Sentinel named the new primary.
    failover: Duration,
    /// The longest stretch without an acknowledgement, from the fault on.
    unavailable: Duration,
}

/// A TCP forwarder to a loopback port that can stop forwarding (existing connections are cut,
/// new ones closed at once) and start again: a partition, where this box has no netfilter.
struct Proxy {
    open: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a fresh loopback port to `target`; returns it with its port.
    fn start(rt: &tokio::runtime::Handle, target: u16) -> std::io::Result<(Proxy, u16)> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let accept = rt.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        // Without this, Nagle's algorithm holds the small replies (WAIT's acks)
                        // for a delayed ACK.
                        let _ = inbound.set_nodelay(true);
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Ok((
            Proxy {
                open,
                conns,
                accept,
            },
            port,
        ))
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn round(wait: u32, fault: Fault) -> Result<Round> {
    let rt = tokio::runtime::Handle::current();
    let (mut group, proxy) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut proxy = None;
        let group = if fault == Fault::Partition {
            SentinelGroup::start_with("bench", 2, 3, |primary| {
                let (p, port) = Proxy::start(&rt, primary)?;
                proxy = Some(p);
                Ok(port)
            })?
        } else {
            SentinelGroup::start("bench", 2, 3)?
        };
        Ok((group, proxy))
    })
    .await??;
    let url = match fault {
        Fault::Partition => format!("redis://127.0.0.1:{}/0", group.servers[0].port()),
        _ => group.url(),
    };
    let mut config = drover_store::Config::new(url);
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
        if fault == Fault::CutThenKill {
            group.cut_replica_links()?;
            std::thread::sleep(CUT);
        }
        let at = Instant::now();
        match &proxy {
            Some(p) => p.cut(),
            None => {
                group.kill_primary()?;
            }
        }
        group.wait_failover(old)?;
        Ok((at.elapsed(), at))
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await?);
    }
    if let Some(p) = &proxy {
        // The partition heals: Sentinel makes the old primary a replica of the new one, and it
        // resynchronises from it, dropping what only it had.
        p.heal();
        let old = group.servers[0].port();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let demoted = tokio::task::block_in_place(|| -> Result<bool> {
                let client = redis::Client::open(format!("redis://127.0.0.1:{old}"))?;
                let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
                let info: String = redis::cmd("INFO").arg("replication").query(&mut c)?;
                Ok(info.contains("role:slave") && info.contains("master_link_status:up"))
            })?;
            if demoted {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the old primary was not made a replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
    // Looked up on the primary Sentinel names now.
    let reader = Store::connect(&drover_store::Config::new(group.url())).await?;
    let mut lost = 0;
    for (id, _) in &acked {
        // A call that meets the failover's end fails as transient; the next asks Sentinel again.
        let mut tries = 0;
        let found = loop {
            match reader.get(id).await {
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
    drop(proxy);
    Ok(Round {
        wait,
        fault,
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
    let scenarios = [Fault::Kill, Fault::CutThenKill, Fault::Partition];
    let mut rounds = Vec::new();
    for fault in scenarios {
        for r in 0..ROUNDS * 2 {
            let wait = (r % 2) as u32;
            let round = round(wait, fault).await?;
            eprintln!(
                "{fault:?}, WAIT {wait}: {:.0}/s, {} acked, {} lost, failover {:?}, unavailable {:?}",
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
    for fault in scenarios {
        report.push_str(&format!(
            "**{}** ({SUBMITTERS} submitters on one store, {} ms of submissions before the fault):\n\n\
             | round | WAIT | submissions/s before the fault | ratio to the no-WAIT round before it | acknowledged | lost | fault → new primary named | longest time without an acknowledgement after the fault |\n|---|---|---|---|---|---|---|---|\n",
            fault.title(),
            BEFORE_KILL.as_millis()
        ));
        let these: Vec<&Round> = rounds.iter().filter(|r| r.fault == fault).collect();
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
