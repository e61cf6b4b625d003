//! The web dashboard in a real browser: Debian's Chromium, headless, driven by Playwright
//! (tests/dashboard/drive.mjs) against a live API, workers and the lab. A wrong token is refused
//! with the API's reason; an operator sees the running rollout in the list, its progress advancing
//! live over the event stream (no reload), its nodes and VMs, and pauses it with the button (the
//! store says paused); a viewer gets no controls; the page logs no error (a CSP violation would).
//! Screenshots go to target/test-artifacts/dashboard/.

use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{OPERATOR, VIEWER, start_api};
use crate::harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Chromium and Playwright, or why not (in CI both must be there: `.ci/run` installs them).
fn browser() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = format!("{ROOT}/tests/dashboard/node_modules/playwright-core");
    let missing = if !std::path::Path::new(&chromium).exists() {
        Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ))
    } else if !std::path::Path::new(&playwright).exists() {
        Some("no playwright-core (cd tests/dashboard && npm ci)".to_string())
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Some(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[tokio::test]
async fn an_operator_follows_a_rollout_live_and_pauses_it_from_the_browser() {
    let Some(chromium) = browser() else { return };
    let rig =
        crate::drain::rig_with(2, drover_lab::LabConfig::reference().with_time_scale(60.0)).await;
    let api = start_api(&rig.store).await;
    let (status, body) = api
        .post(
            "/v1/workflows",
            OPERATOR,
            json!({"kind": "rolling-maintenance", "input": {
                "nodes": ["worker-01", "worker-02", "worker-03"],
                "max_in_maintenance": 1, "poll_ms": 300}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(30),
        "the rollout's first drain",
        || async {
            rig.store
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .children
                .is_some_and(|c| !c.is_empty())
        },
    )
    .await;

    let shots = format!("{ROOT}/target/test-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(format!("{ROOT}/tests/dashboard/drive.mjs"))
            .args([&api.base, OPERATOR, VIEWER, &id, &shots])
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser finished within two minutes")
    .expect("run node");
    assert!(
        out.status.success(),
        "drive.mjs: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert!(
        seen["wrongToken"].as_str().unwrap().contains("not valid"),
        "{seen}"
    );
    assert_eq!(seen["who"], "ops (operator)", "{seen}");
    assert!(seen["rows"].as_u64().unwrap() >= 1);
    let (first, later) = (
        seen["progressFirst"].as_f64().unwrap(),
        seen["progressLater"].as_f64().unwrap(),
    );
    assert!(later > first, "the progress advanced live: {seen}");
    assert_eq!(seen["navigationsWhileLive"], 0, "without a reload: {seen}");
    assert!(seen["nodes"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["vms"].as_u64().unwrap() >= 1,
        "each node's VMs: {seen}"
    );
    assert!(
        seen["stateAfterPause"].as_str().unwrap().contains("paused"),
        "{seen}"
    );
    let refused = seen["signalRefused"].as_str().unwrap();
    assert!(
        refused.contains("400") && refused.contains("signal names are"),
        "a refused signal shows the API's detail: {seen}"
    );
    assert!(
        seen["dialogs"].as_array().unwrap().iter().any(|d| d
            .as_str()
            .unwrap()
            .starts_with("Send signal no spaces allowed")),
        "the signal was confirmed first: {seen}"
    );
    assert_eq!(seen["viewerWho"], "ro (viewer)");
    assert_eq!(
        seen["viewerControls"], 0,
        "a viewer has no controls: {seen}"
    );
    // The wrong token's 401 and the refused signal's 400 are the only errors the browser logs
    // (as failed resource loads).
    let errors: Vec<&Value> = seen["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let e = e.as_str().unwrap();
            !e.contains("status of 401") && !e.contains("status of 400")
        })
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    assert!(
        rig.store.get(&id).await.unwrap().unwrap().paused,
        "the store says the rollout is paused"
    );
    for shot in ["list", "detail-live", "paused", "viewer"] {
        let png = std::fs::metadata(format!("{shots}/{shot}.png")).unwrap();
        assert!(png.len() > 1000, "{shot}.png");
    }
}
