//! The OpenAPI document at /v1/openapi.json: a valid OpenAPI 3.1 document (openapi-spec-validator)
//! listing every route the API serves, each kind's input schema refusing what the kind refuses; and
//! schemathesis fuzzing a live API against it: no server error, and every response matching its
//! documented status, content type and schema.

use std::time::Duration;

use serde_json::json;

use crate::api::{OPERATOR, start_api};
use crate::harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

async fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finished within five minutes")
    .expect("run python3");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_document_is_valid_openapi_lists_every_route_and_each_kinds_input() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let (status, doc) = api.call("GET", "/v1/openapi.json", None, None, &[]).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let dir = std::env::temp_dir().join(format!("drover-openapi-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (ok, out) = python(
        "import json, sys\nfrom openapi_spec_validator import validate\n\
         validate(json.load(open(sys.argv[1])))\nprint('valid')",
        &[file.to_str().unwrap()],
    )
    .await;
    assert!(ok, "openapi-spec-validator: {out}");

    // Every route the API serves (the hostile sweep's list) is documented, with its methods.
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/workflows", &["get", "post"][..]),
        ("/v1/workflows/{id}", &["get"]),
        ("/v1/workflows/{id}/events", &["get"]),
        ("/v1/workflows/{id}/cancel", &["post"]),
        ("/v1/workflows/{id}/retry", &["post"]),
        ("/v1/workflows/{id}/pause", &["post"]),
        ("/v1/workflows/{id}/resume", &["post"]),
        ("/v1/workflows/{id}/signals/{name}", &["post"]),
        ("/v1/schedules", &["get", "post"]),
        ("/v1/schedules/{id}", &["get", "put", "delete"]),
        ("/v1/schedules/{id}/pause", &["post"]),
        ("/v1/schedules/{id}/unpause", &["post"]),
        ("/v1/schedules/{id}/trigger", &["post"]),
        ("/v1/schedules/{id}/backfill", &["post"]),
        ("/v1/hooks/jira", &["post"]),
        ("/v1/hooks/servicenow", &["post"]),
        ("/v1/hooks/generic", &["post"]),
        ("/v1/whoami", &["get"]),
        ("/v1/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/ui/", &["get"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} is not documented");
        }
    }
    // And nothing is documented that the API does not serve.
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", &uuid_like())
                .replace("{name}", "go")
                .replace("{file}", "app.js");
            let (status, body) = api
                .call(
                    &method.to_uppercase(),
                    &concrete,
                    Some(OPERATOR),
                    Some(b"{}".to_vec()),
                    &[],
                )
                .await;
            assert!(
                !(status == 405
                    || (status == 404
                        && body["detail"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("no such route")))),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }

    // Each kind's input schema, and the submit body as a oneOf over the kinds.
    let schemas = &doc["components"]["schemas"];
    let kinds = drover_kinds::builtin().input_schemas();
    assert!(kinds.len() >= 10);
    for kind in kinds.keys() {
        assert!(
            schemas[format!("Input.{kind}")].is_object(),
            "no schema for {kind}"
        );
    }
    assert_eq!(
        schemas["SubmitRequest"]["oneOf"].as_array().unwrap().len(),
        kinds.len()
    );
    // The schema refuses what the kind refuses: an unknown field, a missing one.
    let check = "import json, sys, jsonschema\n\
        doc = json.load(open(sys.argv[1]))\n\
        schema = dict(doc['components']['schemas'][sys.argv[2]])\n\
        schema['components'] = doc['components']\n\
        resolver = jsonschema.validators.Draft202012Validator(schema)\n\
        print(json.dumps([resolver.is_valid(json.loads(i)) for i in sys.argv[3:]]))";
    let ok_input = json!({"steps": 2});
    let unknown = json!({"steps": 2, "stepz": 3});
    let (ran, out) = python(
        check,
        &[
            file.to_str().unwrap(),
            "Input.synthetic",
            &ok_input.to_string(),
            &unknown.to_string(),
        ],
    )
    .await;
    assert!(ran, "{out}");
    let verdicts: Vec<bool> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verdicts, [true, false], "{out}");
    for (input, expected) in [(ok_input, 201), (unknown, 422)] {
        let (status, body) = api
            .post(
                "/v1/workflows",
                OPERATOR,
                json!({"kind": "synthetic", "input": input}),
            )
            .await;
        assert_eq!(
            status.as_u16(),
            expected,
            "the API agrees with its schema: {body}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_its_schema() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    // Something to read: a workflow that ran, one paused.
    let worker = InProcessWorker::start(&store, worker_config("openapi-w"));
    for body in [
        json!({"kind": "synthetic", "input": {"steps": 2}}),
        json!({"kind": "synthetic", "input": {"steps": 2, "pause_step": 1}}),
    ] {
        api.post("/v1/workflows", OPERATOR, body).await;
    }
    let out = tokio::time::timeout(
        Duration::from_secs(420),
        tokio::process::Command::new("schemathesis")
            .args([
                "run",
                &format!("{}/v1/openapi.json", api.base),
                "--header",
                &format!("Authorization: Bearer {OPERATOR}"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "12",
                // One worker: hypothesis's lambda descriptions call ast.parse, which Python 3.11
                // does not make safe across threads ("AST constructor recursion depth mismatch").
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--no-color",
            ])
            .current_dir(ROOT)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finished within seven minutes")
    .expect("run schemathesis (python3 -m pip install schemathesis)");
    worker.stop().await;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{report}");
}
