//! `migration-plan`: many VMs imported at once, as Forklift's plans do, validated as a whole first.
//!
//! 0 `validate` resolves every VM as `import-vm` would (its source, OVF and checksums, formats,
//!              storage and network mappings, name clashes, quota), then checks the plan as a whole:
//!              names used twice, the namespace's quota for all the disks together, and the memory
//!              the VMs need against what the schedulable nodes have free. Its output is the report:
//!              every VM with its problems or its resolved plan (storage class per disk, target
//!              network per NIC, PVC sizes). Its compensation removes what unfinished imports
//!              made (a VM that was created stays: its import finished).
//! 1 `gate`     fails with every problem when any VM has one, before anything starts; with
//!              `dry_run`, the later steps do nothing and the plan's result is the report.
//! 2 `import`   starts one `import-vm` child per VM; they hold the plan's semaphore (`concurrency`)
//!              from their validation to their end, so the rest wait queued (the API shows each
//!              child's state, step and progress). A failed import is retried (`retries` times) as
//!              a new child with the same owner: it finds the files, DataVolumes and uploads the
//!              failed one finished and goes on from where that one stopped; the others are not
//!              touched. Fails, listing them, when imports still failed after that.
//! 3 `cutover`  with `cutover`, the VMs were created stopped: waits for the signal `cutover`, then
//!              starts them all together.
//! 4 `verify`   with `cutover`, waits until every VM runs, and reports which are live-migratable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_workflows::ports::kube::KubeError;
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use drover_workflows::{ChildSpec, JoinPolicy, Outcome, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{cluster_steps, default_poll_ms};
use crate::import_vm::{self, ImportVm, Invalid, Plan, Slot, Source};
use crate::storage;

/// The `migration-plan` kind.
pub struct MigrationPlan;

/// Most VMs in one plan (a step starts at most 256 children, retries included).
pub const MAX_VMS: usize = 100;

/// Input of `migration-plan`: the mappings and settings every VM shares, and the VMs.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The namespace the VMs go to.
    pub namespace: String,
    pub vms: Vec<PlanVm>,
    /// The storage mapping every VM shares (a VM's own entries win).
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub storage_map: BTreeMap<String, String>,
    /// The network mapping every VM shares (a VM's own entries win).
    #[serde(default)]
    pub network_map: BTreeMap<String, String>,
    #[serde(default = "rwx")]
    pub access_mode: String,
    #[serde(default)]
    pub volume_mode: Option<String>,
    /// Imports running at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// How often a failed import is retried (from where it stopped).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Validate and report only.
    #[serde(default)]
    pub dry_run: bool,
    /// Create the VMs stopped, and start them together on the signal `cutover`.
    #[serde(default)]
    pub cutover: bool,
    #[serde(default = "default_stall_secs")]
    pub stall_secs: u64,
    #[serde(default = "default_ready_secs")]
    pub ready_timeout_secs: u64,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

/// One VM of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVm {
    pub name: String,
    pub source: Source,
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub storage_map: BTreeMap<String, String>,
    #[serde(default)]
    pub network_map: BTreeMap<String, String>,
}

fn rwx() -> String {
    "ReadWriteMany".into()
}

fn default_concurrency() -> u32 {
    2
}

fn default_retries() -> u32 {
    1
}

fn default_stall_secs() -> u64 {
    300
}

fn default_ready_secs() -> u64 {
    600
}

/// One VM's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The resolved plan: storage class and PVC size per disk, target per NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

/// `validate`'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    pub dry_run: bool,
    pub vms: Vec<VmReport>,
    /// Problems of the plan as a whole (quota, capacity, names used twice).
    pub problems: Vec<String>,
    pub storage_bytes: u64,
    pub memory_bytes: u64,
}

