//! The provisioning benchmark: add 20 nodes to a cluster from MAAS while 20% of deployments fail
//! and 10% of MAAS requests are answered 503, once with Drover (one `scale-out` workflow of 20
//! `provision-node` children, on in-process workers over a private Redis) and once the way an
//! operator does it today (`benches/provision_baseline.py`, a python-libmaas script that allocates,
//! deploys with wait, and on a failed deployment releases and allocates again), each against a
//! fresh lab with the same scenario, the same failing machines, the same 503 rate and the same
//! time scale. For each it reports:
//! - nodes Ready of those asked, and the failed deployments the run met;
//! - wall time, real and in lab time, against the ideal (the slowest successful deploy plus its
//!   join) and against the bound for the failures the run met (see `provision/lab.rs`);
//! - MAAS calls per node, reads included, counted by a proxy in front of the lab's MAAS
//!   (`provision/proxy.rs`, which also carries MAAS's Retry-After into lab time);
//!
//! and the ratios Drover / baseline.
//!
//! Run from the repository root: `cargo bench --bench provision` (needs redis-server, python3 with
//! python-libmaas and the kubernetes client, as `.ci/run` installs them; about a minute). Not a
//! test: it asserts nothing, and writes its figures into BENCHMARKS.md between the
//! `provision-bench` markers. Every wait has a deadline; the script is killed if it overruns.

#[path = "provision/lab.rs"]
mod lab;
#[path = "provision/proxy.rs"]
mod proxy;

#[path = "shared/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drover_lab::scenario::{FaultRates, Scenario};
use drover_lab::{Lab, LabConfig, LabHandle};
use drover_store::server::{Options, RedisServer};
use drover_store::{Store, Submission};
use drover_worker::now_ms;
use drover_workflows::ports::Ports;
use drover_workflows::ports::maas::Maas;
use drover_workflows::ports::secrets::Secret;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::lab::{After, CPUS, Chain, MACHINES, TAG};
use crate::proxy::{Counts, Proxy};

const COMMAND: &str = "cargo bench --bench provision";
/// Nodes asked for.
const NODES: u32 = 20;
/// Simulated seconds per real second: a deploy plus its join (870 s) takes about 15 s. Faster
/// scales shrink the real poll interval with it (10 ms at 480x) and the baseline's Python, one new
/// connection per python-libmaas call, cannot keep up on a 2-core box: at 480x it read a deploying
/// machine every 11.5 lab seconds instead of 5, at 120x every 7.6; at 60x both runs poll at
/// about the 5 s asked (the report shows it).
const TIME_SCALE: f64 = 60.0;
/// How often both runs look at a deploying machine and a joining Node: MAAS clients' usual 5 s
/// (python-libmaas's `wait_interval`, Drover's default `poll_ms`), in lab time.
const POLL_SIM_SECS: f64 = 5.0;
/// Failed deployments tolerated per node (Drover's default `failure_budget`).
const FAILURE_BUDGET: u32 = 3;
/// Longest a run may take, real seconds.
const RUN_DEADLINE: Duration = Duration::from_secs(150);
/// What the join secret holds; the lab joins a machine whose user data mentions "join".
const JOIN_COMMAND: &str = "kubeadm join 10.20.40.5:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00";

/// Random faults of the lab: 503s. Deployment failures are drawn once, from `SEED`, so that both
/// runs meet the same failing machines (the lab's own random draws cannot be seeded).
fn faults() -> FaultRates {
    FaultRates {
        maas_503: 0.1,
        ..FaultRates::default()
    }
}

/// The chance that a deployment fails.
const DEPLOY_FAILURE: f64 = 0.2;
/// Seed of the deployment failures.
const SEED: u64 = 1;

