//! The ticketing adapters (`drover-tickets`) against the lab's Jira Cloud site and ServiceNow
//! instance over real HTTP: reads (status, labels, a version that grows with every change),
//! comments and work notes with their markers (seen by a second client, as another worker process
//! would), transitions by status name, state name and number (a ticket already there is left
//! alone), the systems' own refusals (unknown status, unknown ticket, wrong credentials), faults
//! (429 with Retry-After, 5xx, a site that is down, a request that times out, nothing listening),
//! the per-ticket write pacing, and secrets that never show in an error or a Debug print.
//!
//! Each test starts its own lab (no cluster inventory) on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_lab::{Lab, LabConfig, LabHandle, RateLimit, Scenario, TicketFaults};
use drover_tickets::{Clients, Config, Jira, ServiceNow};
use drover_worker::secrets::{ConfigSecrets, Source};
use drover_workflows::ports::secrets::SecretRef;
use drover_workflows::ports::tickets::{System, TicketError, TicketRef, Tickets};
use serde_json::json;

use crate::lab::support;

const JIRA_TOKEN: &str = "jira-token";
const SN_PASSWORD: &str = "sn-password";

/// The worker's secrets as files, read at each use: rewriting one rotates it.
struct SecretFiles {
    dir: PathBuf,
    port: Arc<ConfigSecrets>,
}

impl SecretFiles {
    fn set(&self, name: &str, value: &str) {
        std::fs::write(self.dir.join(name), value).expect("secret file");
    }
}

async fn lab() -> LabHandle {
    support::crypto();
    Lab::start(LabConfig {
        scenario: Scenario::default(),
        ..LabConfig::reference()
    })
    .await
    .expect("lab starts")
}

/// The `[tickets]` config for the lab, writes paced at `rate` per ticket.
fn config(lab: &LabHandle, rate: f64) -> Config {
    Config {
        jira: Some(Jira {
            url: lab.jira_url(),
            email: lab.jira_credentials().0,
            api_token: SecretRef::new(JIRA_TOKEN),
            writes_per_second_per_ticket: rate,
        }),
        servicenow: Some(ServiceNow {
            url: lab.servicenow_url(),
            user: lab.servicenow_credentials().0,
            password: SecretRef::new(SN_PASSWORD),
            writes_per_second_per_ticket: rate,
        }),
        timeout_ms: 10_000,
    }
}

/// The lab's credentials under the names the config uses.
fn secrets(lab: &LabHandle) -> SecretFiles {
    let dir = support::temp_dir("tickets");
    let mut config = drover_worker::secrets::Config::default();
    for name in [JIRA_TOKEN, SN_PASSWORD] {
        config
            .insert(name, Source::File(dir.join(name)))
            .expect("secret name");
    }
    let files = SecretFiles {
        port: Arc::new(ConfigSecrets::new(config, None)),
        dir,
    };
    files.set(JIRA_TOKEN, &lab.jira_credentials().1);
    files.set(SN_PASSWORD, &lab.servicenow_credentials().1);
    files
}

fn clients(config: Config, secrets: &SecretFiles) -> Clients {
    config.validate().expect("valid config");
    Clients::new(config, secrets.port.clone())
}

fn issue(lab: &LabHandle, summary: &str) -> TicketRef {
    let key = lab
        .jira()
        .create_issue(json!({
            "project": {"key": "OPS"}, "summary": summary, "issuetype": {"name": "Change"},
            "labels": ["drover"],
        }))
        .expect("issue");
    TicketRef {
        system: System::Jira,
        display: key.clone(),
        key,
    }
}

fn change(lab: &LabHandle) -> TicketRef {
    let record = lab
        .servicenow()
        .create_change(json!({"short_description": "Patch rack A"}))
        .expect("change");
    TicketRef {
        system: System::Servicenow,
        key: record["sys_id"].as_str().expect("sys_id").into(),
        display: record["number"].as_str().expect("number").into(),
    }
}

fn permanent(r: Result<impl std::fmt::Debug, TicketError>) -> String {
    match r {
        Err(TicketError::Permanent(m)) => m,
        other => panic!("expected a Permanent error, got {other:?}"),
    }
}

fn transient(r: Result<impl std::fmt::Debug, TicketError>) -> (String, Option<Duration>) {
    match r {
        Err(TicketError::Transient {
            message,
            retry_after,
        }) => (message, retry_after),
        other => panic!("expected a Transient error, got {other:?}"),
    }
}

