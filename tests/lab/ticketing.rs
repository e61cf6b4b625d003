//! The lab's Jira Cloud site and ServiceNow instance over real HTTP, driven the way clients
//! written from Atlassian's and ServiceNow's documentation drive them (reqwest, HTTP Basic, JSON
//! bodies): issues, transitions, ADF comments and comment properties; change requests, encoded
//! queries and the work-notes journal; webhooks and outbound messages received by a small axum
//! server here, their signatures checked with `ring` (not with the lab's code); retries keep the
//! delivery identifier and a redelivery replays it; per-ticket rate limits, injected faults and a
//! site that is down.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use drover_lab::{
    DeliveryPolicy, DeliveryState, Lab, LabConfig, LabHandle, OutboundMessage, RateLimit, Scenario,
    TicketFaults,
};
use serde_json::{Value, json};

use crate::lab::support::{self, send};

const T: Duration = Duration::from_secs(10);

/// A lab without a cluster inventory (the ticketing systems do not need one).
async fn lab() -> LabHandle {
    support::crypto();
    Lab::start(LabConfig {
        scenario: Scenario::default(),
        ..LabConfig::default()
    })
    .await
    .expect("lab starts")
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A webhook receiver on 127.0.0.1:0: records every request and answers with the statuses of
/// `script` in turn, then 200.
#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Inbox {
    fn all(&self) -> Vec<Received> {
        self.got.lock().expect("inbox").clone()
    }

    async fn wait(&self, n: usize) -> Vec<Received> {
        support::wait_for(&format!("{n} deliveries"), T, || async {
            let all = self.all();
            (all.len() >= n).then_some(all)
        })
        .await
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.got.lock().expect("inbox").push(Received {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    });
    let code = inbox
        .script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or(200);
    StatusCode::from_u16(code).expect("status")
}

async fn receiver(script: &[u16]) -> (String, Inbox) {
    let inbox = Inbox::default();
    inbox
        .script
        .lock()
        .expect("script")
        .extend(script.iter().copied());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(inbox.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, inbox)
}

/// Lowercase hex HMAC-SHA256, computed here independently of the lab.
fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn adf(text: &str) -> Value {
    json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    ]})
}

