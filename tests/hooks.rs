//! Ticketing webhooks at the API over real HTTP, with deliveries signed here as Jira and the
//! generic hook sign them: signatures, replays, version order, rules, approvals, Drover's own
//! changes, and a store that cannot be written.

use std::sync::Arc;
use std::time::Duration;

use drover_api::hooks::verify::sign;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, start_api_full};
use crate::harness::*;

const GENERIC_SECRET: &str = "generic-hook-secret-0123";
const JIRA_SECRET: &str = "jira-hook-secret-0123";
const SN_SECRET: &str = "servicenow-hook-secret-0123";

/// `[hooks.servicenow]` for APIs that take ServiceNow's messages too (the hostile sweep).
pub(crate) const SERVICENOW: &str = "\n[servicenow]\nsecret = { secret = \"sn-hook\" }\n";

fn secret_files(dir: &std::path::Path) -> drover_worker::secrets::Config {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("generic"), GENERIC_SECRET).unwrap();
    std::fs::write(dir.join("jira"), JIRA_SECRET).unwrap();
    std::fs::write(dir.join("servicenow"), SN_SECRET).unwrap();
    toml::from_str(&format!(
        "generic-hook = {{ file = {:?} }}\njira-hook = {{ file = {:?} }}\n\
         sn-hook = {{ file = {:?} }}\n",
        dir.join("generic"),
        dir.join("jira"),
        dir.join("servicenow")
    ))
    .unwrap()
}

const RULES: &str = r#"
[generic]
secret = { secret = "generic-hook" }

[jira]
secret = { secret = "jira-hook" }
account_id = "drover-bot"

[[rules]]
name = "synth"
source = "generic"
on = "status"
to = "Ready"
kind = "synthetic"
input = { steps = 2, signal = { step = 1, name = "approve" } }
approval = { to = "Approved", signal = "approve" }

[[rules]]
name = "jira-synth"
source = "jira"
on = "status"
to = "Ready"
only = { "issuetype.name" = "Change" }
kind = "synthetic"
fields = { steps = "customfield_10050" }
"#;

pub(crate) async fn hook_api(store: &drover_store::Store, name: &str) -> Api {
    hook_api_with(store, name, "").await
}

/// [`hook_api`] with more of `[hooks]` (TOML tables appended to the rules).
pub(crate) async fn hook_api_with(store: &drover_store::Store, name: &str, more: &str) -> Api {
    let dir = std::env::temp_dir().join(format!("drover-hooks-{name}-{}", std::process::id()));
    let secrets = Arc::new(drover_worker::secrets::ConfigSecrets::new(
        secret_files(&dir),
        None,
    ));
    let config: drover_api::hooks::Config = toml::from_str(&format!("{RULES}{more}")).unwrap();
    config.validate().unwrap();
    let hooks = Arc::new(drover_api::hooks::Hooks {
        config,
        secrets,
        tickets: None,
    });
    start_api_full(store, drover_kinds::builtin(), |_| {}, Some(hooks)).await
}

/// Sends a generic delivery signed with `secret` at `ts` (Unix seconds).
async fn generic(
    api: &Api,
    delivery: &str,
    body: &Value,
    secret: &str,
    ts: i64,
) -> (StatusCode, Value) {
    let raw = body.to_string();
    let sig = sign(secret.as_bytes(), format!("{ts}.{raw}").as_bytes());
    api.call(
        "POST",
        "/v1/hooks/generic",
        None,
        Some(raw.into_bytes()),
        &[
            ("X-Drover-Signature", &format!("sha256={sig}")),
            ("X-Drover-Timestamp", &ts.to_string()),
            ("X-Drover-Delivery", delivery),
        ],
    )
    .await
}

fn now_s() -> i64 {
    now_ms() as i64 / 1000
}

fn ticket_event(version: u64, status: &str) -> Value {
    json!({"ticket": "T-1", "version": version, "event": "updated", "status": status,
           "actor": "alice"})
}

async fn dbsize(store: &drover_store::Store) -> u64 {
    let mut c = store.connection();
    redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
}

fn jira_body(version: u64, to: &str, actor: &str, issuetype: &str) -> Value {
    json!({
        "timestamp": now_ms(), "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {"accountId": actor, "displayName": actor},
        "issue": {"id": "10001", "key": "OPS-7", "fields": {
            "status": {"name": to}, "issuetype": {"name": issuetype}, "labels": [],
            "customfield_10050": 1}},
        "changelog": {"id": version.to_string(), "items": [
            {"field": "status", "fieldtype": "jira", "fromString": "To Do", "toString": to}]},
    })
}

