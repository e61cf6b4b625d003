//! What the MAAS-facing kinds share: allocation constraints as inputs give them, how a machine is
//! erased on release, the owner data that ties a machine to the workflow holding it, their retry
//! policy, and the two clean-ups every provisioning path needs (give a machine back, take a Node
//! out of the cluster), each written to be run again after a crash.

use std::time::Duration;

use drover_workflows::ports::kube::{Kube, KubeError};
use drover_workflows::ports::maas::{Allocation, Event, Maas, MaasError, Machine, Release, status};
use drover_workflows::sdk::StepError;
use drover_workflows::{Permit, RetryPolicy, Scope};
use serde::{Deserialize, Serialize};

/// Owner data key naming the provisioning workflow a machine serves.
pub const OWNER_WORKFLOW: &str = "drover-workflow";
/// Owner data key naming the deployment attempt (a `deploy-machine` workflow) that allocated it.
pub const OWNER_ATTEMPT: &str = "drover-attempt";

/// The semaphore that bounds machines deploying at once (MAAS's rack controllers serve a limited
/// number of PXE boots and image downloads at a time).
pub const DEPLOY_PERMIT: &str = "maas-deployments";

/// MAAS's default `node_timeout`: a deploy with no progress this long becomes Failed deployment.
pub fn default_deploy_timeout_secs() -> u64 {
    1800
}

pub fn default_join_timeout_secs() -> u64 {
    900
}

pub fn default_failure_budget() -> u32 {
    3
}

pub fn default_broken_after() -> u32 {
    2
}

pub fn default_maas_limit() -> u32 {
    10
}

pub fn default_allocate_timeout_secs() -> u64 {
    900
}

/// How often provisioning looks at MAAS and the cluster while it waits, in ms.
pub fn default_maas_poll_ms() -> u64 {
    5000
}

/// Retries of MAAS-facing steps: a region that answers 503 for a minute while it restarts should
/// not fail a deployment.
pub fn maas_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        ..RetryPolicy::default()
    }
}

/// The deployment semaphore, held by a `deploy-machine` from its allocation to its end.
pub fn deploy_permit(limit: u32) -> Permit {
    Permit {
        name: DEPLOY_PERMIT.into(),
        capacity: limit,
        scope: Scope::Workflow,
    }
}

/// Which machine to allocate: MAAS's own constraints (the ones cluster-api-provider-maas and the
/// Terraform provider give), all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    /// Every tag must be on the machine; none of `not_tags` may be.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub not_tags: Vec<String>,
    /// Minimum CPU count and memory (MiB).
    #[serde(default)]
    pub cpu_count: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

impl Constraints {
    /// Names MAAS knows things by: what MAAS itself accepts for pools, zones and tags.
    pub fn check(&self) -> Result<(), String> {
        let names = self
            .pool
            .iter()
            .map(|p| ("pool", p))
            .chain(self.zone.iter().map(|z| ("zone", z)))
            .chain(self.tags.iter().map(|t| ("tag", t)))
            .chain(self.not_tags.iter().map(|t| ("not_tags entry", t)));
        for (what, name) in names {
            let ok = !name.is_empty()
                && name.len() <= 256
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(format!(
                    "constraints: {what} {name:?} is not a MAAS name (1-256 letters, digits, '-', \
                     '_', '.')"
                ));
            }
        }
        if let Some(t) = self.tags.iter().find(|t| self.not_tags.contains(t)) {
            return Err(format!(
                "constraints: tag {t:?} is both required (tags) and refused (not_tags)"
            ));
        }
        if self.cpu_count == Some(0) {
            return Err("constraints: cpu_count must be at least 1 when given".into());
        }
        if self.memory_mib == Some(0) {
            return Err("constraints: memory_mib must be at least 1 when given".into());
        }
        Ok(())
    }

    /// The allocation request, recorded under `agent_name`.
    pub fn allocation(&self, agent_name: &str, comment: String) -> Allocation {
        Allocation {
            pool: self.pool.clone(),
            zone: self.zone.clone(),
            tags: self.tags.clone(),
            not_tags: self.not_tags.clone(),
            cpu_count: self.cpu_count,
            memory_mib: self.memory_mib,
            system_id: None,
            agent_name: Some(agent_name.to_string()),
            comment: Some(comment),
        }
    }
}

/// How a released machine's disks are erased.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Erase {
    /// Not at all.
    None,
    /// The start and end of each disk (partition tables, superblocks): minutes.
    Quick,
    /// The drives' own secure erase where they have one.
    Secure,
    /// Every block overwritten: hours on large disks.
    #[default]
    Full,
}

