//! The memory benchmark: what Drover keeps in Redis per workflow. 100,000 workflows in flight
//! (submitted, queued: a `drain-node` input of the size real ones have) on one private Redis; then
//! 100,000 `synthetic` workflows of five steps run by an in-process worker until each waits for a
//! signal at step 2 (mid-flight: two outputs and two history entries each); then
//! 5,000 `synthetic` workflows of five steps run to the end by an in-process worker (record,
//! outputs, five history entries, indexes, the retention zset). Bytes per workflow are Redis's own
//! `used_memory` difference divided by the count, and `MEMORY USAGE` of one of each key shows where
//! they go. The anchor, measured in the same run on the same Redis: 100,000 apalis-redis 1.0 jobs
//! carrying the same input (stock config), pushed and then left queued; the ratio is Drover /
//! apalis bytes per queued unit of work. From the finished figure and `worker.retention_secs`, the
//! report states what a steady completion rate keeps in memory.
//!
//! Run from the repository root: `cargo bench --bench memory` (needs redis-server; about a
//! minute). Not a test: it asserts nothing, and writes its figures into BENCHMARKS.md between the
//! `memory-bench` markers.

#[path = "shared/report.rs"]
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use apalis::prelude::TaskSink;
use drover_store::server::{Options, RedisServer};
use drover_store::{Store, Submission, now_ms};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

const COMMAND: &str = "cargo bench --bench memory";
const IN_FLIGHT: usize = 100_000;
const FINISHED: usize = 5_000;
const STEPS: usize = 5;
/// The `hash-max-listpack-value` of the second in-flight run.
const LISTPACK_VALUE: u64 = 1024;

fn drain_input(i: usize) -> Value {
    json!({
        "node": format!("worker-{:04}", i % 1000),
        "non_migratable": "shutdown-restart",
        "deadline_ms": 3_600_000,
        "target_selector": {"node-role.kubernetes.io/worker": ""},
    })
}

async fn used_memory(conn: &mut impl redis::aio::ConnectionLike) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no used_memory in INFO"))
}

async fn memory_usage(conn: &mut drover_store::Conn, key: &str) -> Result<u64> {
    let n: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    Ok(n.unwrap_or(0))
}

async fn submit_all(store: &Store, kind: &str, inputs: Vec<Value>) -> Result<Vec<String>> {
    let registry = drover_kinds::builtin();
    futures::stream::iter(inputs)
        .map(|input| {
            let registry = &registry;
            async move {
                let id = uuid::Uuid::now_v7().to_string();
                let submitted = store
                    .submit_new(
                        registry,
                        id.clone(),
                        Submission::new(kind, input),
                        None,
                        now_ms(),
                    )
                    .await
                    .map_err(|e| anyhow!("submit: {e}"))?;
                ensure!(submitted.created, "workflow {id} already existed");
                Ok(id)
            }
        })
        .buffer_unordered(64)
        .try_collect()
        .await
}

/// The in-process worker that runs the benchmark's workflows (no scheduler; the default retention).
fn bench_worker() -> drover_worker::Config {
    drover_worker::Config {
        name: Some("memory-bench".into()),
        concurrency: 64,
        scheduler: false,
        retention_secs: 7 * 86_400,
        ..drover_worker::Config::default()
    }
}

