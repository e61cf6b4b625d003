//! The write-back outbox dispatcher every worker process runs: the store appends an entry to the
//! outbox in the same call as each change of a workflow linked to a ticket (started, a child
//! ended, waiting for an approval, paused, ended); the dispatcher renders each, in order, into a
//! `ticket-update` workflow (the comment's text, the marker that makes it exactly-once, the move
//! of the ticket a rule asks for) and takes the entry off the outbox in the same call that
//! creates that workflow. Dispatchers race for the head entry; a lost race writes nothing.

use std::sync::Arc;
use std::time::Duration;

use drover_workflows::ports::tickets::{MAX_COMMENT_CHARS, TicketRef};
use drover_workflows::{NewWorkflow, Submission};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::{Runner, now_ms};

/// Entries read per look.
const BATCH: usize = 32;
/// Longest sleep between looks when the outbox is empty.
const IDLE: Duration = Duration::from_secs(1);

/// The id of the ticket-update workflow for outbox entry `seq` of `store`'s shard: fixed width, so
/// ids sort as the entries do (ready tasks of equal score are taken in id order). With several
/// shards (each with its own outbox and sequence) the last byte names the shard.
pub fn update_id(store: &drover_store::Store, seq: u64) -> String {
    if store.shard_count() == 1 {
        format!("7d0b0000-0000-8000-8000-{seq:012x}")
    } else {
        store.stamp(format!("7d0b0000-0000-8000-8000-{seq:010x}00"))
    }
}

