//! `attach-volume`: a new (or existing) volume attached to a VM, live when the VM runs.
//!
//! 0 `check`     reads the VM, the storage class and (when given) the existing claim, and refuses
//!               with the reason what would hurt: a volume name the VM already uses for another
//!               claim, a class that does not exist, and a ReadWriteOnce volume on a VM that is
//!               evicted by live migration (it could no longer migrate) unless
//!               `accept_non_migratable`.
//! 1 `snapshot`  with `snapshot_first`, a VolumeSnapshot of each of the VM's claims, waited for until
//!               ready to use (without holding a worker). Compensation deletes them.
//! 2 `claim`     creates the claim (labelled with this workflow's id) unless an existing one was
//!               named; with `data_volume`, a blank CDI DataVolume, waited for until Succeeded.
//!               Compensation deletes it, only if this workflow created it.
//! 3 `attach`    virt-api's addvolume on the VM: hotplugged into the running VMI and persisted in
//!               the VM's template (on a stopped VM, only the template). Compensation removes it.
//! 4 `wait`      on a running VM, until the VMI's volumeStatus says the volume is Ready, up to
//!               `timeout_secs`; on a stopped VM, until the template has it.
//!
//! What the workflow created is in its step outputs (the ledger): compensation deletes exactly
//! those, and never a claim or snapshot it did not create.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_workflows::Outcome;
use drover_workflows::ports::kube::{DvSource, KubeError, NewDataVolume, NewPvc};
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::{cluster_steps, default_poll_ms};
use crate::storage::{self, CREATED_BY, parse_quantity};

/// The `attach-volume` kind.
pub struct AttachVolume;

/// Input of `attach-volume`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub namespace: String,
    pub vm: String,
    /// The volume's (and disk's) name in the VM.
    pub volume: String,
    /// An existing claim to attach; else a new one named `claim_name` (default `<vm>-<volume>`).
    #[serde(default)]
    pub existing_claim: Option<String>,
    #[serde(default)]
    pub claim_name: Option<String>,
    /// Size of a new claim, as Kubernetes writes quantities (`20Gi`).
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `ReadWriteMany` (default: the VM stays live-migratable) or `ReadWriteOnce`.
    #[serde(default = "rwx")]
    pub access_mode: String,
    #[serde(default)]
    pub volume_mode: Option<String>,
    /// Make the new volume a blank CDI DataVolume (CDI prepares its disk image and applies its
    /// storage profile) instead of a bare claim; it is attached once CDI reports it Succeeded.
    #[serde(default)]
    pub data_volume: bool,
    /// Snapshot the VM's existing volumes first.
    #[serde(default)]
    pub snapshot_first: bool,
    #[serde(default)]
    pub snapshot_class: Option<String>,
    /// Attach a ReadWriteOnce volume to a live-migratable VM anyway (it stops being migratable).
    #[serde(default)]
    pub accept_non_migratable: bool,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn rwx() -> String {
    "ReadWriteMany".into()
}

fn default_timeout_secs() -> u64 {
    600
}

/// `check`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checked {
    pub running: bool,
    pub claim: String,
    /// Whether this workflow creates the claim.
    pub create: bool,
    /// The VM's claims, for the snapshots.
    pub vm_claims: Vec<String>,
}

impl Kind for AttachVolume {
    const NAME: &'static str = "attach-volume";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        storage::check_names(&[
            ("namespace", &i.namespace),
            ("vm", &i.vm),
            ("volume", &i.volume),
        ])?;
        if !matches!(
            i.access_mode.as_str(),
            "ReadWriteMany" | "ReadWriteOnce" | "ReadWriteOncePod"
        ) {
            return Err("access_mode is ReadWriteMany, ReadWriteOnce or ReadWriteOncePod".into());
        }
        match (&i.existing_claim, &i.size, &i.storage_class) {
            (Some(c), None, None) if storage::dns_label(c) => {}
            (Some(_), None, None) => {
                return Err(format!("existing_claim: {}", storage::DNS_LABEL_RULE));
            }
            (Some(_), _, _) => {
                return Err(
                    "give existing_claim alone, or size and storage_class for a new claim".into(),
                );
            }
            (None, Some(size), Some(_)) => {
                if parse_quantity(size).is_none_or(|b| b == 0) {
                    return Err(format!(
                        "size {size:?} is not a Kubernetes quantity (e.g. 20Gi, 500Mi)"
                    ));
                }
            }
            (None, _, _) => {
                return Err("a new claim needs size (e.g. 20Gi) and storage_class".into());
            }
        }
        if let Some(c) = &i.claim_name
            && !storage::dns_label(c)
        {
            return Err(format!("claim_name: {}", storage::DNS_LABEL_RULE));
        }
        if i.timeout_secs == 0 || !(10..=600_000).contains(&i.poll_ms) {
            return Err("timeout_secs must be at least 1 and poll_ms 10 to 600000".into());
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        cluster_steps(vec![
            Step::new("check", |ctx| Box::pin(check(ctx))),
            Step::new("snapshot", |ctx| Box::pin(snapshot(ctx)))
                .compensate(|ctx| Box::pin(delete_snapshots(ctx))),
            Step::new("claim", |ctx| Box::pin(claim(ctx)))
                .compensate(|ctx| Box::pin(delete_claim(ctx))),
            Step::new("attach", |ctx| Box::pin(attach(ctx)))
                .compensate(|ctx| Box::pin(detach(ctx))),
            Step::new("wait", |ctx| Box::pin(wait(ctx))),
        ])
    }
}