impl Kind for MigrationPlan {
    const NAME: &'static str = "migration-plan";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        if i.vms.is_empty() || i.vms.len() > MAX_VMS {
            return Err(format!("vms: 1 to {MAX_VMS} VMs"));
        }
        if i.concurrency == 0 || i.concurrency > 64 {
            return Err("concurrency is 1 to 64".into());
        }
        if i.retries > 3 {
            return Err("retries is 0 to 3".into());
        }
        // Each VM's input must be one import-vm takes; the error names the VM.
        for (k, _) in i.vms.iter().enumerate() {
            import_vm::check_input(&child_input(i, k, "check"))
                .map_err(|e| format!("vms[{k}] ({}): {e}", i.vms[k].name))?;
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        cluster_steps(vec![
            Step::new("validate", |ctx| Box::pin(validate(ctx)))
                .compensate(|ctx| Box::pin(clean_up(ctx))),
            Step::new("gate", |ctx| Box::pin(gate(ctx))),
            Step::new("import", |ctx| Box::pin(import(ctx))),
            Step::new("cutover", |ctx| Box::pin(cutover(ctx))),
            Step::new("verify", |ctx| Box::pin(verify(ctx))),
        ])
    }

    fn descendants(i: &Input) -> u64 {
        i.vms.len() as u64 * (1 + u64::from(i.retries))
    }
}

/// VM `k`'s owner: the plan's id and the VM's name, the same for each retry of its import.
fn owner(plan_id: &str, vm: &str) -> String {
    format!("{plan_id}/{vm}")
}

/// The `import-vm` input for VM `k`.
fn child_input(i: &Input, k: usize, plan_id: &str) -> import_vm::Input {
    let vm = &i.vms[k];
    let mut storage_map = i.storage_map.clone();
    storage_map.extend(vm.storage_map.clone());
    let mut network_map = i.network_map.clone();
    network_map.extend(vm.network_map.clone());
    import_vm::Input {
        namespace: i.namespace.clone(),
        name: vm.name.clone(),
        source: vm.source.clone(),
        cpus: vm.cpus,
        memory: vm.memory.clone(),
        firmware: vm.firmware.clone(),
        storage_class: vm.storage_class.clone().or_else(|| i.storage_class.clone()),
        storage_map,
        access_mode: i.access_mode.clone(),
        volume_mode: i.volume_mode.clone(),
        network_map,
        start: !i.cutover,
        stall_secs: i.stall_secs,
        ready_timeout_secs: i.ready_timeout_secs,
        filesystem_overhead: 0.055,
        poll_ms: i.poll_ms,
        owner: Some(owner(plan_id, &vm.name)),
        keep_on_failure: true,
        slot: Some(Slot {
            name: format!("imports:{plan_id}"),
            capacity: i.concurrency,
        }),
    }
}

async fn validate(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let kube = ctx.kube()?;
    let images = ctx.images()?;
    let i = ctx.input;
    let mut vms = Vec::new();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let total = i.vms.len();
    for (k, vm) in i.vms.iter().enumerate() {
        ctx.report_progress(json!({"validating": vm.name, "vm": k + 1, "of": total}));
        if !seen.insert(vm.name.clone()) {
            problems.push(format!("VM name {} is used twice in the plan", vm.name));
        }
        let input = child_input(i, k, ctx.workflow_id);
        let owner = owner(ctx.workflow_id, &vm.name);
        match import_vm::resolve(kube, images, &input, &owner, &|_, _| {}).await {
            Ok(plan) => vms.push(VmReport {
                name: vm.name.clone(),
                ok: true,
                problems: Vec::new(),
                plan: Some(plan),
            }),
            Err(Invalid::Problems(p)) => vms.push(VmReport {
                name: vm.name.clone(),
                ok: false,
                problems: p,
                plan: None,
            }),
            Err(Invalid::Transient(m)) => return Err(StepError::retry(m, None)),
        }
    }
    let plans: Vec<&Plan> = vms.iter().filter_map(|v| v.plan.as_ref()).collect();
    // Quota for the plan's disks together (each VM alone was checked against it already).
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    for p in &plans {
        for d in &p.disks {
            *by_class.entry(d.storage_class.clone()).or_default() += d.pvc_bytes;
        }
    }
    let storage_bytes: u64 = by_class.values().sum();
    for (class, bytes) in &by_class {
        for l in kube.storage_quota(&i.namespace, class).await?.limits {
            let need = if l.resource == "requests.storage" {
                storage_bytes
            } else {
                *bytes
            };
            let left = l.hard_bytes.saturating_sub(l.used_bytes);
            if need > left {
                problems.push(format!(
                    "ResourceQuota {} allows {} GiB more of {}, and the plan's disks need {} GiB",
                    l.quota,
                    gib(left),
                    l.resource,
                    gib(need)
                ));
            }
        }
    }
    // Capacity: memory the VMs need against what schedulable nodes have free.
    let memory_bytes: u64 = plans.iter().map(|p| p.memory_bytes).sum();
    let nodes = kube.list_nodes().await?;
    let vmis = kube.list_vmis(None).await?;
    let hosts: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.takes_vms())
        .map(|n| n.name.as_str())
        .collect();
    let allocatable: u64 = nodes
        .iter()
        .filter(|n| hosts.contains(n.name.as_str()))
        .map(|n| n.memory_bytes)
        .sum();
    let used: u64 = vmis
        .iter()
        .filter(|v| v.node.as_deref().is_some_and(|n| hosts.contains(n)))
        .map(|v| v.memory_bytes)
        .sum();
    let free = allocatable.saturating_sub(used);
    if memory_bytes > free {
        problems.push(format!(
            "the VMs need {} GiB of memory, and the {} nodes that take VMs have {} GiB free",
            gib(memory_bytes),
            hosts.len(),
            gib(free)
        ));
    }
    problems.dedup();
    let ok = problems.is_empty() && vms.iter().all(|v| v.ok);
    Ok(Outcome::Done(json!(Report {
        ok,
        dry_run: i.dry_run,
        vms,
        problems,
        storage_bytes,
        memory_bytes,
    })))
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

