//! Drover probed from outside as an attacker and a careless client would: hostile ids that aim at a
//! workflow's internal keys, every route with every method, malformed and oversized bodies and
//! headers, slow clients, signal floods and fan-outs that would create millions of workflows. Each
//! refusal is a 4xx with the API's JSON error, and neither Redis's key count nor its AOF grows.
//! `admission.rs`: provisioning inputs checked against the lab's MAAS at submission.

mod admission;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::{OPERATOR, VIEWER, key_count, start_api, start_api_with};
use crate::harness::*;

/// A reply read off the wire.
struct Reply {
    status: u16,
    content_type: String,
    /// The status line and headers.
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value (the first, if several).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on a fresh connection (`Connection: close`), read until the server closes it.
async fn raw(addr: &str, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    parse_reply(&buf)
}

fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut reply = Reply {
        status,
        content_type: String::new(),
        head,
        body: buf[split + 4..].to_vec(),
    };
    reply.content_type = reply.header("content-type").unwrap_or_default().to_string();
    reply
}

/// A request's bytes. `body` goes with `Content-Type: application/json` unless `headers` names one.
fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: drover\r\nconnection: close\r\n");
    if let Some(t) = token {
        r.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut bytes = r.into_bytes();
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            bytes.extend_from_slice(b"content-type: application/json\r\n");
        }
        bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", b.len()).as_bytes());
        bytes.extend_from_slice(b);
    } else {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// What a refusal must not change: the number of keys and the AOF's size.
async fn footprint(store: &drover_store::Store) -> (u64, u64) {
    let mut conn = store.connection();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut conn)
        .await
        .unwrap();
    let aof = info
        .lines()
        .find_map(|l| l.strip_prefix("aof_current_size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("AOF is on");
    (key_count(store).await, aof)
}

fn host(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// A workflow that stays put (no worker runs): it waits on signal `go` at step 1.
async fn parked_workflow(api: &crate::api::Api) -> String {
    let (status, body) = api
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": {"steps": 2, "signal": {"step": 1, "name": "go"}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_route_refuses_hostile_input_with_a_json_4xx_and_writes_nothing() {
    let redis = Redis::start_with(true);
    let store = redis.store().await;
    let api = crate::hooks::hook_api_with(&store, "hostile", crate::hooks::SERVICENOW).await;
    let addr = host(&api.base);
    let w = parked_workflow(&api).await;
    // A schedule the controls below aim at (paused: nothing fires during the sweep).
    let created = raw(
        &addr,
        &request(
            "POST",
            "/v1/schedules",
            Some(OPERATOR),
            &[],
            Some(br#"{"id":"s","cron":"0 3 * * *","kind":"synthetic","input":{"steps":1},"paused":true}"#),
        ),
    )
    .await;
    assert_eq!(created.status, 201);

    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    // Ids aimed at the workflow's own sub-keys and at key names in general.
    let long = "a".repeat(60_000);
    let hostile_ids = [
        format!("{w}:out"),
        format!("{w}:hist"),
        format!("{w}:rx"),
        format!("{w}:sigs"),
        format!("{w}:sig:go"),
        format!("{w}:kids"),
        format!("{w}:held"),
        format!("{w}%3Aout"),
        format!("{w}.s1t1"),
        format!("{w}%00"),
        format!("{w}%0A2026-12-04T00:00:00Z%20INFO%20forged"),
        w.to_uppercase(),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
        "..".to_string(),
        "%00".to_string(),
        "*".to_string(),
        "drover:%7B0%7D:ready".to_string(),
    ];
    let id_routes = [
        ("GET", ""),
        ("GET", "/events"),
        ("POST", "/cancel"),
        ("POST", "/retry"),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/signals/go"),
    ];
    for id in &hostile_ids {
        for (method, suffix) in id_routes {
            let path = format!("/v1/workflows/{id}{suffix}");
            let body = (method == "POST").then_some(&b"{}"[..]);
            cases.push((
                format!("{method} {path}"),
                request(method, &path, Some(OPERATOR), &[], body),
                404,
            ));
        }
    }
    for (method, suffix) in id_routes {
        let path = format!("/v1/workflows/{long}{suffix}");
        cases.push((
            format!("{method} /v1/workflows/<60 KB>{suffix}"),
            request(method, &path, Some(OPERATOR), &[], None),
            414,
        ));
    }
    // Schedule ids aimed at key names and paths.
    let hostile_schedule_ids = [
        "s:log".to_string(),
        "s%3Alog".to_string(),
        "..%2F..%2Fetc".to_string(),
        "%00".to_string(),
        ".hidden".to_string(),
        "-lead".to_string(),
        "x".repeat(64),
        "*".to_string(),
        "s%0A2026-12-04T00:00:00Z%20INFO%20forged".to_string(),
    ];
    for id in &hostile_schedule_ids {
        for (method, suffix) in [
            ("GET", ""),
            ("PUT", ""),
            ("DELETE", ""),
            ("POST", "/pause"),
            ("POST", "/unpause"),
            ("POST", "/trigger"),
            ("POST", "/backfill"),
        ] {
            let path = format!("/v1/schedules/{id}{suffix}");
            let body = (method == "POST" || method == "PUT").then_some(&b"{}"[..]);
            cases.push((
                format!("{method} {path}"),
                request(method, &path, Some(OPERATOR), &[], body),
                404,
            ));
        }
    }
    // Schedules: specs that are wrong, and controls given bad bodies.
    let schedule_bodies: Vec<(&str, &[u8], u16)> = vec![
        ("malformed JSON", b"{\"id\":", 400),
        ("no id", br#"{"cron":"* * * * *","kind":"synthetic","input":{"steps":1}}"#, 400),
        ("a cron of four fields", br#"{"id":"n","cron":"* * * *","kind":"synthetic","input":{"steps":1}}"#, 400),
        ("a minute of 61", br#"{"id":"n","cron":"61 * * * *","kind":"synthetic","input":{"steps":1}}"#, 400),
        ("an unknown time zone", br#"{"id":"n","cron":"* * * * *","timezone":"Mars/Base","kind":"synthetic","input":{"steps":1}}"#, 400),
        ("an empty window", br#"{"id":"n","cron":"* * * * *","window_secs":0,"kind":"synthetic","input":{"steps":1}}"#, 400),
        ("a freeze ending before it starts", br#"{"id":"n","cron":"* * * * *","kind":"synthetic","input":{"steps":1},"freezes":[{"name":"f","from":"2027-01-02T00:00:00Z","to":"2027-01-01T00:00:00Z"}]}"#, 400),
        ("an unknown kind", br#"{"id":"n","cron":"* * * * *","kind":"nope","input":{}}"#, 422),
        ("a window on a kind without one", br#"{"id":"n","cron":"* * * * *","window_secs":3600,"kind":"synthetic","input":{"steps":1}}"#, 422),
        ("an id with a colon", br#"{"id":"a:b","cron":"* * * * *","kind":"synthetic","input":{"steps":1}}"#, 400),
        ("the id of an existing schedule", br#"{"id":"s","cron":"* * * * *","kind":"synthetic","input":{"steps":1}}"#, 409),
    ];
    for (label, body, status) in schedule_bodies {
        cases.push((
            format!("schedule: {label}"),
            request("POST", "/v1/schedules", Some(OPERATOR), &[], Some(body)),
            status,
        ));
    }
    for (label, path, body, status) in [
        (
            "backfill: a range ending in the future",
            "/v1/schedules/s/backfill",
            &br#"{"from":"2026-01-01T00:00:00Z","to":"2999-01-01T00:00:00Z"}"#[..],
            400u16,
        ),
        (
            "backfill: not a date",
            "/v1/schedules/s/backfill",
            &br#"{"from":"yesterday","to":"today"}"#[..],
            400,
        ),
        (
            "backfill: too many fire times",
            "/v1/schedules/s/backfill",
            &br#"{"from":"2020-01-01T00:00:00Z","to":"2026-01-01T00:00:00Z"}"#[..],
            400,
        ),
        (
            "pause: an unknown field",
            "/v1/schedules/s/pause",
            &br#"{"reason":"x"}"#[..],
            400,
        ),
        (
            "trigger: an unknown overlap",
            "/v1/schedules/s/trigger",
            &br#"{"overlap":"sometimes"}"#[..],
            400,
        ),
        (
            "replace: another id",
            "/v1/schedules/s",
            &br#"{"id":"t","cron":"* * * * *","kind":"synthetic","input":{"steps":1}}"#[..],
            400,
        ),
    ] {
        let method = if label.starts_with("replace") {
            "PUT"
        } else {
            "POST"
        };
        cases.push((
            format!("schedule {label}"),
            request(method, path, Some(OPERATOR), &[], Some(body)),
            status,
        ));
    }
    cases.push((
        "schedule: viewer creates".into(),
        request(
            "POST",
            "/v1/schedules",
            Some(VIEWER),
            &[],
            Some(br#"{"id":"v","cron":"* * * * *","kind":"synthetic","input":{"steps":1}}"#),
        ),
        403,
    ));
    for q in ["preview=101", "preview=x", "bogus=1"] {
        cases.push((
            format!("schedule ?{q}"),
            request(
                "GET",
                &format!("/v1/schedules/s?{q}"),
                Some(VIEWER),
                &[],
                None,
            ),
            400,
        ));
    }
    for q in ["limit=0", "limit=501", "cursor=a:b", "bogus=1"] {
        cases.push((
            format!("schedules ?{q}"),
            request(
                "GET",
                &format!("/v1/schedules?{q}"),
                Some(VIEWER),
                &[],
                None,
            ),
            400,
        ));
    }
    // Hooks: unsigned, wrongly signed, replayed with an old timestamp, not configured, not JSON.
    let unsigned = br#"{"ticket":"T-1","version":1,"event":"updated","status":"Ready"}"#;
    cases.push((
        "hook: generic unsigned".into(),
        request(
            "POST",
            "/v1/hooks/generic",
            None,
            &[("x-drover-delivery", "d")],
            Some(unsigned),
        ),
        401,
    ));
    cases.push((
        "hook: generic with a forged signature".into(),
        request(
            "POST",
            "/v1/hooks/generic",
            None,
            &[
                ("x-drover-signature", &format!("sha256={}", "0".repeat(64))),
                ("x-drover-timestamp", &(now_ms() / 1000).to_string()),
                ("x-drover-delivery", "d"),
            ],
            Some(unsigned),
        ),
        401,
    ));
    cases.push((
        "hook: jira unsigned".into(),
        request(
            "POST",
            "/v1/hooks/jira",
            None,
            &[("x-atlassian-webhook-identifier", "d")],
            Some(b"{}"),
        ),
        401,
    ));
    cases.push((
        "hook: servicenow unsigned".into(),
        request(
            "POST",
            "/v1/hooks/servicenow",
            None,
            &[("x-servicenow-delivery", "d")],
            Some(br#"{"sys_id":"a","state":"-1","sys_mod_count":"1"}"#),
        ),
        401,
    ));
    cases.push((
        "hook: servicenow with a forged signature".into(),
        request(
            "POST",
            "/v1/hooks/servicenow",
            None,
            &[
                ("x-servicenow-signature", &"0".repeat(64)),
                ("x-servicenow-timestamp", &(now_ms() / 1000).to_string()),
                ("x-servicenow-delivery", "d"),
            ],
            Some(br#"{"sys_id":"a","state":"-1","sys_mod_count":"1"}"#),
        ),
        401,
    ));
    cases.push((
        "hook: generic with a valid signature an hour old".into(),
        {
            let ts = (now_ms() / 1000 - 3600).to_string();
            let sig = drover_api::hooks::verify::sign(
                b"generic-hook-secret-0123",
                format!("{ts}.{}", String::from_utf8_lossy(unsigned)).as_bytes(),
            );
            request(
                "POST",
                "/v1/hooks/generic",
                None,
                &[
                    ("x-drover-signature", &format!("sha256={sig}")),
                    ("x-drover-timestamp", &ts),
                    ("x-drover-delivery", "d"),
                ],
                Some(unsigned),
            )
        },
        401,
    ));
    cases.push((
        "hook: oversized".into(),
        request(
            "POST",
            "/v1/hooks/jira",
            None,
            &[],
            Some(&vec![b' '; (1 << 20) + 10]),
        ),
        413,
    ));
    cases.push((
        "hook: text/plain".into(),
        request(
            "POST",
            "/v1/hooks/jira",
            None,
            &[("content-type", "text/plain")],
            Some(b"{}"),
        ),
        415,
    ));
    // Every route with every method it does not take.
    let routes: Vec<(String, &[&str])> = vec![
        ("/v1/workflows".into(), &["PUT", "DELETE", "PATCH"]),
        (
            format!("/v1/workflows/{w}"),
            &["POST", "PUT", "DELETE", "PATCH"],
        ),
        (
            format!("/v1/workflows/{w}/cancel"),
            &["GET", "PUT", "DELETE"],
        ),
        (
            format!("/v1/workflows/{w}/retry"),
            &["GET", "PUT", "DELETE"],
        ),
        (
            format!("/v1/workflows/{w}/pause"),
            &["GET", "PUT", "DELETE"],
        ),
        (format!("/v1/workflows/{w}/resume"), &["GET", "PATCH"]),
        (
            format!("/v1/workflows/{w}/events"),
            &["POST", "PUT", "DELETE"],
        ),
        (
            format!("/v1/workflows/{w}/signals/go"),
            &["GET", "PUT", "DELETE"],
        ),
        ("/v1/schedules".into(), &["PUT", "DELETE", "PATCH"]),
        ("/v1/schedules/s".into(), &["POST", "PATCH"]),
        ("/v1/schedules/s/pause".into(), &["GET", "PUT", "DELETE"]),
        ("/v1/schedules/s/unpause".into(), &["GET", "DELETE"]),
        ("/v1/schedules/s/trigger".into(), &["GET", "PUT"]),
        ("/v1/schedules/s/backfill".into(), &["GET", "DELETE"]),
        ("/v1/hooks/jira".into(), &["GET", "PUT"]),
        ("/v1/hooks/generic".into(), &["GET", "DELETE"]),
        ("/v1/hooks/servicenow".into(), &["GET", "PATCH"]),
        ("/healthz".into(), &["POST", "DELETE"]),
        ("/v1/whoami".into(), &["POST", "PUT", "DELETE"]),
        ("/v1/openapi.json".into(), &["POST", "PUT", "DELETE"]),
        ("/ui/".into(), &["POST", "PUT", "DELETE"]),
        ("/ui/app.js".into(), &["POST", "DELETE", "PATCH"]),
        ("/readyz".into(), &["POST", "PUT"]),
        ("/metrics".into(), &["POST", "PUT", "DELETE"]),
    ];
    for (path, methods) in &routes {
        for method in *methods {
            cases.push((
                format!("{method} {path}"),
                request(method, path, Some(OPERATOR), &[], None),
                405,
            ));
        }
    }
    cases.push((
        "unknown route".into(),
        request("GET", "/v2/anything", Some(OPERATOR), &[], None),
        404,
    ));
    // The dashboard serves its three files and nothing else under /ui/.
    for path in [
        "/ui/..%2F..%2Fetc%2Fpasswd",
        "/ui/%2e%2e%2fCargo.toml",
        "/ui/app.js%00",
        "/ui/.env",
        "/ui/app.js/x",
    ] {
        cases.push((
            format!("dashboard {path}"),
            request("GET", path, None, &[], None),
            404,
        ));
    }
    cases.push((
        "whoami without a token".into(),
        request("GET", "/v1/whoami", None, &[], None),
        401,
    ));
    // Submissions: malformed, oversized, wrongly typed, impossible.
    let fan =
        |child: Value| json!({"steps": 1, "fan_out": {"step": 0, "children": 256, "child": child}});
    let nested = fan(fan(fan(json!({"steps": 1}))));
    type Submission<'a> = (&'a str, Vec<u8>, &'a [(&'a str, &'a str)], u16);
    let submissions: Vec<Submission> = vec![
        ("malformed JSON", b"{\"kind\":".to_vec(), &[], 400),
        ("not an object", b"[]".to_vec(), &[], 400),
        (
            "unknown field",
            br#"{"kind":"synthetic","input":{"steps":1},"x":1}"#.to_vec(),
            &[],
            400,
        ),
        (
            "unknown kind",
            br#"{"kind":"nope","input":{}}"#.to_vec(),
            &[],
            422,
        ),
        (
            "three levels of 256 children",
            serde_json::to_vec(&json!({"kind": "synthetic", "input": nested})).unwrap(),
            &[],
            422,
        ),
        (
            "a signal name the signal route refuses",
            br#"{"kind":"synthetic","input":{"steps":2,"signal":{"step":1,"name":"with space"}}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "a step beyond the steps",
            br#"{"kind":"synthetic","input":{"steps":2,"fail_step":7}}"#.to_vec(),
            &[],
            422,
        ),
        (
            "a scale-out of zero nodes",
            br#"{"kind":"scale-out","input":{"count":0,"node":{"join":{"secret":"j"}}}}"#.to_vec(),
            &[],
            422,
        ),
        (
            "constraints of the wrong type",
            br#"{"kind":"provision-node","input":{"constraints":{"cpu_count":"x"},"join":{"secret":"j"}}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "a literal join secret",
            br#"{"kind":"provision-node","input":{"join":"kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef"}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "an import from an OVF over http",
            br#"{"kind":"import-vm","input":{"namespace":"vmo-prod","name":"web","source":{"ovf":"http://x/web.ovf"}}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "an import with a path-like VM name",
            br#"{"kind":"import-vm","input":{"namespace":"vmo-prod","name":"../../etc","source":{"disk":"/x.qcow2"}}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "a migration plan with a bad VM",
            br#"{"kind":"migration-plan","input":{"namespace":"vmo-prod","vms":[{"name":"ok","source":{"disk":"/a"}},{"name":"B A D","source":{"disk":"/b"}}]}}"#
                .to_vec(),
            &[],
            422,
        ),
        (
            "an unconfigured cluster",
            br#"{"kind":"synthetic","input":{"steps":1},"cluster":"east"}"#.to_vec(),
            &[],
            400,
        ),
        (
            "a key-like cluster",
            br#"{"kind":"synthetic","input":{"steps":1},"cluster":"x}:wf:{0"}"#.to_vec(),
            &[],
            400,
        ),
        (
            "a cluster that is not a string",
            br#"{"kind":"synthetic","input":{"steps":1},"cluster":7}"#.to_vec(),
            &[],
            400,
        ),
        ("oversized", vec![b' '; (1 << 20) + 10], &[], 413),
        (
            "text/plain",
            br#"{"kind":"synthetic","input":{"steps":1}}"#.to_vec(),
            &[("content-type", "text/plain")],
            415,
        ),
        (
            "a form",
            br#"{"kind":"synthetic","input":{"steps":1}}"#.to_vec(),
            &[("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
        (
            "two Idempotency-Keys",
            br#"{"kind":"synthetic","input":{"steps":1}}"#.to_vec(),
            &[("idempotency-key", "one"), ("idempotency-key", "two")],
            400,
        ),
        (
            "a tab in the Idempotency-Key",
            br#"{"kind":"synthetic","input":{"steps":1}}"#.to_vec(),
            &[("idempotency-key", "a\tb")],
            400,
        ),
    ];
    for (label, body, headers, status) in submissions {
        cases.push((
            format!("submit: {label}"),
            request(
                "POST",
                "/v1/workflows",
                Some(OPERATOR),
                headers,
                Some(&body),
            ),
            status,
        ));
    }
    let no_type = {
        let mut r = b"POST /v1/workflows HTTP/1.1\r\nhost: d\r\nconnection: close\r\n".to_vec();
        r.extend_from_slice(format!("authorization: Bearer {OPERATOR}\r\n").as_bytes());
        let body = br#"{"kind":"synthetic","input":{"steps":1}}"#;
        r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
        r
    };
    cases.push(("submit: no Content-Type".into(), no_type, 415));
    // Headers past the limits get the JSON error too.
    let big = "x".repeat(40 << 10);
    cases.push((
        "a 40 KB header".into(),
        request(
            "GET",
            "/v1/workflows",
            Some(VIEWER),
            &[("x-big", &big)],
            None,
        ),
        431,
    ));
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cases.push((
        "150 headers".into(),
        request("GET", "/v1/workflows", Some(VIEWER), &many, None),
        431,
    ));
    // Tokens and roles.
    cases.push((
        "no token".into(),
        request(
            "POST",
            &format!("/v1/workflows/{w}/cancel"),
            None,
            &[],
            None,
        ),
        401,
    ));
    cases.push((
        "bad token".into(),
        request(
            "POST",
            &format!("/v1/workflows/{w}/cancel"),
            Some("not-a-token-at-all"),
            &[],
            None,
        ),
        401,
    ));
    cases.push((
        "viewer cancels".into(),
        request(
            "POST",
            &format!("/v1/workflows/{w}/cancel"),
            Some(VIEWER),
            &[],
            None,
        ),
        403,
    ));
    // Signals: names, payloads.
    let sig = |name: &str| format!("/v1/workflows/{w}/signals/{name}");
    cases.push((
        "signal: name with a space".into(),
        request("POST", &sig("a%20b"), Some(OPERATOR), &[], Some(b"{}")),
        400,
    ));
    cases.push((
        "signal: 80-character name".into(),
        request(
            "POST",
            &sig(&"n".repeat(80)),
            Some(OPERATOR),
            &[],
            Some(b"{}"),
        ),
        400,
    ));
    cases.push((
        "signal: malformed payload".into(),
        request("POST", &sig("go"), Some(OPERATOR), &[], Some(b"{\"a\"")),
        400,
    ));
    let fat = serde_json::to_vec(&json!({"blob": "b".repeat(100 << 10)})).unwrap();
    cases.push((
        "signal: 100 KB payload".into(),
        request("POST", &sig("go"), Some(OPERATOR), &[], Some(&fat)),
        413,
    ));
    // Listing.
    for q in [
        "state=bogus",
        "limit=0",
        "limit=501",
        "cursor=zzz",
        "label=novalue",
        "bogus=1",
        "all=maybe",
        "cluster=",
        "cluster=a%7Db",
        "cluster=a:b",
        "cluster=a/b",
    ] {
        cases.push((
            format!("list ?{q}"),
            request(
                "GET",
                &format!("/v1/workflows?{q}"),
                Some(VIEWER),
                &[],
                None,
            ),
            400,
        ));
    }

    // The event stream's own query.
    for q in ["depth=0", "depth=4", "depth=x", "since=1"] {
        cases.push((
            format!("events ?{q}"),
            request(
                "GET",
                &format!("/v1/workflows/{w}/events?{q}"),
                Some(VIEWER),
                &[],
                None,
            ),
            400,
        ));
    }

    let before = footprint(&store).await;
    let mut failures = Vec::new();
    for (label, bytes, expected) in &cases {
        let reply = raw(&addr, bytes).await;
        let body = reply.json();
        let ok = reply.status == *expected
            && reply.content_type.starts_with("application/json")
            && body["error"].as_str().is_some_and(|e| !e.is_empty())
            && !body["detail"].is_null();
        if !ok {
            failures.push(format!(
                "{label}: expected {expected}, got {} {} {}",
                reply.status,
                reply.content_type,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
            ));
        }
        if String::from_utf8_lossy(&reply.body).contains("0123456789abcdef") {
            failures.push(format!("{label}: the reply repeats the secret"));
        }
        let after = footprint(&store).await;
        if after != before {
            failures.push(format!("{label}: wrote to Redis: {before:?} -> {after:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} hostile requests refused, nothing written", cases.len());

    // The bearer scheme is case-insensitive (RFC 7235), and the workflow is untouched.
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {OPERATOR}");
        let reply = raw(
            &addr,
            &request(
                "GET",
                &format!("/v1/workflows/{w}"),
                None,
                &[("authorization", &auth)],
                None,
            ),
        )
        .await;
        assert_eq!(reply.status, 200, "{scheme}");
        assert_eq!(reply.json()["state"], "pending");
        assert_eq!(reply.json()["cancel_requested"], false);
    }
}

#[tokio::test]
async fn redis_functions_refuse_keys_that_are_not_workflow_records() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let w = parked_workflow(&api).await;
    // Give the workflow an outputs hash and a history list, as a running one has.
    let mut conn = store.connection();
    let p = store.prefix().to_string();
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}wf:{w}:out"))
        .arg("0")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(format!("{p}wf:{w}:hist"))
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = key_count(&store).await;
    // Straight to the functions, as any caller could, past the API's and the store's id checks.
    for suffix in [":out", ":hist"] {
        let id = format!("{w}{suffix}");
        let key = format!("{p}wf:{id}");
        for (function, extra) in [
            ("drover_cancel", vec!["1".to_string()]),
            ("drover_pause", vec!["1".to_string()]),
            ("drover_resume", vec!["1".to_string()]),
            (
                "drover_signal",
                vec![
                    "x".into(),
                    "{}".into(),
                    "1".into(),
                    "16".into(),
                    "64".into(),
                ],
            ),
            (
                "drover_retry",
                vec!["1".into(), "{}".into(), "0".into(), String::new()],
            ),
            ("drover_renew", vec!["1".into(), "1".into(), "1000".into()]),
            (
                "drover_commit",
                vec![
                    "1".into(),
                    "1".into(),
                    "1000".into(),
                    "{}".into(),
                    String::new(),
                    "0".into(),
                    "0".into(),
                ],
            ),
            (
                "drover_handback",
                vec!["1".into(), "1".into(), "1000".into()],
            ),
        ] {
            let reply: redis::RedisResult<redis::Value> = redis::cmd("FCALL")
                .arg(function)
                .arg(1)
                .arg(&key)
                .arg(&p)
                .arg(&id)
                .arg(&extra)
                .query_async(&mut conn)
                .await;
            // A refusal ("notfound", "gone", 0), or, for the worker-only functions whose record
            // check rides on their first read, that read failing on a key of another type.
            let text = match reply {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                ["notfound", "gone", "int(0)", "Int(0)", "WRONGTYPE"]
                    .iter()
                    .any(|word| text.contains(word)),
                "{function} on {id} answered {text}"
            );
        }
    }
    assert_eq!(
        key_count(&store).await,
        before,
        "a function wrote under a sub-key"
    );
    let ready: u64 = redis::cmd("ZCARD")
        .arg(format!("{p}ready"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ready, 1, "only the real workflow is queued");
    let out: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{p}wf:{w}:out"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(out, vec!["0".to_string()], "the outputs hash gained fields");
}

#[tokio::test]
async fn queued_signals_are_bounded_per_name_and_per_workflow() {
    let redis = Redis::start_with(true);
    let store = redis.store().await;
    let api = start_api_with(&store, drover_kinds::builtin(), |c| {
        c.max_queued_signals = 20;
        c.max_queued_signals_per_name = 8;
        c.max_signal_bytes = 1024;
    })
    .await;
    let w = parked_workflow(&api).await;
    let signal = |name: String, payload: Value| {
        let api = &api;
        let path = format!("/v1/workflows/{w}/signals/{name}");
        async move { api.post(&path, OPERATOR, payload).await }
    };
    for i in 0..8 {
        let (status, body) = signal("x".into(), json!({"n": i})).await;
        assert_eq!(status, 202, "{body}");
    }
    let before = footprint(&store).await;
    let (status, body) = signal("x".into(), json!({"n": 8})).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("8 queued signals with this name"),
        "{body}"
    );
    assert_eq!(footprint(&store).await, before);
    // Other names fill the workflow's bound.
    for i in 0..12 {
        let (status, body) = signal(format!("y{}", i % 3), json!(i)).await;
        assert_eq!(status, 202, "{body}");
    }
    let before = footprint(&store).await;
    let (status, body) = signal("z".into(), json!(null)).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("20 queued signals (the most per workflow)"),
        "{body}"
    );
    let (status, body) = signal("go".into(), json!({"pad": "p".repeat(2000)})).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 1024 bytes"),
        "{body}"
    );
    assert_eq!(footprint(&store).await, before);

    // A signal the workflow waits on is still delivered, full queues or not.
    let worker = InProcessWorker::start(&store, worker_config("sig"));
    wait_for(
        Duration::from_secs(10),
        "the workflow to wait on go",
        || async {
            store
                .get(&w)
                .await
                .unwrap()
                .is_some_and(|v| v.waiting_on.as_deref() == Some("signal:go"))
        },
    )
    .await;
    let (status, body) = signal("go".into(), json!({"ok": true})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["detail"], "delivered");
    let done = wait_all_finished(&store, std::slice::from_ref(&w), Duration::from_secs(10)).await;
    assert_eq!(done[0].state, drover_workflows::State::Succeeded);
    worker.stop().await;
}

#[tokio::test]
async fn descendants_are_bounded_at_submission_and_when_children_start() {
    let redis = Redis::start();
    let store = redis.store().await;
    let two_levels = json!({"steps": 1, "fan_out": {"step": 0, "children": 4,
        "child": {"steps": 1, "fan_out": {"step": 0, "children": 4, "child": {"steps": 1}}}}});
    // Refused at submission where the input already says it: 4 + 16 = 20 > 10.
    let strict = start_api_with(
        &store,
        drover_kinds::builtin().with_max_descendants(10),
        |_| {},
    )
    .await;
    let before = key_count(&store).await;
    let (status, body) = strict
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": two_levels}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("creates 20 workflows"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("at most 10"),
        "{body}"
    );
    assert_eq!(key_count(&store).await, before);

    // Accepted by an API with a looser limit, then bounded by workers with the strict one.
    let api = start_api(&store).await;
    let (status, body) = api
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "synthetic", "input": two_levels}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let root = body["id"].as_str().unwrap().to_string();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    let worker = tokio::spawn(drover_worker::run(
        store.clone(),
        drover_kinds::builtin().with_max_descendants(10),
        drover_workflows::ports::Ports::new(std::sync::Arc::new(drover_worker::ports::TokioClock)),
        worker_config("strict"),
        async move {
            let _ = rx2.wait_for(|s| *s).await;
        },
    ));
    let done =
        wait_all_finished(&store, std::slice::from_ref(&root), Duration::from_secs(20)).await;
    assert_eq!(
        done[0].state,
        drover_workflows::State::Failed,
        "{:?}",
        done[0].error
    );
    let mut conn = store.connection();
    let all: u64 = redis::cmd("ZCARD")
        .arg(format!("{}idx:all", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let created: u64 = redis::cmd("HGET")
        .arg(format!("{}wf:{root}", store.prefix()))
        .arg("descendants")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        all - 1,
        created,
        "the root counts every workflow created under it"
    );
    assert!(
        created <= 10,
        "{created} workflows created past a limit of 10"
    );
    assert_eq!(
        created, 8,
        "the root's 4 children and the first of them its 4"
    );
    let children = store.children(&root).await.unwrap();
    let refused: Vec<_> = children
        .iter()
        .filter(|c| {
            c.error
                .as_ref()
                .is_some_and(|e| e.to_string().contains("past its limit of 10 workflows"))
        })
        .collect();
    assert_eq!(refused.len(), 3, "{children:?}");
    // A child's detail and the list both name its parent.
    let child = &children[0].id;
    let (status, detail) = api
        .call(
            "GET",
            &format!("/v1/workflows/{child}"),
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["parent"], json!(root), "{detail}");
    let (_, page) = api
        .call(
            "GET",
            &format!("/v1/workflows?label=parent={root}&all=true"),
            Some(VIEWER),
            None,
            &[],
        )
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|i| i["parent"] == json!(root)), "{page}");
    let _ = stop.send(true);
    drop(rx);
    let _ = worker.await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api_with(&store, drover_kinds::builtin(), |c| {
        c.header_timeout_ms = 600;
        c.body_timeout_ms = 600;
        c.max_connections = 8;
    })
    .await;
    let addr = host(&api.base);
    // Half a request's headers, never finished.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/workflows HTTP/1.1\r\nhost: d\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A short body.
    let mut short = TcpStream::connect(&addr).await.unwrap();
    short
        .write_all(
            format!(
                "POST /v1/workflows HTTP/1.1\r\nhost: d\r\nauthorization: Bearer {OPERATOR}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"kind\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    for _ in 0..3 {
        let t = Instant::now();
        let reply = raw(&addr, &request("GET", "/healthz", None, &[], None)).await;
        assert_eq!(reply.status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a normal client waited {:?}",
            t.elapsed()
        );
    }
    // The short body gets 408 with the JSON error, the slow headers a closed connection.
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), short.read_to_end(&mut buf))
        .await
        .expect("the short body was not cut off")
        .unwrap();
    let reply = parse_reply(&buf);
    assert_eq!(reply.status, 408);
    assert_eq!(reply.json()["error"], "request timeout");
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client kept its connection");
    }
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(500),
        "cut off after {cut:?}, before the timeout"
    );
    eprintln!("slow clients cut off after {cut:?} (timeout 600 ms)");

    // The cap: 8 idle connections fill it; the 9th gets 503 at once; once the idle ones are cut
    // off, new clients are served again.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = raw(&addr, &request("GET", "/healthz", None, &[], None)).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"], "too many connections");
    wait_for(Duration::from_secs(5), "a slot to free", || async {
        raw(&addr, &request("GET", "/healthz", None, &[], None))
            .await
            .status
            == 200
    })
    .await;
}

#[tokio::test]
async fn the_api_logs_outcomes_not_attempts_and_cannot_be_made_to_forge_lines() {
    let redis = Redis::start();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("drover-api-logs-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("api.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("api")
        .env("DROVER_REDIS_URL", redis.url())
        .env("DROVER_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("DROVER_API_TOKEN", OPERATOR)
        .env_remove("NO_COLOR")
        .env_remove("DROVER_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(10), "the API to listen", || async {
        TcpStream::connect(&addr).await.is_ok()
    })
    .await;
    let submit = serde_json::to_vec(&json!({"kind": "synthetic", "input": {"steps": 1}})).unwrap();
    let reply = raw(
        &addr,
        &request("POST", "/v1/workflows", Some(OPERATOR), &[], Some(&submit)),
    )
    .await;
    assert_eq!(reply.status, 201);
    let w = reply.json()["id"].as_str().unwrap().to_string();
    let ghost = "0192f0c1-7d2e-7a4b-9c3d-0123456789ab";
    for (path, status) in [
        (format!("/v1/workflows/{ghost}/cancel"), 404),
        (format!("/v1/workflows/{ghost}/pause"), 404),
        (format!("/v1/workflows/{ghost}/resume"), 404),
        (format!("/v1/workflows/{ghost}/signals/go"), 404),
        (
            "/v1/workflows/x%0A2026-12-04T00:00:00Z%20INFO%20forged%20line/cancel".to_string(),
            404,
        ),
        (format!("/v1/workflows/{w}/cancel"), 202),
    ] {
        let reply = raw(&addr, &request("POST", &path, Some(OPERATOR), &[], None)).await;
        assert_eq!(reply.status, status, "{path}");
    }
    // SIGTERM, then read what it wrote.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-04T00:00:00Z")),
        "a forged line:\n{text}"
    );
    assert!(
        !text.contains("forged"),
        "an untrusted id was logged:\n{text}"
    );
    let cancels: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Cancellation requested."))
        .collect();
    assert_eq!(cancels.len(), 1, "{text}");
    assert!(cancels[0].contains(&w), "{text}");
    for quiet in [
        "Workflow paused.",
        "Workflow resumed.",
        "Signal sent.",
        ghost,
    ] {
        assert!(
            !text.contains(quiet),
            "{quiet:?} logged for a refused request:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
