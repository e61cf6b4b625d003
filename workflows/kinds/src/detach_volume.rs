//! `detach-volume`: a volume taken out of a VM, live when it runs.
//!
//! 0 `detach`  virt-api's removevolume on the VM (a volume already gone is fine).
//! 1 `wait`    until the running VMI's volumeStatus no longer lists it and the VM's template does
//!             not have it, up to `timeout_secs`.
//! 2 `delete`  with `delete_claim`, deletes the claim; only one that a Drover workflow created
//!             (`drover.io/created-by`) unless `delete_any_claim`.

use std::time::Duration;

use drover_workflows::Outcome;
use drover_workflows::ports::kube::KubeError;
use drover_workflows::sdk::{Ctx, Kind, Step, StepError, StepResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::{cluster_steps, default_poll_ms};
use crate::storage::{self, CREATED_BY};

/// The `detach-volume` kind.
pub struct DetachVolume;

/// Input of `detach-volume`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub namespace: String,
    pub vm: String,
    pub volume: String,
    /// Delete the claim behind the volume once it is detached.
    #[serde(default)]
    pub delete_claim: bool,
    /// ...even one no Drover workflow created.
    #[serde(default)]
    pub delete_any_claim: bool,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_timeout_secs() -> u64 {
    600
}

/// `detach`'s output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detached {
    pub claim: Option<String>,
    pub detached_ms: u64,
}

impl Kind for DetachVolume {
    const NAME: &'static str = "detach-volume";
    type Input = Input;

    fn check(i: &Input) -> Result<(), String> {
        storage::check_names(&[
            ("namespace", &i.namespace),
            ("vm", &i.vm),
            ("volume", &i.volume),
        ])?;
        if i.delete_any_claim && !i.delete_claim {
            return Err("delete_any_claim goes with delete_claim".into());
        }
        if i.timeout_secs == 0 || !(10..=600_000).contains(&i.poll_ms) {
            return Err("timeout_secs must be at least 1 and poll_ms 10 to 600000".into());
        }
        Ok(())
    }

    fn steps(_: &Input) -> Vec<Step<Self>> {
        cluster_steps(vec![
            Step::new("detach", |ctx| Box::pin(detach(ctx))),
            Step::new("wait", |ctx| Box::pin(wait(ctx))),
            Step::new("delete", |ctx| Box::pin(delete(ctx))),
        ])
    }
}

async fn detach(ctx: &Ctx<'_, DetachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let vm = storage::existing_vm(kube, &i.namespace, &i.vm).await?;
    let claim = vm
        .volumes
        .iter()
        .find(|v| v.name == i.volume)
        .and_then(|v| v.claim.clone());
    kube.remove_volume(&i.namespace, &i.vm, &i.volume).await?;
    Ok(Outcome::Done(json!(Detached {
        claim,
        detached_ms: ctx.now_ms(),
    })))
}

async fn wait(ctx: &Ctx<'_, DetachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let d: Detached = ctx.output("detach")?;
    let in_vmi = match kube.vmi_volume_status(&i.namespace, &i.vm).await {
        Ok(s) => s.iter().any(|s| s.name == i.volume),
        Err(KubeError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let in_template = kube
        .get_vm(&i.namespace, &i.vm)
        .await?
        .volumes
        .iter()
        .any(|v| v.name == i.volume);
    if !in_vmi && !in_template {
        return Ok(Outcome::Done(json!({"volume": i.volume, "claim": d.claim})));
    }
    let waited = ctx.now_ms().saturating_sub(d.detached_ms);
    if waited >= i.timeout_secs * 1000 {
        return Err(StepError::fail(format!(
            "volume {} is still in VM {} after {} s ({})",
            i.volume,
            i.vm,
            waited / 1000,
            if in_vmi {
                "the running VM holds it"
            } else {
                "its template has it"
            }
        )));
    }
    Ok(Outcome::Poll {
        after: Duration::from_millis(i.poll_ms),
        progress: Some(json!({"volume": i.volume, "in_vmi": in_vmi, "in_template": in_template})),
    })
}

async fn delete(ctx: &Ctx<'_, DetachVolume>) -> StepResult {
    let kube = ctx.kube()?;
    let i = ctx.input;
    let d: Detached = ctx.output("detach")?;
    let done = |deleted: Option<&String>| {
        Ok(Outcome::Done(json!({
            "vm": i.vm,
            "volume": i.volume,
            "claim": d.claim,
            "deleted_claim": deleted,
        })))
    };
    let Some(claim) = d.claim.as_ref().filter(|_| i.delete_claim) else {
        return done(None);
    };
    // A claim CDI made for a DataVolume goes with its DataVolume.
    match kube.get_data_volume(&i.namespace, claim).await {
        Ok(dv) if i.delete_any_claim || dv.labels.contains_key(CREATED_BY) => {
            kube.delete_data_volume(&i.namespace, claim).await?;
            return done(Some(claim));
        }
        Ok(_) => {
            return Err(StepError::fail(format!(
                "DataVolume {claim} was not created by Drover, so it is kept; set \
                 delete_any_claim to delete it anyway (the volume is detached)"
            )));
        }
        Err(KubeError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match kube.get_pvc(&i.namespace, claim).await {
        Ok(p) if i.delete_any_claim || p.labels.contains_key(CREATED_BY) => {
            kube.delete_pvc(&i.namespace, claim).await?;
            done(Some(claim))
        }
        Ok(_) => Err(StepError::fail(format!(
            "claim {claim} was not created by Drover, so it is kept; set delete_any_claim to \
             delete it anyway (the volume is detached)"
        ))),
        Err(KubeError::NotFound(_)) => done(None),
        Err(e) => Err(e.into()),
    }
}