async fn gate(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let r: Report = ctx.output("validate")?;
    if !r.ok {
        let bad: Vec<String> = r
            .vms
            .iter()
            .filter(|v| !v.ok)
            .map(|v| format!("{}: {}", v.name, v.problems.join("; ")))
            .chain(r.problems.iter().map(|p| format!("plan: {p}")))
            .collect();
        return Err(StepError::fail(format!(
            "validation failed for {} of {} VMs{}; nothing was started (the validate step's \
             output has the whole report). {}",
            r.vms.iter().filter(|v| !v.ok).count(),
            r.vms.len(),
            if r.problems.is_empty() {
                ""
            } else {
                " and the plan as a whole"
            },
            bad.join(" | ")
        )));
    }
    Ok(Outcome::Done(json!({"dry_run": r.dry_run})))
}

/// Each VM's latest import child, and how many it had.
fn latest(
    ctx: &Ctx<'_, MigrationPlan>,
) -> BTreeMap<String, (usize, drover_workflows::ChildStatus)> {
    let mut by_vm: BTreeMap<String, (usize, drover_workflows::ChildStatus)> = BTreeMap::new();
    for c in ctx.children {
        let vm = c.input["name"].as_str().unwrap_or_default().to_string();
        let entry = by_vm.entry(vm).or_insert((0, c.clone()));
        entry.0 += 1;
        // Children are listed in the order they were started.
        entry.1 = c.clone();
    }
    by_vm
}

async fn import(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let i = ctx.input;
    if i.dry_run {
        return Ok(Outcome::Done(json!({"dry_run": true})));
    }
    let spec = |k: usize| ChildSpec::of::<ImportVm>(&child_input(i, k, ctx.workflow_id));
    if ctx.children.is_empty() {
        return Ok(Outcome::Spawn {
            children: (0..i.vms.len()).map(spec).collect(),
            join: JoinPolicy::All,
        });
    }
    let latest = latest(ctx);
    let mut retry = Vec::new();
    let mut failed = Vec::new();
    let mut done = Vec::new();
    for (k, vm) in i.vms.iter().enumerate() {
        let Some((tries, c)) = latest.get(&vm.name) else {
            retry.push(k);
            continue;
        };
        match c.state {
            State::Succeeded => done.push(json!({
                "vm": vm.name, "attempts": tries, "result": c.result,
            })),
            _ if *tries as u32 <= i.retries => retry.push(k),
            _ => failed.push(format!(
                "{} ({} attempts): {}",
                vm.name,
                tries,
                c.error.as_deref().unwrap_or("no reason recorded")
            )),
        }
    }
    if !retry.is_empty() {
        return Ok(Outcome::Spawn {
            children: retry.into_iter().map(spec).collect(),
            join: JoinPolicy::All,
        });
    }
    if !failed.is_empty() {
        return Err(StepError::fail(format!(
            "{} of {} imports failed: {}; the {} imported VMs stay",
            failed.len(),
            i.vms.len(),
            failed.join(" | "),
            done.len()
        )));
    }
    Ok(Outcome::Done(json!({"imported": done})))
}

