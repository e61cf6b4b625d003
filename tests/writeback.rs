//! Ticket-driven workflows end to end: the lab's Jira and ServiceNow send signed webhooks to the
//! API over real HTTP, workflows run against the lab's cluster, and their progress goes back to
//! the ticket through the ticketing adapters (comments, work notes, transitions), exactly once,
//! in order, through worker kills and ticketing outages.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_lab::{JiraWebhook, Lab, LabConfig, LabHandle, OutboundMessage, TicketFaults};
use drover_workflows::State;
use drover_workflows::ports::Ports;
use serde_json::json;

use crate::api::{Api, start_api_full};
use crate::harness::*;

const JIRA_HOOK_SECRET: &str = "jira-webhook-secret-0123";
const SN_HOOK_SECRET: &str = "servicenow-webhook-secret-0123";

/// Everything a ticket-driven test needs; dropped, it stops.
#[allow(dead_code)]
pub struct TicketRig {
    pub redis: Redis,
    pub store: drover_store::Store,
    pub lab: LabHandle,
    pub api: Api,
    pub workers: Vec<InProcessWorker>,
    pub dir: PathBuf,
    /// The tickets config workers use (for worker processes started by a test).
    pub tickets_toml: String,
    pub secrets_toml: String,
}

fn write_secrets(dir: &Path, lab_config: &LabConfig) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let t = &lab_config.ticketing;
    for (name, value) in [
        ("jira-hook", JIRA_HOOK_SECRET),
        ("sn-hook", SN_HOOK_SECRET),
        ("jira-token", t.jira.api_token.as_str()),
        ("sn-password", t.servicenow.password.as_str()),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
    ["jira-hook", "sn-hook", "jira-token", "sn-password"]
        .iter()
        .map(|n| format!("{n} = {{ file = {:?} }}\n", dir.join(n)))
        .collect()
}

/// Redis, the lab (cluster time-scaled, Jira and ServiceNow), the API with `rules` (TOML
/// `[[rules]]` entries) and `workers` in-process workers with the cluster and the ticketing
/// adapters. The lab's Jira sends its webhooks, and its ServiceNow its outbound messages, to the
/// API.
pub async fn ticket_rig(name: &str, rules: &str, workers: usize) -> TicketRig {
    ticket_rig_with(name, "", rules, workers).await
}

/// [`ticket_rig`] with more `[hooks]` settings (`top`: keys such as `stale_after_secs = 1`).
pub async fn ticket_rig_with(name: &str, top: &str, rules: &str, workers: usize) -> TicketRig {
    let redis = Redis::start_with(true);
    let store = redis.store().await;
    let lab_config = LabConfig::reference().with_time_scale(600.0);
    let dir = std::env::temp_dir().join(format!("drover-wb-{name}-{}", std::process::id()));
    let secrets_toml = write_secrets(&dir, &lab_config);
    let bot = lab_config.ticketing.jira.api_account.account_id.clone();
    let sn_user = lab_config.ticketing.servicenow.user.clone();
    let lab = Lab::start(lab_config).await.expect("lab starts");
    let secrets: drover_worker::secrets::Config = toml::from_str(&secrets_toml).unwrap();
    let secrets = Arc::new(drover_worker::secrets::ConfigSecrets::new(secrets, None));
    let (jira_email, _) = lab.jira_credentials();
    let (sn_login, _) = lab.servicenow_credentials();
    let tickets_toml = format!(
        "timeout_ms = 3000\n[jira]\nurl = {:?}\nemail = {jira_email:?}\napi_token = {{ secret = \"jira-token\" }}\nwrites_per_second_per_ticket = 8.0\n[servicenow]\nurl = {:?}\nuser = {sn_login:?}\npassword = {{ secret = \"sn-password\" }}\nwrites_per_second_per_ticket = 8.0\n",
        lab.jira_url(),
        lab.servicenow_url()
    );
    let tickets_config: drover_tickets::Config = toml::from_str(&tickets_toml).unwrap();
    let tickets = drover_tickets::Clients::new(tickets_config, secrets.clone()).port();
    let hooks_toml = format!(
        "{top}\n[jira]\nsecret = {{ secret = \"jira-hook\" }}\naccount_id = {bot:?}\n\n[servicenow]\nsecret = {{ secret = \"sn-hook\" }}\nuser = {sn_user:?}\n\n{rules}"
    );
    let hooks: drover_api::hooks::Config = toml::from_str(&hooks_toml).unwrap();
    hooks.validate().unwrap();
    let api = start_api_full(
        &store,
        drover_kinds::builtin(),
        |_| {},
        Some(Arc::new(drover_api::hooks::Hooks {
            config: hooks,
            secrets,
            tickets: Some(tickets.clone()),
        })),
    )
    .await;
    lab.jira()
        .add_webhook(JiraWebhook {
            name: "drover".into(),
            url: format!("{}/v1/hooks/jira", api.base),
            events: vec!["jira:issue_created".into(), "jira:issue_updated".into()],
            jql: String::new(),
            secret: Some(JIRA_HOOK_SECRET.into()),
            exclude_body: false,
        })
        .unwrap();
    lab.servicenow().set_outbound(Some(OutboundMessage::new(
        format!("{}/v1/hooks/servicenow", api.base),
        SN_HOOK_SECRET.to_string(),
    )));
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url()))
        .await
        .expect("kube client");
    let workers = (0..workers)
        .map(|i| {
            let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
                .with_kube(cluster.clone().port())
                .with_tickets(tickets.clone());
            InProcessWorker::start_with_ports(&store, worker_config(&format!("wb-{i}")), ports)
        })
        .collect();
    TicketRig {
        redis,
        store,
        lab,
        api,
        workers,
        dir,
        tickets_toml,
        secrets_toml,
    }
}

