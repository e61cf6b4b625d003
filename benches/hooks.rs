//! The webhook benchmark: how fast `drover api` acknowledges signed Jira deliveries at a steady
//! 200 a second, against Drover's own REST submission of the same workflow at the same rate.
//!
//! Each phase starts a private redis-server (AOF on, fsync every second: what `drover dev` runs)
//! and the real `drover api` binary with a config file: an operator token, the webhook secret in a
//! file under `[secrets]`, `[hooks.jira]` and one rule that starts a one-step `synthetic` workflow
//! when an issue moves to "In Progress". No workers run: acknowledgement is the API's work, and
//! the started workflows only queue. The load is open loop (`hooks/load.rs`): request i is due at
//! `t0 + i × 5 ms`, 3 s of warm-up (excluded) then 30 s measured, and each latency runs from the
//! due time to the end of the response, so queueing in a stalled server shows. Phases, each on a
//! fresh Redis and API process, in two rounds of: *hook* (every delivery a new issue: signature,
//! rules, ticket bookkeeping and the workflow, the whole write path), *submit* (the anchor:
//! `POST /v1/workflows` of the same workflow with the same labels, bearer token), *hook with 50%
//! replays* (every other delivery repeats one sent a second earlier, same id and bytes).
//!
//! Run from the repository root: `cargo bench --bench hooks` (cargo builds the `drover` binary
//! with the bench and hands its path over as `CARGO_BIN_EXE_drover`; needs redis-server; about
//! 3.5 minutes). Not a test: it asserts nothing, and writes its figures into BENCHMARKS.md
//! between the `hooks-bench` markers. Every wait has a deadline; what it starts is killed at the
//! end of each phase.

#[path = "hooks/load.rs"]
mod load;
#[path = "hooks/probe.rs"]
mod probe;
#[path = "shared/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drover_api::hooks::verify::sign;
use drover_store::server::{Aof, Options, RedisServer};
use drover_worker::now_ms;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::json;

use load::{Request, Summary, ms};

const COMMAND: &str = "cargo bench --bench hooks";
/// 200 requests a second.
const PERIOD: Duration = Duration::from_millis(5);
const WARMUP: usize = 600;
const MEASURED: usize = 6000;
const SECRET: &str = "hooks-bench-jira-webhook-secret-0123";
const TOKEN: &str = "hooks-bench-operator-token-0123";
const RULE: &str = "bench-start";
/// How long the API gets to answer /healthz after it is spawned.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// A replayed delivery repeats the one sent this many requests (about a second) before it.
const REPLAY_DISTANCE: usize = 201;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Every delivery a new issue moved to "In Progress": each starts a workflow.
    Hook,
    /// `POST /v1/workflows` of the same workflow (the anchor).
    Submit,
    /// Every other delivery a replay of an earlier one (answered 200 duplicate).
    Replays,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Hook => "hook",
            Mix::Submit => "submit (anchor)",
            Mix::Replays => "hook, 50% replays",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Mix::Hook => "hook",
            Mix::Submit => "submit",
            Mix::Replays => "replays",
        }
    }
}