/// Requests of one method whose path contains `part`.
fn count(requests: &[drover_lab::TicketRequest], method: &str, part: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == method && r.path.contains(part))
        .count()
}

#[tokio::test]
async fn jira_reads_comments_once_and_transitions() {
    let lab = lab().await;
    let secrets = secrets(&lab);
    let c = clients(config(&lab, 2.0), &secrets);
    let t = issue(&lab, "Patch rack A");

    // Read: status, labels, fields; the version is the newest changelog id and grows.
    let s0 = c.read(&t).await.expect("read");
    assert_eq!((s0.status.as_str(), s0.version), ("To Do", 0));
    assert_eq!(s0.labels, vec!["drover".to_string()]);
    assert_eq!(s0.fields["summary"], "Patch rack A");
    lab.jira()
        .transition(&t.key, "Start Progress")
        .expect("human moves it");
    let s1 = c.read(&t).await.expect("read");
    assert_eq!(s1.status, "In Progress");
    let newest = lab.jira().issue(&t.key).expect("issue")["changelog"]["histories"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|h| h["id"].as_str())
        .and_then(|id| id.parse::<u64>().ok())
        .expect("a changelog id");
    assert_eq!(s1.version, newest);
    lab.jira()
        .set_field(&t.key, "labels", json!(["drover", "rack-a"]))
        .expect("human labels it");
    let s2 = c.read(&t).await.expect("read");
    assert!(s2.version > s1.version, "{} > {}", s2.version, s1.version);
    assert_eq!(s2.labels, vec!["drover".to_string(), "rack-a".to_string()]);

    // Comment with a marker: absent before, present after, for this client and another one.
    let marker = "wf-1/drain/node-a";
    assert!(!c.has_marker(&t, marker).await.expect("has_marker"));
    lab.jira()
        .comment(&t.key, "A human comment without a marker.")
        .expect("human comment");
    c.comment(&t, "Drained node-a.\nNext: node-b\n\nSee the run.", marker)
        .await
        .expect("comment");
    assert!(c.has_marker(&t, marker).await.expect("has_marker"));
    let other = clients(config(&lab, 2.0), &secrets);
    assert!(other.has_marker(&t, marker).await.expect("has_marker"));
    assert!(
        !other
            .has_marker(&t, "wf-1/drain")
            .await
            .expect("has_marker")
    );
    let comments = lab.jira().comments(&t.key);
    let ours = comments.last().expect("our comment");
    assert_eq!(ours["properties"][0]["key"], "drover");
    assert_eq!(ours["properties"][0]["value"], json!({"marker": marker}));
    assert_eq!(
        ours["body"]["content"].as_array().map(Vec::len),
        Some(2),
        "two paragraphs: {}",
        ours["body"]
    );
    assert_eq!(
        ours["body"]["content"][0]["content"][1]["type"],
        "hardBreak"
    );

    // Transition by target status (any case); a second one finds it there and sends nothing.
    c.transition(&t, "approved").await.expect("transition");
    let s3 = c.read(&t).await.expect("read");
    assert_eq!(s3.status, "Approved");
    assert!(s3.version > s2.version);
    let posts = count(&lab.jira().requests(), "POST", "/transitions");
    c.transition(&t, "Approved").await.expect("already there");
    assert_eq!(count(&lab.jira().requests(), "POST", "/transitions"), posts);
    // By transition name too.
    c.transition(&t, "Done").await.expect("transition");
    assert_eq!(c.read(&t).await.expect("read").status, "Done");

    // An unreachable status names the ones that are reachable.
    let e = permanent(c.transition(&t, "Closed").await);
    assert!(
        e.contains("no transition from \"Done\"") && e.contains("Reopen (to To Do)"),
        "{e}"
    );

    // Jira's own 404 message.
    let missing = TicketRef {
        key: "OPS-999".into(),
        display: "OPS-999".into(),
        ..t.clone()
    };
    let e = permanent(c.read(&missing).await);
    assert!(
        e.contains("404") && e.contains("Issue does not exist"),
        "{e}"
    );
    let e = permanent(c.comment(&missing, "x", "m").await);
    assert!(e.contains("404"), "{e}");
    assert_eq!(lab.ticket_counters().jira_duplicate_markers, 0);
    calls_measured("jira");
}

