//! The client commands: `drover submit/get/list/describe/watch/cancel/pause/resume/retry/signal/
//! history`, `drover schedule ...` and `drover context ...`, over the REST API with kubectl's
//! output conventions (`-o table|wide|json|yaml`, `--watch`). Errors carry the API's own detail;
//! the exit code is 4 for an API refusal or an unreachable server (see [`crate::watch`] for how
//! `watch` reports a workflow's end).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{Client, Context, Contexts, Target};
use crate::watch::{EXIT_API, ended, watch};

#[derive(Subcommand)]
pub enum Command {
    /// Submit a workflow: `drover submit drain-node -f input.yaml` (YAML or JSON; `-f -` reads
    /// standard input). Prints the new workflow's id.
    Submit(SubmitArgs),
    /// Show workflows by id, as a table or as their full JSON/YAML.
    Get {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List top-level workflows, newest first (`-A` includes children).
    List(ListArgs),
    /// A workflow in detail: steps with attempts and timings, children, error, result.
    Describe { id: String },
    /// Follow a workflow live until it ends; exit 0 succeeded, 1 failed, 3 cancelled, 4 API
    /// error, 5 timeout.
    Watch {
        id: String,
        /// Give up watching after this many seconds (the workflow goes on).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Cancel a workflow: completed steps are compensated in reverse.
    Cancel { id: String },
    /// Pause a workflow: no new step starts until it is resumed.
    Pause { id: String },
    /// Resume a paused workflow.
    Resume { id: String },
    /// Retry a failed workflow from its failed step.
    Retry { id: String },
    /// Send a signal: `drover signal ID approve -d '{"by": "me"}'`.
    Signal {
        id: String,
        name: String,
        /// The payload, as JSON or YAML.
        #[arg(short, long, conflicts_with = "file")]
        data: Option<String>,
        /// The payload from a file (`-` for standard input).
        #[arg(short, long)]
        file: Option<PathBuf>,
    },
    /// Every attempt of every step, oldest first.
    History {
        id: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Schedules: list, get, create, apply, delete, pause, unpause, trigger, backfill.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Contexts: which Drover API the commands talk to, and where its token is.
    #[command(subcommand)]
    Context(ContextCommand),
}

#[derive(Args)]
pub struct SubmitArgs {
    kind: String,
    /// The input, YAML or JSON (`-` for standard input); none: `{}`.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// A label, `key=value` (repeatable).
    #[arg(short, long = "label")]
    labels: Vec<String>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// The cluster it acts on, by its `[[clusters]]` name (default: the `[kube]` cluster).
    #[arg(long)]
    cluster: Option<String>,
    /// An Idempotency-Key: the same submission with it returns the same workflow.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the workflow until it ends (exit codes as `drover watch`).
    #[arg(short, long)]
    watch: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// pending, running, waiting, compensating, succeeded, failed, cancelled or paused.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// A label filter, `key=value`.
    #[arg(short = 'l', long = "label")]
    label: Option<String>,
    /// Workflows acting on this `[[clusters]]` name.
    #[arg(long)]
    cluster: Option<String>,
    /// Children too, not only top-level workflows.
    #[arg(short = 'A', long)]
    all: bool,
    /// Most workflows shown (pages are followed up to it).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Keep listing: print a row again whenever it changes (Ctrl-C stops).
    #[arg(short, long)]
    watch: bool,
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    List {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// A schedule with its next fire times and log.
    Get {
        id: String,
        /// How many next fire times to show.
        #[arg(long, default_value_t = 5)]
        preview: usize,
        #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
    /// Create a schedule from a file (YAML or JSON; its `id` names it).
    Create {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Create the schedule, or replace its spec if it exists.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
    Delete {
        id: String,
    },
    Pause {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    Unpause {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Start the schedule's workflow now.
    Trigger {
        id: String,
        /// Overlap policy for this run (skip, buffer-one, cancel-other, allow-all).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Start every fire time of a past range (RFC 3339 times).
    Backfill {
        id: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        overlap: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ContextCommand {
    /// The contexts, the current one marked.
    List,
    /// The current context's name.
    Current,
    /// Make a context the current one.
    Use {
        name: String,
    },
    /// Add or replace a context. The token is never a flag: give a file, an environment
    /// variable, or `--token-stdin`.
    Set {
        name: String,
        #[arg(long)]
        server: String,
        #[arg(long, conflicts_with_all = ["token_env", "token_stdin"])]
        token_file: Option<PathBuf>,
        #[arg(long, conflicts_with = "token_stdin")]
        token_env: Option<String>,
        /// Read the token from standard input and keep it in the file (written 0600).
        #[arg(long)]
        token_stdin: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Runs a client command; the exit code follows the conventions above.
pub async fn run(command: Command, target: &Target) -> ExitCode {
    let result = match command {
        Command::Context(c) => context(c, target).map(|()| ExitCode::SUCCESS),
        command => match target.client() {
            Ok(client) => dispatch(command, &client).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drover: {e:#}");
            if e.downcast_ref::<crate::client::Error>().is_some() {
                ExitCode::from(EXIT_API)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(command: Command, client: &Client) -> anyhow::Result<ExitCode> {
    match command {
        Command::Submit(args) => return submit(client, args).await,
        Command::Get { ids, output } => {
            let mut items = Vec::new();
            for id in &ids {
                items.push(client.get(&format!("/v1/workflows/{}", enc(id))).await?);
            }
            match output {
                Output::Json | Output::Yaml if items.len() == 1 => print_doc(&items[0], output)?,
                Output::Json | Output::Yaml => print_doc(&json!({ "items": items }), output)?,
                wide => print_workflows(&items, wide == Output::Wide),
            }
        }
        Command::List(args) => list(client, args).await?,
        Command::Describe { id } => {
            let w = client.get(&format!("/v1/workflows/{}", enc(&id))).await?;
            print!("{}", describe(&w, now_ms()));
        }
        Command::Watch { id, timeout } => {
            return Ok(watch(client, &id, timeout.map(Duration::from_secs)).await);
        }
        Command::Cancel { id } => control(client, &id, "cancel").await?,
        Command::Pause { id } => control(client, &id, "pause").await?,
        Command::Resume { id } => control(client, &id, "resume").await?,
        Command::Retry { id } => control(client, &id, "retry").await?,
        Command::Signal {
            id,
            name,
            data,
            file,
        } => {
            let payload = match (data, file) {
                (Some(d), _) => parse_doc(&d, "--data")?,
                (None, Some(f)) => read_doc(&f)?,
                (None, None) => Value::Null,
            };
            let path = format!("/v1/workflows/{}/signals/{}", enc(&id), enc(&name));
            let answer = client.post(&path, &payload).await?;
            println!("workflow {id}: signal {name} sent ({})", answer["detail"]);
        }
        Command::History { id, output } => {
            let w = client.get(&format!("/v1/workflows/{}", enc(&id))).await?;
            let history = w["history"].clone();
            match output {
                Output::Json | Output::Yaml => print_doc(&history, output)?,
                _ => print!("{}", history_table(&history)),
            }
        }
        Command::Schedule(c) => schedule(client, c).await?,
        Command::Context(_) => unreachable!("handled without a client"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn submit(client: &Client, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let input = match &args.file {
        Some(f) => read_doc(f)?,
        None => json!({}),
    };
    let labels = args
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .ok_or_else(|| anyhow!("label {l:?} must look like key=value"))
        })
        .collect::<anyhow::Result<serde_json::Map<_, _>>>()?;
    let mut body = json!({
        "kind": args.kind, "input": input, "priority": args.priority, "labels": labels,
    });
    if let Some(c) = &args.cluster {
        body["cluster"] = json!(c);
    }
    let headers: Vec<(&str, String)> = args
        .idempotency_key
        .iter()
        .map(|k| ("idempotency-key", k.clone()))
        .collect();
    let answer = client
        .call(
            reqwest::Method::POST,
            "/v1/workflows",
            Some(&body),
            &headers,
        )
        .await?;
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    if answer["existing"] == true {
        eprintln!("drover: the Idempotency-Key was used before; this is that workflow");
    }
    println!("{id}");
    if args.watch {
        return Ok(watch(client, &id, None).await);
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, args: ListArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(s) = &args.state {
        query.push(format!("state={}", enc(s)));
    }
    if let Some(k) = &args.kind {
        query.push(format!("kind={}", enc(k)));
    }
    if let Some(l) = &args.label {
        query.push(format!("label={}", enc(l)));
    }
    if let Some(c) = &args.cluster {
        query.push(format!("cluster={}", enc(c)));
    }
    if args.all {
        query.push("all=true".into());
    }
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let items = list_items(client, &query, args.limit).await?;
        if !args.watch {
            match args.output {
                Output::Json | Output::Yaml => print_doc(&json!({ "items": items }), args.output)?,
                wide => print_workflows(&items, wide == Output::Wide),
            }
            return Ok(());
        }
        // kubectl's --watch: the table once, then a row each time it changes.
        let wide = args.output == Output::Wide;
        let (header, rows) = workflow_rows(&items, wide, now_ms());
        let mut fresh = Vec::new();
        for (w, row) in items.iter().zip(rows) {
            let key = w["id"].as_str().unwrap_or_default().to_string();
            // The age column changes by itself; a row is new when anything else changed.
            let stable = row[..row.len() - 1].join("\u{1f}");
            if printed.get(&key) != Some(&stable) {
                printed.insert(key, stable);
                fresh.push(row);
            }
        }
        if !fresh.is_empty() {
            let with_header = printed.len() == fresh.len();
            print!("{}", table(&header, &fresh, with_header));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Up to `limit` workflows, following `next_cursor`.
async fn list_items(client: &Client, query: &[String], limit: usize) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < limit {
        let mut q = query.to_vec();
        q.push(format!("limit={}", (limit - items.len()).min(500)));
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", enc(c)));
        }
        let page = client
            .get(&format!("/v1/workflows?{}", q.join("&")))
            .await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    Ok(items)
}

async fn control(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let answer = client
        .post(&format!("/v1/workflows/{}/{action}", enc(id)), &Value::Null)
        .await?;
    let detail = match &answer["detail"] {
        Value::Null => String::new(),
        Value::String(s) => format!(" ({s})"),
        other => format!(" ({other})"),
    };
    println!("workflow {id}: {action} accepted{detail}");
    Ok(())
}

async fn schedule(client: &Client, c: ScheduleCommand) -> anyhow::Result<()> {
    match c {
        ScheduleCommand::List { output } => {
            let page = client.get("/v1/schedules?limit=500").await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            match output {
                Output::Json | Output::Yaml => print_doc(&json!({ "items": items }), output)?,
                _ => {
                    let header = ["ID", "KIND", "CRON", "TIMEZONE", "PAUSED", "NEXT", "LAST"];
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|s| {
                            vec![
                                text(&s["id"]),
                                text(&s["kind"]),
                                text(&s["cron"]),
                                text(&s["timezone"]),
                                text(&s["paused"]),
                                text(&s["next"]),
                                text(&s["last_workflow"]),
                            ]
                        })
                        .collect();
                    print!("{}", table(&header, &rows, true));
                }
            }
        }
        ScheduleCommand::Get {
            id,
            preview,
            output,
        } => {
            let s = client
                .get(&format!("/v1/schedules/{}?preview={preview}", enc(&id)))
                .await?;
            print_doc(&s, output)?;
        }
        ScheduleCommand::Create { file } => {
            let spec = read_doc(&file)?;
            let s = client.post("/v1/schedules", &spec).await?;
            println!("schedule {} created; next {}", s["id"], s["next"]);
        }
        ScheduleCommand::Apply { file } => {
            let spec = read_doc(&file)?;
            let id = spec["id"]
                .as_str()
                .ok_or_else(|| anyhow!("{} has no \"id\"", file.display()))?
                .to_string();
            match client.post("/v1/schedules", &spec).await {
                Ok(_) => println!("schedule {id} created"),
                Err(crate::client::Error::Api { status: 409, .. }) => {
                    client
                        .call(
                            reqwest::Method::PUT,
                            &format!("/v1/schedules/{}", enc(&id)),
                            Some(&spec),
                            &[],
                        )
                        .await?;
                    println!("schedule {id} replaced");
                }
                Err(e) => return Err(e.into()),
            }
        }
        ScheduleCommand::Delete { id } => {
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/schedules/{}", enc(&id)),
                    None,
                    &[],
                )
                .await?;
            println!("schedule {id} deleted");
        }
        ScheduleCommand::Pause { id, note } => schedule_control(client, &id, "pause", note).await?,
        ScheduleCommand::Unpause { id, note } => {
            schedule_control(client, &id, "unpause", note).await?
        }
        ScheduleCommand::Trigger { id, overlap } => {
            let body = match overlap {
                Some(o) => json!({ "overlap": o }),
                None => json!({}),
            };
            let r = client
                .post(&format!("/v1/schedules/{}/trigger", enc(&id)), &body)
                .await?;
            println!("schedule {id}: {}", fire_text(&r));
        }
        ScheduleCommand::Backfill {
            id,
            from,
            to,
            overlap,
        } => {
            let mut body = json!({ "from": from, "to": to });
            if let Some(o) = overlap {
                body["overlap"] = json!(o);
            }
            let r = client
                .post(&format!("/v1/schedules/{}/backfill", enc(&id)), &body)
                .await?;
            for f in r["results"].as_array().into_iter().flatten() {
                println!("{}  {}", text(&f["fire"]), fire_text(f));
            }
            println!("{} fire times", r["fire_times"]);
        }
    }
    Ok(())
}

async fn schedule_control(
    client: &Client,
    id: &str,
    action: &str,
    note: Option<String>,
) -> anyhow::Result<()> {
    let body = match note {
        Some(n) => json!({ "note": n }),
        None => json!({}),
    };
    client
        .post(&format!("/v1/schedules/{}/{action}", enc(id)), &body)
        .await?;
    println!("schedule {id}: {action}d");
    Ok(())
}

/// What a trigger or a backfilled fire time did.
fn fire_text(r: &Value) -> String {
    match r["action"].as_str() {
        Some(a @ ("started" | "buffered" | "existing")) => format!("{a} {}", text(&r["workflow"])),
        Some("skipped") => format!("skipped: {}", text(&r["reason"])),
        Some(a) => a.to_string(),
        None => r.to_string(),
    }
}

fn context(c: ContextCommand, target: &Target) -> anyhow::Result<()> {
    let path = Contexts::path();
    let mut contexts = Contexts::load(&path)?;
    match c {
        ContextCommand::List => {
            let current = target
                .context
                .clone()
                .or_else(|| contexts.current_context.clone());
            let rows: Vec<Vec<String>> = contexts
                .contexts
                .iter()
                .map(|c| {
                    vec![
                        if current.as_deref() == Some(&c.name) {
                            "*"
                        } else {
                            ""
                        }
                        .to_string(),
                        c.name.clone(),
                        c.server.clone(),
                        c.token_source(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["CURRENT", "NAME", "SERVER", "TOKEN"], &rows, true)
            );
        }
        ContextCommand::Current => match &contexts.current_context {
            Some(c) => println!("{c}"),
            None => bail!("no current context in {}", path.display()),
        },
        ContextCommand::Use { name } => {
            if contexts.get(&name).is_none() {
                bail!("no context {name:?} in {}", path.display());
            }
            contexts.current_context = Some(name.clone());
            contexts.save(&path)?;
            println!("current context: {name}");
        }
        ContextCommand::Set {
            name,
            server,
            token_file,
            token_env,
            token_stdin,
        } => {
            Client::new(&server, None)?;
            let token = if token_stdin {
                let mut t = String::new();
                std::io::stdin().read_to_string(&mut t)?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    bail!("--token-stdin read no token");
                }
                Some(t)
            } else {
                None
            };
            contexts.upsert(Context {
                name: name.clone(),
                server,
                token,
                token_file,
                token_env,
            });
            if contexts.current_context.is_none() {
                contexts.current_context = Some(name.clone());
            }
            contexts.save(&path)?;
            println!("context {name} saved in {}", path.display());
        }
        ContextCommand::Delete { name } => {
            let before = contexts.contexts.len();
            contexts.contexts.retain(|c| c.name != name);
            if contexts.contexts.len() == before {
                bail!("no context {name:?} in {}", path.display());
            }
            if contexts.current_context.as_deref() == Some(&name) {
                contexts.current_context = None;
            }
            contexts.save(&path)?;
            println!("context {name} deleted");
        }
    }
    Ok(())
}

/// A YAML or JSON document from a file, or standard input for `-`.
fn read_doc(path: &Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin().read_to_string(&mut t)?;
        t
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    parse_doc(&text, &path.display().to_string())
}

/// YAML (JSON is YAML too) into a JSON value.
fn parse_doc(text: &str, what: &str) -> anyhow::Result<Value> {
    yaml_serde::from_str::<Value>(text).with_context(|| format!("{what} is neither YAML nor JSON"))
}

fn print_doc(v: &Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", yaml_serde::to_string(v)?),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as a table cell.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// kubectl's ages: 45s, 12m, 5h, 3d.
fn age(since_ms: u64, now_ms: u64) -> String {
    duration(now_ms.saturating_sub(since_ms))
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{:.1}s", ms as f64 / 1000.0),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The time from `start` to `end` (ms values), when both are known.
fn took(start: &Value, end: &Value) -> String {
    match (start.as_u64(), end.as_u64()) {
        (Some(a), Some(b)) => duration(b.saturating_sub(a)),
        _ => String::new(),
    }
}

fn time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>], with_header: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = String::new();
    if with_header {
        out.push_str(&line(header.to_vec()));
    }
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The list's columns (`wide` adds priority, labels, worker and parent); AGE comes last.
fn workflow_rows(items: &[Value], wide: bool, now: u64) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec!["ID", "KIND", "STATE", "STEP"];
    if wide {
        header.extend(["PRIORITY", "LABELS", "WORKER", "PARENT"]);
    }
    header.push("AGE");
    let rows = items
        .iter()
        .map(|w| {
            let state = match (w["state"].as_str().unwrap_or("?"), w["paused"] == true) {
                (s, true) => format!("{s} (paused)"),
                (s, false) => s.to_string(),
            };
            let step = match w["state"].as_str() {
                Some("succeeded" | "cancelled") => String::new(),
                _ => step_label(w),
            };
            let mut row = vec![text(&w["id"]), text(&w["kind"]), state, step];
            if wide {
                let labels = w["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", text(v)))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                row.extend([
                    text(&w["priority"]),
                    labels,
                    text(&w["lease_worker"]),
                    text(&w["parent"]),
                ]);
            }
            row.push(age(w["created_ms"].as_u64().unwrap_or(now), now));
            row
        })
        .collect();
    (header, rows)
}

/// `2 rollout` from a detail's step rows, else the step index.
fn step_label(w: &Value) -> String {
    let i = w["step"].as_u64().unwrap_or(0);
    match w["steps"][i as usize]["name"].as_str() {
        Some(name) => format!("{i} {name}"),
        None => i.to_string(),
    }
}

fn print_workflows(items: &[Value], wide: bool) {
    let (header, rows) = workflow_rows(items, wide, now_ms());
    if rows.is_empty() {
        eprintln!("No workflows found.");
        return;
    }
    print!("{}", table(&header, &rows, true));
}

/// `drover describe`: a workflow in detail, as text.
fn describe(w: &Value, now: u64) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{:<11}{value}\n", format!("{name}:")));
        }
    };
    field("Id", text(&w["id"]));
    field("Kind", text(&w["kind"]));
    let mut state = text(&w["state"]);
    if w["paused"] == true {
        state.push_str(" (paused)");
    }
    if w["cancel_requested"] == true {
        state.push_str(" (cancel requested)");
    }
    field("State", state);
    if !matches!(w["state"].as_str(), Some("succeeded" | "cancelled")) {
        field(
            "Step",
            format!(
                "{} (attempt {}, {})",
                step_label(w),
                text(&w["attempt"]),
                text(&w["phase"])
            ),
        );
        field("Waiting", text(&w["waiting_on"]));
        field("Worker", text(&w["lease_worker"]));
    }
    field("Priority", text(&w["priority"]));
    field("Cluster", text(&w["cluster"]));
    if let Some(labels) = w["labels"].as_object().filter(|l| !l.is_empty()) {
        field(
            "Labels",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    field("Parent", text(&w["parent"]));
    let created = w["created_ms"].as_u64().unwrap_or(0);
    field(
        "Created",
        format!("{} ({} ago)", time(&w["created_ms"]), age(created, now)),
    );
    field("Updated", time(&w["updated_ms"]));
    if let Some(f) = w["finished_ms"].as_u64() {
        field(
            "Finished",
            format!(
                "{} (took {})",
                time(&w["finished_ms"]),
                duration(f.saturating_sub(created))
            ),
        );
    }
    field("Input", compact(&w["input"]));
    field("Progress", compact(&w["progress"]));
    field("Error", compact(&w["error"]));
    field("Result", compact(&w["result"]));
    out.push_str("\nSteps:\n");
    let rows: Vec<Vec<String>> = w["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let took = took(&s["started_ms"], &s["ended_ms"]);
            vec![
                text(&s["index"]),
                text(&s["name"]),
                text(&s["status"]),
                text(&s["attempts"]),
                time(&s["started_ms"]),
                took,
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["#", "NAME", "STATUS", "ATTEMPTS", "STARTED", "TOOK"],
        &rows,
        true,
    )));
    let children = w["children"].as_array().cloned().unwrap_or_default();
    if !children.is_empty() {
        out.push_str(&format!("\nChildren ({}):\n", children.len()));
        let rows: Vec<Vec<String>> = children
            .iter()
            .map(|c| {
                let live = !ended(c);
                vec![
                    text(&c["id"]),
                    text(&c["kind"]),
                    text(&c["state"]),
                    if live {
                        text(&c["step"])
                    } else {
                        String::new()
                    },
                    compact(&c["progress"]),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["ID", "KIND", "STATE", "STEP", "PROGRESS"],
            &rows,
            true,
        )));
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `drover history`: every attempt, oldest first.
fn history_table(history: &Value) -> String {
    let rows: Vec<Vec<String>> = history
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let took = took(&h["start_ms"], &h["end_ms"]);
            vec![
                text(&h["step"]),
                text(&h["name"]),
                text(&h["attempt"]),
                text(&h["phase"]),
                text(&h["worker"]),
                time(&h["start_ms"]),
                took,
                text(&h["outcome"]),
                text(&h["error"]),
            ]
        })
        .collect();
    table(
        &[
            "STEP", "NAME", "ATTEMPT", "PHASE", "WORKER", "STARTED", "TOOK", "OUTCOME", "ERROR",
        ],
        &rows,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_ages_read_like_kubectl() {
        let t = table(
            &["ID", "STATE", "AGE"],
            &[
                vec!["a".into(), "running".into(), "5s".into()],
                vec!["bbbb".into(), "ok".into(), "3m".into()],
            ],
            true,
        );
        assert_eq!(
            t,
            "ID     STATE     AGE\na      running   5s\nbbbb   ok        3m\n"
        );
        assert_eq!(age(0, 45_000), "45s");
        assert_eq!(age(0, 12 * 60_000 + 5), "12m");
        assert_eq!(age(0, 5 * 3_600_000), "5h");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
        assert_eq!(duration(250), "0.2s");
        assert_eq!(enc("parent=0192 x/y"), "parent%3D0192%20x%2Fy");
    }

    #[test]
    fn describe_shows_steps_children_and_what_went_wrong() {
        let w = json!({
            "id": "w1", "kind": "drain-node", "state": "failed", "paused": false,
            "step": 1, "attempt": 3, "phase": "forward", "priority": 0,
            "labels": {"ticket": "OPS-1"}, "input": {"node": "n1"},
            "error": {"message": "gave up after 3 attempts: eviction refused"},
            "created_ms": 1_000, "updated_ms": 61_000, "finished_ms": 61_000,
            "steps": [
                {"index": 0, "name": "cordon", "status": "done", "attempts": 1,
                 "started_ms": 1_000, "ended_ms": 1_500},
                {"index": 1, "name": "evict", "status": "failed", "attempts": 3,
                 "started_ms": 2_000, "ended_ms": 61_000}
            ],
            "children": [{"id": "w1.s1t4.0", "kind": "migrate-vmi", "state": "succeeded",
                          "step": null, "progress": null}]
        });
        let text = describe(&w, 121_000);
        assert!(text.contains("State:     failed\n"), "{text}");
        assert!(
            text.contains("Step:      1 evict (attempt 3, forward)"),
            "{text}"
        );
        assert!(text.contains("Labels:    ticket=OPS-1"), "{text}");
        assert!(text.contains("(took 1m)"), "{text}");
        assert!(text.contains("eviction refused"), "{text}");
        assert!(text.contains("  1   evict    failed   3"), "{text}");
        assert!(text.contains("Children (1):"), "{text}");
        assert!(text.contains("w1.s1t4.0"), "{text}");
    }
}
