//! `drover dev`: the whole service on one machine with no configuration. It starts a private Redis
//! (AOF in a data directory, so a restart resumes where it stopped) unless REDIS_URL is set, the lab
//! (a simulated MAAS and KubeVirt cluster) unless a cluster is configured, the API, a few workers,
//! and submits a demo workflow whose progress it prints live through the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::redis_server::RedisServer;

#[derive(clap::Args)]
pub struct Args {
    /// Where the private Redis keeps its data.
    #[arg(long, default_value = ".drover/dev")]
    data_dir: PathBuf,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Worker runtimes to start in this process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Which demo to run: `maintenance` (a rolling maintenance of three lab nodes), `provision`
    /// (three bare-metal nodes from the lab's MAAS, one deployment failing on purpose), `import`
    /// (a VM from a vmdk it makes with qemu-img: conversion and upload with live progress),
    /// `ticket` (a change ticket in the lab's Jira drives a node drain: comments on the ticket as it
    /// goes, an approval transition ends the maintenance), `synthetic` (retries, fan-out under a
    /// semaphore, a signal) or `none`.
    #[arg(long, default_value = "maintenance")]
    demo: String,
    /// Do not submit a demo workflow (same as --demo none).
    #[arg(long)]
    no_demo: bool,
    /// Simulated seconds per real second in the lab.
    #[arg(long, default_value_t = 60.0)]
    lab_time_scale: f64,
    /// Stop once the demo workflow has finished (exit code 0 only if it succeeded).
    #[arg(long)]
    exit_after_demo: bool,
    /// Write the log to stderr, interleaved with the demo's progress, instead of to
    /// `<data dir>/drover.log`.
    #[arg(long)]
    log_to_stderr: bool,
}

impl Args {
    /// Where the log goes: a file in the data directory (named at start-up), so the terminal
    /// shows the live progress alone; none with `--log-to-stderr`.
    pub fn log_file(&self) -> Option<PathBuf> {
        (!self.log_to_stderr).then(|| self.data_dir.join("drover.log"))
    }
}