pub use drover_lab::ticketing::jira::adf::adf_text;

/// The workflows the rule `rule` started (at most 10).
async fn started_by(rig: &TicketRig, rule: &str) -> Vec<drover_store::WorkflowView> {
    let filter = drover_store::Filter {
        label: Some(("drover.io/rule".into(), rule.into())),
        ..Default::default()
    };
    rig.store.list(&filter, 10, None).await.unwrap().items
}

/// The Jira comments of `key` written by Drover (they carry the `drover` property), oldest first.
pub fn drover_comments(lab: &LabHandle, key: &str) -> Vec<String> {
    lab.jira()
        .comments(key)
        .iter()
        .filter(|c| {
            c["properties"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["key"] == "drover"))
        })
        .map(|c| adf_text(&c["body"]))
        .collect()
}

fn status(lab: &LabHandle, key: &str) -> String {
    lab.jira().issue(key).unwrap()["fields"]["status"]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

const DRAIN_RULE: &str = r#"
[[rules]]
name = "drain"
source = "jira"
on = "status"
to = "In Progress"
only = { "issuetype.name" = "Change" }
kind = "drain-node"
input = { maintenance = "wait-for-signal", non_migratable = "shutdown-restart", poll_ms = 100 }
fields = { node = "customfield_10050" }
approval = { to = "Approved", signal = "maintenance-done" }
on_success = "Done"
"#;

/// A Jira transition starts a drain-node; its progress arrives as comments, in order; the
/// approval transition ends its maintenance wait; the ticket is moved to Done; Drover's own
/// comments and transition start nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jira_transition_drives_a_drain_with_comments_and_an_approval() {
    let rig = ticket_rig("jira-drain", DRAIN_RULE, 2).await;
    let jira = rig.lab.jira();
    let key = jira
        .create_issue(json!({
            "project": {"key": "OPS"}, "summary": "Firmware update on worker-04",
            "issuetype": {"name": "Change"}, "customfield_10050": "worker-04",
        }))
        .unwrap();
    jira.transition(&key, "Start Progress").unwrap();
    let drain =
        crate::lab::support::wait_for("the drain to start", Duration::from_secs(20), || async {
            let page = started_by(&rig, "drain").await;
            page.first().map(|w| w.id.clone())
        })
        .await;
    // It drains and waits for the approval, and says so on the ticket.
    crate::lab::support::wait_for(
        "the approval request on the ticket",
        Duration::from_secs(60),
        || async {
            drover_comments(&rig.lab, &key)
                .iter()
                .any(|c| c.contains("waits for approval"))
                .then_some(())
        },
    )
    .await;
    let v = rig.store.get(&drain).await.unwrap().unwrap();
    assert_eq!(v.waiting_on.as_deref(), Some("signal:maintenance-done"));
    assert_eq!(v.input["node"], "worker-04");
    jira.transition(&key, "Approve").unwrap();
    let done = wait_all_finished(
        &rig.store,
        std::slice::from_ref(&drain),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done[0].state, State::Succeeded, "{:?}", done[0].error);
    crate::lab::support::wait_for("the ticket to be Done", Duration::from_secs(30), || async {
        (status(&rig.lab, &key) == "Done").then_some(())
    })
    .await;
    crate::lab::support::wait_for("the last comment", Duration::from_secs(30), || async {
        drover_comments(&rig.lab, &key)
            .last()
            .is_some_and(|c| c.contains("succeeded"))
            .then_some(())
    })
    .await;
    let comments = drover_comments(&rig.lab, &key);
    assert!(
        comments[0].starts_with("Drover started drain-node"),
        "{comments:#?}"
    );
    let moved = comments.iter().filter(|c| c.starts_with("VM ")).count();
    let vms = done[0].result.as_ref().unwrap()["migrated"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(moved, vms, "a comment per VM moved: {comments:#?}");
    let waiting = comments
        .iter()
        .position(|c| c.contains("waits for approval"))
        .unwrap();
    assert_eq!(
        waiting,
        1 + moved,
        "in the order it happened: {comments:#?}"
    );
    assert_eq!(comments.len(), moved + 3, "{comments:#?}");
    // Who approved is in the drain's maintenance output.
    let outputs = rig
        .store
        .get(&drain)
        .await
        .unwrap()
        .unwrap()
        .outputs
        .unwrap();
    assert!(
        outputs
            .values()
            .any(|o| o.to_string().contains("Alice Example")),
        "{outputs:?}"
    );
    let counters = rig.lab.ticket_counters();
    assert_eq!(counters.jira_duplicate_markers, 0);
    // Drover's comments and its Done transition fired webhooks; none started anything.
    let started = started_by(&rig, "drain").await;
    assert_eq!(started.len(), 1);
}

const ROLLOUT_RULE: &str = r#"
[[rules]]
name = "change"
source = "servicenow"
on = "status"
to = "Implement"
kind = "rolling-maintenance"
input = { max_in_maintenance = 1, non_migratable = "shutdown-restart", poll_ms = 100 }
fields = { nodes = "u_nodes[]" }
on_success = "Review"
"#;

/// A ServiceNow change request reaching Implement drives a rolling maintenance, with a work note
/// per node drained, and is moved to Review when it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_servicenow_change_drives_a_rolling_maintenance_with_work_notes() {
    let rig = ticket_rig("sn-rollout", ROLLOUT_RULE, 2).await;
    let sn = rig.lab.servicenow();
    let change = sn
        .create_change(json!({
            "short_description": "Kernel update, rack A", "type": "normal", "state": "-2",
            "u_nodes": "worker-02,worker-03",
        }))
        .unwrap();
    let sys_id = change["sys_id"].as_str().unwrap().to_string();
    sn.update_change(&sys_id, json!({"state": "-1"})).unwrap();
    let notes = |rig: &TicketRig| -> Vec<String> {
        rig.lab
            .servicenow()
            .journal(&sys_id)
            .iter()
            .filter(|n| n["element"] == "work_notes")
            .filter_map(|n| n["value"].as_str().map(String::from))
            .filter(|t| t.contains("[drover:"))
            .collect()
    };
    crate::lab::support::wait_for("the change in Review", Duration::from_secs(120), || async {
        (rig.lab.servicenow().change(&sys_id).unwrap()["state"] == "0").then_some(())
    })
    .await;
    crate::lab::support::wait_for("the final note", Duration::from_secs(30), || async {
        notes(&rig)
            .iter()
            .any(|n| n.contains("Drover finished rolling-maintenance"))
            .then_some(())
    })
    .await;
    let notes = notes(&rig);
    assert!(
        notes[0].contains("Drover started rolling-maintenance"),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("Node worker-02 drained")),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("Node worker-03 drained")),
        "{notes:#?}"
    );
    assert_eq!(notes.len(), 4, "{notes:#?}");
    assert_eq!(rig.lab.ticket_counters().servicenow_duplicate_markers, 0);
}