/// Waits until the zset `key` holds `want` members.
async fn wait_count(
    store: &Store,
    conn: &mut drover_store::Conn,
    key: &str,
    want: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n: u64 = redis::cmd("ZCARD")
            .arg(format!("{}{key}", store.prefix()))
            .query_async(conn)
            .await?;
        if n as usize >= want {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{key}: {n} of {want} in 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits [`IN_FLIGHT`] `drain-node` workflows: bytes per workflow, and the first one's record.
async fn queued(store: &Store, conn: &mut drover_store::Conn) -> Result<(f64, u64)> {
    let before = used_memory(conn).await?;
    let ids = submit_all(
        store,
        "drain-node",
        (0..IN_FLIGHT).map(drain_input).collect(),
    )
    .await?;
    let per = (used_memory(conn).await? - before) as f64 / IN_FLIGHT as f64;
    let record = memory_usage(conn, &format!("{}wf:{}", store.prefix(), ids[0])).await?;
    Ok((per, record))
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let load = report::load_average();
    let server = RedisServer::start(Options::temporary())?;
    let store = Store::connect(&drover_store::Config::new(server.url())).await?;
    let mut conn = store.connection();
    let version = report::first_line("redis-server", &["--version"]);

    // Drover, in flight.
    let (in_flight, record) = queued(&store, &mut conn).await?;
    let input_bytes = drain_input(0).to_string().len();
    let mut indexes = Vec::new();
    for key in [
        "idx:all",
        "idx:top",
        "idx:kind:drain-node",
        "idx:state:pending",
        "ready",
    ] {
        let bytes = memory_usage(&mut conn, &format!("{}{key}", store.prefix())).await?;
        indexes.push((key, bytes as f64 / IN_FLIGHT as f64));
    }

    // The same with Redis keeping hashes of values up to 1 KiB as listpacks (default 64 bytes: an
    // input longer than that turns the record into a hashtable, with a dictEntry per field).
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    store.load_functions().await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-listpack-value")
        .arg(LISTPACK_VALUE)
        .query_async(&mut conn)
        .await?;
    let (listpack, listpack_record) = queued(&store, &mut conn).await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-listpack-value")
        .arg(64)
        .query_async(&mut conn)
        .await?;

    // The anchor: apalis-redis jobs with the same input, queued, in another database.
    let anchor_url = format!("{}/1", server.url().trim_end_matches("/0"));
    let anchor_conn = apalis_redis::connect(anchor_url.as_str()).await?;
    let mut anchor_mem = anchor_conn.clone();
    let anchor_before = used_memory(&mut anchor_mem).await?;
    let mut storage = apalis_redis::RedisStorage::<Value>::new(anchor_conn)
        .with_config(apalis_redis::Config::default().queue("bench-memory"));
    for chunk in (0..IN_FLIGHT)
        .map(drain_input)
        .collect::<Vec<_>>()
        .chunks(10_000)
    {
        storage
            .push_bulk(chunk.to_vec())
            .await
            .map_err(|e| anyhow!("apalis push_bulk: {e}"))?;
    }
    let anchor_after = used_memory(&mut anchor_mem).await?;
    let anchor = (anchor_after - anchor_before) as f64 / IN_FLIGHT as f64;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut anchor_mem).await?;

    // Drover, mid-flight: IN_FLIGHT five-step workflows run by a worker until each waits for a
    // signal at step 2 (state waiting, two steps done: outputs and history entries held).
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    store.load_functions().await?;
    let base = used_memory(&mut conn).await?;
    let input =
        json!({"steps": STEPS, "min_ms": 0, "max_ms": 0, "signal": {"step": 2, "name": "go"}});
    let waiting_ids = submit_all(&store, "synthetic", vec![input; IN_FLIGHT]).await?;
    let ran = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(drover_worker::run(
        store.clone(),
        drover_kinds::builtin(),
        drover_workflows::ports::Ports::new(Arc::new(drover_worker::ports::TokioClock)),
        bench_worker(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    wait_count(&store, &mut conn, "idx:state:waiting", IN_FLIGHT).await?;
    let _ = stop_tx.send(());
    let _ = worker.await;
    let ran = ran.elapsed();
    let waiting = (used_memory(&mut conn).await? - base) as f64 / IN_FLIGHT as f64;
    let wk = format!("{}wf:{}", store.prefix(), waiting_ids[0]);
    let waiting_record = memory_usage(&mut conn, &wk).await?;
    let waiting_history = memory_usage(&mut conn, &format!("{wk}:hist")).await?;
    let waiting_outputs = memory_usage(&mut conn, &format!("{wk}:out")).await?;

    // Drover, finished: a clean store, FINISHED five-step workflows run to the end.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    store.load_functions().await?;
    let base = used_memory(&mut conn).await?;
    let input = json!({"steps": STEPS, "min_ms": 0, "max_ms": 0});
    let done_ids = submit_all(&store, "synthetic", vec![input; FINISHED]).await?;
    let config = bench_worker();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(drover_worker::run(
        store.clone(),
        drover_kinds::builtin(),
        drover_workflows::ports::Ports::new(Arc::new(drover_worker::ports::TokioClock)),
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    wait_count(&store, &mut conn, "finished", FINISHED).await?;
    let _ = stop_tx.send(());
    let _ = worker.await;
    let finished_after = used_memory(&mut conn).await?;
    let finished = (finished_after - base) as f64 / FINISHED as f64;
    let wk = format!("{}wf:{}", store.prefix(), done_ids[0]);
    let finished_record = memory_usage(&mut conn, &wk).await?;
    let history = memory_usage(&mut conn, &format!("{wk}:hist")).await?;
    let outputs = memory_usage(&mut conn, &format!("{wk}:out")).await?;

    let mut report = String::new();
    report.push_str(&report::redis_header(
        COMMAND,
        &version,
        &load,
        started.elapsed().as_secs_f64(),
    ));
    report.push_str("| what | bytes per workflow |\n|---|---|\n");
    report.push_str(&format!(
        "| {IN_FLIGHT} queued `drain-node` workflows (input {input_bytes} B of JSON), `used_memory` / count | {in_flight:.0} |\n"
    ));
    report.push_str(&format!(
        "| of which the record hash (`MEMORY USAGE wf:<id>`) | {record} |\n"
    ));
    for (key, bytes) in &indexes {
        report.push_str(&format!(
            "| of which `{key}` (its size / count) | {bytes:.0} |\n"
        ));
    }
    report.push_str(&format!(
        "| the same with `hash-max-listpack-value {LISTPACK_VALUE}` (record: {listpack_record}) | {listpack:.0} |\n"
    ));
    report.push_str(&format!(
        "| anchor: {IN_FLIGHT} queued apalis-redis 1.0 jobs, same input, stock config | {anchor:.0} |\n"
    ));
    report.push_str(&format!(
        "| **ratio Drover / anchor, queued** (Redis defaults; with the listpack setting) | **{:.2}**; {:.2} |\n",
        in_flight / anchor,
        listpack / anchor
    ));
    report.push_str(&format!(
        "| {IN_FLIGHT} `synthetic` workflows of {STEPS} steps mid-flight (two steps done, waiting for a signal at step 2; run in {:.0} s), `used_memory` / count | {waiting:.0} |\n",
        ran.as_secs_f64()
    ));
    report.push_str(&format!(
        "| of which the record hash / the history list (2 attempts) / the outputs hash | {waiting_record} / {waiting_history} / {waiting_outputs} |\n"
    ));
    report.push_str(&format!(
        "| {FINISHED} finished `synthetic` workflows of {STEPS} steps, `used_memory` / count | {finished:.0} |\n"
    ));
    report.push_str(&format!(
        "| of which the record hash / the history list ({STEPS} attempts) / the outputs hash | {finished_record} / {history} / {outputs} |\n"
    ));
    report.push_str(
        "\nWhat retention keeps (finished workflows stay `worker.retention_secs`, default 7 days, \
         then are deleted in batches; in-flight ones stay until they end), at the finished \
         figure above:\n\n| completions per second | retention | finished kept | memory |\n|---|---|---|---|\n",
    );
    for rate in [1.0, 10.0] {
        for (label, secs) in [("1 day", 86_400.0), ("7 days", 604_800.0)] {
            let kept = rate * secs;
            report.push_str(&format!(
                "| {rate:.0} | {label} | {kept:.0} | {:.2} GiB |\n",
                kept * finished / (1u64 << 30) as f64
            ));
        }
    }
    print!("{report}");
    report::write_section(
        "<!-- memory-bench:begin -->",
        "<!-- memory-bench:end -->",
        &report,
    )?;
    Ok(())
}