/// How many deployments of each machine fail before one succeeds: independent draws of
/// `DEPLOY_FAILURE` per deployment, from `SEED` (splitmix64), at most 5. As the lab's targeted
/// `MaasDeployFailure` faults ("the next n deploys of this machine fail") they are the same for
/// both runs; a machine is deployed again only after a failure, so this is the same as each
/// deployment failing with that chance.
fn deploy_failures() -> Vec<(String, u32)> {
    let mut state = SEED;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    (1..=MACHINES)
        .map(|i| {
            let mut n = 0;
            while n < 5 && next() < DEPLOY_FAILURE {
                n += 1;
            }
            (lab::hostname(i), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A lab duration (timeouts MAAS clients use) in real whole seconds, at least 1.
fn scaled_secs(sim: f64) -> u64 {
    ((sim / TIME_SCALE).ceil() as u64).max(1)
}

fn poll() -> Duration {
    Duration::from_secs_f64(POLL_SIM_SECS / TIME_SCALE)
}

/// One run's figures.
struct Run {
    label: String,
    ready: usize,
    failed: usize,
    /// Failed deployments the run itself reports.
    reported_failed: Option<u64>,
    real: Duration,
    sim: f64,
    ideal: Option<f64>,
    bound: Option<f64>,
    /// Failed deployment -> the same node's next deploy call, lab seconds.
    gaps: Vec<f64>,
    counts: Counts,
    /// Lab seconds machines spent deploying.
    deploying: f64,
    /// Which machines failed, how often.
    failed_machines: String,
    held: usize,
    states: BTreeMap<String, usize>,
    notes: Vec<String>,
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let scenario = lab::scenario(TIME_SCALE, faults());
        let drover = drover_run(&scenario).await?;
        let baseline = baseline_run(&scenario).await?;
        let report = render(&[drover, baseline], started.elapsed());
        println!("{report}");
        write_section(&report)?;
        Ok(())
    })
}

/// A fresh lab with the scenario and the deployment failures armed.
async fn start_lab(scenario: &Scenario) -> Result<LabHandle> {
    let config = LabConfig {
        scenario: scenario.clone(),
        ..LabConfig::default()
    };
    let lab = Lab::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("lab: {e}"))?;
    for (machine, count) in deploy_failures() {
        lab.inject(drover_lab::Fault::MaasDeployFailure {
            machine: Some(machine),
            count,
        })
        .map_err(|e| anyhow::anyhow!("arm a deployment failure: {e}"))?;
    }
    Ok(lab)
}

/// A MAAS client of the lab, as Drover's workers have it, at `url`.
fn maas_client(url: String, lab: &LabHandle) -> Result<Arc<dyn Maas>> {
    Ok(drover_maas::Client::new(drover_maas::Config::new(
        url,
        Secret::new(lab.maas_api_key()),
    ))?
    .port())
}

fn temp_dir(what: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "drover-provision-bench-{}-{what}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn drover_run(scenario: &Scenario) -> Result<Run> {
    let lab = start_lab(scenario).await?;
    let proxy = Proxy::start(lab.kube_url(), TIME_SCALE).await?;
    let redis = RedisServer::start(Options::temporary())?;
    let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url())).await?;
    let maas = maas_client(proxy.maas_url(), &lab)?;
    let dir = temp_dir("drover")?;
    let secret_file = dir.join("join-command");
    std::fs::write(&secret_file, format!("{JOIN_COMMAND}\n"))?;
    let mut secrets = drover_worker::secrets::Config::default();
    secrets
        .insert(
            "join-command",
            drover_worker::secrets::Source::File(secret_file),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    for i in 0..2 {
        let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
            .with_kube(cluster.clone().port())
            .with_maas(maas.clone())
            .with_secrets(Arc::new(drover_worker::secrets::ConfigSecrets::new(
                secrets.clone(),
                None,
            )));
        let config = drover_worker::Config {
            name: Some(format!("bench-{i}")),
            shutdown_grace_ms: 1_000,
            ..drover_worker::Config::default()
        };
        let mut rx = rx.clone();
        tokio::spawn(drover_worker::run(
            store.clone(),
            drover_kinds::builtin(),
            ports,
            config,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let poll_ms = (poll().as_millis() as u64).max(10);
    let input = json!({
        "count": NODES,
        "failure_budget": 0,
        "node": {
            "constraints": {"tags": [TAG], "cpu_count": CPUS},
            "join": {"secret": "join-command"},
            "deploy_timeout_secs": scaled_secs(1800.0),
            "join_timeout_secs": scaled_secs(900.0),
            "allocate_timeout_secs": scaled_secs(900.0),
            "failure_budget": FAILURE_BUDGET,
            "broken_after": 2,
            "maas_limit": NODES,
            "poll_ms": poll_ms,
        },
    });
    let id = "0192f0c1-7d2e-7a4b-9c3d-0000000b0b1d".to_string();
    let (t0, s0) = (Instant::now(), lab.sim_time());
    store
        .submit_new(
            &drover_kinds::builtin(),
            id.clone(),
            Submission::new("scale-out", input),
            None,
            now_ms(),
        )
        .await?;
    let deadline = t0 + RUN_DEADLINE;
    let view = loop {
        let v = store.get(&id).await?.context("the scale-out vanished")?;
        if v.state.is_terminal() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (real, sim) = (t0.elapsed(), lab.sim_time() - s0);
    let counts = proxy.counts();
    let mut notes = Vec::new();
    if !view.state.is_terminal() {
        notes.push(format!(
            "the scale-out had not ended after {} s real ({:?}, waiting on {:?})",
            RUN_DEADLINE.as_secs(),
            view.state,
            view.waiting_on
        ));
    } else if view.state != drover_workflows::State::Succeeded {
        notes.push(format!(
            "scale-out {}: {}",
            view.state.as_str(),
            view.error.clone().unwrap_or_default()
        ));
    }
    // Each node's attempts, from its deploy-machine children, and the engine's own retries.
    let mut chains = Vec::new();
    let mut reported = 0u64;
    let mut retries: BTreeMap<String, u64> = BTreeMap::new();
    let mut workflows = vec![id.clone()];
    for node in store.children(&id).await? {
        workflows.push(node.id.clone());
        if let Some(r) = &node.result {
            reported += r["failed_deployments"].as_u64().unwrap_or(0);
        }
        let mut attempts = Vec::new();
        for attempt in store.children(&node.id).await? {
            workflows.push(attempt.id.clone());
            if let Some(r) = &attempt.result {
                if !r["deployed"].as_bool().unwrap_or(false) && node.result.is_none() {
                    reported += 1;
                }
                attempts.push((
                    r["system_id"].as_str().unwrap_or_default().to_string(),
                    r["started_ms"].as_u64().unwrap_or(0),
                ));
            }
        }
        chains.push(Chain { attempts });
    }
    for w in &workflows {
        let history = store
            .get(w)
            .await?
            .and_then(|v| v.history)
            .unwrap_or_default();
        for h in history.iter().filter(|h| h["outcome"] == "retry") {
            let error = h["error"].as_str().unwrap_or("?");
            let short: String = error.chars().take(80).collect();
            *retries.entry(short).or_default() += 1;
        }
    }
    let _ = stop.send(true);
    if !retries.is_empty() {
        notes.push(format!(
            "step retries by the engine (each waits the retry policy's delay, real time, unscaled): {}",
            retries
                .iter()
                .map(|(e, n)| format!("{n} x {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let direct = maas_client(lab.maas_url(), &lab)?;
    let after = lab::read_back(&lab, direct.as_ref()).await?;
    let run = figures(
        "Drover (`scale-out`, 2 in-process workers)",
        &after,
        &chains,
        Some(reported),
        (real, sim),
        counts,
        notes,
    );
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(run)
}

async fn baseline_run(scenario: &Scenario) -> Result<Run> {
    let lab = start_lab(scenario).await?;
    let proxy = Proxy::start(lab.kube_url(), TIME_SCALE).await?;
    let dir = temp_dir("baseline")?;
    let kubeconfig = dir.join("kubeconfig");
    lab.write_kubeconfig(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/provision_baseline.py");
    let secs = |d: Duration| format!("{:.4}", d.as_secs_f64());
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--maas-url", &proxy.maas_url()])
        .args(["--api-key", &lab.maas_api_key()])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--count", &NODES.to_string()])
        .args(["--tag", TAG, "--cpus", &CPUS.to_string()])
        .args(["--failure-budget", &FAILURE_BUDGET.to_string()])
        .args(["--poll", &secs(poll())])
        .args([
            "--retry-sleep",
            &secs(Duration::from_secs_f64(10.0 / TIME_SCALE)),
        ])
        .args(["--allocate-timeout", &scaled_secs(900.0).to_string()])
        .args(["--ready-timeout", &scaled_secs(900.0).to_string()])
        .args(["--timeout", &RUN_DEADLINE.as_secs().to_string()])
        .args(["--join-command", JOIN_COMMAND])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr"))?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run python3")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut start = None;
    let mut nodes: Vec<Value> = Vec::new();
    let mut summary = None;
    // The clock starts when the script has imported its libraries (an operator's shell had).
    let read = async {
        while let Some(line) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&line).unwrap_or(json!({"event": "other"}));
            match v["event"].as_str() {
                Some("started") => start = Some((Instant::now(), lab.sim_time())),
                Some("node") => nodes.push(v),
                Some("done") => {
                    summary = Some((v, Instant::now(), lab.sim_time()));
                    break;
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let finished = tokio::time::timeout(RUN_DEADLINE + Duration::from_secs(30), read).await;
    let mut notes = Vec::new();
    let end = match (&summary, finished) {
        (Some((_, at, sim)), _) => (*at, *sim),
        (None, _) => {
            let _ = child.kill().await;
            let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
            notes.push(format!("the script did not finish: {tail}"));
            (Instant::now(), lab.sim_time())
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let Some((t0, s0)) = start else {
        let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        bail!(
            "the baseline script never started (python3 with python-libmaas and kubernetes?): {err}"
        );
    };
    let counts = proxy.counts();
    let mut chains = Vec::new();
    let mut reported = 0;
    for n in &nodes {
        reported += n["failed_deployments"].as_u64().unwrap_or(0);
        if let Some(e) = n["error"].as_str() {
            notes.push(format!("node {}: {e}", n["index"]));
        }
        let attempts = n["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["system_id"].as_str().unwrap_or_default().to_string(),
                    (a["allocated_at"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
                )
            })
            .collect();
        chains.push(Chain { attempts });
    }
    if let Some((s, _, _)) = &summary
        && let Some(r) = s["retries"].as_object().filter(|r| !r.is_empty())
    {
        notes.push(format!(
            "the script's sleep-and-retry: {}",
            r.iter()
                .map(|(k, v)| format!("{v} x {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let direct = maas_client(lab.maas_url(), &lab)?;
    let after = lab::read_back(&lab, direct.as_ref()).await?;
    let run = figures(
        "python-libmaas script (asyncio, one task per node)",
        &after,
        &chains,
        Some(reported),
        (end.0 - t0, end.1 - s0),
        counts,
        notes,
    );
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(run)
}

fn figures(
    label: &str,
    after: &After,
    chains: &[Chain],
    reported_failed: Option<u64>,
    (real, sim): (Duration, f64),
    counts: Counts,
    notes: Vec<String>,
) -> Run {
    let paths = after.paths(chains);
    Run {
        label: label.to_string(),
        ready: after.ready.len(),
        failed: after.failed_deployments(),
        reported_failed,
        real,
        sim,
        ideal: after.ideal(),
        bound: paths.as_ref().map(|p| p.bound),
        gaps: paths.map(|p| p.gaps).unwrap_or_default(),
        counts,
        deploying: after.deploying_secs(),
        failed_machines: after.failed_machines(),
        held: after.held(),
        states: after.machine_states.clone(),
        notes,
    }
}

/// `mean 12 s, max 20 s (3)` in lab seconds.
fn gaps(g: &[f64]) -> String {
    if g.is_empty() {
        return "n/a".into();
    }
    let max = g.iter().copied().fold(0.0, f64::max);
    format!(
        "{:.0} s on average, {max:.0} s at most (of {})",
        g.iter().sum::<f64>() / g.len() as f64,
        g.len()
    )
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn opt_secs(s: Option<f64>) -> String {
    s.map_or("n/a".into(), |s| {
        format!("{s:.0} ({:.2} real)", s / TIME_SCALE)
    })
}

/// How the figures are made, printed with them.
const METHOD: &str = "\
How the figures are made:

- *Wall time*: Drover from the submission of the `scale-out` to its end (its `provision-node` \
children end once their Node is Ready and labelled schedulable by virt-handler); the script from \
the end of its imports to its last node Ready. Lab seconds are the lab's clock; real seconds are \
the bench's.
- *Ideal*: the longest, over the machines that ended as Ready Nodes, of their last deploy call \
(MAAS's `Deploying` event) to their Node's Ready transition (`lastTransitionTime`): the slowest \
successful deploy plus its join, what the run would take with no failed deployment and no time \
lost between steps. In lab seconds (one-second timestamps); real = lab / time scale.
- *Bound for the failures drawn*: the longest, over the nodes, of the failed deployments that \
node went through (deploy call to MAAS marking it failed) plus its successful deploy call to \
Ready. The deploy durations are the lab's own random draws (jitter), so each run gets its own \
ideal and bound; compare the runs by their ratios.
- *MAAS calls*: every request through a proxy in front of the lab's MAAS, 503s and reads \
included (`benches/provision/proxy.rs`), divided by the 20 nodes asked.
- Drover: 2 in-process workers (concurrency 16) over a private redis-server, the drover-maas \
adapter (its default retries: 4 tries, Retry-After honoured) through the proxy and the kube \
adapter; `provision-node` input: the constraints, the join command by secret reference, \
`poll_ms` = 5 lab seconds, `failure_budget` 3, `broken_after` 2, `maas_limit` 20 (all machines \
deploy at once, as the script's do), the timeouts (deploy 1800 s, join and allocate 900 s) \
scaled to real seconds. The script (`benches/provision_baseline.py`): one asyncio task per \
node, python-libmaas's async API, `deploy(wait=True, wait_interval=5 lab seconds)`, a failed \
deployment released with a quick erase (not waited for) and another machine allocated, up to 3 \
failed deployments per node; python-libmaas retries nothing, so every call goes through a \
sleep-and-retry on 503 (sleeping what Retry-After says), and a wait that a 503 broke off is \
resumed by polling the machine; the Node's readiness is polled with the Python kubernetes \
client.
";

fn render(runs: &[Run], took: Duration) -> String {
    let mut s = String::new();
    s.push_str("## Provisioning benchmark (`benches/provision.rs`)\n\n");
    s.push_str(&format!(
        "- Command: `{COMMAND}` (from the repository root)\n"
    ));
    s.push_str(&format!(
        "- Date: {} UTC; whole run {:.0} s; machine: nproc {}, {}; {}\n",
        report::date(),
        took.as_secs_f64(),
        report::nproc(),
        report::cpu(),
        python_libmaas()
    ));
    let maas = drover_lab::scenario::MaasSettings::default();
    s.push_str(&format!(
        "- {NODES} nodes asked of a lab with {MACHINES} Ready machines (tag `{TAG}`), no other node; lab time scale {TIME_SCALE}x; MAAS timings: deploy {:.0} s (lognormal jitter {}), Node {:.0} s after Deployed and Ready {:.0} s later, release {:.0} s plus quick erase {:.0} s; faults: each deployment fails with chance {:.0}% (at 60% of the install; drawn once from seed {SEED}, the same failing machines for both runs: {}), {:.0}% of MAAS requests answered 503 with Retry-After: 10 (the proxy holds each for those 10 lab seconds, then passes Retry-After: 0; both clients honour it); both poll every {POLL_SIM_SECS} s, at most {FAILURE_BUDGET} failed deployments per node\n",
        maas.deploy_secs,
        maas.deploy_jitter,
        maas.join_delay_secs,
        maas.node_ready_delay_secs,
        maas.release_secs,
        maas.quick_erase_secs,
        DEPLOY_FAILURE * 100.0,
        deploy_failures()
            .iter()
            .map(|(m, n)| format!("{m} x {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        faults().maas_503 * 100.0,
    ));
    s.push_str("- Times in lab seconds (real seconds in brackets)\n\n");
    s.push_str(METHOD);
    s.push('\n');
    s.push_str("| run | nodes Ready / asked | failed deployments | wall time | ideal | wall / ideal | bound for the failures drawn | wall / bound | MAAS calls per node (writes + reads) | 503s met | machines held without a node |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let per_node = r.counts.total() as f64 / NODES as f64;
        let writes = r.counts.writes() as f64 / NODES as f64;
        s.push_str(&format!(
            "| {} | **{} / {NODES}** | {}{} | {:.0} ({:.2}) | {} | **{}** | {} | {} | **{per_node:.1}** ({writes:.1} + {:.1}) | {} | {} |\n",
            r.label,
            r.ready,
            r.failed,
            r.reported_failed
                .filter(|n| *n as usize != r.failed)
                .map(|n| format!(" (it reports {n})"))
                .unwrap_or_default(),
            r.sim,
            r.real.as_secs_f64(),
            opt_secs(r.ideal),
            ratio(r.sim, r.ideal),
            opt_secs(r.bound),
            ratio(r.sim, r.bound),
            per_node - writes,
            r.counts.status(503),
            r.held,
        ));
    }
    if let [d, b] = runs {
        let calls = |r: &Run| r.counts.total() as f64 / NODES as f64;
        s.push_str(&format!(
            "| Drover / baseline | | | {} | | {} | | {} | {} | | |\n",
            ratio(d.sim, Some(b.sim)),
            match (d.ideal, b.ideal) {
                (Some(di), Some(bi)) => ratio(d.sim / di, Some(b.sim / bi)),
                _ => "n/a".into(),
            },
            match (d.bound, b.bound) {
                (Some(db), Some(bb)) => ratio(d.sim / db, Some(b.sim / bb)),
                _ => "n/a".into(),
            },
            ratio(calls(d), Some(calls(b))),
        ));
    }
    s.push_str("\nMAAS calls by operation (all answers; 503s in brackets):\n\n| call | ");
    s.push_str(
        &runs
            .iter()
            .map(|r| r.label.split(' ').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    s.push_str(" |\n|---|");
    s.push_str(&"---|".repeat(runs.len()));
    s.push('\n');
    let keys: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.counts.by_call.keys()).collect();
    for k in keys {
        s.push_str(&format!("| `{k}` |"));
        for r in runs {
            let by = r.counts.by_call.get(k);
            let all: u64 = by.map_or(0, |b| b.values().sum());
            let unavailable = by.and_then(|b| b.get(&503)).copied().unwrap_or(0);
            s.push_str(&format!(" {all} ({unavailable}) |"));
        }
        s.push('\n');
    }
    s.push('\n');
    for r in runs {
        let states: Vec<String> = r.states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let reads = r
            .counts
            .by_call
            .get("GET machines/{id}/")
            .map_or(0, |b| b.values().sum::<u64>());
        s.push_str(&format!(
            "- {}: deployments failed on {}; from a failed deployment to the node's next deploy call {}; machines spent {:.0} lab seconds deploying, each read every {:.1} s on average; machines at the end: {}{}{}\n",
            r.label,
            r.failed_machines,
            gaps(&r.gaps),
            r.deploying,
            r.deploying / reads.max(1) as f64,
            states.join(", "),
            if r.notes.is_empty() { "" } else { "; " },
            r.notes.join("; ")
        ));
    }
    s
}

fn write_section(report: &str) -> Result<()> {
    report::write_section(
        "<!-- provision-bench:start -->",
        "<!-- provision-bench:end -->",
        report,
    )
}

fn python_libmaas() -> String {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, sys; print('Python', sys.version.split()[0] + ', python-libmaas', m.version('python-libmaas'))",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