async fn jira(api: &Api, delivery: &str, body: &Value, secret: &str) -> (StatusCode, Value) {
    let raw = body.to_string();
    let sig = sign(secret.as_bytes(), raw.as_bytes());
    api.call(
        "POST",
        "/v1/hooks/jira",
        None,
        Some(raw.into_bytes()),
        &[
            ("X-Hub-Signature", &format!("sha256={sig}")),
            ("X-Atlassian-Webhook-Identifier", delivery),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_or_an_old_timestamp_gets_401_and_writes_nothing() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = hook_api(&store, "sig").await;
    let before = dbsize(&store).await;
    let body = ticket_event(1, "Ready");
    for (secret, ts, why) in [
        ("wrong-secret", now_s(), "does not match"),
        (
            GENERIC_SECRET,
            now_s() - 3600,
            "away from the receiver's clock",
        ),
    ] {
        let (status, reply) = generic(&api, "d-1", &body, secret, ts).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
        assert!(reply["detail"].as_str().unwrap().contains(why), "{reply}");
        assert!(!reply.to_string().contains(GENERIC_SECRET));
    }
    // A body changed after signing, a missing or malformed header.
    let raw = body.to_string();
    let ts = now_s();
    let sig = sign(GENERIC_SECRET.as_bytes(), format!("{ts}.{raw}").as_bytes());
    let tampered = raw.replace("Ready", "Reddy");
    for (headers, want) in [
        (
            vec![
                ("X-Drover-Signature", format!("sha256={sig}")),
                ("X-Drover-Timestamp", ts.to_string()),
                ("X-Drover-Delivery", "d-2".to_string()),
            ],
            "does not match",
        ),
        (
            vec![
                ("X-Drover-Timestamp", ts.to_string()),
                ("X-Drover-Delivery", "d-2".to_string()),
            ],
            "missing",
        ),
        (
            vec![
                ("X-Drover-Signature", "sha1=abc".to_string()),
                ("X-Drover-Timestamp", ts.to_string()),
            ],
            "not of the form",
        ),
    ] {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, reply) = api
            .call(
                "POST",
                "/v1/hooks/generic",
                None,
                Some(tampered.clone().into_bytes()),
                &hs,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
        assert!(reply["detail"].as_str().unwrap().contains(want), "{reply}");
    }
    // Jira's signature, bad.
    let (status, _) = jira(
        &api,
        "j-1",
        &jira_body(5, "Ready", "alice", "Change"),
        "nope",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A signed Jira delivery from two days ago: past the replay memory, refused.
    let mut old_body = jira_body(6, "Ready", "alice", "Change");
    old_body["timestamp"] = json!(now_ms() - 2 * 86_400_000);
    let (status, reply) = jira(&api, "j-old", &old_body, JIRA_SECRET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("a replay"),
        "{reply}"
    );
    assert_eq!(
        dbsize(&store).await,
        before,
        "refused deliveries write nothing"
    );
    // A hook that is not configured.
    let (status, _) = api
        .call(
            "POST",
            "/v1/hooks/servicenow",
            None,
            Some(b"{}".to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_late_events_start_nothing_and_an_approval_signals() {
    let redis = Redis::start();
    let store = redis.store().await;
    replays_and_approval(&store, "replay").await;
}

/// The same on three shards of a Redis Cluster: the ticket's state, the workflow it starts and the
/// approval that signals it all on the shard of the rules' cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_an_approval_on_three_shards() {
    let cluster = drover_store::server::RedisCluster::start(3, drover_store::server::Aof::Off)
        .expect("a local Redis Cluster");
    let store = crate::shards::sharded_store(&cluster.url()).await;
    replays_and_approval(&store, "replay-shards").await;
    // One source's rules naming clusters on two shards are refused at start.
    let split: drover_api::hooks::Config = toml::from_str(
        r#"
[[rules]]
name = "a"
source = "generic"
on = "status"
to = "Ready"
kind = "synthetic"
cluster = "east"

[[rules]]
name = "b"
source = "generic"
on = "status"
to = "Go"
kind = "synthetic"
cluster = "west"
"#,
    )
    .unwrap();
    let e = drover_api::hooks::check_shards(&store, &split).unwrap_err();
    assert!(
        e.contains(r#"rule "b""#) && e.contains("shard 2") && e.contains("shard 1"),
        "{e}"
    );
    let mut together = split.clone();
    together.rules[1].cluster = Some("east".into());
    drover_api::hooks::check_shards(&store, &together).unwrap();
}

async fn replays_and_approval(store: &drover_store::Store, name: &str) {
    let store = store.clone();
    let api = hook_api(&store, name).await;
    let _worker = InProcessWorker::start(&store, worker_config("hooks"));
    let (status, reply) = generic(
        &api,
        "d-1",
        &ticket_event(3, "Ready"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["started"].as_str().unwrap().to_string();
    // The same delivery again: acknowledged, nothing new.
    let (status, reply) = generic(
        &api,
        "d-1",
        &ticket_event(3, "Ready"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["duplicate"], true);
    // The same change under another delivery id, and a late older event: ignored.
    let (status, reply) = generic(
        &api,
        "d-2",
        &ticket_event(3, "Ready"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert!(
        reply["ignored"].as_str().unwrap().contains("not newer"),
        "{reply}"
    );
    let (status, reply) = generic(
        &api,
        "d-3",
        &ticket_event(2, "Approved"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let view = store.get(&id).await.unwrap().unwrap();
    assert!(
        !view.state.is_terminal(),
        "a late approval did not end the wait"
    );
    // An event no rule takes.
    let (status, reply) = generic(
        &api,
        "d-4",
        &ticket_event(4, "Ready"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert!(
        reply["ignored"]
            .as_str()
            .unwrap()
            .contains("no rule matches"),
        "{reply}"
    );
    let started = store
        .list(
            &drover_store::Filter {
                label: Some(("drover.io/ticket".into(), "T-1".into())),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(started.items.len(), 1, "one workflow for the ticket");
    // The approval: the workflow's wait ends, with who approved.
    let (status, reply) = generic(
        &api,
        "d-5",
        &ticket_event(5, "Approved"),
        GENERIC_SECRET,
        now_s(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["signalled"], json!(id));
    let done = wait_all_finished(&store, std::slice::from_ref(&id), Duration::from_secs(20)).await;
    assert_eq!(done[0].state, drover_workflows::State::Succeeded);
    let full = store.get(&id).await.unwrap().unwrap();
    let outputs = full.outputs.unwrap();
    assert!(
        outputs.values().any(|o| o.to_string().contains("alice")),
        "the approval payload names who approved: {outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_deliveries_follow_the_rules_and_drovers_own_changes_start_nothing() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = hook_api(&store, "jira").await;
    let (status, reply) = jira(
        &api,
        "j-own",
        &jira_body(10, "Ready", "drover-bot", "Change"),
        JIRA_SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert!(
        reply["ignored"]
            .as_str()
            .unwrap()
            .contains("own write-back")
    );
    let (status, reply) = jira(
        &api,
        "j-bug",
        &jira_body(11, "Ready", "alice", "Bug"),
        JIRA_SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let (status, reply) = jira(
        &api,
        "j-ok",
        &jira_body(12, "Ready", "alice", "Change"),
        JIRA_SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["started"].as_str().unwrap();
    let view = store.get(id).await.unwrap().unwrap();
    assert_eq!(view.input["steps"], 1, "input from the ticket's field");
    assert_eq!(view.labels["drover.io/ticket"], "OPS-7");
    // Malformed JSON with a valid signature: 400, nothing written.
    let before = dbsize(&store).await;
    let raw = "{not json";
    let sig = sign(JIRA_SECRET.as_bytes(), raw.as_bytes());
    let (status, reply) = api
        .call(
            "POST",
            "/v1/hooks/jira",
            None,
            Some(raw.as_bytes().to_vec()),
            &[
                ("X-Hub-Signature", &format!("sha256={sig}")),
                ("X-Atlassian-Webhook-Identifier", "j-bad"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(dbsize(&store).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_gets_503_with_retry_after_so_the_sender_retries() {
    let mut redis = Redis::start_with(true);
    let store = redis.store().await;
    let api = hook_api(&store, "down").await;
    redis.kill9();
    let body = ticket_event(1, "Ready").to_string();
    let ts = now_s();
    let sig = sign(GENERIC_SECRET.as_bytes(), format!("{ts}.{body}").as_bytes());
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/hooks/generic", api.base))
        .header("content-type", "application/json")
        .header("X-Drover-Signature", format!("sha256={sig}"))
        .header("X-Drover-Timestamp", ts.to_string())
        .header("X-Drover-Delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    // The sender's retry after Redis is back starts the workflow.
    redis.restart();
    wait_for(Duration::from_secs(10), "the retried delivery", || async {
        let (status, _) = generic(
            &api,
            "d-1",
            &ticket_event(1, "Ready"),
            GENERIC_SECRET,
            now_s(),
        )
        .await;
        status == StatusCode::CREATED
    })
    .await;
}
