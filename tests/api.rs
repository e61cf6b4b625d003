//! The REST API over real HTTP: authentication and roles, validation that writes nothing, idempotent
//! submission, listing with filters and pages, controls.

use std::sync::Arc;
use std::time::Duration;

use drover_workflows::Registry;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const OPERATOR: &str = "operator-token-0123456789";
pub(crate) const VIEWER: &str = "viewer-token-0123456789";

pub(crate) struct Api {
    pub(crate) base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub(crate) async fn start_api(store: &drover_store::Store) -> Api {
    start_api_with(store, drover_kinds::builtin(), |_| {}).await
}

/// The API with its config adjusted by `tune` and the given kinds.
pub(crate) async fn start_api_with(
    store: &drover_store::Store,
    registry: Registry,
    tune: impl FnOnce(&mut drover_api::Config),
) -> Api {
    start_api_full(store, registry, tune, None).await
}

/// The API with webhooks too.
pub(crate) async fn start_api_full(
    store: &drover_store::Store,
    registry: Registry,
    tune: impl FnOnce(&mut drover_api::Config),
    hooks: Option<Arc<drover_api::hooks::Hooks>>,
) -> Api {
    let mut config = drover_api::Config {
        tokens: vec![
            drover_api::Token {
                name: "ops".into(),
                token: OPERATOR.into(),
                role: drover_api::Role::Operator,
            },
            drover_api::Token {
                name: "ro".into(),
                token: VIEWER.into(),
                role: drover_api::Role::Viewer,
            },
        ],
        ..drover_api::Config::default()
    };
    tune(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(drover_api::AppState {
        store: store.clone(),
        registry,
        config,
        hooks,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(drover_api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Api {
        base,
        http: reqwest::Client::new(),
        _stop: tx,
    }
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /v1/workflows` as the operator with an Idempotency-Key and a raw body.
    async fn submit_with_key(&self, body: Vec<u8>, key: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/v1/workflows",
            Some(OPERATOR),
            Some(body),
            &[("Idempotency-Key", key)],
        )
        .await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            path,
            Some(token),
            Some(serde_json::to_vec(&body).unwrap()),
            &[],
        )
        .await
    }
}

pub(crate) async fn key_count(store: &drover_store::Store) -> u64 {
    let mut conn = store.connection();
    redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn refusals_are_4xx_with_a_message_and_write_nothing() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let before = key_count(&store).await;
    let good = json!({"kind": "synthetic", "input": {"steps": 2}});
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no token",
            None,
            serde_json::to_vec(&good).unwrap(),
            StatusCode::UNAUTHORIZED,
            "Bearer",
        ),
        (
            "wrong token",
            Some("nope-nope-nope-nope"),
            serde_json::to_vec(&good).unwrap(),
            StatusCode::UNAUTHORIZED,
            "not valid",
        ),
        (
            "viewer submits",
            Some(VIEWER),
            serde_json::to_vec(&good).unwrap(),
            StatusCode::FORBIDDEN,
            "operator",
        ),
        (
            "malformed JSON",
            Some(OPERATOR),
            b"{\"kind\": \"synthetic\", ".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            "unknown field",
            Some(OPERATOR),
            br#"{"kind":"synthetic","input":{"steps":1},"extra":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "extra",
        ),
        (
            "unknown kind",
            Some(OPERATOR),
            br#"{"kind":"teleport","input":{}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "known kinds: attach-volume, decommission-node, deploy-machine, detach-volume, drain-node, import-vm, migrate-vmi, migration-plan",
        ),
        (
            "invalid input",
            Some(OPERATOR),
            br#"{"kind":"synthetic","input":{"steps":0}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "between 1 and 100",
        ),
        (
            "bad priority",
            Some(OPERATOR),
            br#"{"kind":"synthetic","input":{"steps":1},"priority":1000}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "priority",
        ),
        (
            "bad label",
            Some(OPERATOR),
            br#"{"kind":"synthetic","input":{"steps":1},"labels":{"a b":"c"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "label",
        ),
        (
            "oversized body",
            Some(OPERATOR),
            {
                let big = "x".repeat(1 << 20);
                serde_json::to_vec(&json!({"kind": "synthetic", "input": {"steps": 1, "pad": big}}))
                    .unwrap()
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
    ];
    for (name, token, body, status, needle) in cases {
        let (got, body) = api
            .call("POST", "/v1/workflows", token, Some(body), &[])
            .await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(body["error"].is_string(), "{name}: {body}");
        assert!(
            body["detail"].to_string().contains(needle),
            "{name}: {body}"
        );
    }
    assert_eq!(
        key_count(&store).await,
        before,
        "a refused request wrote to Redis"
    );
    let (status, body) = api
        .call("GET", "/v1/workflows/nope", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = api
        .call("GET", "/v1/workflows?state=bogus", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .call("POST", "/v1/workflows/x/cancel", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn idempotent_submission_listing_and_controls() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let body = serde_json::to_vec(
        &json!({"kind": "synthetic", "input": {"steps": 2}, "labels": {"ticket": "OPS-1"}}),
    )
    .unwrap();
    let (s1, r1) = api.submit_with_key(body.clone(), "k-1").await;
    let (s2, r2) = api.submit_with_key(body.clone(), "k-1").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(r1["id"], r2["id"], "same key, same workflow");
    let id = r1["id"].as_str().unwrap().to_string();
    // The same request with its keys in another order is the same request.
    let reordered =
        br#"{"labels": {"ticket": "OPS-1"}, "input": {"steps": 2}, "kind": "synthetic"}"#;
    let (s3, r3) = api.submit_with_key(reordered.to_vec(), "k-1").await;
    assert_eq!((s3, &r3["id"]), (StatusCode::OK, &r1["id"]), "{r3}");
    // The key with a different request is refused and writes nothing.
    let keys = key_count(&store).await;
    let (s4, r4) = api
        .submit_with_key(
            serde_json::to_vec(&json!({"kind": "synthetic", "input": {"steps": 3}})).unwrap(),
            "k-1",
        )
        .await;
    assert_eq!(s4, StatusCode::UNPROCESSABLE_ENTITY, "{r4}");
    assert_eq!(r4["error"], "idempotency key reused", "{r4}");
    assert!(r4["detail"].as_str().unwrap().contains(&id), "{r4}");
    assert_eq!(key_count(&store).await, keys, "nothing written");
    for _ in 0..4 {
        api.post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": {"steps": 1}}),
        )
        .await;
    }
    let mut conn = store.connection();
    let all: u64 = redis::cmd("ZCARD")
        .arg(format!("{}idx:all", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(all, 5);

    // Label filter and pagination (2 per page over 5).
    let (_, page) = api
        .call(
            "GET",
            "/v1/workflows?label=ticket=OPS-1",
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workflows?limit=2&cursor={c}"),
            None => "/v1/workflows?limit=2".into(),
        };
        let (status, page) = api.call("GET", &path, Some(VIEWER), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every workflow once across pages");

    // Controls: pause, resume, cancel; cancel of an ended workflow is a conflict.
    let (s, _) = api
        .post(&format!("/v1/workflows/{id}/pause"), OPERATOR, json!(null))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, list) = api
        .call("GET", "/v1/workflows?state=paused", Some(VIEWER), None, &[])
        .await;
    assert_eq!(list["items"][0]["id"], json!(id));
    let (s, _) = api
        .post(&format!("/v1/workflows/{id}/cancel"), OPERATOR, json!(null))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let worker = InProcessWorker::start(&store, worker_config("api-w"));
    wait_for(Duration::from_secs(10), "the cancellation", || async {
        store.get(&id).await.unwrap().unwrap().state == drover_workflows::State::Cancelled
    })
    .await;
    let (s, body) = api
        .post(&format!("/v1/workflows/{id}/cancel"), OPERATOR, json!(null))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = api
        .post(&format!("/v1/workflows/{id}/retry"), OPERATOR, json!(null))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, detail) = api
        .call(
            "GET",
            &format!("/v1/workflows/{id}"),
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(detail["state"], "cancelled");
    assert_eq!(detail["steps"].as_array().unwrap().len(), 2);
    worker.stop().await;
}

/// Reads server-sent events from `resp` until the stream closes or `deadline` passes: (event, data)
/// pairs in order.
pub(crate) async fn read_events(
    mut resp: reqwest::Response,
    deadline: Duration,
) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut buf = String::new();
    let end = tokio::time::Instant::now() + deadline;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(end, resp.chunk()).await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buf.find("\n\n") {
            let block: String = buf.drain(..at + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn listing_shows_top_level_workflows_and_the_event_stream_follows_one_to_its_end() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    // Each child lives at least 800 ms, longer than the stream's poll (500 ms), so some poll sees
    // it running however the worker's start falls between polls.
    let child = json!({"steps": 2, "min_ms": 400, "max_ms": 450});
    let (_, body) = api
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": {"steps": 2, "min_ms": 100, "max_ms": 150,
                "fan_out": {"step": 1, "children": 3, "child": child}}}),
        )
        .await;
    let parent = body["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        api.post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": {"steps": 1}}),
        )
        .await;
    }

    // The stream opens before any worker runs: the first event is the pending workflow.
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/v1/workflows/{parent}/events?depth=2", api.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(60)));
    let worker = InProcessWorker::start(&store, worker_config("events-w"));
    let events = reader.await.unwrap();
    worker.stop().await;

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.len() >= 4, "{names:?}");
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert!(names[..names.len() - 1].iter().all(|n| *n == "workflow"));
    let (_, first) = &events[0];
    assert_eq!(first["id"], json!(parent));
    assert_eq!(first["state"], json!("pending"));
    let (_, last) = &events[events.len() - 2];
    assert_eq!(last["state"], json!("succeeded"), "{last}");
    let kids = last["children"].as_array().unwrap();
    assert_eq!(kids.len(), 3);
    assert!(
        kids.iter()
            .all(|k| k["state"] == "succeeded" && k["children"] == json!([]))
    );
    assert_eq!(events.last().unwrap().1, json!({"state": "succeeded"}));
    // Every change in between was sent once: no two consecutive events are equal, and the
    // children were seen running before they succeeded.
    assert!(events.windows(2).all(|w| w[0] != w[1]));
    assert!(
        events.iter().any(|(_, e)| e["children"]
            .as_array()
            .is_some_and(|k| k.iter().any(|c| c["state"] != "succeeded"))),
        "no event showed a child before it ended"
    );

    // Listing: top-level by default, children with all=true, pages filled past the children.
    let (_, top) = api
        .call("GET", "/v1/workflows", Some(VIEWER), None, &[])
        .await;
    let top = top["items"].as_array().unwrap().clone();
    assert_eq!(top.len(), 3, "{top:?}");
    assert!(top.iter().all(|w| w["parent"].is_null()));
    let (_, all) = api
        .call("GET", "/v1/workflows?all=true", Some(VIEWER), None, &[])
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 6);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workflows?state=succeeded&limit=1&cursor={c}"),
            None => "/v1/workflows?state=succeeded&limit=1".into(),
        };
        let (status, page) = api.call("GET", &path, Some(VIEWER), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        if page["next_cursor"].is_string() {
            assert_eq!(items.len(), 1, "a page is filled past the children: {page}");
        }
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // An ended workflow's stream sends its detail and the end at once.
    let resp = http
        .get(format!("{}/v1/workflows/{parent}/events", api.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    let events = read_events(resp, Duration::from_secs(10)).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["workflow", "end"]);
    assert!(events[0].1["children"][0].get("children").is_none());

    // Refusals: unknown workflow, bad depth, no token.
    let ghost = uuid_like();
    let (s, e) = api
        .call(
            "GET",
            &format!("/v1/workflows/{ghost}/events"),
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = api
        .call(
            "GET",
            &format!("/v1/workflows/{parent}/events?depth=4"),
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("depth"));
    let (s, _) = api
        .call(
            "GET",
            &format!("/v1/workflows/{parent}/events"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