/// Every call to `system` was measured by verb and status (this process's metrics).
fn calls_measured(system: &str) {
    let m = crate::metrics::parse(&drover_telemetry::metrics().encode());
    let calls = "drover_outgoing_call_duration_seconds_count";
    assert!(
        m.sum(
            calls,
            &[("system", system), ("verb", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert!(m.sum(calls, &[("system", system), ("status", "404")]) >= 1.0);
    let writes = m.sum(calls, &[("system", system), ("verb", "POST")])
        + m.sum(calls, &[("system", system), ("verb", "PATCH")]);
    assert!(writes >= 1.0, "no write of {system} measured");
}

#[tokio::test]
async fn servicenow_reads_work_notes_once_and_states() {
    let lab = lab().await;
    let secrets = secrets(&lab);
    let c = clients(config(&lab, 2.0), &secrets);
    let t = change(&lab);

    let s0 = c.read(&t).await.expect("read");
    assert_eq!((s0.status.as_str(), s0.version), ("New", 0));
    assert!(s0.labels.is_empty());
    assert_eq!(s0.fields["number"], json!(t.display));
    lab.servicenow()
        .update_change(&t.key, json!({"state": "-4"}))
        .expect("human assesses it");
    let s1 = c.read(&t).await.expect("read");
    assert_eq!((s1.status.as_str(), s1.version), ("Assess", 1));

    let marker = "wf-2/notify";
    assert!(!c.has_marker(&t, marker).await.expect("has_marker"));
    lab.servicenow()
        .update_change(
            &t.key,
            json!({"work_notes": "A human note [drover:wf-2/other]"}),
        )
        .expect("human note");
    assert!(!c.has_marker(&t, marker).await.expect("has_marker"));
    c.comment(&t, "Drained node-a.\n", marker)
        .await
        .expect("work note");
    assert!(c.has_marker(&t, marker).await.expect("has_marker"));
    let other = clients(config(&lab, 2.0), &secrets);
    assert!(other.has_marker(&t, marker).await.expect("has_marker"));
    assert!(!other.has_marker(&t, "wf-2").await.expect("has_marker"));
    let journal = lab.servicenow().journal(&t.key);
    let ours = journal.last().expect("our note");
    assert_eq!(
        (&ours["element"], &ours["value"]),
        (
            &json!("work_notes"),
            &json!("Drained node-a.\n[drover:wf-2/notify]")
        )
    );
    let s2 = c.read(&t).await.expect("read");
    assert!(s2.version > s1.version);

    // States by name and by number; a record already there gets no PATCH.
    c.transition(&t, "authorize").await.expect("transition");
    assert_eq!(c.read(&t).await.expect("read").status, "Authorize");
    c.transition(&t, "-1").await.expect("transition");
    assert_eq!(
        lab.servicenow().change(&t.key).expect("record")["state"],
        "-1"
    );
    let patches = count(&lab.servicenow().requests(), "PATCH", &t.key);
    c.transition(&t, "Implement").await.expect("already there");
    c.transition(&t, "-1").await.expect("already there");
    assert_eq!(
        count(&lab.servicenow().requests(), "PATCH", &t.key),
        patches
    );

    let e = permanent(c.transition(&t, "Bogus").await);
    assert!(
        e.contains("not a change_request state") && e.contains("Implement (-1)"),
        "{e}"
    );
    let missing = TicketRef {
        key: "0123456789abcdef0123456789abcdef".into(),
        display: "CHG9999999".into(),
        ..t.clone()
    };
    let e = permanent(c.read(&missing).await);
    assert!(
        e.contains("404") && e.contains("No Record found") && e.contains("CHG9999999"),
        "{e}"
    );
    let e = permanent(c.comment(&missing, "x", "m").await);
    assert!(e.contains("404"), "{e}");
    assert_eq!(lab.ticket_counters().servicenow_duplicate_markers, 0);
    calls_measured("servicenow");
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_never_shown() {
    let lab = lab().await;
    let secrets = secrets(&lab);
    let config = config(&lab, 2.0);
    let c = clients(config.clone(), &secrets);
    let (j, s) = (issue(&lab, "Creds"), change(&lab));
    let real = [lab.jira_credentials().1, lab.servicenow_credentials().1];
    let wrong = [
        "wrong-jira-token-0xdeadbeef",
        "wrong-sn-password-0xfeedface",
    ];
    secrets.set(JIRA_TOKEN, wrong[0]);
    secrets.set(SN_PASSWORD, wrong[1]);

    let mut shown = vec![format!("{config:?}"), format!("{c:?}")];
    for t in [&j, &s] {
        let e = permanent(c.read(t).await);
        assert!(
            e.contains("401") && e.contains("credentials were refused"),
            "{e}"
        );
        shown.push(e);
        let e = permanent(c.comment(t, "x", "m").await);
        assert!(e.contains("401"), "{e}");
        shown.push(e);
        shown.push(permanent(c.transition(t, "Done").await));
    }
    assert!(shown[2].contains("tickets.jira.email") && shown[2].contains(JIRA_TOKEN));

    // The secret is read at each use: the right one works at once, without new clients.
    secrets.set(JIRA_TOKEN, &real[0]);
    secrets.set(SN_PASSWORD, &real[1]);
    c.read(&j).await.expect("rotated token");
    c.read(&s).await.expect("rotated password");

    // A secret the worker does not have is Permanent, naming it.
    let mut unknown = config.clone();
    if let Some(jira) = unknown.jira.as_mut() {
        jira.api_token = SecretRef::new("not-configured");
    }
    let e = permanent(clients(unknown, &secrets).read(&j).await);
    assert!(e.contains("\"not-configured\""), "{e}");

    // Faults and refusals, too, never carry a credential.
    lab.jira().set_down(true);
    shown.push(transient(c.read(&j).await).0);
    lab.jira().set_down(false);
    shown.push(permanent(c.transition(&j, "Nowhere").await));
    for text in &shown {
        for secret in real.iter().map(String::as_str).chain(wrong) {
            assert!(!text.contains(secret), "{text:?} shows a secret");
        }
    }
    // Nor does the lab's request log: the credentials went in the Authorization header only.
    for r in lab.ticket_requests() {
        let line = format!("{} {}", r.path, r.body.unwrap_or_default());
        assert!(real.iter().all(|s| !line.contains(s.as_str())), "{line}");
    }
}

#[tokio::test]
async fn faults_are_transient_with_the_systems_retry_after() {
    let lab = lab().await;
    let secrets = secrets(&lab);
    let c = clients(config(&lab, 2.0), &secrets);
    let (j, s) = (issue(&lab, "Faults"), change(&lab));
    let jira_requests = || lab.jira().requests().len();

    // A write answered 429 is Transient with the system's Retry-After, sent once.
    lab.jira().faults(TicketFaults {
        sequence: vec![429],
        retry_after_secs: 7,
        method: Some("POST".into()),
        ..TicketFaults::default()
    });
    let before = jira_requests();
    let (message, after) = transient(c.comment(&j, "x", "wf-3/a").await);
    assert_eq!(after, Some(Duration::from_secs(7)), "{message}");
    assert!(message.contains("429"), "{message}");
    assert_eq!(jira_requests(), before + 1);
    // The ticket's bucket is empty until then: the next write is not even sent.
    let (message, after) = transient(c.comment(&j, "x", "wf-3/a").await);
    assert!(
        after.is_some_and(|a| a > Duration::from_secs(5)),
        "{message} {after:?}"
    );
    assert_eq!(jira_requests(), before + 1);
    // Other tickets are not held back.
    let j2 = issue(&lab, "Faults 2");
    c.comment(&j2, "x", "wf-3/b").await.expect("another issue");

    // Reads retry a short Retry-After here, and hand a long one to the engine at once.
    lab.jira().faults(TicketFaults {
        sequence: vec![429, 503],
        retry_after_secs: 0,
        method: Some("GET".into()),
        ..TicketFaults::default()
    });
    c.read(&j).await.expect("retried through 429 and 503");
    lab.jira().faults(TicketFaults {
        sequence: vec![429],
        retry_after_secs: 30,
        method: Some("GET".into()),
        ..TicketFaults::default()
    });
    let before = jira_requests();
    let (_, after) = transient(c.has_marker(&j, "wf-3/a").await);
    assert_eq!(after, Some(Duration::from_secs(30)));
    assert_eq!(jira_requests(), before + 1);
    lab.jira().faults(TicketFaults {
        sequence: vec![503, 503, 503, 503],
        retry_after_secs: 0,
        ..TicketFaults::default()
    });
    let (message, _) = transient(c.read(&j).await);
    assert!(
        message.contains("503") && message.contains("after 3 tries"),
        "{message}"
    );
    lab.jira().faults(TicketFaults::default());

    // ServiceNow: 503 and 500 on writes are Transient; a 500 may have been applied.
    lab.servicenow().faults(TicketFaults {
        sequence: vec![503, 500],
        retry_after_secs: 4,
        method: Some("PATCH".into()),
        ..TicketFaults::default()
    });
    let (message, after) = transient(c.transition(&s, "Assess").await);
    assert!(message.contains("503"), "{message}");
    assert_eq!(after, Some(Duration::from_secs(4)));
    let (message, after) = transient(c.comment(&s, "x", "wf-3/c").await);
    assert!(
        message.contains("500") && message.contains("may have been applied"),
        "{message}"
    );
    assert_eq!(after, None);
    lab.servicenow().faults(TicketFaults {
        sequence: vec![429],
        retry_after_secs: 9,
        ..TicketFaults::default()
    });
    assert_eq!(
        transient(c.comment(&s, "x", "wf-3/c").await).1,
        Some(Duration::from_secs(9))
    );

    // Down: the load balancer's 503 page.
    lab.servicenow().set_down(true);
    let (message, _) = transient(c.read(&s).await);
    assert!(message.contains("503"), "{message}");
    lab.servicenow().set_down(false);

    // A write whose answer comes too late is Transient, its outcome unknown: here Jira applied
    // it. The engine's retry asks for the marker first and finds it: one comment.
    let mut quick = config(&lab, 2.0);
    quick.timeout_ms = 300;
    let quick = clients(quick, &secrets);
    lab.jira().faults(TicketFaults {
        response_delay_ms: 1_000,
        method: Some("POST".into()),
        ..TicketFaults::default()
    });
    let (message, _) = transient(quick.comment(&j2, "slow", "wf-3/slow").await);
    assert!(
        message.contains("no answer in time") && message.contains("may have been applied"),
        "{message}"
    );
    lab.jira().faults(TicketFaults::default());
    assert!(c.has_marker(&j2, "wf-3/slow").await.expect("has_marker"));
    let carrying = lab
        .jira()
        .comments(&j2.key)
        .iter()
        .filter(|c| c["properties"][0]["value"]["marker"] == "wf-3/slow")
        .count();
    assert_eq!(carrying, 1);

    // Nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let closed = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let mut gone = config(&lab, 2.0);
    if let Some(jira) = gone.jira.as_mut() {
        jira.url = closed;
    }
    let (message, _) = transient(clients(gone, &secrets).read(&j).await);
    assert!(message.contains("cannot reach jira"), "{message}");
    assert_eq!(lab.ticket_counters().jira_duplicate_markers, 0);
}

#[tokio::test]
async fn writes_to_one_ticket_are_paced() {
    let lab = lab().await;
    let secrets = secrets(&lab);
    let rate = 5.0;
    let c = clients(config(&lab, rate), &secrets);
    // The lab's own limit at the same rate (a token of slack for timing jitter): a client that
    // did not pace itself would be refused.
    lab.jira().set_rate_limit(RateLimit {
        writes_per_sec: rate,
        burst: 3,
    });
    let t = issue(&lab, "Paced");
    let n = 7;
    let started = Instant::now();
    let writes = (0..n).map(|i| {
        let (c, t) = (&c, &t);
        async move {
            c.comment(t, &format!("note {i}"), &format!("wf-4/{i}"))
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.expect("paced write");
    }
    let took = started.elapsed();
    let least = Duration::from_secs_f64((n - 2) as f64 / rate);
    assert!(
        took >= least.mul_f64(0.9) && took < Duration::from_secs(5),
        "{n} writes took {took:?}, expected at least {least:?}"
    );
    assert_eq!(lab.ticket_counters().rate_limited, 0);
    // Another ticket has a bucket of its own.
    let other = issue(&lab, "Not paced");
    let started = Instant::now();
    for i in 0..2 {
        c.comment(&other, "x", &format!("wf-4/other-{i}"))
            .await
            .expect("write");
    }
    assert!(started.elapsed() < Duration::from_millis(350));

    // A 429 empties the ticket's bucket until its Retry-After; the next write waits for it here.
    lab.jira().faults(TicketFaults {
        sequence: vec![429],
        retry_after_secs: 1,
        method: Some("POST".into()),
        ..TicketFaults::default()
    });
    let (_, after) = transient(c.comment(&other, "x", "wf-4/after").await);
    assert_eq!(after, Some(Duration::from_secs(1)));
    let started = Instant::now();
    c.comment(&other, "x", "wf-4/after")
        .await
        .expect("after the wait");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(lab.ticket_counters().jira_duplicate_markers, 0);
}