/// One phase's figures.
struct Phase {
    mix: Mix,
    round: usize,
    all: Summary,
    /// The replay mix split into new deliveries and replays.
    classes: Vec<(&'static str, Summary)>,
    cost: probe::Cost,
    peak_connections: usize,
    mean_body: usize,
    /// WARN and ERROR lines in the API's log.
    log_warnings: usize,
    /// Measured requests slower than [`SLOW`] or unanswered, and the seconds into the measured
    /// span when they were due.
    slow: String,
}

/// What the stall column counts.
const SLOW: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> Result<()> {
    let root = std::env::temp_dir().join(format!("drover-hooks-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let result = run(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    let report = result?;
    println!("{report}");
    report::write_section(
        "<!-- hooks-bench:start -->",
        "<!-- hooks-bench:end -->",
        &report,
    )
}

async fn run(root: &Path) -> Result<String> {
    let started = Instant::now();
    let load_before = report::load_average();
    let date = report::date();
    let binary = Path::new(env!("CARGO_BIN_EXE_drover"));
    let mut phases = Vec::new();
    for round in 1..=2 {
        for mix in [Mix::Hook, Mix::Submit, Mix::Replays] {
            let p = phase(binary, root, mix, round).await?;
            eprintln!(
                "{} {round}: p50 {} ms, p99 {} ms, answers {:?}",
                mix.name(),
                ms(p.all.pct[0]),
                ms(p.all.pct[2]),
                p.all.answers
            );
            phases.push(p);
        }
    }
    Ok(render(
        &phases,
        &date,
        started.elapsed(),
        &load_before,
        &report::load_average(),
    ))
}

/// `drover api` as a child process, its log in a file; SIGKILLed when dropped.
struct Api {
    child: Child,
    log: PathBuf,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("drover api exited ({status}):\n{}", self.log_tail());
        }
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn config_file(redis_url: &str, port: u16, secret_file: &Path) -> String {
    format!(
        r#"redis_url = "{redis_url}"

[api]
listen = "127.0.0.1:{port}"
tokens = [{{ name = "bench", token = "{TOKEN}", role = "operator" }}]

[secrets]
jira-hook = {{ file = {secret_file:?} }}

[hooks.jira]
secret = {{ secret = "jira-hook" }}

[[hooks.rules]]
name = "{RULE}"
source = "jira"
on = "status"
to = "In Progress"
kind = "synthetic"
input = {{ steps = 1 }}
"#
    )
}

async fn phase(binary: &Path, root: &Path, mix: Mix, round: usize) -> Result<Phase> {
    let dir = root.join(format!("{}-{round}", mix.slug()));
    std::fs::create_dir_all(&dir)?;
    let redis = RedisServer::start(Options::temporary().aof(Aof::EverySec))
        .context("start redis-server")?;
    let secret_file = dir.join("jira-hook");
    std::fs::write(&secret_file, SECRET)?;
    let port = free_port()?;
    let config = dir.join("drover.toml");
    std::fs::write(&config, config_file(&redis.url(), port, &secret_file))?;
    let log = dir.join("api.log");
    let mut api = Api {
        child: Command::new(binary)
            .arg("api")
            .arg("--config")
            .arg(&config)
            .env("DROVER_LOG", "info")
            .env_remove("DROVER_CONFIG")
            .env_remove("DROVER_REDIS_URL")
            .env_remove("REDIS_URL")
            .env_remove("DROVER_API_LISTEN")
            .env_remove("DROVER_API_TOKEN")
            .env_remove("DROVER_API_VIEWER_TOKEN")
            .env_remove("DROVER_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn drover api")?,
        log,
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(8)
        .tcp_nodelay(true)
        .timeout(load::REQUEST_TIMEOUT)
        .build()?;
    let ready_by = Instant::now() + START_DEADLINE;
    loop {
        api.check_alive()?;
        let ok = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() > ready_by {
            bail!(
                "drover api did not answer /healthz within {} s:\n{}",
                START_DEADLINE.as_secs(),
                api.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;

    // Time to build every request (bodies stamped with their due time, signed) before the first
    // is due.
    let lead = Duration::from_millis(500);
    let t0 = Instant::now() + lead;
    let wall0 = now_ms() + lead.as_millis() as u64;
    let requests = prepare(mix, round, wall0)?;
    let mean_body = requests.iter().map(|r| r.body.len()).sum::<usize>() / requests.len();
    let url = match mix {
        Mix::Submit => format!("{base}/v1/workflows"),
        Mix::Hook | Mix::Replays => format!("{base}/v1/hooks/jira"),
    };
    let pid = api.child.id();

    // The cost readings bracket the measured span: one when its first request is due, one after
    // its last answer.
    let mut at_start = conn.clone();
    let measured_from = t0 + PERIOD * WARMUP as u32;
    let before = tokio::spawn(async move {
        tokio::time::sleep_until(measured_from.into()).await;
        probe::read(&mut at_start, pid).await
    });
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(probe::connections_to(port), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let outcomes = load::run(&client, &url, requests, t0, PERIOD).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let outcomes = outcomes?;
    let before = before.await??;
    let after = probe::read(&mut conn, pid).await?;
    api.check_alive()?;
    drop(api);
    drop(redis);
    let log_warnings = std::fs::read_to_string(dir.join("api.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();

    let measured = &outcomes[WARMUP..];
    let all = load::summarize(measured.iter());
    let slow_seconds: Vec<usize> = measured
        .iter()
        .filter(|o| o.latency.is_none_or(|l| l > SLOW))
        .map(|o| (o.index - WARMUP) * PERIOD.as_millis() as usize / 1000)
        .collect();
    let classes = if mix == Mix::Replays {
        ["new", "replay"]
            .into_iter()
            .map(|c| {
                (
                    c,
                    load::summarize(measured.iter().filter(move |o| o.class == c)),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Phase {
        mix,
        round,
        cost: probe::cost(&before, &after, measured.len()),
        all,
        classes,
        peak_connections: peak.load(Ordering::Relaxed),
        mean_body,
        log_warnings,
        slow: seconds(&slow_seconds),
    })
}

/// "0", or "<count> (s 3, 17-18)": how many, and the seconds they were due in, as ranges.
fn seconds(due: &[usize]) -> String {
    if due.is_empty() {
        return "0".into();
    }
    let mut secs: Vec<usize> = due.to_vec();
    secs.dedup();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for s in secs {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 >= s => *end = s,
            _ => ranges.push((s, s)),
        }
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    format!("{} (s {})", due.len(), list.join(", "))
}

/// A Jira Cloud `jira:issue_updated` delivery: issue OPS-`n` moved from To Do to In Progress.
fn jira_body(n: usize, at_ms: u64) -> Vec<u8> {
    json!({
        "timestamp": at_ms,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {
            "self": "https://example.atlassian.net/rest/api/2/user?accountId=5b10ac8d82e05b22cc7d4ef5",
            "accountId": "5b10ac8d82e05b22cc7d4ef5",
            "displayName": "Alice Operator",
            "active": true,
            "timeZone": "Europe/Berlin",
            "accountType": "atlassian"
        },
        "issue": {
            "id": (10_000 + n).to_string(),
            "self": format!("https://example.atlassian.net/rest/api/2/issue/{}", 10_000 + n),
            "key": format!("OPS-{n}"),
            "fields": {
                "summary": format!("Maintenance of node worker-{:02}", n % 40),
                "status": {"name": "In Progress", "id": "3",
                           "statusCategory": {"key": "indeterminate", "name": "In Progress"}},
                "issuetype": {"name": "Change", "id": "10002"},
                "project": {"key": "OPS", "id": "10000", "name": "Operations"},
                "priority": {"name": "Medium", "id": "3"},
                "labels": ["maintenance"],
                "customfield_10050": format!("worker-{:02}", n % 40),
                "created": "2026-12-01T09:00:00.000+0000",
                "updated": "2026-12-01T09:05:00.000+0000"
            }
        },
        "changelog": {
            "id": (20_000 + n).to_string(),
            "items": [{"field": "status", "fieldtype": "jira", "fieldId": "status",
                       "from": "10000", "fromString": "To Do", "to": "3",
                       "toString": "In Progress"}]
        }
    })
    .to_string()
    .into_bytes()
}

fn header(name: &'static str, value: &str) -> Result<(HeaderName, HeaderValue)> {
    Ok((HeaderName::from_static(name), HeaderValue::from_str(value)?))
}

/// Every request of a phase (warm-up first), built before the clock starts.
fn prepare(mix: Mix, round: usize, wall0: u64) -> Result<Vec<Request>> {
    let total = WARMUP + MEASURED;
    let mut out: Vec<Request> = Vec::with_capacity(total);
    for i in 0..total {
        let due_ms = wall0 + i as u64 * PERIOD.as_millis() as u64;
        let req = match mix {
            Mix::Submit => Request {
                body: json!({"kind": "synthetic", "input": {"steps": 1},
                             "labels": {"drover.io/ticket": format!("OPS-{i}"),
                                        "drover.io/rule": RULE}})
                .to_string()
                .into_bytes(),
                headers: vec![header("authorization", &format!("Bearer {TOKEN}"))?],
                class: "submit",
            },
            Mix::Replays if i % 2 == 1 && i >= REPLAY_DISTANCE => {
                let earlier = &out[i - REPLAY_DISTANCE];
                Request {
                    body: earlier.body.clone(),
                    headers: earlier.headers.clone(),
                    class: "replay",
                }
            }
            Mix::Hook | Mix::Replays => {
                let body = jira_body(i, due_ms);
                let sig = sign(SECRET.as_bytes(), &body);
                Request {
                    headers: vec![
                        header("x-hub-signature", &format!("sha256={sig}"))?,
                        header(
                            "x-atlassian-webhook-identifier",
                            &format!("{round:08x}-b3c1-4e5f-9a2b-{i:012x}"),
                        )?,
                    ],
                    body,
                    class: "new",
                }
            }
        };
        out.push(req);
    }
    Ok(out)
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a".into(),
    }
}

fn answers(s: &Summary) -> String {
    s.answers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(what: &str, s: &Summary, slow: &str, extra: &str) -> String {
    format!(
        "| {what} | {} | {} | {} | **{}** | {} | {} | {:.1} / {:.1} | {} | {} / {} | {} / {} | {slow} | {} |\n",
        s.count,
        ms(s.pct[0]),
        ms(s.pct[1]),
        ms(s.pct[2]),
        ms(s.pct[3]),
        ms(s.pct[4]),
        s.sent_rate,
        s.ok_rate,
        answers(s),
        ms(s.service[0]),
        ms(s.service[1]),
        ms(Some(s.lag[0])),
        ms(Some(s.lag[1])),
        extra,
    )
}

fn render(
    phases: &[Phase],
    date: &str,
    elapsed: Duration,
    load_before: &str,
    load_after: &str,
) -> String {
    let find = |mix: Mix, round: usize| phases.iter().find(|p| p.mix == mix && p.round == round);
    let body_of = |mix: Mix| {
        phases
            .iter()
            .find(|p| p.mix == mix)
            .map_or(0, |p| p.mean_body)
    };
    let mut out = String::new();
    out.push_str(&format!(
        "## Webhooks: acknowledgement latency at 200 deliveries/s (`benches/hooks.rs`)\n\n\
         - Command: `{COMMAND}` (from the repository root; `bench` profile = release)\n\
         - Date: {date} UTC; whole run {:.0} s\n\
         - Machine: nproc {}, CPU `{}`, load average {load_before} at the start, {load_after} at \
         the end (the box is shared; the client, the API and Redis share its cores)\n\
         - Redis: {} started by the bench for each phase on a free loopback port, `--appendonly \
         yes --appendfsync everysec --save \"\"` (the persistence `drover dev` runs)\n\
         - Code: {}, {}\n\n",
        elapsed.as_secs_f64(),
        report::nproc(),
        report::cpu(),
        report::first_line("redis-server", &["--version"])
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        report::code_version(),
        report::first_line("rustc", &["-V"]),
    ));
    out.push_str(&format!(
        "Each phase runs the real `drover api` (the bench's `drover` binary, `DROVER_LOG=info`, \
         its log to a file) with a config file: one operator token, `[secrets] jira-hook` read \
         from a file, `[hooks.jira]` and one rule (`source = \"jira\"`, `on = \"status\"`, \
         `to = \"In Progress\"`, `kind = \"synthetic\"`, `input = {{ steps = 1 }}`, comments on \
         by default), on a fresh redis-server; both are killed when the phase ends. **No workers \
         run**: acknowledging is the API's work, and the workflows started only queue. \
         Deliveries are Jira Cloud `jira:issue_updated` bodies ({} bytes on average) of a new \
         issue `OPS-<n>` moved To Do -> In Progress, signed `X-Hub-Signature: sha256=<HMAC-SHA256>` \
         with a unique `X-Atlassian-Webhook-Identifier`, so each one runs the whole write path \
         (signature, the secret file read, the rules, the ticket's memo read, one store call that \
         starts the workflow and writes the ticket's version, the delivery id and the start \
         comment's outbox entry). The anchor, *submit*, is `POST /v1/workflows` of the same \
         `synthetic` workflow with the same two labels (`drover.io/ticket`, `drover.io/rule`) and \
         the bearer token ({} bytes on average): Drover's own queued submission. The *replays* \
         mix sends every other delivery again, same bytes and id, about one second after the \
         first (answered 200 duplicate).\n\n\
         Load: open loop at 200 requests/s: request i is due at t0 + i x 5 ms and its latency \
         runs from that due time to the end of its response, so queueing behind a slow answer is \
         counted, and so is the client's own lag (due time to the request's task running: a \
         thread of its own keeps the due times with the OS timer, then the runtime schedules the \
         task; its p50/p99 is shown). \
         {WARMUP} requests of warm-up (3 s, excluded), then {MEASURED} measured (30 s). One \
         reqwest client per phase, HTTP/1.1 keep-alive, at most 8 idle connections kept, a new \
         one opened whenever none is free; 10 s timeout per request (Jira Cloud's). Phases in \
         the order shown, two rounds; all latencies in ms.\n\n\
         | phase | requests | p50 | p90 | p99 | p99.9 | max | sent/s / 2xx/s | answers | from send start p50 / p99 | client lag p50 / p99 | over 50 ms (due at s) | peak connections |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        body_of(Mix::Hook),
        body_of(Mix::Submit),
    ));
    for p in phases {
        out.push_str(&row(
            &format!("{} {}", p.mix.name(), p.round),
            &p.all,
            &p.slow,
            &p.peak_connections.to_string(),
        ));
        for (class, s) in &p.classes {
            out.push_str(&row(
                &format!("&nbsp;&nbsp;{} {}: {class} only", p.mix.name(), p.round),
                s,
                "",
                "",
            ));
        }
    }
    out.push_str(
        "\nRatios, each round against the anchor of the same round (lower is faster):\n\n",
    );
    let mut hook_p99 = Vec::new();
    for round in 1..=2 {
        let Some(s) = find(Mix::Submit, round) else {
            continue;
        };
        for mix in [Mix::Hook, Mix::Replays] {
            let Some(h) = find(mix, round) else { continue };
            if mix == Mix::Hook {
                hook_p99.push(h.all.pct[2]);
            }
            out.push_str(&format!(
                "- round {round}, {} / submit: p50 {}, p90 {}, p99 **{}**, p99.9 {}; CPU per \
                 request: API {:.2}, API + Redis {:.2}\n",
                mix.name(),
                ratio(h.all.pct[0], s.all.pct[0]),
                ratio(h.all.pct[1], s.all.pct[1]),
                ratio(h.all.pct[2], s.all.pct[2]),
                ratio(h.all.pct[3], s.all.pct[3]),
                h.cost.api_cpu_us / s.cost.api_cpu_us.max(f64::MIN_POSITIVE),
                (h.cost.api_cpu_us + h.cost.redis_cpu_us)
                    / (s.cost.api_cpu_us + s.cost.redis_cpu_us).max(f64::MIN_POSITIVE),
            ));
        }
    }
    if let (Some(h1), Some(h2)) = (find(Mix::Hook, 1), find(Mix::Hook, 2)) {
        out.push_str(&format!(
            "- drift, round 2 / round 1: hook p99 {}, submit p99 {}\n",
            ratio(h2.all.pct[2], h1.all.pct[2]),
            ratio(
                find(Mix::Submit, 2).and_then(|s| s.all.pct[2]),
                find(Mix::Submit, 1).and_then(|s| s.all.pct[2])
            ),
        ));
    }
    out.push_str(
        "\nWhat each request cost over the measured span (readings when its first request was \
         due and after its last answer, divided by the requests): CPU of the API process \
         (`/proc/<pid>/stat`), of redis-server (`INFO cpu`, its background fsync included) and of \
         the bench's client; the cores everything else on the machine kept busy meanwhile \
         (`/proc/stat` busy time less those three, per second); Redis command executions (`INFO commandstats`, commands run inside functions included, \
         the bench's own readings left out) and FCALLs among them, and what stayed behind: keys, \
         memory, AOF bytes.\n\n\
         | phase | API CPU us | Redis CPU us | client CPU us | others, cores | Redis executions | FCALL | keys | memory bytes | AOF bytes | API log WARN/ERROR lines |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in phases {
        let c = &p.cost;
        out.push_str(&format!(
            "| {} {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {} |\n",
            p.mix.name(),
            p.round,
            c.api_cpu_us,
            c.redis_cpu_us,
            c.client_cpu_us,
            c.others_cores,
            c.executions,
            c.fcalls,
            c.keys,
            c.memory_bytes,
            c.aof_bytes,
            p.log_warnings,
        ));
    }
    let worst = hook_p99.iter().copied().max();
    let failures: u64 = phases.iter().map(|p| p.all.non_2xx + p.all.errors).sum();
    out.push_str(&format!(
        "\nIssue target: a hook p99 well under 100 ms (Jira Cloud gives up after 10 s). Measured: \
         hook p99 {} ms (round 1, round 2); the higher is {} ms. Non-2xx answers and errors over \
         all measured requests of all phases: {failures}.\n",
        hook_p99
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(" and "),
        ms(worst.flatten()),
    ));
    out
}