async fn check(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let vm = storage::existing_vm(kube, &i.namespace, &i.vm).await?;
    let claim = i
        .existing_claim
        .clone()
        .or_else(|| i.claim_name.clone())
        .unwrap_or_else(|| format!("{}-{}", i.vm, i.volume));
    if let Some(v) = vm.volumes.iter().find(|v| v.name == i.volume)
        && v.claim.as_deref() != Some(claim.as_str())
    {
        return Err(StepError::fail(format!(
            "VM {} already has a volume named {} (claim {}); pick another name",
            i.vm,
            i.volume,
            v.claim.as_deref().unwrap_or("none")
        )));
    }
    let access_modes = match &i.existing_claim {
        Some(c) => match kube.get_pvc(&i.namespace, c).await {
            Ok(p) => p.access_modes,
            Err(KubeError::NotFound(_)) => {
                return Err(StepError::fail(format!(
                    "claim {}/{c} does not exist",
                    i.namespace
                )));
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            let class = i.storage_class.as_deref().unwrap_or_default();
            match kube.get_storage_class(class).await {
                Ok(_) => {}
                Err(KubeError::NotFound(_)) => {
                    return Err(StepError::fail(format!(
                        "storage class {class} does not exist"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            vec![i.access_mode.clone()]
        }
    };
    let shared = access_modes.iter().any(|m| m == "ReadWriteMany");
    if !shared && vm.eviction_strategy.as_deref() == Some("LiveMigrate") && !i.accept_non_migratable
    {
        return Err(StepError::fail(format!(
            "VM {} is evicted by live migration (evictionStrategy LiveMigrate), and a {} volume \
             would make it non-migratable: use ReadWriteMany storage, or set \
             accept_non_migratable to attach it anyway",
            i.vm,
            access_modes.join("/")
        )));
    }
    Ok(Outcome::Done(json!(Checked {
        running: vm.running,
        claim,
        create: i.existing_claim.is_none(),
        vm_claims: vm.volumes.iter().filter_map(|v| v.claim.clone()).collect(),
    })))
}

/// This workflow's name for a snapshot of `claim`.
fn snapshot_name(ctx: &Ctx<'_, AttachVolume>, claim: &str) -> String {
    storage::owned_name(claim, ctx.workflow_id)
}

async fn snapshot(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let i = ctx.input;
    if !i.snapshot_first {
        return Ok(Outcome::Done(json!({"snapshots": []})));
    }
    let kube = ctx.kube()?;
    let c: Checked = ctx.output("check")?;
    let mut waiting = Vec::new();
    let mut names = Vec::new();
    for claim in &c.vm_claims {
        let name = snapshot_name(ctx, claim);
        let s = kube
            .create_snapshot(&i.namespace, &name, claim, i.snapshot_class.as_deref())
            .await?;
        if let Some(error) = s.error {
            return Err(StepError::fail(format!(
                "snapshot {name} of {claim} failed: {error}"
            )));
        }
        if !s.ready_to_use {
            waiting.push(name.clone());
        }
        names.push(name);
    }
    if !waiting.is_empty() {
        return Ok(Outcome::Poll {
            after: Duration::from_millis(i.poll_ms),
            progress: Some(json!({"snapshots_not_ready": waiting})),
        });
    }
    Ok(Outcome::Done(json!({ "snapshots": names })))
}

async fn delete_snapshots(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    // The names are derived from this workflow's id: the ones it may have created, and only those.
    if i.snapshot_first
        && let Some(c) = ctx.output_if::<Checked>("check")?
    {
        for claim in &c.vm_claims {
            kube.delete_snapshot(&i.namespace, &snapshot_name(ctx, claim))
                .await?;
        }
    }
    Ok(Outcome::Done(json!({})))
}

async fn claim(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let c: Checked = ctx.output("check")?;
    if !c.create {
        return Ok(Outcome::Done(json!({"claim": c.claim, "created": false})));
    }
    let mine = storage::label_value(ctx.workflow_id);
    if i.data_volume {
        let dv = kube
            .create_data_volume(&NewDataVolume {
                namespace: i.namespace.clone(),
                name: c.claim.clone(),
                source: DvSource::Blank,
                storage_class: i.storage_class.clone().unwrap_or_default(),
                access_mode: i.access_mode.clone(),
                volume_mode: i.volume_mode.clone(),
                size_bytes: i.size.as_deref().and_then(parse_quantity).unwrap_or(0),
                labels: BTreeMap::from([(CREATED_BY.to_string(), mine.clone())]),
            })
            .await?;
        if dv.labels.get(CREATED_BY) != Some(&mine) {
            return Err(StepError::fail(format!(
                "DataVolume {}/{} exists already and was not made by this workflow; name another \
                 (claim_name)",
                i.namespace, c.claim
            )));
        }
        return match dv.phase.as_str() {
            "Succeeded" => Ok(Outcome::Done(
                json!({"claim": c.claim, "created": true, "data_volume": true}),
            )),
            "Failed" => Err(StepError::fail(format!(
                "DataVolume {}/{} failed: {}",
                i.namespace,
                c.claim,
                dv.message.as_deref().unwrap_or("CDI gave no reason")
            ))),
            phase => Ok(Outcome::Poll {
                after: Duration::from_millis(i.poll_ms),
                progress: Some(json!({"data_volume": c.claim, "phase": phase})),
            }),
        };
    }
    let pvc = NewPvc {
        namespace: i.namespace.clone(),
        name: c.claim.clone(),
        storage_class: i.storage_class.clone().unwrap_or_default(),
        access_mode: i.access_mode.clone(),
        size_bytes: i.size.as_deref().and_then(parse_quantity).unwrap_or(0),
        volume_mode: i.volume_mode.clone(),
        labels: BTreeMap::from([(
            CREATED_BY.to_string(),
            storage::label_value(ctx.workflow_id),
        )]),
    };
    let made = kube.create_pvc(&pvc).await?;
    if made.labels.get(CREATED_BY) != pvc.labels.get(CREATED_BY) {
        return Err(StepError::fail(format!(
            "claim {}/{} exists already and was not made by this workflow; name another \
             (claim_name) or attach it as existing_claim",
            i.namespace, c.claim
        )));
    }
    Ok(Outcome::Done(json!({"claim": c.claim, "created": true})))
}

async fn delete_claim(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let Some(c) = ctx.output_if::<Checked>("check")? else {
        return Ok(Outcome::Done(json!({})));
    };
    if !c.create {
        return Ok(Outcome::Done(json!({"deleted": null})));
    }
    // Only the claim this workflow made (its label), never one that was there before.
    if i.data_volume {
        return match kube.get_data_volume(&i.namespace, &c.claim).await {
            Ok(d) if d.labels.get(CREATED_BY) == Some(&storage::label_value(ctx.workflow_id)) => {
                kube.delete_data_volume(&i.namespace, &c.claim).await?;
                Ok(Outcome::Done(json!({"deleted": c.claim})))
            }
            Ok(_) | Err(KubeError::NotFound(_)) => Ok(Outcome::Done(json!({"deleted": null}))),
            Err(e) => Err(e.into()),
        };
    }
    match kube.get_pvc(&i.namespace, &c.claim).await {
        Ok(p) if p.labels.get(CREATED_BY) == Some(&storage::label_value(ctx.workflow_id)) => {
            kube.delete_pvc(&i.namespace, &c.claim).await?;
            Ok(Outcome::Done(json!({"deleted": c.claim})))
        }
        Ok(_) | Err(KubeError::NotFound(_)) => Ok(Outcome::Done(json!({"deleted": null}))),
        Err(e) => Err(e.into()),
    }
}

async fn attach(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let c: Checked = ctx.output("check")?;
    kube.add_volume(&i.namespace, &i.vm, &i.volume, &c.claim)
        .await?;
    Ok(Outcome::Done(json!(Attached {
        volume: i.volume.clone(),
        claim: c.claim,
        attached_ms: ctx.now_ms(),
    })))
}

/// `attach`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    pub volume: String,
    pub claim: String,
    pub attached_ms: u64,
}

/// `attach`'s compensation: removes the volume and waits until the running VM has let it go.
async fn detach(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    kube.remove_volume(&i.namespace, &i.vm, &i.volume).await?;
    match kube.vmi_volume_status(&i.namespace, &i.vm).await {
        Ok(statuses) if statuses.iter().any(|s| s.name == i.volume) => Ok(Outcome::Poll {
            after: Duration::from_millis(i.poll_ms),
            progress: Some(json!({"detaching": i.volume})),
        }),
        Ok(_) | Err(KubeError::NotFound(_)) => Ok(Outcome::Done(json!({"removed": i.volume}))),
        Err(e) => Err(e.into()),
    }
}

async fn wait(ctx: &Ctx<'_, AttachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let c: Checked = ctx.output("check")?;
    let done = |phase: &str| {
        Ok(Outcome::Done(json!({
            "vm": i.vm,
            "volume": i.volume,
            "claim": c.claim,
            "created_claim": c.create,
            "hotplugged": phase == "Ready",
            "phase": phase,
        })))
    };
    // A VM that stopped (or was stopped when `check` read a stale status) has no instance: the
    // template is what counts then.
    let statuses = match kube.vmi_volume_status(&i.namespace, &i.vm).await {
        Ok(s) if c.running => Some(s),
        Ok(_) | Err(KubeError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(statuses) = statuses else {
        let vm = kube.get_vm(&i.namespace, &i.vm).await?;
        if vm.volumes.iter().any(|v| v.name == i.volume) {
            return done("InTemplate");
        }
        return Err(StepError::retry(
            format!("the VM's template does not show volume {} yet", i.volume),
            None,
        ));
    };
    let status = statuses.iter().find(|s| s.name == i.volume);
    if let Some(s) = status
        && s.phase == "Ready"
    {
        return done("Ready");
    }
    let attached: Attached = ctx.output("attach")?;
    let waited = ctx.now_ms().saturating_sub(attached.attached_ms);
    if waited >= i.timeout_secs * 1000 {
        return Err(StepError::fail(format!(
            "volume {} is not Ready in VM {} after {} s (phase {}: {} {})",
            i.volume,
            i.vm,
            waited / 1000,
            status.map_or("none", |s| s.phase.as_str()),
            status.map_or("", |s| s.reason.as_str()),
            status.map_or("", |s| s.message.as_str()),
        )));
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(i.poll_ms),
        progress: Some(json!({
            "volume": i.volume,
            "phase": status.map(|s| s.phase.clone()),
            "message": status.map(|s| s.message.clone()),
        })),
    })
}

#[cfg(test)]
mod tests {
    use drover_workflows::sdk::parse;
    use serde_json::json;

    use super::AttachVolume;
    use crate::detach_volume::DetachVolume;

    #[test]
    fn inputs_that_could_never_run_are_refused_with_what_to_fix() {
        let ok = json!({"namespace": "vmo-prod", "vm": "vm-01", "volume": "data",
                        "size": "20Gi", "storage_class": "px-rwx"});
        assert!(parse::<AttachVolume>(&ok).is_ok());
        let cases = [
            (json!({"size": "20GB"}), "not a Kubernetes quantity"),
            (json!({"size": null}), "needs size"),
            (json!({"existing_claim": "c1"}), "existing_claim alone"),
            (json!({"vm": "VM_1"}), "vm: 1-63 lowercase"),
            (json!({"access_mode": "ReadMostly"}), "access_mode"),
            (json!({"poll_ms": 0}), "poll_ms"),
            (json!({"bogus": 1}), "unknown field"),
        ];
        for (patch, needle) in cases {
            let mut input = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                input[k] = v.clone();
            }
            let e = parse::<AttachVolume>(&input).expect_err(needle);
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let existing = json!({"namespace": "vmo-prod", "vm": "vm-01", "volume": "data",
                              "existing_claim": "c1"});
        assert!(parse::<AttachVolume>(&existing).is_ok());
        let detach = json!({"namespace": "vmo-prod", "vm": "vm-01", "volume": "data",
                            "delete_any_claim": true});
        let e = parse::<DetachVolume>(&detach).expect_err("any without delete");
        assert!(e.contains("delete_any_claim goes with delete_claim"), "{e}");
    }
}