fn fast_delivery() -> DeliveryPolicy {
    DeliveryPolicy {
        timeout_ms: 2_000,
        backoff_ms: 100,
        max_attempts: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_issues_transitions_and_comments_over_rest() {
    let lab = lab().await;
    let c = support::http();
    let base = lab.jira_url();
    let (email, token) = lab.jira_credentials();
    let api = |path: &str| format!("{base}/rest/api/3/{path}");
    let authed = |rb: reqwest::RequestBuilder| rb.basic_auth(&email, Some(&token));

    let (code, info) = send(c.get(format!("{base}/rest/api/2/serverInfo"))).await;
    assert_eq!(
        (code, info["deploymentType"].as_str()),
        (200, Some("Cloud"))
    );
    let (code, body) = send(c.get(api("issue/OPS-1"))).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["errorMessages"].is_array() && body["errors"].is_object());
    let (code, body) = send(c.get(api("myself")).basic_auth(&email, Some("wrong-token"))).await;
    assert_eq!(code, 401, "{body}");

    let (code, created) = send(authed(c.post(api("issue"))).json(&json!({"fields": {
        "project": {"key": "OPS"}, "summary": "Patch rack A", "issuetype": {"name": "Change"},
        "labels": ["drover"], "customfield_10050": "2026-03-01T02:00:00Z"
    }})))
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["key"], "OPS-1");
    assert!(
        created["self"]
            .as_str()
            .is_some_and(|s| s.ends_with("/rest/api/3/issue/10000"))
    );
    let (code, refused) = send(authed(c.post(api("issue"))).json(&json!({"fields": {
        "project": {"key": "NOPE"}, "issuetype": {"name": "Change"}
    }})))
    .await;
    assert_eq!(code, 400);
    assert!(refused["errors"]["project"].is_string() && refused["errors"]["summary"].is_string());

    let (code, issue) = send(authed(c.get(api("issue/OPS-1")))).await;
    assert_eq!(code, 200, "{issue}");
    let f = &issue["fields"];
    assert_eq!(f["status"]["name"], "To Do");
    assert_eq!(f["status"]["id"], "10000");
    assert_eq!(f["status"]["statusCategory"]["key"], "new");
    assert_eq!(f["issuetype"]["name"], "Change");
    assert_eq!(f["project"]["key"], "OPS");
    assert_eq!(f["labels"], json!(["drover"]));
    assert_eq!(f["customfield_10050"], "2026-03-01T02:00:00Z");
    assert!(
        f["updated"]
            .as_str()
            .is_some_and(|u| u.starts_with("20") && u.ends_with("+0000"))
    );
    let (code, missing) = send(authed(c.get(api("issue/OPS-99")))).await;
    assert_eq!(code, 404);
    assert_eq!(
        missing["errorMessages"],
        json!(["Issue does not exist or you do not have permission to see it."])
    );

    let (code, list) = send(authed(c.get(api("issue/OPS-1/transitions")))).await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = list["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["11", "21", "41"]);
    assert_eq!(list["transitions"][1]["to"]["name"], "Approved");
    let (code, body) = send(
        authed(c.post(api("issue/OPS-1/transitions"))).json(&json!({"transition": {"id": "99"}})),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["errorMessages"],
        json!(["Transition id '99' is not valid for this issue."])
    );
    let (code, _) = send(
        authed(c.post(api("issue/OPS-1/transitions"))).json(&json!({"transition": {"id": "11"}})),
    )
    .await;
    assert_eq!(code, 204);
    let (code, _) = send(
        authed(c.put(api("issue/OPS-1")))
            .json(&json!({"update": {"labels": [{"add": "maintenance"}]}})),
    )
    .await;
    assert_eq!(code, 204);
    let (_, issue) = send(authed(c.get(api("issue/OPS-1?expand=changelog")))).await;
    assert_eq!(issue["fields"]["status"]["name"], "In Progress");
    let histories = issue["changelog"]["histories"]
        .as_array()
        .expect("histories");
    assert_eq!(histories.len(), 2);
    assert_eq!(histories[0]["items"][0]["toString"], "In Progress");
    assert_eq!(histories[0]["author"]["displayName"], "drover-bot");
    assert_eq!(histories[1]["items"][0]["toString"], "drover maintenance");

    // A comment marked idempotently with a property, as Drover writes them.
    let marked = json!({
        "body": adf("Drained node-a; 12 VMs moved."),
        "properties": [{"key": "drover", "value": {"key": "wf-1/drain/node-a"}}],
    });
    let (code, comment) = send(authed(c.post(api("issue/OPS-1/comment"))).json(&marked)).await;
    assert_eq!(code, 201, "{comment}");
    let cid = comment["id"].as_str().expect("comment id").to_string();
    assert_eq!(comment["author"]["displayName"], "drover-bot");
    assert_eq!(comment["body"]["type"], "doc");
    let (code, bad) =
        send(authed(c.post(api("issue/OPS-1/comment"))).json(&json!({"body": "not a document"})))
            .await;
    assert_eq!(code, 400);
    assert_eq!(bad["errors"]["comment"], "Comment body is not valid!");
    let (code, _) = send(
        authed(c.post(format!("{base}/rest/api/2/issue/OPS-1/comment")))
            .json(&json!({"body": "A plain v2 comment"})),
    )
    .await;
    assert_eq!(code, 201);

    let (code, page) = send(authed(c.get(api(
        "issue/OPS-1/comment?startAt=0&maxResults=50&orderBy=created&expand=properties",
    ))))
    .await;
    assert_eq!(code, 200);
    assert_eq!(page["total"], 2);
    assert_eq!(page["comments"][0]["properties"][0]["key"], "drover");
    assert_eq!(
        page["comments"][0]["properties"][0]["value"]["key"],
        "wf-1/drain/node-a"
    );
    assert_eq!(
        page["comments"][1]["body"]["content"][0]["content"][0]["text"],
        "A plain v2 comment"
    );
    let (_, plain) = send(authed(c.get(api("issue/OPS-1/comment")))).await;
    assert!(plain["comments"][0].get("properties").is_none());
    let (_, v2) = send(authed(
        c.get(format!("{base}/rest/api/2/issue/OPS-1/comment")),
    ))
    .await;
    assert_eq!(v2["comments"][0]["body"], "Drained node-a; 12 VMs moved.");
    let (code, prop) = send(authed(
        c.get(api(&format!("comment/{cid}/properties/drover"))),
    ))
    .await;
    assert_eq!(
        (code, &prop["value"]["key"]),
        (200, &json!("wf-1/drain/node-a"))
    );
    let (code, _) = send(authed(
        c.get(api(&format!("comment/{cid}/properties/other"))),
    ))
    .await;
    assert_eq!(code, 404);

    let counters = lab.ticket_counters();
    assert_eq!(counters.jira_comments, 2);
    assert_eq!(counters.jira_duplicate_markers, 0);
    let requests = lab.jira().requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/issue/OPS-1/comment") && r.status == 201)
        .expect("comment request logged");
    assert_eq!(post.user.as_deref(), Some(email.as_str()));
    assert!(
        post.body
            .as_deref()
            .is_some_and(|b| b.contains("wf-1/drain/node-a"))
    );
    assert!(requests.iter().any(|r| r.status == 401 && r.user.is_none()));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_webhooks_are_signed_retried_replayed_and_can_arrive_late() {
    let lab = lab().await;
    let c = support::http();
    let base = lab.jira_url();
    let (email, token) = lab.jira_credentials();
    // The receiver fails the first delivery once: Jira retries it with the same identifier.
    let (url, inbox) = receiver(&[500]).await;
    lab.jira().set_delivery_policy(fast_delivery());
    let (code, hook) = send(
        c.post(format!("{base}/rest/webhooks/1.0/webhook"))
            .basic_auth(&email, Some(&token))
            .json(&json!({
                "name": "drover", "url": url, "secret": "hook-secret",
                "events": ["jira:issue_updated", "comment_created"],
                "filters": {"issue-related-events-section": "project = OPS"},
            })),
    )
    .await;
    assert_eq!(code, 201, "{hook}");
    assert!(hook.get("secret").is_none(), "the secret is never shown");
    let (code, hooks) = send(
        c.get(format!("{base}/rest/webhooks/1.0/webhook"))
            .basic_auth(&email, Some(&token)),
    )
    .await;
    assert_eq!((code, hooks.as_array().map(Vec::len)), (200, Some(1)));

    let jira = lab.jira();
    let key = jira
        .create_issue(
            json!({"project": {"key": "OPS"}, "summary": "Patch", "issuetype": {"name": "Change"}}),
        )
        .expect("issue");
    jira.transition(&key, "Approve").expect("approved");
    let got = inbox.wait(2).await;
    let (first, retry) = (&got[0], &got[1]);
    let id = first
        .header("x-atlassian-webhook-identifier")
        .expect("identifier")
        .to_string();
    assert_eq!(
        retry.header("x-atlassian-webhook-identifier"),
        Some(id.as_str())
    );
    assert_eq!(first.header("x-atlassian-webhook-retry"), None);
    assert_eq!(retry.header("x-atlassian-webhook-retry"), Some("1"));
    assert_eq!(first.header("x-atlassian-webhook-flow"), Some("Primary"));
    assert_eq!(first.body, retry.body);
    for r in [first, retry] {
        let want = format!("sha256={}", hmac_hex("hook-secret", &r.body));
        assert_eq!(r.header("x-hub-signature"), Some(want.as_str()));
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
        );
    }
    let event = first.json();
    assert_eq!(event["webhookEvent"], "jira:issue_updated");
    assert_eq!(event["issue_event_type_name"], "issue_generic");
    assert_eq!(event["user"]["accountId"], "5b10ac8d82e05b22cc7d4ef5");
    assert_eq!(event["issue"]["key"], key.as_str());
    assert_eq!(event["issue"]["fields"]["status"]["name"], "Approved");
    let item = &event["changelog"]["items"][0];
    assert_eq!(
        (
            item["field"].as_str(),
            item["from"].as_str(),
            item["fromString"].as_str()
        ),
        (Some("status"), Some("10000"), Some("To Do"))
    );
    assert_eq!(
        (item["to"].as_str(), item["toString"].as_str()),
        (Some("10002"), Some("Approved"))
    );
    // The receiver has answered; the lab records the attempt right after.
    let deliveries = support::wait_for("the delivery recorded", T, || async {
        let all = jira.deliveries();
        (all.first().map(|d| d.state) == Some(DeliveryState::Delivered)).then_some(all)
    })
    .await;
    assert_eq!(deliveries.len(), 1, "issue_created is not subscribed");
    let attempts: Vec<Option<u16>> = deliveries[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(attempts, [Some(500), Some(200)]);

    // A redelivery is a byte-for-byte replay of the first attempt.
    let replay = jira.redeliver(&id).await.expect("redelivered");
    assert!(replay.replay && replay.status == Some(200));
    let got = inbox.wait(3).await;
    assert_eq!(
        got[2].header("x-atlassian-webhook-identifier"),
        Some(id.as_str())
    );
    assert_eq!(
        got[2].header("x-hub-signature"),
        first.header("x-hub-signature")
    );
    assert_eq!(got[2].header("x-atlassian-webhook-retry"), None);
    assert_eq!(got[2].body, first.body);

    // An older event held back arrives after a newer one.
    jira.delay_next_delivery(Duration::from_millis(700));
    jira.set_field(&key, "customfield_10050", json!("2026-04-01T02:00:00Z"))
        .expect("field set");
    let (code, _) = send(
        c.post(format!("{base}/rest/api/3/issue/{key}/comment"))
            .basic_auth(&email, Some(&token))
            .json(&json!({"body": adf("Window moved.")})),
    )
    .await;
    assert_eq!(code, 201);
    let got = inbox.wait(6).await;
    let (newer, commented, older) = (got[3].json(), got[4].json(), got[5].json());
    assert_eq!(newer["webhookEvent"], "comment_created");
    assert_eq!(commented["issue_event_type_name"], "issue_commented");
    assert_eq!(newer["comment"]["author"]["displayName"], "drover-bot");
    assert_eq!(newer["comment"]["body"], "Window moved.");
    assert_eq!(older["webhookEvent"], "jira:issue_updated");
    assert_eq!(older["changelog"]["items"][0]["fieldtype"], "custom");
    assert!(older["timestamp"].as_u64() <= newer["timestamp"].as_u64());
    let first_changelog: u64 = event["changelog"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let later_changelog: u64 = older["changelog"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert!(later_changelog > first_changelog);
    assert_eq!(jira.deliveries()[1].delay_ms, 700);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_change_requests_journal_and_outbound_message() {
    let lab = lab().await;
    let c = support::http();
    let base = lab.servicenow_url();
    let (user, password) = lab.servicenow_credentials();
    let table = |path: &str| format!("{base}/api/now/table/{path}");
    let authed = |rb: reqwest::RequestBuilder| rb.basic_auth(&user, Some(&password));
    let (url, inbox) = receiver(&[]).await;
    lab.servicenow()
        .set_outbound(Some(OutboundMessage::new(url, "sn-secret")));

    let (code, body) = send(c.get(table("change_request"))).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"})
    );
    let ci = "9f2c1a7e5b3d4c6e8a0b1c2d3e4f5a6b";
    let (code, created) = send(authed(c.post(table("change_request"))).json(&json!({
        "short_description": "Patch rack A", "type": "normal", "cmdb_ci": ci,
        "u_nodes": "node-a,node-b",
    })))
    .await;
    assert_eq!(code, 201, "{created}");
    let r = &created["result"];
    let sys_id = r["sys_id"].as_str().expect("sys_id").to_string();
    assert!(
        sys_id.len() == 32
            && sys_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(r["number"], "CHG0030001");
    assert_eq!(
        (r["state"].as_str(), r["sys_mod_count"].as_str()),
        (Some("-5"), Some("0"))
    );
    assert_eq!(r["approval"], "not requested");
    assert_eq!(r["sys_created_by"], user.as_str());
    assert_eq!(r["cmdb_ci"]["value"], ci);
    assert!(
        r["cmdb_ci"]["link"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/api/now/table/cmdb_ci/{ci}")))
    );

    let (code, got) = send(authed(c.get(table(&format!("change_request/{sys_id}"))))).await;
    assert_eq!(
        (code, &got["result"]["u_nodes"]),
        (200, &json!("node-a,node-b"))
    );
    let (code, missing) = send(authed(
        c.get(table(&format!("change_request/{}", "0".repeat(32)))),
    ))
    .await;
    assert_eq!(code, 404);
    assert_eq!(missing["error"]["message"], "No Record found");
    let query = enc("number=CHG0030001^state=-5^ORDERBYnumber");
    let (code, list) = send(authed(c.get(table(&format!(
        "change_request?sysparm_query={query}&sysparm_limit=10&sysparm_fields=number,state"
    )))))
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        list["result"],
        json!([{"number": "CHG0030001", "state": "-5"}])
    );
    let none = enc("number=CHG0030001^state=-2");
    let (_, list) = send(authed(
        c.get(table(&format!("change_request?sysparm_query={none}"))),
    ))
    .await;
    assert_eq!(list["result"], json!([]));

    // Work notes are a journal: appended, found by LIKE, the field itself reads back empty.
    let (code, patched) = send(
        authed(c.patch(table(&format!("change_request/{sys_id}"))))
            .json(&json!({"work_notes": "[drover:wf-1/drain] Drained node-a"})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["result"]["work_notes"], "");
    assert_eq!(patched["result"]["sys_mod_count"], "1");
    let journal = enc(&format!(
        "element_id={sys_id}^element=work_notes^valueLIKE[drover:wf-1/drain]^ORDERBYsys_created_on"
    ));
    let (code, notes) = send(authed(
        c.get(table(&format!("sys_journal_field?sysparm_query={journal}"))),
    ))
    .await;
    assert_eq!(code, 200);
    let notes = notes["result"].as_array().expect("notes").clone();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["value"], "[drover:wf-1/drain] Drained node-a");
    assert_eq!(notes[0]["name"], "change_request");
    assert_eq!(notes[0]["sys_created_by"], user.as_str());
    let other = enc(&format!("element_id={sys_id}^valueLIKE[drover:wf-2"));
    let (_, notes) = send(authed(
        c.get(table(&format!("sys_journal_field?sysparm_query={other}"))),
    ))
    .await;
    assert_eq!(notes["result"], json!([]));

    let (code, bad) = send(
        authed(c.patch(table(&format!("change_request/{sys_id}")))).json(&json!({"state": "-9"})),
    )
    .await;
    assert_eq!(code, 400, "{bad}");
    assert_eq!(bad["status"], "failure");
    let (code, scheduled) = send(
        authed(c.put(table(&format!("change_request/{sys_id}")))).json(&json!({
            "state": "-2", "start_date": "2026-03-01 02:00:00", "end_date": "2026-03-01 06:00:00"
        })),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(scheduled["result"]["sys_mod_count"], "2");
    lab.servicenow()
        .update_change("CHG0030001", json!({"approval": "approved"}))
        .expect("approved by a human");

    // Insert, schedule and approval notify; the work note did not.
    let got = inbox.wait(3).await;
    assert_eq!(lab.servicenow().deliveries().len(), 3);
    let mut ids = Vec::new();
    for r in &got {
        let ts = r.header("x-servicenow-timestamp").expect("timestamp");
        let signed = [ts.as_bytes(), b".", &r.body].concat();
        assert_eq!(
            r.header("x-servicenow-signature"),
            Some(hmac_hex("sn-secret", &signed).as_str())
        );
        ids.push(
            r.header("x-servicenow-delivery")
                .expect("delivery id")
                .to_string(),
        );
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3);
    let (inserted, scheduled, approved) = (got[0].json(), got[1].json(), got[2].json());
    assert_eq!(
        (
            inserted["state"].as_str(),
            inserted["sys_mod_count"].as_str()
        ),
        (Some("-5"), Some("0"))
    );
    assert_eq!(inserted["cmdb_ci"], ci);
    assert_eq!(scheduled["state"], "-2");
    assert_eq!(scheduled["start_date"], "2026-03-01 02:00:00");
    assert_eq!(scheduled["sys_updated_by"], user.as_str());
    assert_eq!(scheduled["u_nodes"], "node-a,node-b");
    assert_eq!(approved["approval"], "approved");
    assert_eq!(approved["sys_updated_by"], "alice.example");
    assert_eq!(approved["sys_mod_count"], "3");

    // A second note with the same marker is a duplicate, and counted.
    assert_eq!(lab.ticket_counters().servicenow_duplicate_markers, 0);
    let (code, _) = send(
        authed(c.patch(table(&format!("change_request/{sys_id}"))))
            .json(&json!({"work_notes": "again [drover:wf-1/drain]"})),
    )
    .await;
    assert_eq!(code, 200);
    let counters = lab.ticket_counters();
    assert_eq!(
        (
            counters.servicenow_work_notes,
            counters.servicenow_duplicate_markers
        ),
        (2, 1)
    );
    assert_eq!(lab.servicenow().journal("CHG0030001").len(), 2);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_faults_and_outages() {
    let lab = lab().await;
    let c = support::http();
    let (jira_url, sn_url) = (lab.jira_url(), lab.servicenow_url());
    let (email, token) = lab.jira_credentials();
    let (user, password) = lab.servicenow_credentials();
    let jira = lab.jira();
    let sn = lab.servicenow();
    let key = jira
        .create_issue(
            json!({"project": {"key": "OPS"}, "summary": "x", "issuetype": {"name": "Task"}}),
        )
        .expect("issue");
    let change = sn
        .create_change(json!({"short_description": "x"}))
        .expect("change");
    let sys_id = change["sys_id"].as_str().expect("sys_id").to_string();

    // Per-ticket write limits catch a client that writes too fast.
    jira.set_rate_limit(RateLimit {
        writes_per_sec: 0.5,
        burst: 2,
    });
    let mut codes = Vec::new();
    let mut limited = None;
    for i in 0..3 {
        let resp = c
            .put(format!("{jira_url}/rest/api/3/issue/{key}"))
            .basic_auth(&email, Some(&token))
            .json(&json!({"fields": {"summary": format!("edit {i}")}}))
            .send()
            .await
            .expect("request");
        codes.push(resp.status().as_u16());
        if resp.status().as_u16() == 429 {
            limited = Some(resp);
        }
    }
    assert_eq!(codes, [204, 204, 429]);
    let limited = limited.expect("429");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.headers()["ratelimit-reason"],
        "jira-per-issue-on-write"
    );
    sn.set_rate_limit(RateLimit {
        writes_per_sec: 1.0,
        burst: 1,
    });
    let patch = || {
        c.patch(format!("{sn_url}/api/now/table/change_request/{sys_id}"))
            .basic_auth(&user, Some(&password))
            .json(&json!({"short_description": "y"}))
    };
    assert_eq!(patch().send().await.expect("patch").status().as_u16(), 200);
    let resp = patch().send().await.expect("patch");
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["message"], "Rate limit exceeded");

    // Injected faults: a sequence, with Retry-After on 429 and 503.
    jira.faults(TicketFaults {
        sequence: vec![429, 500],
        retry_after_secs: 7,
        method: Some("GET".into()),
        ..TicketFaults::default()
    });
    let get_issue = || {
        c.get(format!("{jira_url}/rest/api/3/issue/{key}"))
            .basic_auth(&email, Some(&token))
            .send()
    };
    let r = get_issue().await.expect("get");
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().ok()
        ),
        (429, Some("7"))
    );
    assert_eq!(get_issue().await.expect("get").status().as_u16(), 500);
    assert_eq!(get_issue().await.expect("get").status().as_u16(), 200);
    sn.faults(TicketFaults {
        sequence: vec![503],
        ..TicketFaults::default()
    });
    let get_change = || {
        c.get(format!("{sn_url}/api/now/table/change_request/{sys_id}"))
            .basic_auth(&user, Some(&password))
            .send()
    };
    let r = get_change().await.expect("get");
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().ok()
        ),
        (503, Some("1"))
    );
    assert_eq!(get_change().await.expect("get").status().as_u16(), 200);

    // Down: the load balancer answers 503 for everything, through the admin endpoint too.
    sn.set_down(true);
    let r = get_change().await.expect("get");
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("No server is available")
    );
    sn.set_down(false);
    assert_eq!(get_change().await.expect("get").status().as_u16(), 200);
    let admin = format!("{}/lab/jira/faults", lab.kube_url());
    let (code, _) = send(c.put(&admin).json(&json!({"down": true}))).await;
    assert_eq!(code, 200);
    assert_eq!(get_issue().await.expect("get").status().as_u16(), 503);
    let (code, _) = send(c.delete(&admin)).await;
    assert_eq!(code, 200);
    assert_eq!(get_issue().await.expect("get").status().as_u16(), 200);
    let (code, status) = send(c.get(format!("{}/lab/ticketing", lab.kube_url()))).await;
    assert_eq!(code, 200);
    assert_eq!(status["jira_url"], jira_url.as_str());
    let counters = lab.ticket_counters();
    assert_eq!(counters.rate_limited, 2);
    assert_eq!(counters.faulted, 5);
    assert_eq!(
        counters.jira_duplicate_markers + counters.servicenow_duplicate_markers,
        0
    );
    lab.shutdown().await;
}

