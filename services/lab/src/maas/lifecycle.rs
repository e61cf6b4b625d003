//! Pure decisions of the machine lifecycle, with time and faults as inputs: where a deployment
//! stands `elapsed` seconds in (the status-message stages it has reached, and its end: Deployed,
//! or Failed deployment and why), and how long a release's disk erasing takes. `maas/sim.rs`
//! applies them to the region; `maas/ops.rs` builds the plans.
//!
//! MAAS fails a deployment it has not heard from for `node_timeout` minutes (the timer restarts
//! with every status message the node sends), so a deployment that stalls fails `node_timeout`
//! after the node's last message, not after the deploy began.

use crate::maas::events::{Kind, kinds};
use crate::scenario::MaasSettings;

/// MAAS's hard-coded timeout for RELEASING (`get_node_timeout`).
pub const RELEASE_TIMEOUT_SECS: f64 = 300.0;

/// The stages a deployment walks through after `Deploying`, with the fraction of the deploy at
/// which each begins. The first (`Powering on`) is the region's own; the others are messages
/// from the node, each restarting the `node_timeout` timer.
pub const DEPLOY_STAGES: &[(f64, Kind)] = &[
    (0.005, kinds::POWERING_ON),
    (0.05, kinds::PERFORMING_PXE_BOOT),
    (0.2, kinds::LOADING_EPHEMERAL),
    (0.3, kinds::CONFIGURING_STORAGE),
    (0.4, kinds::INSTALLING_OS),
    (0.75, kinds::CONFIGURING_OS),
    (0.9, kinds::REBOOTING),
];

/// Fraction of the deploy at which an install failure strikes (during `Installing OS`).
pub const INSTALL_FAILURE_AT: f64 = 0.6;
/// Fraction at which a BMC power-on failure is reported (after `Powering on`).
pub const POWER_FAILURE_AT: f64 = 0.04;
/// Fraction at which a machine that loses power mid-deploy goes off (during `Installing OS`).
pub const POWER_LOSS_AT: f64 = 0.45;
/// Fraction of a disk erase at which a failing erase gives up.
pub const ERASE_FAILURE_AT: f64 = 0.5;

/// What goes wrong with a deployment (a fault's choice, made when the deploy starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployFault {
    /// Nothing: Deployed after the planned duration.
    None,
    /// curtin fails while installing: Failed deployment, the machine stays on.
    Install,
    /// The BMC never powers the machine on: Failed deployment within a minute, power `error`.
    PowerOn,
    /// The machine never PXE boots: Failed deployment at `node_timeout`, powered off.
    Hang,
    /// The machine loses power while installing: silent until `node_timeout` after its last
    /// message, then Failed deployment.
    PowerLoss,
}

/// Why a deployment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Install,
    PowerOn,
    Timeout,
}

impl Failure {
    /// The reason MAAS records (the `Marking node failed` event's description and
    /// `error_description`).
    pub fn reason(self, system_id: &str, node_timeout_minutes: f64) -> String {
        match self {
            Failure::Install => {
                "Installation failed (refer to the installation log for more information).".into()
            }
            Failure::PowerOn => format!(
                "Power on for the node failed: Failed talking to node's BMC: Failed to power {system_id}. BMC never transitioned from off to on."
            ),
            Failure::Timeout => format!(
                "Node operation 'Deploying' timed out after {} minutes.",
                minutes(node_timeout_minutes)
            ),
        }
    }
}

fn minutes(m: f64) -> String {
    if m.fract() == 0.0 {
        format!("{}", m as i64)
    } else {
        format!("{m}")
    }
}

/// A deployment as planned when it starts, and where it stalled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeployPlan {
    /// Seconds from Deploying to Deployed when nothing goes wrong.
    pub secs: f64,
    pub fault: DeployFault,
    /// Seconds in at which progress stops (the machine went silent or off); set by the fault,
    /// or later by a user's `power_off`.
    pub stall_at: Option<f64>,
}

impl DeployPlan {
    /// A plan for a deploy of `secs` with `fault`.
    pub fn new(secs: f64, fault: DeployFault) -> Self {
        let stall_at = match fault {
            DeployFault::Hang => Some(DEPLOY_STAGES[0].0 * secs),
            DeployFault::PowerLoss => Some(POWER_LOSS_AT * secs),
            _ => None,
        };
        DeployPlan {
            secs,
            fault,
            stall_at,
        }
    }

    /// Seconds in at which the machine loses power, for a `PowerLoss` fault.
    pub fn power_loss_at(&self) -> Option<f64> {
        (self.fault == DeployFault::PowerLoss).then_some(POWER_LOSS_AT * self.secs)
    }

    fn fail_at(&self) -> Option<(f64, Failure)> {
        match self.fault {
            DeployFault::Install => Some((INSTALL_FAILURE_AT * self.secs, Failure::Install)),
            DeployFault::PowerOn => Some((POWER_FAILURE_AT * self.secs, Failure::PowerOn)),
            _ => None,
        }
    }

