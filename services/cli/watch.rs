//! `drover watch ID`: a workflow's progress live, from its event stream (`depth=2`, so a rollout
//! shows each node's drain and each VM's migration). On a terminal the view is redrawn in place
//! with a progress bar per row; otherwise (a pipe, a CI log) each row is printed again only when it
//! changed, with the time since the watch began. Rendering is pure ([`rows`], [`fraction`]) and
//! table-tested; the exit code says how the workflow ended.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Client;

/// Exit codes of `watch` (and `submit --watch`): 0 succeeded, 1 failed, 3 cancelled, 4 the API
/// refused or could not be reached, 5 `--timeout` passed first (the workflow goes on).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CANCELLED: u8 = 3;
pub const EXIT_API: u8 = 4;
pub const EXIT_TIMEOUT: u8 = 5;

/// On a terminal, a workflow shows at most this many children one per row (the live ones first);
/// the rest are counted in one row.
const FOLD: usize = 8;

/// One line of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub depth: usize,
    /// What it is: kind and the input field that names it (node, VM, machine).
    pub label: String,
    pub state: String,
    /// Current step, or how it ended.
    pub step: String,
    /// 0..=1.
    pub fraction: f64,
    /// Progress reported by the running step, briefly.
    pub note: String,
}

/// The rows of a workflow detail (as the event stream sends it), parent first, each child under it.
/// With `fold`, a workflow with more than that many children shows the live ones (up to `fold`)
/// and one row counting the rest by state, so a rollout of hundreds of VMs fits a terminal.
pub fn rows(detail: &Value, fold: Option<usize>) -> Vec<Row> {
    let mut out = Vec::new();
    let steps_total = detail["steps"].as_array().map_or(0, Vec::len);
    push(detail, steps_total, 0, fold, &mut out);
    out
}