/// With Jira down for a while, the comments wait and arrive after it returns, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comments_written_during_an_outage_arrive_after_it_in_order() {
    let rig = ticket_rig("outage", DRAIN_RULE, 2).await;
    let jira = rig.lab.jira();
    let key = jira
        .create_issue(json!({
            "project": {"key": "OPS"}, "summary": "Outage", "issuetype": {"name": "Change"},
            "customfield_10050": "worker-04",
        }))
        .unwrap();
    jira.transition(&key, "Start Progress").unwrap();
    crate::lab::support::wait_for("the first comment", Duration::from_secs(20), || async {
        (!drover_comments(&rig.lab, &key).is_empty()).then_some(())
    })
    .await;
    jira.set_down(true);
    // The drain goes on meanwhile; its write-backs queue up behind the ticket's lock.
    crate::lab::support::wait_for("write-backs held", Duration::from_secs(60), || async {
        let v = rig
            .store
            .list(
                &drover_store::Filter {
                    kind: Some("ticket-update".into()),
                    ..Default::default()
                },
                500,
                None,
            )
            .await
            .unwrap();
        (v.items.iter().filter(|w| !w.state.is_terminal()).count() >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    jira.set_down(false);
    crate::lab::support::wait_for("the approval request", Duration::from_secs(120), || async {
        drover_comments(&rig.lab, &key)
            .iter()
            .any(|c| c.contains("waits for approval"))
            .then_some(())
    })
    .await;
    let comments = drover_comments(&rig.lab, &key);
    assert!(comments[0].starts_with("Drover started"), "{comments:#?}");
    assert!(
        comments.last().unwrap().contains("waits for approval"),
        "in order: {comments:#?}"
    );
    assert!(
        comments[1..comments.len() - 1]
            .iter()
            .all(|c| c.starts_with("VM ")),
        "{comments:#?}"
    );
    assert_eq!(rig.lab.ticket_counters().jira_duplicate_markers, 0);
    let _ = TicketFaults::default();
}

const FAN_RULE: &str = r#"
[[rules]]
name = "fan"
source = "jira"
on = "status"
to = "In Progress"
kind = "synthetic"
input = { steps = 1, fan_out = { step = 0, children = 5, child = { steps = 1, min_ms = 50, max_ms = 200 } } }
"#;

/// The config file of a worker process that writes back to the rig's Jira and ServiceNow.
fn worker_config_file(rig: &TicketRig) -> PathBuf {
    let mut root = toml::Table::new();
    root.insert(
        "secrets".into(),
        toml::Value::Table(toml::from_str(&rig.secrets_toml).unwrap()),
    );
    root.insert(
        "tickets".into(),
        toml::Value::Table(toml::from_str(&rig.tickets_toml).unwrap()),
    );
    let path = rig.dir.join("worker.toml");
    std::fs::write(&path, toml::to_string(&root).unwrap()).unwrap();
    path
}

/// Worker processes SIGKILLed while Jira holds the answer to their comment (the comment is
/// made, the worker never learns it): the step runs again elsewhere, finds its marker, and every
/// comment is on the ticket exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_mid_write_back_leave_each_comment_exactly_once() {
    let rig = ticket_rig("kill", FAN_RULE, 0).await;
    let config = worker_config_file(&rig);
    let url = rig.redis.url();
    let env = [("DROVER_CONFIG", config.to_str().unwrap())];
    let spawn = |name: &str| WorkerProcess::spawn_with(&url, name, &rig.dir, &env);
    let mut workers = vec![spawn("k-0"), spawn("k-1")];
    let jira = rig.lab.jira();
    jira.faults(TicketFaults {
        response_delay_ms: 1500,
        method: Some("POST".into()),
        path_contains: Some("/comment".into()),
        ..TicketFaults::default()
    });
    let key = jira
        .create_issue(
            json!({"project": {"key": "OPS"}, "summary": "Fan", "issuetype": {"name": "Task"}}),
        )
        .unwrap();
    jira.transition(&key, "Start Progress").unwrap();
    // Twice: as soon as a new comment is on the ticket (its answer still held back), kill every
    // worker and start new ones.
    for round in 0..2 {
        let seen = rig.lab.ticket_counters().jira_comments;
        crate::lab::support::wait_for("a comment made", Duration::from_secs(30), || async {
            (rig.lab.ticket_counters().jira_comments > seen).then_some(())
        })
        .await;
        for w in &mut workers {
            w.kill9();
        }
        workers = vec![
            spawn(&format!("k-{round}-a")),
            spawn(&format!("k-{round}-b")),
        ];
    }
    crate::lab::support::wait_for("every comment", Duration::from_secs(90), || async {
        drover_comments(&rig.lab, &key)
            .last()
            .is_some_and(|c| c.starts_with("Drover finished"))
            .then_some(())
    })
    .await;
    let comments = drover_comments(&rig.lab, &key);
    assert_eq!(
        comments.len(),
        7,
        "started, 5 children, finished: {comments:#?}"
    );
    assert!(
        comments[0].starts_with("Drover started synthetic"),
        "{comments:#?}"
    );
    assert!(
        comments[6].starts_with("Drover finished synthetic"),
        "{comments:#?}"
    );
    assert_eq!(rig.lab.ticket_counters().jira_duplicate_markers, 0);
    // The kills cut write-backs off mid-call: some comment step ran more than once.
    let updates = rig
        .store
        .list(
            &drover_store::Filter {
                kind: Some("ticket-update".into()),
                ..Default::default()
            },
            50,
            None,
        )
        .await
        .unwrap();
    let mut reruns = 0;
    for u in &updates.items {
        let v = rig.store.get(&u.id).await.unwrap().unwrap();
        let attempts = v
            .history
            .unwrap_or_default()
            .iter()
            .filter(|h| h["step"] == 0)
            .count();
        reruns += attempts.saturating_sub(1);
        if v.outputs
            .unwrap_or_default()
            .get(&0)
            .is_some_and(|o| o["already"] == true)
        {
            reruns += 100;
        }
    }
    assert!(
        reruns >= 100,
        "a re-run found its comment already there ({reruns})"
    );
}

/// A webhook that arrives late, after its ticket moved on (and the change that moved it was never
/// delivered), is checked against the ticket as it is now and starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_event_is_checked_against_the_ticket_as_it_is_now() {
    let rig = ticket_rig_with("stale", "stale_after_secs = 1", DRAIN_RULE, 1).await;
    let jira = rig.lab.jira();
    let key = jira
        .create_issue(json!({
            "project": {"key": "OPS"}, "summary": "Stale", "issuetype": {"name": "Change"},
            "customfield_10050": "worker-04",
        }))
        .unwrap();
    crate::lab::support::wait_for(
        "the creation delivered",
        Duration::from_secs(10),
        || async {
            jira.deliveries()
                .iter()
                .all(|d| d.attempts.iter().any(|a| a.ok()))
                .then_some(())
        },
    )
    .await;
    jira.delay_next_delivery(Duration::from_millis(2500));
    jira.transition(&key, "Start Progress").unwrap();
    // The ticket moves on, and that change never reaches Drover.
    let hooks: Vec<u64> = jira
        .webhooks()
        .iter()
        .filter_map(|w| w["id"].as_u64())
        .collect();
    for id in &hooks {
        assert!(jira.remove_webhook(*id));
    }
    jira.transition(&key, "Stop Progress").unwrap();
    let late =
        crate::lab::support::wait_for("the late delivery", Duration::from_secs(15), || async {
            jira.deliveries().into_iter().find(|d| {
                d.body.contains("In Progress") && d.attempts.iter().any(|a| a.status.is_some())
            })
        })
        .await;
    assert_eq!(late.attempts.last().unwrap().status, Some(202), "{late:?}");
    let started = started_by(&rig, "drain").await;
    assert!(started.is_empty(), "nothing started from the stale event");
}