    /// Seconds in at which stage `k` of `DEPLOY_STAGES` begins.
    pub fn stage_at(&self, k: usize) -> f64 {
        DEPLOY_STAGES[k].0 * self.secs
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Deployed,
    Failed(Failure),
}

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// How many of `DEPLOY_STAGES` it has reached.
    pub stages: usize,
    /// When (seconds in) and how it ended, if it has.
    pub end: Option<(f64, End)>,
}

/// Pure: the state of a deployment planned as `plan`, `elapsed` seconds in, with MAAS's
/// `node_timeout` in seconds.
pub fn deploy_progress(elapsed: f64, plan: &DeployPlan, node_timeout_secs: f64) -> Progress {
    let fail = plan.fail_at();
    let limit = plan
        .stall_at
        .unwrap_or(f64::INFINITY)
        .min(fail.map_or(f64::INFINITY, |(t, _)| t));
    let reached = |until: f64| {
        (0..DEPLOY_STAGES.len())
            .filter(|&k| plan.stage_at(k) <= until.min(limit))
            .count()
    };
    let end = if let Some((at, why)) = fail.filter(|(at, _)| elapsed >= *at) {
        Some((at, End::Failed(why)))
    } else if plan.stall_at.is_some() {
        // The node's last message: the last stage it reached past the region's `Powering on`.
        let stages = reached(limit);
        let last_heard = if stages > 1 {
            plan.stage_at(stages - 1)
        } else {
            0.0
        };
        let at = last_heard + node_timeout_secs;
        (elapsed >= at).then_some((at, End::Failed(Failure::Timeout)))
    } else {
        (elapsed >= plan.secs).then_some((plan.secs, End::Deployed))
    };
    let until = end.map_or(elapsed, |(at, _)| at);
    Progress {
        stages: reached(until),
        end,
    }
}

/// Pure: seconds of disk erasing a release with these options takes, `None` without erase.
/// MAAS erases only with `erase`; `secure_erase` uses the drive's own feature (the lab's drives
/// have it), `quick_erase` wipes the first and last MiBs, neither overwrites the whole disk.
pub fn erase_secs(s: &MaasSettings, erase: bool, secure: bool, quick: bool) -> Option<f64> {
    match (erase, secure, quick) {
        (false, _, _) => None,
        (true, true, _) => Some(s.secure_erase_secs),
        (true, false, true) => Some(s.quick_erase_secs),
        (true, false, false) => Some(s.erase_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_progress_table() {
        let timeout = 1800.0;
        let plan = |fault| DeployPlan::new(720.0, fault);
        let stalled = DeployPlan {
            stall_at: Some(400.0),
            ..plan(DeployFault::None)
        };
        let cases = [
            (0.0, plan(DeployFault::None), 0, None),
            (3.6, plan(DeployFault::None), 1, None),
            (40.0, plan(DeployFault::None), 2, None),
            (300.0, plan(DeployFault::None), 5, None),
            (700.0, plan(DeployFault::None), 7, None),
            (
                900.0,
                plan(DeployFault::None),
                7,
                Some((720.0, End::Deployed)),
            ),
            (
                440.0,
                plan(DeployFault::Install),
                5,
                Some((432.0, End::Failed(Failure::Install))),
            ),
            (
                30.0,
                plan(DeployFault::PowerOn),
                1,
                Some((28.8, End::Failed(Failure::PowerOn))),
            ),
            (1799.0, plan(DeployFault::Hang), 1, None),
            (
                1800.0,
                plan(DeployFault::Hang),
                1,
                Some((1800.0, End::Failed(Failure::Timeout))),
            ),
            (2000.0, plan(DeployFault::PowerLoss), 5, None),
            (
                2088.0,
                plan(DeployFault::PowerLoss),
                5,
                Some((2088.0, End::Failed(Failure::Timeout))),
            ),
            // A user's power_off at 400 s: the last message was `Installing OS` at 288 s.
            (
                5000.0,
                stalled,
                5,
                Some((2088.0, End::Failed(Failure::Timeout))),
            ),
        ];
        for (elapsed, plan, stages, end) in cases {
            let got = deploy_progress(elapsed, &plan, timeout);
            assert_eq!(
                got,
                Progress { stages, end },
                "elapsed={elapsed} fault={:?}",
                plan.fault
            );
        }
        assert_eq!(
            Failure::Timeout.reason("abc", 30.0),
            "Node operation 'Deploying' timed out after 30 minutes."
        );
        assert_eq!(
            Failure::PowerOn.reason("abc", 30.0),
            "Power on for the node failed: Failed talking to node's BMC: Failed to power abc. BMC never transitioned from off to on."
        );
    }

    #[test]
    fn erase_options_table() {
        let s = MaasSettings::default();
        let cases = [
            ((false, true, true), None),
            ((true, false, false), Some(s.erase_secs)),
            ((true, false, true), Some(s.quick_erase_secs)),
            ((true, true, false), Some(s.secure_erase_secs)),
            ((true, true, true), Some(s.secure_erase_secs)),
        ];
        for ((erase, secure, quick), want) in cases {
            assert_eq!(erase_secs(&s, erase, secure, quick), want);
        }
    }
}