fn push(w: &Value, steps_total: usize, depth: usize, fold: Option<usize>, out: &mut Vec<Row>) {
    let state = w["state"].as_str().unwrap_or("?").to_string();
    let step = match state.as_str() {
        "succeeded" | "cancelled" => String::new(),
        "failed" => w["error"]["message"]
            .as_str()
            .or_else(|| w["error"].as_str())
            .unwrap_or("")
            .to_string(),
        _ => step_name(w).unwrap_or_default(),
    };
    out.push(Row {
        depth,
        label: label(w),
        state: if w["paused"] == true {
            format!("{state} (paused)")
        } else {
            state
        },
        step,
        fraction: fraction(w, steps_total),
        note: note(&w["progress"]),
    });
    let children = w["children"].as_array().cloned().unwrap_or_default();
    let (shown, folded): (Vec<&Value>, Vec<&Value>) = match fold {
        Some(max) if children.len() > max => {
            let live: Vec<&Value> = children.iter().filter(|c| !ended(c)).take(max).collect();
            let rest = children
                .iter()
                .filter(|c| !live.iter().any(|l| std::ptr::eq(*l, *c)))
                .collect();
            (live, rest)
        }
        _ => (children.iter().collect(), Vec::new()),
    };
    for c in shown {
        let total = c["steps_total"].as_u64().unwrap_or(0) as usize;
        push(c, total, depth + 1, fold, out);
    }
    if !folded.is_empty() {
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &folded {
            *by_state
                .entry(c["state"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let done = folded.iter().filter(|c| c["state"] == "succeeded").count();
        out.push(Row {
            depth: depth + 1,
            label: format!("... {} more", folded.len()),
            state: by_state
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            step: String::new(),
            fraction: done as f64 / folded.len() as f64,
            note: String::new(),
        });
    }
}

/// Whether a workflow (or child row) has ended.
pub fn ended(w: &Value) -> bool {
    matches!(
        w["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn step_name(w: &Value) -> Option<String> {
    // Child rows carry the step's name; a detail carries its step rows.
    if let Some(s) = w["step"].as_str() {
        return Some(s.to_string());
    }
    let i = w["step"].as_u64()? as usize;
    w["steps"][i]["name"].as_str().map(str::to_string)
}

fn label(w: &Value) -> String {
    let kind = w["kind"].as_str().unwrap_or("?");
    let input = &w["input"];
    let name = match (input["namespace"].as_str(), input["vmi"].as_str()) {
        (Some(ns), Some(vmi)) => Some(format!("{ns}/{vmi}")),
        _ => ["node", "name", "hostname", "machine"]
            .iter()
            .find_map(|k| input[*k].as_str().map(str::to_string)),
    };
    match name {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    }
}

/// How far along a workflow is: done when it succeeded; the step's own percentage when it reports
/// one; else its children's mean when it has any; else the share of its steps done.
pub fn fraction(w: &Value, steps_total: usize) -> f64 {
    if w["state"] == "succeeded" {
        return 1.0;
    }
    let p = &w["progress"];
    if let Some(pct) = p["percent"].as_f64() {
        return (pct / 100.0).clamp(0.0, 1.0);
    }
    if let (Some(done), Some(total)) = (p["bytes"].as_f64(), p["total_bytes"].as_f64())
        && total > 0.0
    {
        return (done / total).clamp(0.0, 1.0);
    }
    let step = w["step_index"]
        .as_u64()
        .or_else(|| w["step"].as_u64())
        .unwrap_or(0) as f64;
    let steps = steps_total.max(1) as f64;
    let kids = w["children"].as_array().filter(|k| !k.is_empty());
    let within = match kids {
        Some(kids) => {
            kids.iter()
                .map(|c| fraction(c, c["steps_total"].as_u64().unwrap_or(0) as usize))
                .sum::<f64>()
                / kids.len() as f64
        }
        None => 0.0,
    };
    ((step + within) / steps).clamp(0.0, 1.0)
}

/// A short form of a step's progress report: `k=v` pairs of its scalar fields.
fn note(progress: &Value) -> String {
    let Some(map) = progress.as_object() else {
        return String::new();
    };
    map.iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some(format!("{k}={s}")),
            Value::Number(n) => Some(format!("{k}={n}")),
            Value::Bool(b) => Some(format!("{k}={b}")),
            Value::Array(a) if !a.is_empty() => Some(format!("{k}={}", a.len())),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn bar(fraction: f64, width: usize) -> String {
    let full = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(full),
        ".".repeat(width - full.min(width))
    )
}

/// A row as one line of text.
pub fn line(r: &Row, with_bar: bool) -> String {
    let indent = "  ".repeat(r.depth);
    let label = format!("{indent}{}", r.label);
    let mut s = format!("{label:<40} {:<20}", r.state);
    if with_bar {
        s.push_str(&format!(
            " {} {:>3}%",
            bar(r.fraction, 20),
            (r.fraction * 100.0).floor()
        ));
    }
    if !r.step.is_empty() {
        s.push_str(&format!(" {}", r.step));
    }
    if !r.note.is_empty() {
        s.push_str(&format!("  {}", r.note));
    }
    s
}

/// Follows workflow `id` until it ends (or `timeout`), printing its progress; the exit code says
/// how it ended.
pub async fn watch(client: &Client, id: &str, timeout: Option<Duration>) -> ExitCode {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let start = Instant::now();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut drawn = 0usize;
    let mut last: BTreeMap<(usize, String), String> = BTreeMap::new();
    let mut final_state: Option<String> = None;
    // A dropped connection (an API restart) is reopened; the stream starts with the current view.
    'reconnect: loop {
        let mut events = match client
            .events(&format!("/v1/workflows/{id}/events?depth=2"))
            .await
        {
            Ok(e) => e,
            Err(crate::client::Error::Unreachable { .. }) if final_state.is_none() && drawn > 0 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue 'reconnect;
            }
            Err(e) => {
                eprintln!("drover: {e}");
                return ExitCode::from(EXIT_API);
            }
        };
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        eprintln!(
                            "drover: workflow {id} has not ended after {:.0} s; it goes on",
                            start.elapsed().as_secs_f64()
                        );
                        return ExitCode::from(EXIT_TIMEOUT);
                    }
                },
                None => events.next().await,
            };
            let (name, data) = match next {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => {
                    if final_state.is_some() {
                        break 'reconnect;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'reconnect;
                }
            };
            match name.as_str() {
                "workflow" => {
                    let rows = rows(&data, tty.then_some(FOLD));
                    if tty {
                        drawn = redraw(&rows, drawn);
                    } else {
                        let t = start.elapsed().as_secs_f64();
                        for r in &rows {
                            let text = line(r, false);
                            let key = (r.depth, r.label.clone());
                            if last.get(&key) != Some(&text) {
                                println!("[{t:>6.1}s] {text}");
                                last.insert(key, text);
                            }
                        }
                        drawn = drawn.max(1);
                    }
                }
                "end" => {
                    final_state = Some(data["state"].as_str().unwrap_or("deleted").to_string());
                    break 'reconnect;
                }
                "error" => {
                    eprintln!(
                        "drover: {}",
                        data["detail"].as_str().unwrap_or("stream error")
                    );
                }
                _ => {}
            }
        }
    }
    let state = final_state.unwrap_or_default();
    println!(
        "workflow {id} {state} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    match state.as_str() {
        "succeeded" => ExitCode::SUCCESS,
        "cancelled" => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

/// Draws `rows` over the `drawn` lines drawn before; returns how many lines are now drawn.
fn redraw(rows: &[Row], drawn: usize) -> usize {
    let width = terminal_width();
    let mut out = std::io::stdout().lock();
    if drawn > 0 {
        let _ = write!(out, "\x1b[{drawn}F");
    }
    for r in rows {
        let mut text = line(r, true);
        if text.chars().count() > width {
            text = text.chars().take(width.saturating_sub(1)).collect();
        }
        let _ = writeln!(out, "\x1b[2K{text}");
    }
    // Rows that went away (never, today: children are only added) are cleared.
    for _ in rows.len()..drawn {
        let _ = writeln!(out, "\x1b[2K");
    }
    let _ = out.flush();
    rows.len().max(drawn)
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout() -> Value {
        json!({
            "kind": "rolling-maintenance", "state": "running", "step": 1, "paused": false,
            "input": {}, "progress": null,
            "steps": [{"name": "plan"}, {"name": "rollout"}, {"name": "verify"}],
            "children": [
                {"kind": "drain-node", "state": "succeeded", "step": null, "step_index": 3,
                 "steps_total": 3, "input": {"node": "n1"}, "children": []},
                {"kind": "drain-node", "state": "running", "step": "migrate", "step_index": 1,
                 "steps_total": 4, "input": {"node": "n2"}, "progress": {"remaining_pods": 2, "refused": []},
                 "children": [
                    {"kind": "migrate-vmi", "state": "running", "step": "wait", "step_index": 1,
                     "steps_total": 2, "input": {"namespace": "vmo", "vmi": "vm-a"},
                     "progress": {"phase": "Running", "target": "n3"}},
                    {"kind": "migrate-vmi", "state": "succeeded", "step_index": 2,
                     "steps_total": 2, "input": {"namespace": "vmo", "vmi": "vm-b"}}
                 ]}
            ]
        })
    }

    #[test]
    fn a_rollout_shows_each_node_and_vm_under_it() {
        let r = rows(&rollout(), None);
        let labels: Vec<(usize, &str)> = r.iter().map(|r| (r.depth, r.label.as_str())).collect();
        assert_eq!(
            labels,
            [
                (0, "rolling-maintenance"),
                (1, "drain-node n1"),
                (1, "drain-node n2"),
                (2, "migrate-vmi vmo/vm-a"),
                (2, "migrate-vmi vmo/vm-b"),
            ]
        );
        assert_eq!(r[0].step, "rollout");
        assert_eq!(r[2].note, "remaining_pods=2");
        assert_eq!(r[3].note, "phase=Running target=n3");
        assert_eq!(r[1].fraction, 1.0);
        // vm-a: 1 of 2 steps; the drain: step 1 of 4 plus its VMs' mean (0.5 + 1) / 2.
        assert_eq!(r[3].fraction, 0.5);
        assert_eq!(r[2].fraction, (1.0 + 0.75) / 4.0);
        // The rollout: step 1 of 3 plus its drains' mean.
        assert_eq!(r[0].fraction, (1.0 + (1.0 + 1.75 / 4.0) / 2.0) / 3.0);
    }

    #[test]
    fn many_children_fold_into_one_row_with_the_live_ones_shown() {
        let mut w = json!({"kind": "drain-node", "state": "running", "step": 0, "input": {},
            "steps": [{"name": "migrate"}], "children": []});
        let kids: Vec<Value> = (0..20)
            .map(|i| {
                json!({"kind": "migrate-vmi", "state": if i == 7 || i == 12 { "running" } else if i < 15 { "succeeded" } else { "pending" },
                       "input": {"namespace": "ns", "vmi": format!("vm-{i}")}, "steps_total": 2, "step_index": 1})
            })
            .collect();
        w["children"] = json!(kids);
        let r = rows(&w, Some(3));
        let labels: Vec<&str> = r.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "drain-node",
                "migrate-vmi ns/vm-7",
                "migrate-vmi ns/vm-12",
                "migrate-vmi ns/vm-15",
                "... 17 more"
            ]
        );
        assert_eq!(r[4].state, "4 pending, 13 succeeded");
        assert_eq!(rows(&w, None).len(), 21);
    }

    #[test]
    fn reported_percentages_and_bytes_win_and_failures_show_their_message() {
        let w = json!({"state": "running", "progress": {"percent": 42.5}});
        assert_eq!(fraction(&w, 5), 0.425);
        let w = json!({"state": "running", "progress": {"bytes": 25, "total_bytes": 100}});
        assert_eq!(fraction(&w, 5), 0.25);
        let failed = json!({"kind": "import-vm", "state": "failed", "input": {"name": "web"},
            "error": {"message": "qemu-img: not a disk image"}, "step": 2,
            "steps": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]});
        let r = rows(&failed, None);
        assert_eq!(r[0].label, "import-vm web");
        assert_eq!(r[0].step, "qemu-img: not a disk image");
        let text = line(&r[0], true);
        assert!(text.contains("[##########..........]  50%"), "{text}");
    }
}
