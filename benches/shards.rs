//! The shards benchmark: step throughput with 1, 2 and 3 shards on a local three-primary Redis
//! Cluster, against Drover on one plain redis-server (the anchor) in the same round. Each run
//! submits the same backlog of no-op workflows (spread evenly over three target clusters, each
//! placed on a shard), then starts the same worker processes and times them from their start until
//! every workflow succeeded. Each shard's slot is moved to its own primary first, so N shards use N
//! Redis processes. The figure is step transitions per second; the CPU columns say what each
//! Redis process and the workers used, since on this 2-core box they share the cores.
//!
//! Run from the repository root: `cargo bench --bench shards` (needs redis-server and redis-cli;
//! about two minutes). Not a test: it asserts only that every workflow succeeded, and writes its
//! figures into BENCHMARKS.md between the `shards-bench` markers.

#[path = "shared/report.rs"]
mod report;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use drover_store::server::{Aof, Options, RedisCluster, RedisServer};
use drover_store::{Store, Submission, now_ms};
use drover_workflows::State;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

const COMMAND: &str = "cargo bench --bench shards";
const ROUNDS: usize = 5;
const WORKFLOWS: usize = 6_000;
const STEPS: usize = 5;
const WORKERS: usize = 2;
const CONCURRENCY: usize = 32;
const CLUSTERS: [&str; 3] = ["c0", "c1", "c2"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    /// One plain redis-server, one shard: the anchor.
    Plain,
    /// The cluster with this many shards.
    Cluster(u16),
}

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::Plain => "1 shard, one plain redis-server (anchor)".into(),
            Setup::Cluster(1) => "1 shard on the cluster".into(),
            Setup::Cluster(n) => format!("{n} shards on the cluster"),
        }
    }

    fn shards(self) -> u16 {
        match self {
            Setup::Plain => 1,
            Setup::Cluster(n) => n,
        }
    }
}

struct Run {
    setup: Setup,
    round: usize,
    steps_per_sec: f64,
    wall: Duration,
    /// CPU seconds of each Redis process that holds a shard, busiest first.
    redis_cpu: Vec<f64>,
    worker_cpu: f64,
}

fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn config_file(dir: &Path, setup: Setup) -> Result<String> {
    let n = setup.shards();
    let mut text = format!("redis_shards = {n}\n");
    for (i, c) in CLUSTERS.iter().enumerate() {
        text += &format!(
            "\n[[clusters]]\nname = \"{c}\"\nurl = \"http://127.0.0.1:9\"\nshard = {}\n",
            i as u16 % n
        );
    }
    let path = dir.join(format!("shards-{n}.toml"));
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

fn store_config(url: &str, setup: Setup) -> drover_store::Config {
    let mut c = drover_store::Config::new(url);
    c.shards = setup.shards();
    c.placement = CLUSTERS
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i as u16 % c.shards))
        .collect();
    c
}

fn spawn_worker(url: &str, config: &str, name: &str, logs: &Path) -> Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("worker")
        .env("DROVER_CONFIG", config)
        .env("DROVER_REDIS_URL", url)
        .env("DROVER_WORKER_NAME", name)
        .env("DROVER_WORKER_CONCURRENCY", CONCURRENCY.to_string())
        .env("DROVER_WORKER_LEASE_MS", "15000")
        .env("DROVER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.join(format!("{name}.log")))?)
        .spawn()
        .context("spawn a drover worker")
}

