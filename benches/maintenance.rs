//! The maintenance benchmark: a rolling maintenance of every worker node of the lab's reference
//! scenario (8 nodes, 20 VMs each), done by Drover and done the way operators do it today (cordon and
//! `kubectl drain` each node in turn, KubeVirt evacuating, the scheduler choosing targets), in the
//! same lab at the same time scale. For each it reports:
//! (a) migrations per VM (successful migrations / VMs that had to leave);
//! (b) makespan in simulated seconds, against a lower bound computed from the migration durations
//!     the run observed and the limits (a node's VMs leave at most 2 at a time, one node after the
//!     other);
//! and it repeats both on a variant with one spare worker outside the plan, where each VM can move
//! exactly once, and on one with no ReadWriteOnce VMs (nothing makes `kubectl drain` time out, so
//! its margin shows without the timeouts). A fourth Drover run uses `surge: 1`: a node provisioned
//! from the lab's MAAS before the rollout and decommissioned after it. The maintenance itself is a reboot, done the same way in both: the operator reboots
//! the drained node (the lab's `node_reboot`), waits for it to be Ready (`kubectl wait`), then
//! uncordons it and goes on (kubectl) or tells Drover (the `maintenance-done` signal). VMs on
//! ReadWriteOnce volumes cannot live-migrate: Drover skips them (policy `skip`); `kubectl drain`
//! waits on them until its timeout, which the table reports.
//!
//! Run from the repository root: `cargo bench --bench maintenance` (needs redis-server and kubectl;
//! a few minutes). Not a test: it asserts nothing and writes its figures into BENCHMARKS.md between
//! the `maintenance-bench` markers.

#[path = "shared/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drover_lab::{Lab, LabConfig, LabHandle, Scenario};
use drover_store::server::{Options, RedisServer};
use drover_store::{Store, Submission};
use drover_worker::now_ms;
use drover_workflows::State;
use drover_workflows::ports::Ports;
use serde_json::json;

const COMMAND: &str = "cargo bench --bench maintenance";
/// Simulated seconds per real second: a migration (about 30 s simulated) takes about 0.5 s.
const TIME_SCALE: f64 = 60.0;
/// Drover's poll interval (3 s simulated).
const POLL_MS: u64 = 50;
/// kubectl drain's own timeout per node, real seconds (30 simulated minutes).
const KUBECTL_TIMEOUT_S: u64 = 30;

struct Figures {
    label: String,
    vms_leaving: usize,
    migrations: usize,
    makespan: f64,
    lower_bound: f64,
    notes: String,
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let reference = drover_lab::scenario::reference_architecture();
        let mut spare = reference.clone();
        let mut extra = reference
            .nodes
            .iter()
            .find(|n| n.name == "worker-08")
            .cloned()
            .context("worker-08")?;
        extra.name = "worker-09".into();
        extra.ip = "10.20.30.29".into();
        spare.nodes.push(extra);
        // Every VM on ReadWriteMany storage: nothing blocks kubectl drain, so its margin shows
        // without the drain timeouts that the RWO VMs cause.
        let mut rwx_only = reference.clone();
        for vm in &mut rwx_only.vms {
            if vm.storage_class == "px-rwo" {
                vm.storage_class = "px-rwx".into();
            }
        }
        let plan: Vec<String> = (1..=8).map(|i| format!("worker-{i:02}")).collect();
        let mut rows = Vec::new();
        for (name, scenario) in [
            ("reference (8 workers, all in the plan)", &reference),
            ("reference + 1 spare worker outside the plan", &spare),
            ("reference, no ReadWriteOnce VMs", &rwx_only),
        ] {
            let (drover, order) = drover_run(scenario, &plan, false).await?;
            rows.push(Figures {
                label: format!("Drover, {name}"),
                ..drover
            });
            rows.push(Figures {
                label: format!("kubectl drain, {name}"),
                ..kubectl_run(scenario, &order).await?
            });
        }
        let (surged, _) = drover_run(&reference, &plan, true).await?;
        rows.insert(
            2,
            Figures {
                label: "Drover with `surge: 1` (a node provisioned from MAAS first), reference"
                    .into(),
                ..surged
            },
        );
        let report = render(&rows, started.elapsed());
        println!("{report}");
        write_section(&report)?;
        Ok(())
    })
}