pub async fn run(args: Args, config_path: Option<&Path>) -> anyhow::Result<()> {
    let mut config = crate::config::load(config_path)?;
    config.api.listen = args.listen.clone();
    if config.images.work_dir.is_none() {
        config.images.work_dir = Some(args.data_dir.join("images"));
    }
    let token = match config
        .api
        .tokens
        .iter()
        .find(|t| t.role == drover_api::Role::Operator)
    {
        Some(t) => t.token.clone(),
        None => {
            let token = format!("dev-{:032x}", rand::random::<u128>());
            config.api.tokens.push(drover_api::Token {
                name: "dev".into(),
                token: token.clone(),
                role: drover_api::Role::Operator,
            });
            token
        }
    };
    config.api.validate().map_err(anyhow::Error::msg)?;
    config.worker.validate().map_err(anyhow::Error::msg)?;

    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (use --listen to pick another address)",
                config.api.listen
            )
        })?;
    // The address actually bound (`--listen 127.0.0.1:0` picks a free port).
    if let Ok(bound) = listener.local_addr() {
        config.api.listen = bound.to_string();
    }
    let (_redis, redis_url) = match &config.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = RedisServer::start(&args.data_dir.join("redis")).await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    let store = crate::connect(&config.store_config(&redis_url)).await?;
    // The lab stands in for the datacenter unless a cluster is configured.
    let lab_kubeconfig = args.data_dir.join("lab/kubeconfig");
    let lab = if config.kube.target()?.is_none() {
        let lab = crate::lab::start(
            None,
            "127.0.0.1:0".parse()?,
            Some(args.lab_time_scale),
            &lab_kubeconfig,
        )
        .await?;
        config.kube.url = Some(lab.kube_url());
        if config.maas.url.is_none() {
            lab_maas(&mut config, &lab, &args.data_dir.join("lab"))?;
        }
        if config.tickets.is_none() && config.hooks.jira.is_none() {
            lab_ticketing(&mut config, &lab, &args.data_dir.join("lab"))?;
        }
        Some(lab)
    } else {
        None
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let hooks = crate::api_hooks(&config).await?;
    let state = Arc::new(drover_api::AppState {
        store: store.clone(),
        registry: config.registry(),
        config: config.api.clone(),
        hooks,
    });
    let api = tokio::spawn(drover_api::serve(listener, state, stopped(stop_rx.clone())));
    let mut workers = Vec::new();
    for i in 0..args.workers.max(1) {
        let mut wc = config.worker.clone();
        wc.name = Some(format!("dev-worker-{i}"));
        let ports = crate::worker_ports(
            &store,
            &config.kube,
            &config.clusters,
            &config.secrets,
            &config.maas,
            &config.images,
            config.tickets.as_ref(),
        )
        .await?;
        workers.push(tokio::spawn(drover_worker::run(
            store.clone(),
            config.registry(),
            ports,
            wc,
            stopped(stop_rx.clone()),
        )));
    }

    let base = format!("http://{}", config.api.listen);
    if let Some(lab) = &lab
        && config.hooks.jira.is_some()
        && config.tickets.is_some()
    {
        // The lab's Jira and ServiceNow send their changes to this API, signed.
        lab.jira().add_webhook(drover_lab::JiraWebhook {
            name: "drover-dev".into(),
            url: format!("{base}/v1/hooks/jira"),
            events: vec!["jira:issue_created".into(), "jira:issue_updated".into()],
            jql: String::new(),
            secret: Some(LAB_HOOK_SECRET.into()),
            exclude_body: false,
        })?;
        lab.servicenow()
            .set_outbound(Some(drover_lab::OutboundMessage::new(
                format!("{base}/v1/hooks/servicenow"),
                LAB_HOOK_SECRET.to_string(),
            )));
    }
    println!("Drover dev is up.");
    if let Some(log) = args.log_file() {
        println!("  Log       {}", log.display());
    }
    println!("  API       {base}   (token: {token})");
    println!("  Redis     {}", crate::config::redact_url(&redis_url));
    println!("  Workers   {}", args.workers.max(1));
    if let Some(lab) = &lab {
        println!("  Lab:");
        crate::lab::describe(lab, &lab_kubeconfig);
    }
    println!("  Try:      curl -H 'Authorization: Bearer {token}' {base}/v1/workflows");
    println!("  CLI:      export DROVER_SERVER={base} DROVER_TOKEN={token}");
    println!("            drover list; drover watch <id>; drover describe <id>");

    let demo = if args.no_demo {
        "none"
    } else {
        args.demo.as_str()
    };
    let outcome = match demo {
        "none" => Ok(true),
        "synthetic" => synthetic_demo(&base, &token).await,
        "maintenance" if lab.is_some() => maintenance_demo(&base, &token).await,
        "provision" if lab.is_some() => {
            if let Some(lab) = &lab {
                // One deployment fails, as one in a rack often does: the demo shows the retry.
                lab.inject(drover_lab::Fault::MaasDeployFailure {
                    machine: Some("spare-01".into()),
                    count: 1,
                })?;
            }
            provision_demo(&base, &token).await
        }
        "import" if lab.is_some() => {
            if let Some(lab) = &lab {
                // A link of 200 MB/s to CDI's upload proxy, so the upload is there to watch.
                lab.set_fault_rates(drover_lab::scenario::FaultRates {
                    upload_mb_per_s: 200.0,
                    ..Default::default()
                });
            }
            import_demo(&base, &token, &args.data_dir.join("demo-images")).await
        }
        "ticket" if lab.is_some() && config.hooks.jira.is_some() => match &lab {
            Some(lab) => ticket_demo(lab).await,
            None => Ok(false),
        },
        "maintenance" | "provision" | "import" | "ticket" => Err(anyhow::anyhow!(
            "the {demo} demo runs against the lab; unset [kube] or pick --demo synthetic"
        )),
        other => Err(anyhow::anyhow!(
            "unknown demo {other:?}; use maintenance, provision, import, ticket, synthetic or none"
        )),
    };
    let demo_ok = outcome.unwrap_or_else(|e| {
        eprintln!("demo: {e:#}");
        false
    });
    if !args.exit_after_demo {
        println!("Running; Ctrl-C to stop.");
        crate::shutdown_signal().await;
    }
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = api.await;
    if let Some(lab) = lab {
        lab.shutdown().await;
    }
    if args.exit_after_demo && !demo_ok {
        anyhow::bail!("the demo workflow did not succeed");
    }
    Ok(())
}