/// The PyPI `jira` client (what many integrations use): server info, project lookup, create,
/// comment, transitions by name, edits, comments listing; the lab fires webhooks for its changes.
const PY_JIRA: &str = r#"
import sys
from jira import JIRA
url, email, token = sys.argv[1:4]
j = JIRA(server=url, basic_auth=(email, token), max_retries=0)
issue = j.create_issue(project="OPS", summary="Patch rack A", issuetype={"name": "Change"}, labels=["drover"])
print("created", issue.key, issue.fields.status.name, flush=True)
j.add_comment(issue, "Drained node-a")
print("transitions", ",".join(t["name"].replace(" ", "_") for t in j.transitions(issue)), flush=True)
j.transition_issue(issue, "Approve")
issue = j.issue(issue.key)
issue.update(fields={"labels": ["drover", "maintenance"]})
issue = j.issue(issue.key)
print("issue", issue.fields.status.name, ",".join(issue.fields.labels), flush=True)
print("comments", "|".join(c.body for c in j.comments(issue)), flush=True)
try:
    j.issue("OPS-99")
except Exception as e:
    print("missing", e.status_code, flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_client_works_unmodified() {
    support::require_python_module("jira", "jira");
    let lab = lab().await;
    let (url, inbox) = receiver(&[]).await;
    lab.jira()
        .add_webhook(drover_lab::JiraWebhook {
            name: "drover".into(),
            url,
            events: vec!["jira:issue_updated".into()],
            ..Default::default()
        })
        .expect("webhook");
    let (email, token) = lab.jira_credentials();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", PY_JIRA, &lab.jira_url(), &email, &token])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the jira client finishes in time")
    .expect("python runs");
    let out = support::ok_stdout("python jira", &out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "created OPS-1 To Do",
            "transitions Start_Progress,Approve,Reject",
            "issue Approved drover,maintenance",
            "comments Drained node-a",
            "missing 404",
        ],
        "{out}"
    );
    // The comment, the transition and the label edit, each an issue_updated event.
    let got = inbox.wait(3).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["issue_event_type_name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["issue_commented", "issue_generic", "issue_updated"]);
    assert!(
        got.iter().all(|r| r.header("x-hub-signature").is_none()),
        "no secret, no signature"
    );
    lab.shutdown().await;
}