async fn lab(scenario: &Scenario) -> Result<LabHandle> {
    let mut config = LabConfig {
        scenario: scenario.clone(),
        ..LabConfig::default()
    };
    config.scenario.time_scale = TIME_SCALE;
    Lab::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("lab: {e}"))
}

fn vmis_on(lab: &LabHandle, nodes: &[String]) -> Vec<(String, bool)> {
    lab.list("virtualmachineinstances.kubevirt.io", None)
        .iter()
        .filter(|v| nodes.iter().any(|n| v["status"]["nodeName"] == json!(n)))
        .map(|v| {
            let migratable = v["status"]["conditions"].as_array().is_none_or(|c| {
                !c.iter()
                    .any(|c| c["type"] == "LiveMigratable" && c["status"] == "False")
            });
            (
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                migratable,
            )
        })
        .collect()
}

/// Successful migrations: (vmi, source node, duration in simulated seconds).
fn migrations(lab: &LabHandle) -> Vec<(String, String, f64)> {
    lab.list("virtualmachineinstancemigrations.kubevirt.io", None)
        .iter()
        .filter(|m| m["status"]["phase"] == json!("Succeeded"))
        .map(|m| {
            let ts = m["status"]["phaseTransitionTimestamps"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let at = |phase: &str| {
                ts.iter()
                    .find(|t| t["phase"] == json!(phase))
                    .and_then(|t| t["phaseTransitionTimestamp"].as_str())
                    .and_then(epoch)
            };
            // From admission (Scheduling) on: time spent Pending behind the limits is queueing,
            // not migration work.
            let d = match (at("Scheduling").or_else(|| at("Pending")), at("Succeeded")) {
                (Some(a), Some(b)) => (b - a) as f64,
                _ => 0.0,
            };
            let source = m["status"]["migrationState"]["sourceNode"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                m["spec"]["vmiName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                source,
                d,
            )
        })
        .collect()
}

/// One node after the other, each node's VMs at most 2 at a time, then its reboot until it is back
/// in service: the sum over nodes of max(total duration / 2, longest migration), migration durations
/// as observed from admission to success, plus each node's time out of service after its drain
/// (boot, then virt-handler starting; only then can it take VMs, and only then is the one node
/// allowed in maintenance back).
fn lower_bound(moves: &[(String, String, f64)], nodes: usize, out_of_service: f64) -> f64 {
    let mut per: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (_, source, d) in moves {
        let e = per.entry(source.as_str()).or_insert((0.0, 0.0));
        e.0 += d;
        e.1 = e.1.max(*d);
    }
    per.values()
        .map(|(sum, max)| (sum / 2.0).max(*max))
        .sum::<f64>()
        + nodes as f64 * out_of_service
}

/// Seconds a rebooted node is out of service: until Ready, then until virt-handler runs.
fn out_of_service(scenario: &Scenario) -> f64 {
    scenario.reboot.boot_secs + scenario.reboot.virt_handler_start_secs
}

/// The operator's maintenance of a drained node: reboot it and wait until it is Ready again, as
/// `kubectl wait --for=condition=Ready` does.
async fn reboot_and_wait_ready(lab: &LabHandle, node: &str) -> Result<()> {
    lab.inject(drover_lab::Fault::NodeReboot {
        node: node.to_string(),
    })
    .map_err(|e| anyhow::anyhow!("reboot {node}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = lab.get("nodes", "", node).is_some_and(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{node} did not come back from its reboot");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The join command the surge node's cloud-init runs (the lab joins a machine whose user data
/// says "join").
const JOIN_COMMAND: &str = "kubeadm join 10.20.30.5:6443 --token bench0.0123456789abcdef --discovery-token-ca-cert-hash sha256:00";

async fn drover_run(
    scenario: &Scenario,
    plan: &[String],
    surge: bool,
) -> Result<(Figures, Vec<String>)> {
    let lab = lab(scenario).await?;
    let leaving = vmis_on(&lab, plan);
    let redis = RedisServer::start(Options::temporary())?;
    let store = Store::connect(&drover_store::Config::new(redis.url())).await?;
    let cluster = drover_kube::Cluster::connect(&drover_kube::Target::Url(lab.kube_url())).await?;
    let maas = drover_maas::Client::new(drover_maas::Config::new(
        lab.maas_url(),
        drover_workflows::ports::secrets::Secret::new(lab.maas_api_key()),
    ))?
    .port();
    let dir = std::env::temp_dir().join(format!("drover-maintenance-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let join = dir.join("join-command");
    std::fs::write(&join, JOIN_COMMAND)?;
    let mut secrets = drover_worker::secrets::Config::default();
    secrets
        .insert("join-command", drover_worker::secrets::Source::File(join))
        .map_err(anyhow::Error::msg)?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    for i in 0..2 {
        let ports = Ports::new(Arc::new(drover_worker::ports::TokioClock))
            .with_kube(cluster.clone().port())
            .with_maas(maas.clone())
            .with_secrets(Arc::new(drover_worker::secrets::ConfigSecrets::new(
                secrets.clone(),
                None,
            )));
        let config = drover_worker::Config {
            name: Some(format!("bench-{i}")),
            ..drover_worker::Config::default()
        };
        let mut rx = rx.clone();
        tokio::spawn(drover_worker::run(
            store.clone(),
            drover_kinds::builtin(),
            ports,
            config,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let mut input = json!({"nodes": plan, "max_in_maintenance": 1, "non_migratable": "skip", "maintenance": "wait-for-signal", "poll_ms": POLL_MS});
    if surge {
        input["surge"] = json!(1);
        input["surge_node"] = json!({
            "constraints": {"pool": "spare", "tags": ["vmo-worker"]},
            "join": {"secret": "join-command"},
            "poll_ms": POLL_MS,
        });
    }
    let id = "0192f0c1-7d2e-7a4b-9c3d-00000000be4c".to_string();
    let t0 = lab.sim_time();
    store
        .submit_new(
            &drover_kinds::builtin(),
            id.clone(),
            Submission::new("rolling-maintenance", input),
            None,
            now_ms(),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut maintained = std::collections::BTreeSet::new();
    let view = loop {
        let v = store.get(&id).await?.context("workflow vanished")?;
        if v.state.is_terminal() {
            break v;
        }
        // The operator: a drain waiting in maintenance gets its reboot, then the signal.
        for child in store.children(&id).await? {
            let waiting = store.get(&child.id).await?.and_then(|c| c.waiting_on);
            if waiting.as_deref() == Some("signal:maintenance-done")
                && maintained.insert(child.id.clone())
            {
                let node = child.input["node"].as_str().unwrap_or_default().to_string();
                reboot_and_wait_ready(&lab, &node).await?;
                store
                    .signal(
                        &child.id,
                        "maintenance-done",
                        &json!({"by": "bench", "rebooted": node}),
                        drover_store::SignalLimits::default(),
                        now_ms(),
                    )
                    .await?;
            }
        }
        if Instant::now() > deadline {
            bail!("the rolling maintenance did not finish in 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let makespan = lab.sim_time() - t0;
    let _ = stop.send(true);
    if view.state != State::Succeeded {
        bail!(
            "rolling maintenance ended {:?}: {:?}",
            view.state,
            view.error
        );
    }
    // The order the drains actually ran in (each wave is planned again as the rollout goes), for
    // the kubectl run to follow.
    let mut order = Vec::new();
    for child in view.children.clone().unwrap_or_default() {
        let c = store.get(&child).await?.context("a drain vanished")?;
        if c.kind == "drain-node" {
            order.push(c.input["node"].as_str().unwrap_or_default().to_string());
        }
    }
    let moves = migrations(&lab);
    let report = view.result.clone().unwrap_or_default();
    let planned = report["planned_second_moves"]
        .as_array()
        .map_or(0, Vec::len);
    let skipped = leaving.iter().filter(|(_, m)| !m).count();
    // With surge, the moves that emptied the surge node at the end are counted apart: the
    // rollout's own moves are what the plan promises once each.
    let returns = report["surge_return_migrations"].as_u64().unwrap_or(0) as usize;
    let surge_note = if surge {
        format!(
            "; surge node {} provisioned first (its deploy and join are in the makespan) and \
             decommissioned at the end, which moved its {returns} VMs a second time (not in the \
             migrations column; with them {:.2} per VM)",
            report["surge"][0].as_str().unwrap_or("?"),
            moves.len() as f64 / (leaving.len() - skipped).max(1) as f64
        )
    } else {
        String::new()
    };
    let figures = Figures {
        label: String::new(),
        vms_leaving: leaving.len() - skipped,
        migrations: moves.len() - returns,
        makespan,
        lower_bound: lower_bound(&moves, plan.len(), out_of_service(scenario)),
        notes: format!(
            "{planned} planned second moves; the report counts {} migrations, {} VMs moved more than once; {skipped} RWO VMs skipped (policy skip){surge_note}",
            report["migrations"],
            report["moved_more_than_once"]
                .as_array()
                .map_or(0, Vec::len),
        ),
    };
    lab.shutdown().await;
    Ok((figures, order))
}

async fn kubectl_run(scenario: &Scenario, order: &[String]) -> Result<Figures> {
    let lab = lab(scenario).await?;
    let leaving = vmis_on(&lab, order);
    let dir = std::env::temp_dir().join(format!("drover-maintenance-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    lab.write_kubeconfig(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let kubectl = std::env::var("DROVER_KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let t0 = lab.sim_time();
    let mut timed_out = Vec::new();
    for node in order {
        let timeout = format!("--timeout={KUBECTL_TIMEOUT_S}s");
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--pod-selector=kubevirt.io=virt-launcher",
                &timeout,
            ])
            .output()
            .await
            .with_context(|| format!("cannot run {kubectl}"))?;
        if !out.status.success() {
            timed_out.push(node.clone());
        }
        // The maintenance: reboot, wait for Ready, and the node returns.
        lab.inject(drover_lab::Fault::NodeReboot { node: node.clone() })
            .map_err(|e| anyhow::anyhow!("reboot {node}: {e}"))?;
        let ready = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["wait", "--for=condition=Ready", "--timeout=120s"])
            .arg(format!("node/{node}"))
            .output()
            .await?;
        if !ready.status.success() {
            bail!(
                "kubectl wait for {node}: {}",
                String::from_utf8_lossy(&ready.stderr)
            );
        }
        tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["uncordon", node])
            .output()
            .await?;
    }
    let makespan = lab.sim_time() - t0;
    let moves = migrations(&lab);
    let skipped = leaving.iter().filter(|(_, m)| !m).count();
    let figures = Figures {
        label: String::new(),
        vms_leaving: leaving.len() - skipped,
        migrations: moves.len(),
        makespan,
        lower_bound: lower_bound(&moves, order.len(), out_of_service(scenario)),
        notes: if timed_out.is_empty() {
            "every drain finished".into()
        } else {
            format!(
                "drain timed out ({KUBECTL_TIMEOUT_S} s real each) on {} (RWO VMs cannot leave)",
                timed_out.join(", ")
            )
        },
    };
    lab.shutdown().await;
    Ok(figures)
}

fn render(rows: &[Figures], took: Duration) -> String {
    let mut s = String::new();
    s.push_str("## Maintenance benchmark (`benches/maintenance.rs`)\n\n");
    s.push_str(&format!(
        "- Command: `{COMMAND}` (from the repository root)\n"
    ));
    s.push_str(&format!(
        "- Date: {} UTC; whole run {:.0} s; lab time scale {TIME_SCALE}x; machine: nproc {}, {}\n",
        report::date(),
        took.as_secs_f64(),
        report::nproc(),
        report::cpu()
    ));
    let reboot = drover_lab::scenario::RebootSettings::default();
    s.push_str(&format!(
        "- Rolling maintenance of worker-01..08 (20 VMs each), one node at a time, each node rebooted while drained (Ready after {} s, virt-handler up {} s later); makespan in simulated seconds\n\n",
        reboot.boot_secs, reboot.virt_handler_start_secs
    ));
    s.push_str("| run | VMs that had to leave | successful migrations | (a) migrations per VM | (b) makespan (s) | lower bound (s) | makespan / bound | notes |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let per_vm = r.migrations as f64 / r.vms_leaving.max(1) as f64;
        let ratio = if r.lower_bound > 0.0 {
            r.makespan / r.lower_bound
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {} | {} | **{per_vm:.2}** | {:.0} | {:.0} | **{ratio:.2}x** | {} |\n",
            r.label, r.vms_leaving, r.migrations, r.makespan, r.lower_bound, r.notes
        ));
    }
    s
}

fn write_section(report: &str) -> Result<()> {
    report::write_section(
        "<!-- maintenance-bench:begin -->",
        "<!-- maintenance-bench:end -->",
        report,
    )
}

/// `2026-12-01T13:15:21Z` -> seconds since the epoch.
fn epoch(t: &str) -> Option<i64> {
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut h = time
        .split(':')
        .map(|p| p.split('.').next().and_then(|p| p.parse::<i64>().ok()));
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}