/// Submits a rolling maintenance of three lab nodes and prints, as they change, each node's drain step
/// and how many of its VMs have moved.
async fn maintenance_demo(base: &str, token: &str) -> anyhow::Result<bool> {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let nodes = ["worker-01", "worker-02", "worker-03"];
    let input = json!({"nodes": nodes, "max_in_maintenance": 1, "poll_ms": 300});
    let resp = http
        .post(format!("{base}/v1/workflows"))
        .header("Authorization", &auth)
        .header("Idempotency-Key", format!("dev-maintenance-{}", std::process::id()))
        .json(&json!({"kind": "rolling-maintenance", "input": input, "labels": {"demo": "maintenance"}}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    let id = body["id"]
        .as_str()
        .context("no id in the submission reply")?
        .to_string();
    println!(
        "Rolling maintenance {id} of {}: one node at a time, each VM moved once to a node already maintained or outside the plan.",
        nodes.join(", ")
    );
    let get = |path: String| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            http.get(format!("{base}{path}"))
                .header("Authorization", auth)
                .send()
                .await?
                .json::<Value>()
                .await
        }
    };
    let start = Instant::now();
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let wf = get(format!("/v1/workflows/{id}")).await?;
        let state = wf["state"].as_str().unwrap_or("?").to_string();
        let mut lines = vec![(
            "rollout".to_string(),
            format!("{state} {}", current_step(&wf)),
        )];
        let drains = get(format!(
            "/v1/workflows?label=parent={id}&all=true&limit=100"
        ))
        .await?;
        for drain in drains["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .rev()
        {
            let node = drain["input"]["node"].as_str().unwrap_or("?").to_string();
            let detail = get(format!(
                "/v1/workflows/{}",
                drain["id"].as_str().unwrap_or("")
            ))
            .await?;
            let vms = get(format!(
                "/v1/workflows?label=parent={}&all=true&limit=500",
                drain["id"].as_str().unwrap_or("")
            ))
            .await?;
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for vm in vms["items"].as_array().cloned().unwrap_or_default() {
                let s = match (vm["state"].as_str(), vm["step"].as_u64()) {
                    (Some("succeeded"), _) => "moved",
                    (Some("failed") | Some("cancelled"), _) => "failed",
                    (_, Some(1)) => "migrating",
                    _ => "queued",
                };
                *counts.entry(s.to_string()).or_default() += 1;
            }
            let vm_line: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            lines.push((
                node,
                format!(
                    "{:<10} {:<12} VMs: {}",
                    drain["state"].as_str().unwrap_or("?"),
                    current_step(&detail),
                    vm_line.join(", ")
                ),
            ));
        }
        for (who, line) in lines {
            if last.get(&who) != Some(&line) {
                println!("[{:>5.1}s] {who:<10} {line}", start.elapsed().as_secs_f64());
                last.insert(who, line);
            }
        }
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            println!(
                "Rolling maintenance {state} after {:.1}s: {}",
                start.elapsed().as_secs_f64(),
                wf["result"]
            );
            return Ok(state == "succeeded");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Points `[maas]` at the lab's MAAS: its API key and a cluster join command become secrets in
/// files under `dir` (the workers resolve them by name, as they would in production).
fn lab_maas(
    config: &mut crate::config::Config,
    lab: &drover_lab::LabHandle,
    dir: &Path,
) -> anyhow::Result<()> {
    use drover_worker::secrets::Source;
    std::fs::create_dir_all(dir)?;
    let key = dir.join("maas-api-key");
    std::fs::write(&key, lab.maas_api_key())?;
    let join = dir.join("join-command");
    std::fs::write(
        &join,
        "kubeadm join 10.20.30.5:6443 --token labdev.0123456789abcdef \
         --discovery-token-ca-cert-hash sha256:00\n",
    )?;
    for (name, path) in [("lab-maas-api-key", key), ("join-command", join)] {
        if config.secrets.get(name).is_none() {
            config
                .secrets
                .insert(name, Source::File(path))
                .map_err(anyhow::Error::msg)?;
        }
    }
    config.maas.url = Some(lab.maas_url());
    config.maas.api_key = Some(drover_workflows::ports::secrets::SecretRef::new(
        "lab-maas-api-key",
    ));
    Ok(())
}

/// The secret the lab signs its webhooks with in `drover dev` (a lab, not a secret worth keeping).
const LAB_HOOK_SECRET: &str = "drover-dev-lab-webhook-secret";

/// Points `[tickets]` and `[hooks]` at the lab's Jira and ServiceNow: their credentials and the
/// webhook secret become secrets in files under `dir`, and two rules: a Jira change moved to In
/// Progress drains the node its `customfield_10050` names (an approval ends the maintenance, and
/// the ticket goes to Done), a ServiceNow change reaching Implement runs a rolling maintenance of
/// the nodes in `u_nodes` (and goes to Review).
fn lab_ticketing(
    config: &mut crate::config::Config,
    lab: &drover_lab::LabHandle,
    dir: &Path,
) -> anyhow::Result<()> {
    use drover_worker::secrets::Source;
    std::fs::create_dir_all(dir)?;
    let (jira_email, jira_token) = lab.jira_credentials();
    let (sn_user, sn_password) = lab.servicenow_credentials();
    for (name, value) in [
        ("lab-jira-token", jira_token.as_str()),
        ("lab-servicenow-password", sn_password.as_str()),
        ("lab-webhook-secret", LAB_HOOK_SECRET),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, value)?;
        if config.secrets.get(name).is_none() {
            config
                .secrets
                .insert(name, Source::File(path))
                .map_err(anyhow::Error::msg)?;
        }
    }
    let bot = drover_lab::LabConfig::reference()
        .ticketing
        .jira
        .api_account
        .account_id;
    let text = format!(
        r#"
[tickets]
timeout_ms = 5000
[tickets.jira]
url = {jira_url:?}
email = {jira_email:?}
api_token = {{ secret = "lab-jira-token" }}
writes_per_second_per_ticket = 5.0
[tickets.servicenow]
url = {sn_url:?}
user = {sn_user:?}
password = {{ secret = "lab-servicenow-password" }}
writes_per_second_per_ticket = 5.0

[hooks.jira]
secret = {{ secret = "lab-webhook-secret" }}
account_id = {bot:?}
[hooks.servicenow]
secret = {{ secret = "lab-webhook-secret" }}
user = {sn_user:?}

[[hooks.rules]]
name = "drain-on-progress"
source = "jira"
on = "status"
to = "In Progress"
only = {{ "issuetype.name" = "Change" }}
kind = "drain-node"
input = {{ maintenance = "wait-for-signal", non_migratable = "shutdown-restart", poll_ms = 300 }}
fields = {{ node = "customfield_10050" }}
approval = {{ to = "Approved", signal = "maintenance-done" }}
on_success = "Done"

[[hooks.rules]]
name = "rollout-on-implement"
source = "servicenow"
on = "status"
to = "Implement"
kind = "rolling-maintenance"
input = {{ max_in_maintenance = 1, non_migratable = "shutdown-restart", poll_ms = 300 }}
fields = {{ nodes = "u_nodes[]" }}
on_success = "Review"
"#,
        jira_url = lab.jira_url(),
        sn_url = lab.servicenow_url(),
    );
    #[derive(serde::Deserialize)]
    struct Parts {
        tickets: drover_tickets::Config,
        hooks: drover_api::hooks::Config,
    }
    let parts: Parts = toml::from_str(&text).context("the lab's ticketing settings")?;
    config.tickets = Some(parts.tickets);
    config.hooks = parts.hooks;
    Ok(())
}

/// A change ticket in the lab's Jira drives a drain of worker-04: the demo moves it to In
/// Progress as an engineer would, prints Drover's comments as they land on the ticket, approves
/// the change once Drover asks, and waits for the ticket to be Done.
async fn ticket_demo(lab: &drover_lab::LabHandle) -> anyhow::Result<bool> {
    let jira = lab.jira();
    let key = jira.create_issue(json!({
        "project": {"key": "OPS"}, "summary": "Firmware update on worker-04",
        "issuetype": {"name": "Change"}, "customfield_10050": "worker-04",
    }))?;
    println!(
        "Jira {key} \"Firmware update on worker-04\" (a Change): Alice moves it to In Progress; the \
         webhook starts a drain-node, whose progress Drover comments on the ticket."
    );
    jira.transition(&key, "Start Progress")?;
    let start = Instant::now();
    let mut shown = 0;
    let mut approved = false;
    while start.elapsed() < Duration::from_secs(300) {
        let comments: Vec<String> = jira
            .comments(&key)
            .iter()
            .filter(|c| {
                c["properties"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["key"] == "drover"))
            })
            .map(|c| drover_lab::ticketing::jira::adf::adf_text(&c["body"]))
            .collect();
        for c in &comments[shown.min(comments.len())..] {
            println!(
                "[{:>5.1}s] {key} comment: {c}",
                start.elapsed().as_secs_f64()
            );
        }
        shown = comments.len();
        if !approved && comments.iter().any(|c| c.contains("waits for approval")) {
            println!(
                "[{:>5.1}s] {key}: Alice checks the node and moves the ticket to Approved.",
                start.elapsed().as_secs_f64()
            );
            jira.transition(&key, "Approve")?;
            approved = true;
        }
        let status = jira
            .issue(&key)
            .and_then(|i| i["fields"]["status"]["name"].as_str().map(String::from))
            .unwrap_or_default();
        let finished = comments.iter().any(|c| c.starts_with("Drover finished"));
        let failed = comments
            .iter()
            .any(|c| c.starts_with("Drover: drain-node") && c.contains("failed"));
        if failed {
            println!("Ticket demo: the drain failed (see the comment above).");
            return Ok(false);
        }
        if finished && status == "Done" {
            println!(
                "[{:>5.1}s] {key} is Done: Drover moved it when the drain succeeded.",
                start.elapsed().as_secs_f64()
            );
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("Ticket demo: {key} did not reach Done within 300 s.");
    Ok(false)
}

/// Submits a scale-out of three nodes from the lab's spare pool and prints, as it changes, each
/// node's provisioning and each of its deployment attempts: the machine, MAAS's status and message.
async fn provision_demo(base: &str, token: &str) -> anyhow::Result<bool> {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let node = json!({
        "constraints": {"pool": "spare", "tags": ["vmo-worker"]},
        "join": {"secret": "join-command"},
        "labels": {"node-role.kubernetes.io/worker": ""},
        "poll_ms": 500,
    });
    let input = json!({"count": 3, "node": node});
    let resp = http
        .post(format!("{base}/v1/workflows"))
        .header("Authorization", &auth)
        .header(
            "Idempotency-Key",
            format!("dev-provision-{}", std::process::id()),
        )
        .json(&json!({"kind": "scale-out", "input": input, "labels": {"demo": "provision"}}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    let id = body["id"]
        .as_str()
        .with_context(|| format!("no id in the submission reply: {body}"))?
        .to_string();
    println!(
        "Scale-out {id}: three nodes from MAAS pool spare, deployed and joined; the first deployment on \
         spare-01 fails and is retried on another machine."
    );
    let get = |path: String| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            http.get(format!("{base}{path}"))
                .header("Authorization", auth)
                .send()
                .await?
                .json::<Value>()
                .await
        }
    };
    let items = |v: Value| v["items"].as_array().cloned().unwrap_or_default();
    let start = Instant::now();
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let wf = get(format!("/v1/workflows/{id}")).await?;
        let state = wf["state"].as_str().unwrap_or("?").to_string();
        let mut lines = vec![("scale-out".to_string(), state.clone())];
        let nodes = items(
            get(format!(
                "/v1/workflows?label=parent={id}&all=true&limit=100"
            ))
            .await?,
        );
        for (n, prov) in nodes.iter().rev().enumerate() {
            let pid = prov["id"].as_str().unwrap_or("");
            let detail = get(format!("/v1/workflows/{pid}")).await?;
            let who = format!("node {}", n + 1);
            let mut line = format!(
                "{:<10} {:<10}",
                detail["state"].as_str().unwrap_or("?"),
                current_step(&detail)
            );
            if let Some(node) = detail["result"]["node"].as_str() {
                line.push_str(&format!(" joined as {node}"));
            } else if let Some(p) = detail["progress"].as_object() {
                line.push_str(&format!(" {}", Value::Object(p.clone())));
            }
            lines.push((who.clone(), line));
            let attempts = items(
                get(format!(
                    "/v1/workflows?label=parent={pid}&all=true&limit=100"
                ))
                .await?,
            );
            for a in attempts.iter().rev() {
                let aid = a["id"].as_str().unwrap_or("");
                let at = get(format!("/v1/workflows/{aid}")).await?;
                let n = at["input"]["attempt"].as_u64().unwrap_or(0);
                let r = &at["result"];
                let p = &at["progress"];
                let text = if r.is_object() {
                    match (r["deployed"].as_bool(), r["reason"].as_str()) {
                        (Some(true), _) => {
                            format!("{} Deployed", r["hostname"].as_str().unwrap_or("?"))
                        }
                        (_, reason) => format!(
                            "{} failed: {}{}",
                            r["hostname"].as_str().unwrap_or("?"),
                            reason.unwrap_or("?"),
                            if r["broken"] == true {
                                " (marked broken)"
                            } else {
                                " (released)"
                            }
                        ),
                    }
                } else if p.is_object() {
                    format!(
                        "{} {}: {}",
                        p["machine"].as_str().unwrap_or("?"),
                        p["status"].as_str().unwrap_or(""),
                        p["message"].as_str().unwrap_or("")
                    )
                } else {
                    format!(
                        "{} {}",
                        at["state"].as_str().unwrap_or("?"),
                        current_step(&at)
                    )
                };
                lines.push((format!("{who} attempt {n}"), text));
            }
        }
        for (who, line) in lines {
            if last.get(&who) != Some(&line) {
                println!("[{:>5.1}s] {who:<18} {line}", start.elapsed().as_secs_f64());
                last.insert(who, line);
            }
        }
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            println!(
                "Scale-out {state} after {:.1}s: {}",
                start.elapsed().as_secs_f64(),
                wf["result"]
            );
            return Ok(state == "succeeded");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Makes a vmdk (1 GiB, 384 MiB of data) with qemu-img, submits `import-vm` and prints each step
/// and the live progress (bytes, rate, ETA) as it changes.
async fn import_demo(base: &str, token: &str, dir: &Path) -> anyhow::Result<bool> {
    let image = make_demo_vmdk(dir).await?;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let input = json!({"namespace": "vmo-prod", "name": "imported-web",
                       "source": {"disk": image.to_string_lossy()}, "storage_class": "px-rwx",
                       "network_map": {"default": "vlan20"}, "poll_ms": 250});
    let resp = http
        .post(format!("{base}/v1/workflows"))
        .header("Authorization", &auth)
        .header(
            "Idempotency-Key",
            format!("dev-import-{}", std::process::id()),
        )
        .json(&json!({"kind": "import-vm", "input": input, "labels": {"demo": "import"}}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    let id = body["id"]
        .as_str()
        .with_context(|| format!("no id in the submission reply: {body}"))?
        .to_string();
    println!(
        "Import {id}: {} (vmdk) becomes VM vmo-prod/imported-web on px-rwx and VLAN 20: qemu-img \
         converts it to qcow2, then it streams to CDI's upload proxy.",
        image.display()
    );
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let wf: Value = http
            .get(format!("{base}/v1/workflows/{id}"))
            .header("Authorization", &auth)
            .send()
            .await?
            .json()
            .await?;
        let state = wf["state"].as_str().unwrap_or("?").to_string();
        let p = &wf["progress"];
        let line = if p["bytes"].is_u64() {
            format!(
                "{:<9} {:<8} {} {:>6.1}% {:>5} of {:>5} MiB  {:>6.1} MB/s  ETA {} s",
                state,
                current_step(&wf),
                p["phase"].as_str().unwrap_or(""),
                p["percent"].as_f64().unwrap_or(0.0),
                p["bytes"].as_u64().unwrap_or(0) >> 20,
                p["total_bytes"].as_u64().unwrap_or(0) >> 20,
                p["rate_mb_per_s"].as_f64().unwrap_or(0.0),
                p["eta_secs"]
                    .as_f64()
                    .map_or("-".into(), |e| format!("{e:.0}")),
            )
        } else {
            format!(
                "{:<9} {:<8} {}",
                state,
                current_step(&wf),
                p["phase"].as_str().unwrap_or("")
            )
        };
        if line != last {
            println!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
            last = line;
        }
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            println!(
                "Import {state} after {:.1}s: {}",
                start.elapsed().as_secs_f64(),
                if state == "succeeded" {
                    &wf["result"]
                } else {
                    &wf["error"]
                }
            );
            let _ = tokio::fs::remove_dir_all(dir).await;
            return Ok(state == "succeeded");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The demo's source disk: a raw file with a written pattern, converted to vmdk by qemu-img.
async fn make_demo_vmdk(dir: &Path) -> anyhow::Result<PathBuf> {
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir).await?;
    let raw = dir.join("web.raw");
    let vmdk = dir.join("web.vmdk");
    let mut f = tokio::fs::File::create(&raw).await?;
    let mut block = vec![0u8; 1 << 20];
    for m in 0..384u32 {
        for (k, b) in block.iter_mut().enumerate() {
            *b = (k as u32).wrapping_mul(31).wrapping_add(m) as u8 | 1;
        }
        f.write_all(&block).await?;
    }
    f.set_len(1 << 30).await?;
    f.flush().await?;
    drop(f);
    let out = tokio::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vmdk"])
        .arg(&raw)
        .arg(&vmdk)
        .output()
        .await
        .context("running qemu-img (install qemu-utils)")?;
    anyhow::ensure!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::fs::remove_file(&raw).await?;
    Ok(vmdk)
}

fn current_step(wf: &Value) -> String {
    wf["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["status"] == "current"))
        .and_then(|s| s["name"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Submits a demo workflow (retries, fan-out under a semaphore, a signal) and prints its progress.
async fn synthetic_demo(base: &str, token: &str) -> anyhow::Result<bool> {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let input = json!({
        "steps": 5, "min_ms": 200, "max_ms": 700, "fail_rate": 0.25, "compensate": true,
        "fan_out": {"step": 2, "children": 6, "child": {
            "steps": 3, "min_ms": 300, "max_ms": 900, "fail_rate": 0.2,
            "permits": [{"name": "demo-migrations", "capacity": 2}]
        }},
        "signal": {"step": 3, "name": "approve"}
    });
    let resp = http
        .post(format!("{base}/v1/workflows"))
        .header("Authorization", &auth)
        .header(
            "Idempotency-Key",
            format!("dev-demo-{}", std::process::id()),
        )
        .json(&json!({"kind": "synthetic", "input": input, "labels": {"demo": "yes"}}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    let id = body["id"]
        .as_str()
        .context("no id in the submission reply")?
        .to_string();
    println!(
        "Demo workflow {id}: 5 steps; step 2 fans out 6 children (at most 2 at once); step 3 waits for the signal 'approve'."
    );
    let start = Instant::now();
    let mut last = String::new();
    let mut signalled = false;
    loop {
        let wf: Value = http
            .get(format!("{base}/v1/workflows/{id}"))
            .header("Authorization", &auth)
            .send()
            .await?
            .json()
            .await?;
        let state = wf["state"].as_str().unwrap_or("?").to_string();
        let steps: Vec<String> = wf["steps"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| {
                        format!(
                            "{}:{}",
                            s["name"].as_str().unwrap_or("?"),
                            s["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut children = String::new();
        if let Some(kids) = wf["children"].as_array().filter(|k| !k.is_empty()) {
            let mut done = 0;
            let mut running = 0;
            // The detail view carries each child's state.
            for k in kids {
                match k["state"].as_str() {
                    Some("succeeded") => done += 1,
                    Some("running") => running += 1,
                    _ => {}
                }
            }
            children = format!("  children {done}/{} done, {running} running", kids.len());
        }
        let line = format!(
            "{state:<12} {}{children}  waiting on {}",
            steps.join(" "),
            wf["waiting_on"].as_str().unwrap_or("-")
        );
        if line != last {
            println!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
            last = line;
        }
        if !signalled && wf["waiting_on"] == json!("signal:approve") {
            println!(
                "[{:>5.1}s] sending signal 'approve'",
                start.elapsed().as_secs_f64()
            );
            http.post(format!("{base}/v1/workflows/{id}/signals/approve"))
                .header("Authorization", &auth)
                .json(&json!({"by": "drover dev"}))
                .send()
                .await?;
            signalled = true;
        }
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            println!(
                "Demo workflow {state} after {:.1}s. Inspect it: GET {base}/v1/workflows/{id}",
                start.elapsed().as_secs_f64()
            );
            return Ok(state == "succeeded");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
