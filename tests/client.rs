//! The `drover` CLI's client commands, run as the real binary against a live API and worker:
//! contexts, submit from YAML, list/get/describe/history in each output form, controls, signals,
//! `watch` with the exit code of the workflow's end, schedules, and refusals that carry the API's
//! detail with exit code 4.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::{OPERATOR, VIEWER, start_api};
use crate::harness::*;

struct Cli {
    server: String,
    contexts: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// Runs `drover args` with the contexts file and `env`, no server or token from the
    /// environment unless `env` gives them.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.args(args)
            .env("DROVER_CONTEXTS", &self.contexts)
            .env_remove("DROVER_SERVER")
            .env_remove("DROVER_TOKEN")
            .env_remove("DROVER_CONTEXT")
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
            .await
            .expect("drover finished within a minute")
            .expect("run drover");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// As the operator, through the environment.
    async fn op(&self, args: &[&str]) -> Out {
        let out = self
            .run(
                args,
                &[("DROVER_SERVER", &self.server), ("DROVER_TOKEN", OPERATOR)],
            )
            .await;
        assert!(
            out.code == 0,
            "drover {args:?} exited {}: {}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_cli_submits_lists_controls_and_watches_workflows() {
    let redis = Redis::start();
    let store = redis.store().await;
    let api = start_api(&store).await;
    let dir = std::env::temp_dir().join(format!("drover-client-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = Cli {
        server: api.base.clone(),
        contexts: dir.join("contexts.yaml"),
    };

    // Contexts: a token from an environment variable; listed without the token.
    let out = cli
        .run(
            &[
                "context",
                "set",
                "lab",
                "--server",
                &api.base,
                "--token-env",
                "LAB_TOKEN",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli.run(&["context", "list"], &[]).await;
    assert!(out.stdout.contains("*         lab"), "{}", out.stdout);
    assert!(out.stdout.contains("env LAB_TOKEN"), "{}", out.stdout);
    // Its variable unset: a clear error, before any request.
    let out = cli.run(&["list"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("$LAB_TOKEN, which is not set"),
        "{}",
        out.stderr
    );
    // No context and no server at all.
    let bare = Cli {
        server: api.base.clone(),
        contexts: dir.join("none.yaml"),
    };
    let out = bare.run(&["list"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no Drover server"), "{}", out.stderr);

    // Submit from YAML, with a label; the id comes back on stdout.
    let input = write(
        &dir,
        "input.yaml",
        "steps: 3\nmin_ms: 50\nmax_ms: 80\nsignal:\n  step: 1\n  name: approve\n\
         fan_out:\n  step: 2\n  children: 2\n  child: {steps: 1, min_ms: 50, max_ms: 80}\n",
    );
    let out = cli
        .run(
            &["submit", "synthetic", "-f", &input, "-l", "team=ops"],
            &[("LAB_TOKEN", OPERATOR)],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    assert!(drover_workflows::is_workflow_id(&id), "{id:?}");

    // Reads in every form.
    let out = cli.op(&["list"]).await;
    let header = out.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.ends_with("AGE"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&id) && out.stdout.contains("synthetic"));
    let out = cli.op(&["list", "-o", "wide"]).await;
    assert!(out.stdout.contains("team=ops"), "{}", out.stdout);
    let out = cli.op(&["get", &id, "-o", "json"]).await;
    let detail: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(detail["labels"], json!({"team": "ops"}));
    assert_eq!(detail["input"]["signal"]["name"], "approve");
    let out = cli.op(&["get", &id, "-o", "yaml"]).await;
    assert!(out.stdout.contains(&format!("id: {id}")), "{}", out.stdout);

    // Pause before any worker runs; listed as paused; resumed.
    let out = cli.op(&["pause", &id]).await;
    assert!(out.stdout.contains("pause accepted"), "{}", out.stdout);
    let out = cli.op(&["list", "--state", "paused", "-o", "json"]).await;
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed["items"][0]["id"], json!(id));
    cli.op(&["resume", &id]).await;

    // A viewer cannot control: the API's refusal, exit code 4.
    let out = cli
        .run(
            &["cancel", &id],
            &[("DROVER_SERVER", &api.base), ("DROVER_TOKEN", VIEWER)],
        )
        .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("403"), "{}", out.stderr);

    // Watch while a worker runs it; the signal lets it finish; exit 0.
    let worker = InProcessWorker::start(&store, worker_config("cli-w"));
    let watcher = {
        let server = api.base.clone();
        let contexts = cli.contexts.clone();
        let id = id.clone();
        tokio::spawn(async move {
            Cli { server, contexts }
                .op(&["watch", &id, "--timeout", "50"])
                .await
        })
    };
    wait_for(
        std::time::Duration::from_secs(20),
        "the signal wait",
        || async {
            store
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .waiting_on
                .is_some_and(|w| w.starts_with("signal:"))
        },
    )
    .await;
    let out = cli.op(&["signal", &id, "approve", "-d", "{by: cli}"]).await;
    assert!(out.stdout.contains("signal approve sent"), "{}", out.stdout);
    let watched = watcher.await.unwrap();
    assert!(
        watched.stdout.contains(&format!("workflow {id} succeeded")),
        "{}",
        watched.stdout
    );
    // Not a terminal: one line per change, children under their parent.
    assert!(watched.stdout.contains("  synthetic"), "{}", watched.stdout);
    assert!(
        !watched.stdout.contains('\u{1b}'),
        "no escape codes in a pipe"
    );

    let out = cli.op(&["describe", &id]).await;
    assert!(
        out.stdout.contains("State:     succeeded"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Children (2):"), "{}", out.stdout);
    let out = cli.op(&["history", &id]).await;
    assert_eq!(out.stdout.lines().count(), 1 + 5, "{}", out.stdout);
    assert!(out.stdout.contains("wait-signal") && out.stdout.contains("spawn"));
    let out = cli.op(&["list"]).await;
    assert_eq!(
        out.stdout.lines().count(),
        2,
        "children are not listed: {}",
        out.stdout
    );
    let out = cli.op(&["list", "-A"]).await;
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);

    // A failing workflow: watch exits 1; cancelled: 3.
    let failing = write(&dir, "fail.json", r#"{"steps": 2, "fail_step": 1}"#);
    let out = cli
        .run(
            &["submit", "synthetic", "-f", &failing, "--watch"],
            &[("DROVER_SERVER", &api.base), ("DROVER_TOKEN", OPERATOR)],
        )
        .await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("failed after"), "{}", out.stdout);
    let parked = write(&dir, "park.json", r#"{"steps": 2, "pause_step": 1}"#);
    let out = cli.op(&["submit", "synthetic", "-f", &parked]).await;
    let parked_id = out.stdout.trim().to_string();
    cli.op(&["cancel", &parked_id]).await;
    let out = cli
        .run(
            &["watch", &parked_id],
            &[("DROVER_SERVER", &api.base), ("DROVER_TOKEN", OPERATOR)],
        )
        .await;
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    worker.stop().await;

    // Refusals carry the API's detail.
    let out = cli
        .run(
            &["submit", "no-such-kind"],
            &[("DROVER_SERVER", &api.base), ("DROVER_TOKEN", OPERATOR)],
        )
        .await;
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("unknown kind"), "{}", out.stderr);
    let out = cli
        .run(
            &["get", &uuid_like()],
            &[("DROVER_SERVER", &api.base), ("DROVER_TOKEN", OPERATOR)],
        )
        .await;
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    let out = cli
        .run(
            &["list"],
            &[
                ("DROVER_SERVER", "http://127.0.0.1:1"),
                ("DROVER_TOKEN", OPERATOR),
            ],
        )
        .await;
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(!out.stderr.contains(OPERATOR), "the token is never printed");

    // Schedules.
    let spec = write(
        &dir,
        "schedule.yaml",
        "id: nightly\ncron: '0 2 * * *'\ntimezone: Europe/Berlin\nkind: synthetic\n\
         input: {steps: 1}\n",
    );
    let out = cli.op(&["schedule", "create", "-f", &spec]).await;
    assert!(out.stdout.contains("created"), "{}", out.stdout);
    let out = cli.op(&["schedule", "apply", "-f", &spec]).await;
    assert!(
        out.stdout.contains("schedule nightly replaced"),
        "{}",
        out.stdout
    );
    let out = cli.op(&["schedule", "list"]).await;
    assert!(out.stdout.contains("nightly") && out.stdout.contains("Europe/Berlin"));
    cli.op(&["schedule", "pause", "nightly", "--note", "change freeze"])
        .await;
    let out = cli.op(&["schedule", "get", "nightly", "-o", "json"]).await;
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["paused"], true, "{s}");
    let out = cli.op(&["schedule", "trigger", "nightly"]).await;
    assert!(out.stdout.contains("started"), "{}", out.stdout);
    cli.op(&["schedule", "delete", "nightly"]).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