impl Erase {
    pub fn release(self, comment: String) -> Release {
        Release {
            erase: !matches!(self, Erase::None),
            quick_erase: self == Erase::Quick,
            secure_erase: self == Erase::Secure,
            comment: Some(comment),
        }
    }
}

/// Whether MAAS would take a release of a machine in this state (what `release` accepts).
fn releasable(m: &Machine) -> bool {
    matches!(
        m.status,
        status::ALLOCATED
            | status::RESERVED
            | status::DEPLOYING
            | status::DEPLOYED
            | status::FAILED_DEPLOYMENT
            | status::FAILED_DISK_ERASING
            | status::FAILED_RELEASING
    )
}

/// Whether the machine has left our hands already (released, being released, or broken).
pub fn given_back(m: &Machine) -> bool {
    matches!(
        m.status,
        status::READY
            | status::RELEASING
            | status::DISK_ERASING
            | status::BROKEN
            | status::NEW
            | status::COMMISSIONING
    ) || m.owner.is_none()
}

/// Releases `system_id` unless it has been given back already. Run again, it does nothing more:
/// a machine already releasing (or released) is left alone, and a 409 from a release that raced
/// with another is settled by reading the machine. Returns the machine as MAAS last showed it.
pub async fn release(
    maas: &dyn Maas,
    system_id: &str,
    erase: Erase,
    comment: String,
) -> Result<Machine, StepError> {
    let machine = match maas.get_machine(system_id).await {
        Ok(m) => m,
        Err(MaasError::NotFound(_)) => return Ok(Machine::default()),
        Err(e) => return Err(e.into()),
    };
    if given_back(&machine) || !releasable(&machine) {
        return Ok(machine);
    }
    match maas.release(system_id, &erase.release(comment)).await {
        Ok(m) => Ok(m),
        Err(MaasError::Conflict(_)) => {
            let now = maas.get_machine(system_id).await?;
            if given_back(&now) {
                Ok(now)
            } else {
                Err(StepError::retry(
                    format!(
                        "machine {system_id} ({}) cannot be released yet",
                        now.status_name
                    ),
                    None,
                ))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deployments of a machine that failed in a row, newest first in `events` (as [`Maas::events`]
/// returns them): MAAS's "Marking node failed" events since the machine last reached Deployed or
/// was marked fixed. Machines fail for other workflows too, so this sees more than one
/// workflow's own attempts.
pub fn failures_in_a_row(events: &[Event]) -> u32 {
    let mut n = 0;
    for e in events {
        match e.kind.as_str() {
            "Marking node failed" => n += 1,
            "Deployed" | "User marking node fixed" => break,
            _ => {}
        }
    }
    n
}

/// Takes Node `name` out of the cluster: cordoned first (nothing new lands on it while it goes),
/// then deleted. A Node that is not there is fine.
pub async fn remove_node(kube: &dyn Kube, name: &str) -> Result<(), StepError> {
    match kube.set_unschedulable(name, true).await {
        Ok(()) | Err(KubeError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match kube.delete_node(name).await {
        Ok(()) | Err(KubeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_refuse_what_maas_would() {
        let ok = Constraints {
            pool: Some("spare".into()),
            tags: vec!["vmo-worker".into()],
            cpu_count: Some(32),
            ..Constraints::default()
        };
        assert!(ok.check().is_ok());
        let bad_tag = Constraints {
            tags: vec!["no spaces".into()],
            ..Constraints::default()
        };
        assert!(bad_tag.check().unwrap_err().contains("tag \"no spaces\""));
        let both = Constraints {
            tags: vec!["gpu".into()],
            not_tags: vec!["gpu".into()],
            ..Constraints::default()
        };
        assert!(both.check().unwrap_err().contains("both required"));
        let zero = Constraints {
            cpu_count: Some(0),
            ..Constraints::default()
        };
        assert!(zero.check().unwrap_err().contains("cpu_count"));
    }

    #[test]
    fn failures_count_back_to_the_last_success() {
        let e = |kind: &str| Event {
            kind: kind.into(),
            ..Event::default()
        };
        let events = [
            e("Marking node failed"),
            e("Installing OS"),
            e("Marking node failed"),
            e("Deployed"),
            e("Marking node failed"),
        ];
        assert_eq!(failures_in_a_row(&events), 2);
        assert_eq!(failures_in_a_row(&events[3..]), 0);
        assert_eq!(failures_in_a_row(&[]), 0);
    }

    #[test]
    fn erase_modes_map_to_release_flags() {
        let r = Erase::Quick.release("c".into());
        assert!(r.erase && r.quick_erase && !r.secure_erase);
        let r = Erase::None.release("c".into());
        assert!(!r.erase && !r.quick_erase);
        let r = Erase::Full.release("c".into());
        assert!(r.erase && !r.quick_erase && !r.secure_erase);
    }
}
