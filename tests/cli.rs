//! The `drover` binary's configuration handling: invalid config is reported clearly and stops the
//! process before it binds a port or touches Redis.

use std::process::Command;

fn drover(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(args)
        .env_remove("DROVER_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("DROVER_API_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run drover");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_config_says_what_is_wrong_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("drover-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "redis_url = \"redis://127.0.0.1:1\"\n[worker]\nconcurency = 4\n",
    )
    .unwrap();
    let maas_without_key = dir.join("maas-no-key.toml");
    std::fs::write(
        &maas_without_key,
        "redis_url = \"redis://127.0.0.1:1\"\n[maas]\nurl = \"http://127.0.0.1:1/MAAS/\"\n",
    )
    .unwrap();
    let maas_unknown_secret = dir.join("maas-unknown-secret.toml");
    std::fs::write(
        &maas_unknown_secret,
        "redis_url = \"redis://127.0.0.1:1\"\n[maas]\nurl = \"http://127.0.0.1:1/MAAS/\"\n\
         api_key = { secret = \"maas-api-key\" }\n",
    )
    .unwrap();
    let maas_literal_key = dir.join("maas-literal-key.toml");
    std::fs::write(
        &maas_literal_key,
        "redis_url = \"redis://127.0.0.1:1\"\n[maas]\nurl = \"http://127.0.0.1:1/MAAS/\"\n\
         api_key = \"ck:tk:0123456789abcdef0\"\n",
    )
    .unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["worker", "--config", bad.to_str().unwrap()],
            vec![],
            "unknown field `concurency`",
        ),
        (
            vec!["worker"],
            vec![("DROVER_WORKER_CONCURRENCY", "lots")],
            "DROVER_WORKER_CONCURRENCY",
        ),
        (
            vec!["worker"],
            vec![("DROVER_WORKER_CONCURRENCY", "0")],
            "concurrency must be at least 1",
        ),
        (vec!["worker"], vec![], "no Redis configured"),
        (
            vec!["worker", "--config", maas_without_key.to_str().unwrap()],
            vec![],
            "maas.api_key is missing",
        ),
        (
            vec!["worker", "--config", maas_unknown_secret.to_str().unwrap()],
            vec![],
            "which [secrets] does not define",
        ),
        (
            vec!["worker", "--config", maas_literal_key.to_str().unwrap()],
            vec![],
            "this field is a secret",
        ),
        (
            vec!["api"],
            vec![("DROVER_REDIS_URL", "redis://127.0.0.1:1")],
            "api.tokens is empty",
        ),
        (
            vec!["api"],
            vec![("DROVER_API_TOKEN", "short")],
            "shorter than 16",
        ),
        (
            vec!["api"],
            vec![
                ("DROVER_API_TOKEN", "0123456789abcdef0"),
                ("DROVER_API_LISTEN", "nowhere"),
            ],
            "not an address",
        ),
    ];
    for (args, env, needle) in cases {
        let (ok, stderr) = drover(&args, &env);
        assert!(!ok, "{args:?} {env:?} should fail");
        assert!(
            stderr.contains(needle),
            "{args:?} {env:?}: expected {needle:?} in {stderr}"
        );
        assert!(
            !stderr.contains("0123456789abcdef0"),
            "a token leaked into the error: {stderr}"
        );
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/drover.example.toml");
    // A valid config gets as far as connecting to Redis (nothing listens on port 1).
    let (ok, stderr) = drover(
        &["worker", "--config", example],
        &[("DROVER_REDIS_URL", "redis://127.0.0.1:1/0")],
    );
    assert!(!ok);
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

/// Runs `drover dev --demo <demo> --exit-after-demo` on a free port with the lab at 600x and its
/// data in `dir`, with none of the environment that would point it elsewhere; asserts it exited 0
/// and returns its stdout.
fn dev_demo(demo: &str, dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "dev",
            "--demo",
            demo,
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
            "--lab-time-scale",
            "600",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("DROVER_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("DROVER_KUBE_URL")
        .env_remove("DROVER_MAAS_URL")
        .env_remove("DROVER_IMAGES_DIR")
        .env("DROVER_LOG", "info")
        .output()
        .expect("run drover dev");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = std::fs::read_to_string(dir.join("drover.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The log goes to the file it names, not between the progress lines.
    assert!(
        stdout.contains(&format!("Log       {}", dir.join("drover.log").display())),
        "{stdout}"
    );
    assert!(log.contains("Workflow finished"), "{log}");
    assert!(
        !stdout.contains(" INFO ") && !stdout.contains(" WARN "),
        "{stdout}"
    );
    stdout
}

/// `drover dev --demo provision`: a private Redis, the lab, the API and workers on one machine; the
/// demo provisions three nodes from the lab's MAAS (the first deployment on spare-01 fails on
/// purpose) and prints each machine's progress, then exits 0 because the scale-out succeeded.
#[test]
fn the_dev_provisioning_demo_runs_to_success() {
    let dir = std::env::temp_dir().join(format!("drover-dev-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = dev_demo("provision", &dir);
    assert!(
        stdout.contains("spare-01 failed: ") && stdout.contains("(released)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Installing OS"),
        "live MAAS progress: {stdout}"
    );
    assert_eq!(stdout.matches("joined as spare-").count(), 3, "{stdout}");
    assert!(stdout.contains("Scale-out succeeded"), "{stdout}");
    // The lab's MAAS key and the join command are secrets: never printed by the demo's progress.
    assert!(!stdout.contains("labdev.0123456789abcdef"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `drover dev --demo import --exit-after-demo` makes a vmdk with qemu-img, imports it as a VM and
/// prints the upload's live progress (bytes, rate, ETA), then exits 0 because the import succeeded.
#[test]
fn the_dev_import_demo_shows_live_progress_and_succeeds() {
    let dir = std::env::temp_dir().join(format!("drover-dev-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = dev_demo("import", &dir);
    assert!(
        stdout.contains("uploading") && stdout.contains("MB/s") && stdout.contains("ETA"),
        "live progress: {stdout}"
    );
    assert!(stdout.contains("Import succeeded"), "{stdout}");
    assert!(stdout.contains("\"live_migratable\":true"), "{stdout}");
    // The demo's image and the import's work files are gone.
    assert!(!dir.join("demo-images").exists());
    let left: Vec<_> = std::fs::read_dir(dir.join("images"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `drover dev --demo ticket --exit-after-demo`: a change ticket in the lab's Jira, moved to In
/// Progress, starts a drain through the signed webhook; Drover's comments arrive on the ticket,
/// the demo approves the change when asked, and the ticket ends Done.
#[test]
fn the_dev_ticket_demo_drives_a_drain_from_jira_and_writes_back() {
    let dir = std::env::temp_dir().join(format!("drover-dev-ticket-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = dev_demo("ticket", &dir);
    assert!(
        stdout.contains("comment: Drover started drain-node"),
        "{stdout}"
    );
    assert!(stdout.contains("waits for approval"), "{stdout}");
    assert!(stdout.contains("is Done"), "{stdout}");
    // The lab's webhook secret and credentials are files, never printed by the demo.
    assert!(
        !stdout.contains("drover-dev-lab-webhook-secret"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