/// Dispatches the outbox of `store`'s shard until the task is aborted (one per shard).
pub async fn run(runner: Arc<Runner>, store: drover_store::Store) {
    let mut waiter = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match tick(&runner, &store, &mut waiter).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                debug!(error = %e, "Outbox: Redis unavailable; retrying.");
                waiter = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn tick(
    runner: &Arc<Runner>,
    store: &drover_store::Store,
    waiter: &mut Option<drover_store::Waiter>,
) -> drover_store::Result<()> {
    let entries = store.outbox_peek(BATCH).await?;
    if entries.is_empty() {
        if waiter.is_none() {
            *waiter = Some(store.outbox_waiter(IDLE).await?);
        }
        if let Some(w) = waiter.as_mut() {
            w.wait(IDLE).await?;
        }
        return Ok(());
    }
    for entry in entries {
        // Every entry gets its sequence number in the store's `outbox_push`.
        let seq = entry["seq"].as_u64().unwrap_or_default();
        let wf = match update(runner, store, &entry, seq).await? {
            Some(Ok(wf)) => Some(wf),
            Some(Err(e)) => {
                warn!(seq, error = %e, "A write-back could not be built; dropped.");
                None
            }
            None => None,
        };
        if !store.outbox_take(seq, wf.as_ref(), now_ms()).await? {
            // Another dispatcher took it: look again from the new head.
            return Ok(());
        }
    }
    Ok(())
}

/// The ticket-update workflow for an entry, or none when the event writes nothing back.
async fn update(
    runner: &Runner,
    store: &drover_store::Store,
    entry: &Value,
    seq: u64,
) -> drover_store::Result<Option<Result<NewWorkflow, String>>> {
    let ticket = &entry["ticket"];
    let Ok(target) = serde_json::from_value::<TicketRef>(json!({
        "system": ticket["system"], "key": ticket["key"], "display": ticket["display"],
    })) else {
        return Ok(None);
    };
    let comments = ticket["comments"].as_bool().unwrap_or(false);
    let event = entry["event"].as_str().unwrap_or_default();
    let id = entry["wf"].as_str().unwrap_or_default();
    // A summary is all a comment needs (no outputs, history or children).
    let view = runner
        .store
        .summaries(&[id.to_string()])
        .await?
        .into_iter()
        .next();
    let text = if comments {
        Some(render(entry, view.as_ref()))
    } else {
        None
    };
    let transition = match (event, entry["state"].as_str()) {
        ("ended", Some("succeeded")) => ticket["on_success"].as_str().map(String::from),
        ("ended", Some("failed" | "cancelled")) => ticket["on_failure"].as_str().map(String::from),
        _ => None,
    };
    if text.is_none() && transition.is_none() {
        return Ok(None);
    }
    let input = json!({
        "ticket": target,
        "marker": format!("drover/{id}/{event}/{seq}"),
        "text": text.map(|t| truncate(&t, MAX_COMMENT_CHARS)),
        "transition": transition,
    });
    let mut submission = Submission::new("ticket-update", input)
        .label("drover.io/ticket", target.key.clone())
        .priority(10);
    submission = submission.label("drover.io/for", short(id));
    Ok(Some(
        runner
            .registry
            .prepare(update_id(store, seq), submission, now_ms())
            .map(|mut wf| {
                wf.trace = drover_telemetry::trace::start("outbox", &wf.kind, &wf.id);
                wf
            })
            .map_err(|e| e.to_string()),
    ))
}

fn short(id: &str) -> String {
    id.chars().take(36).collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn compact(v: &Value, max: usize) -> String {
    truncate(&v.to_string(), max)
}

/// The comment for an event, from the workflow as it is now.
fn render(entry: &Value, view: Option<&drover_store::WorkflowView>) -> String {
    let ticket = &entry["ticket"];
    let id = entry["wf"].as_str().unwrap_or_default();
    let Some(v) = view else {
        return format!("Drover: workflow {id} ({}).", entry["event"]);
    };
    match entry["event"].as_str().unwrap_or_default() {
        "started" => format!(
            "Drover started {} (workflow {}) for {} by rule {}. Input: {}",
            v.kind,
            v.id,
            ticket["display"].as_str().unwrap_or_default(),
            ticket["rule"].as_str().unwrap_or_default(),
            compact(&v.input, 600)
        ),
        "milestone" => milestone(v),
        "waiting" => {
            let signal = entry["signal"].as_str().unwrap_or_default();
            match ticket["approval"]["to"].as_str() {
                Some(to) if ticket["approval"]["signal"] == signal => format!(
                    "Drover: {} (workflow {}) waits for approval: move {} to \"{to}\" to let it \
                     go on.",
                    v.kind,
                    v.id,
                    ticket["display"].as_str().unwrap_or_default()
                ),
                _ => format!(
                    "Drover: {} (workflow {}) waits for the signal {signal}.",
                    v.kind, v.id
                ),
            }
        }
        "paused" => format!(
            "Drover: {} (workflow {}) paused: {}. Resume it with POST /v1/workflows/{}/resume.",
            v.kind,
            v.id,
            entry["reason"].as_str().unwrap_or("no reason given"),
            v.id
        ),
        "ended" => match entry["state"].as_str().unwrap_or_default() {
            "succeeded" => format!(
                "Drover finished {} (workflow {}): succeeded. {}",
                v.kind,
                v.id,
                outcome(v)
            ),
            "failed" => format!(
                "Drover: {} (workflow {}) failed: {}",
                v.kind,
                v.id,
                error_text(v.error.as_ref())
            ),
            other => format!("Drover: {} (workflow {}) {other}.", v.kind, v.id),
        },
        other => format!("Drover: {} (workflow {}): {other}.", v.kind, v.id),
    }
}

/// What a succeeded workflow did, in the terms of its kind.
fn outcome(v: &drover_store::WorkflowView) -> String {
    let r = v.result.clone().unwrap_or_default();
    let count = |x: &Value| x.as_array().map_or(0, Vec::len);
    match v.kind.as_str() {
        "drain-node" => format!(
            "Node {}: {} VMs migrated; {}.",
            r["node"].as_str().unwrap_or("?"),
            count(&r["migrated"]),
            if r["uncordoned"] == true {
                "back in service"
            } else {
                "left cordoned"
            }
        ),
        "rolling-maintenance" => format!(
            "Nodes: {}; {} migrations.",
            compact(&r["nodes"], 600),
            r["migrations"]
        ),
        "import-vm" => format!(
            "VM {}/{} is running.",
            v.input["namespace"].as_str().unwrap_or("?"),
            v.input["name"].as_str().unwrap_or("?")
        ),
        _ => compact(&r, 1500),
    }
}

fn error_text(e: Option<&Value>) -> String {
    match e {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| compact(v, 1500)),
        None => "no reason given".into(),
    }
}

/// A child's end, said in the terms of its kind.
fn milestone(c: &drover_store::WorkflowView) -> String {
    let i = &c.input;
    let r = c.result.clone().unwrap_or_default();
    let ok = c.state == drover_workflows::State::Succeeded;
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    match (c.kind.as_str(), ok) {
        ("drain-node", true) => format!(
            "Node {} drained: {} VMs migrated.",
            s(&i["node"]),
            r["migrated"].as_array().map_or(0, Vec::len)
        ),
        ("migrate-vmi", true) if r.get("deferred").is_some() => format!(
            "VM {}/{} not moved yet: the maintenance window closed.",
            s(&i["namespace"]),
            s(&i["vmi"])
        ),
        ("migrate-vmi", true) => format!(
            "VM {}/{} moved from {} to {}.",
            s(&i["namespace"]),
            s(&i["vmi"]),
            s(&i["source_node"]),
            s(&r["target"])
        ),
        ("import-vm", true) => format!("VM {}/{} imported.", s(&i["namespace"]), s(&i["name"])),
        ("provision-node", true) => format!("Node {} provisioned.", s(&r["node"])),
        (kind, true) => format!("{kind} {} succeeded.", c.id),
        (kind, false) => format!(
            "{kind} {} {}: {}",
            c.id,
            c.state.as_str(),
            error_text(c.error.as_ref())
        ),
    }
}