async fn run(
    setup: Setup,
    round: usize,
    url: &str,
    servers: &[&RedisServer],
    logs: &Path,
) -> Result<Run> {
    // Empty (the shard count recorded by the last run's store too), then connect.
    for s in servers {
        drover_store::server::redis_cli(s.port(), &["FLUSHALL"])?;
    }
    let redis_pids: Vec<u32> = servers.iter().filter_map(|s| s.pid()).collect();
    let store = Store::connect(&store_config(url, setup)).await?;
    let registry = drover_kinds::builtin().with_clusters(CLUSTERS.iter().map(|c| c.to_string()));
    let input = json!({"steps": STEPS, "min_ms": 0, "max_ms": 0});
    futures::stream::iter(0..WORKFLOWS)
        .map(|i| {
            let (store, registry, input) = (&store, &registry, &input);
            async move {
                let cluster = CLUSTERS[i % CLUSTERS.len()];
                let id = store.workflow_id(uuid::Uuid::now_v7(), Some(cluster));
                let sub = Submission::new("synthetic", input.clone()).cluster(Some(cluster.into()));
                store.submit_new(registry, id, sub, None, now_ms()).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    let config = config_file(logs, setup)?;
    let redis_before: Vec<f64> = redis_pids.iter().map(|p| cpu_secs(*p)).collect();
    let started = Instant::now();
    let mut workers = (0..WORKERS)
        .map(|i| spawn_worker(url, &config, &format!("{setup:?}-r{round}-{i}"), logs))
        .collect::<Result<Vec<_>>>()?;
    let deadline = started + Duration::from_secs(120);
    let mut worker_cpu = 0.0;
    loop {
        let stats = store.stats(&[]).await?;
        let done = stats
            .by_state
            .iter()
            .find(|(s, _)| *s == State::Succeeded)
            .map_or(0, |(_, n)| *n);
        if done as usize >= WORKFLOWS {
            worker_cpu = workers
                .iter()
                .map(|w| cpu_secs(w.id()))
                .sum::<f64>()
                .max(worker_cpu);
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{setup:?}: {done} of {WORKFLOWS} done in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let mut redis_cpu: Vec<f64> = redis_pids
        .iter()
        .zip(&redis_before)
        .map(|(p, b)| cpu_secs(*p) - b)
        .collect();
    redis_cpu.sort_by(|a, b| b.total_cmp(a));
    redis_cpu.truncate(usize::from(setup.shards()));
    Ok(Run {
        setup,
        round,
        steps_per_sec: (WORKFLOWS * STEPS) as f64 / wall.as_secs_f64(),
        wall,
        redis_cpu,
        worker_cpu,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let load = report::load_average();
    let started = Instant::now();
    let version = report::first_line("redis-server", &["--version"]);
    let logs = std::env::temp_dir().join(format!("drover-shards-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let plain = RedisServer::start(Options::temporary())?;
    let cluster = RedisCluster::start(3, Aof::Off)?;
    // Each shard on its own primary.
    let store = Store::connect(&store_config(&cluster.url(), Setup::Cluster(3))).await?;
    let primaries: Vec<String> = store
        .cluster_nodes()
        .await?
        .into_iter()
        .map(|n| n.addr)
        .collect();
    for (s, to) in primaries.iter().enumerate() {
        store.move_shard(s as u16, to).await?;
    }
    let places = store.shard_places().await?;
    drop(store);
    // FLUSHALL keeps the function library and the slots where they are.
    let cluster_servers: Vec<&RedisServer> = cluster.nodes.iter().collect();
    let setups = [
        Setup::Plain,
        Setup::Cluster(1),
        Setup::Cluster(2),
        Setup::Cluster(3),
    ];
    let mut runs = Vec::new();
    for round in 1..=ROUNDS {
        for setup in setups {
            let (url, servers) = match setup {
                Setup::Plain => (plain.url(), vec![&plain]),
                Setup::Cluster(_) => (cluster.url(), cluster_servers.clone()),
            };
            let r = run(setup, round, &url, &servers, &logs).await?;
            eprintln!(
                "round {round}, {}: {:.0} steps/s in {:?}",
                setup.name(),
                r.steps_per_sec,
                r.wall
            );
            runs.push(r);
        }
    }
    let mut out = report::redis_header(COMMAND, &version, &load, started.elapsed().as_secs_f64());
    out += &format!(
        "{WORKFLOWS} no-op workflows of {STEPS} steps each ({} step transitions) per run, spread \
         evenly over three target clusters; {WORKERS} worker processes of {CONCURRENCY} steps at \
         once, timed from their start until every workflow succeeded. Shards placed: {}.\n\n\
         | round | setup | steps/s | ratio to the anchor in its round | wall | Redis CPU s per shard's process (busiest first) | worker CPU s |\n\
         |---|---|---|---|---|---|---|\n",
        WORKFLOWS * STEPS,
        places
            .iter()
            .map(|p| format!("shard {} (slot {}) on {}", p.shard, p.slot, p.node))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in &runs {
        let anchor = runs
            .iter()
            .find(|a| a.round == r.round && a.setup == Setup::Plain)
            .map_or(1.0, |a| a.steps_per_sec);
        let ratio = if r.setup == Setup::Plain {
            "anchor".to_string()
        } else {
            format!("{:.2}", r.steps_per_sec / anchor)
        };
        out += &format!(
            "| {} | {} | {:.0} | {ratio} | {:.2} s | {} | {:.2} |\n",
            r.round,
            r.setup.name(),
            r.steps_per_sec,
            r.wall.as_secs_f64(),
            r.redis_cpu
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join(" / "),
            r.worker_cpu,
        );
    }
    out.push('\n');
    print!("{out}");
    report::write_section(
        "<!-- shards-bench:begin -->",
        "<!-- shards-bench:end -->",
        &out,
    )?;
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