async fn cutover(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let i = ctx.input;
    if i.dry_run || !i.cutover {
        return Ok(Outcome::Done(json!({"cutover": false})));
    }
    if ctx.signal("cutover").is_none() {
        return Ok(Outcome::WaitSignal {
            name: "cutover".into(),
        });
    }
    let kube = ctx.kube()?;
    for vm in &i.vms {
        kube.set_vm_running(&i.namespace, &vm.name, true).await?;
    }
    Ok(Outcome::Done(
        json!({"cutover": true, "started_ms": ctx.now_ms()}),
    ))
}

async fn verify(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let i = ctx.input;
    if i.dry_run {
        // A dry run's result is the report.
        let r: Report = ctx.output("validate")?;
        return Ok(Outcome::Done(json!(r)));
    }
    let c: Value = ctx.output("cutover")?;
    if c["cutover"] != json!(true) {
        return Ok(Outcome::Done(json!({"verified": false})));
    }
    let kube = ctx.kube()?;
    let mut states = Vec::new();
    let mut waiting = Vec::new();
    for vm in &i.vms {
        match kube.get_vmi(&i.namespace, &vm.name).await {
            Ok(v) if v.phase == "Running" && v.live_migratable.is_some() => {
                let lm = v.live_migratable.unwrap_or(Ok(()));
                states.push(json!({
                    "vm": vm.name, "node": v.node, "live_migratable": lm.is_ok(),
                    "not_migratable_because": lm.err(),
                }));
            }
            Ok(v) => waiting.push(format!("{} ({})", vm.name, v.phase)),
            Err(KubeError::NotFound(_)) => waiting.push(format!("{} (no instance)", vm.name)),
            Err(e) => return Err(e.into()),
        }
    }
    if waiting.is_empty() {
        return Ok(Outcome::Done(json!({"vms": states})));
    }
    let waited = ctx
        .now_ms()
        .saturating_sub(c["started_ms"].as_u64().unwrap_or(0));
    if waited >= i.ready_timeout_secs * 1000 {
        return Err(StepError::fail(format!(
            "{} VMs are not running {} s after cutover: {}",
            waiting.len(),
            waited / 1000,
            waiting.join(", ")
        )));
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(i.poll_ms),
        progress: Some(json!({"running": states.len(), "waiting": waiting})),
    })
}

/// What unfinished imports made goes; a VM that was created (its import finished) stays.
async fn clean_up(ctx: &Ctx<'_, MigrationPlan>) -> StepResult {
    let Some(r) = ctx.output_if::<Report>("validate")? else {
        return Ok(Outcome::Done(json!({"deleted": []})));
    };
    let kube = ctx.kube()?;
    let images = ctx.images()?;
    let mut removed = Vec::new();
    for v in &r.vms {
        let Some(plan) = &v.plan else { continue };
        let owner = owner(ctx.workflow_id, &v.name);
        let finished = match kube.get_vm(&plan.namespace, &plan.vm).await {
            Ok(vm) => vm.labels.get(storage::CREATED_BY) == Some(&storage::label_value(&owner)),
            Err(KubeError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !finished {
            removed.extend(import_vm::remove_objects(kube, images, plan, &owner, false).await?);
        }
    }
    // Packages downloaded for validation.
    images.remove(&images.work_dir(ctx.workflow_id)).await?;
    Ok(Outcome::Done(json!({"deleted": removed})))
}

#[cfg(test)]
mod tests {
    use drover_workflows::sdk::parse;
    use serde_json::json;

    use super::MigrationPlan;

    #[test]
    fn a_plan_names_the_vm_whose_input_is_wrong() {
        let vm = |name: &str| json!({"name": name, "source": {"disk": "/x.qcow2"}});
        let ok = json!({"namespace": "vmo-prod", "storage_class": "px-rwx",
                        "vms": [vm("a"), vm("b")]});
        assert!(parse::<MigrationPlan>(&ok).is_ok());
        let mut bad = ok.clone();
        bad["vms"][1]["name"] = json!("B_1");
        let e = parse::<MigrationPlan>(&bad).expect_err("bad name");
        assert!(e.contains("vms[1] (B_1): name"), "{e}");
        let mut none = ok.clone();
        none["vms"] = json!([]);
        assert!(parse::<MigrationPlan>(&none).is_err());
        let mut conc = ok;
        conc["concurrency"] = json!(0);
        assert!(
            parse::<MigrationPlan>(&conc)
                .unwrap_err()
                .contains("concurrency")
        );
    }
}
