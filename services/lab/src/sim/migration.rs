//! The VirtualMachineInstanceMigration state machine, pure: phases Pending -> Scheduling ->
//! Scheduled -> PreparingTarget -> TargetReady -> Running -> Succeeded | Failed, KubeVirt's
//! throttling (`parallelMigrationsPerCluster`, `parallelOutboundMigrationsPerNode`), and a duration
//! model (memory over the source NIC's share, times a dirty-rate factor, bounded by
//! `completionTimeoutPerGiB`). Time is an input; `migration_controller` applies the outcomes to
//! objects.

use std::collections::HashMap;

use crate::clock::SimTime;
use crate::scenario::MigrationSettings;

/// Migration phases, as KubeVirt names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Scheduling,
    Scheduled,
    PreparingTarget,
    TargetReady,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduling => "Scheduling",
            Phase::Scheduled => "Scheduled",
            Phase::PreparingTarget => "PreparingTarget",
            Phase::TargetReady => "TargetReady",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Pending,
            Phase::Scheduling,
            Phase::Scheduled,
            Phase::PreparingTarget,
            Phase::TargetReady,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Admitted and not finished: counts against the parallelism limits.
    pub fn is_active(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Succeeded | Phase::Failed)
    }

    /// Finished.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One migration in flight, as the simulator tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub phase: Phase,
    /// When the current phase started.
    pub since: SimTime,
    /// When the migration was created (queue order).
    pub created: SimTime,
    /// Lower runs first (`system-critical` 0, `user-triggered` 1, `system-maintenance` 2).
    pub priority: u8,
    pub source: String,
    pub target: Option<String>,
    /// Memory to copy, bytes.
    pub memory: f64,
    /// Planned seconds in Running (set when Running starts).
    pub transfer_secs: f64,
    /// Injected fault: fail on entering this phase.
    pub fail_in: Option<Phase>,
}

/// What happens to a run at `now`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing yet.
    Stay,
    /// Move to the next phase.
    To(Phase),
    /// Fail with a reason.
    Fail(String),
}

/// Seconds the memory copy takes when `sharing` migrations leave the source node together.
pub fn transfer_secs(memory_bytes: f64, sharing: usize, s: &MigrationSettings) -> f64 {
    let mib = memory_bytes / 1_048_576.0;
    let mut throughput = s.node_throughput_mib_per_s / sharing.max(1) as f64;
    if s.bandwidth_mib_per_s > 0.0 {
        throughput = throughput.min(s.bandwidth_mib_per_s);
    }
    mib / throughput.max(1.0) * s.dirty_rate_factor.max(1.0)
}

/// KubeVirt's acceptable completion time: `completionTimeoutPerGiB x ceil(size in GB)`.
pub fn completion_budget(memory_bytes: f64, s: &MigrationSettings) -> f64 {
    s.completion_timeout_per_gib * (memory_bytes / 1e9).ceil().max(1.0)
}

/// Decide the next step of an admitted or pending run. Pending runs are admitted by `admit`, not
/// here; a Scheduling run without a target waits for one until `unschedulable_timeout_secs`.
pub fn advance(run: &Run, now: SimTime, s: &MigrationSettings) -> Step {
    let elapsed = now - run.since;
    if run.fail_in == Some(run.phase) {
        return Step::Fail(format!("injected failure in phase {}", run.phase.as_str()));
    }
    match run.phase {
        Phase::Pending | Phase::Succeeded | Phase::Failed => Step::Stay,
        Phase::Scheduling => match &run.target {
            None if elapsed >= s.unschedulable_timeout_secs => Step::Fail(
                "target pod is unschedulable: migration timed out waiting for a target node".into(),
            ),
            None => Step::Stay,
            Some(_) if elapsed >= s.target_pod_start_secs => Step::To(Phase::Scheduled),
            Some(_) => Step::Stay,
        },
        Phase::Scheduled => Step::To(Phase::PreparingTarget),
        Phase::PreparingTarget if elapsed >= s.prepare_target_secs => Step::To(Phase::TargetReady),
        Phase::PreparingTarget => Step::Stay,
        Phase::TargetReady => Step::To(Phase::Running),
        Phase::Running => {
            let budget = completion_budget(run.memory, s);
            if run.transfer_secs > budget && elapsed >= budget {
                Step::Fail(format!(
                    "Live migration is not completed after {budget} seconds and has been aborted"
                ))
            } else if elapsed >= run.transfer_secs + s.switchover_secs {
                Step::To(Phase::Succeeded)
            } else {
                Step::Stay
            }
        }
    }
}

/// Which pending runs start now, in (priority, creation) order, without exceeding the per-cluster
/// and per-source-node limits. `runs` is every known run by id.
pub fn admit<K: Clone + Eq + std::hash::Hash + Ord>(
    runs: &[(K, &Run)],
    s: &MigrationSettings,
) -> Vec<K> {
    let mut total = runs.iter().filter(|(_, r)| r.phase.is_active()).count();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, r) in runs.iter().filter(|(_, r)| r.phase.is_active()) {
        *per_node.entry(r.source.as_str()).or_default() += 1;
    }
    let mut pending: Vec<&(K, &Run)> = runs
        .iter()
        .filter(|(_, r)| r.phase == Phase::Pending)
        .collect();
    pending.sort_by(|a, b| {
        (a.1.priority, a.1.created)
            .partial_cmp(&(b.1.priority, b.1.created))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut out = Vec::new();
    for (id, r) in pending {
        if total >= s.parallel_per_cluster {
            break;
        }
        let n = per_node.entry(r.source.as_str()).or_default();
        if *n >= s.parallel_outbound_per_node {
            continue;
        }
        *n += 1;
        total += 1;
        out.push(id.clone());
    }
    out
}

/// Priority rank of a VMIM `spec.priority`.
pub fn priority_rank(p: Option<&str>) -> u8 {
    match p {
        Some("system-critical") => 0,
        Some("system-maintenance") => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1073741824.0;

    fn run(phase: Phase, source: &str, created: f64) -> Run {
        Run {
            phase,
            since: 0.0,
            created,
            priority: 1,
            source: source.into(),
            target: Some("t".into()),
            memory: 8.0 * GIB,
            transfer_secs: 10.0,
            fail_in: None,
        }
    }

    #[test]
    fn admission_honours_both_limits() {
        let s = MigrationSettings::default();
        let runs = [
            run(Phase::Running, "a", 0.0),
            run(Phase::Pending, "a", 1.0),
            run(Phase::Pending, "a", 2.0),
            run(Phase::Pending, "b", 3.0),
            run(Phase::Pending, "b", 4.0),
            run(Phase::Pending, "b", 5.0),
            run(Phase::Pending, "c", 6.0),
            run(Phase::Pending, "d", 7.0),
        ];
        let ids: Vec<(usize, &Run)> = runs.iter().enumerate().collect();
        // a has one active: one more from a, two from b, then the cluster limit (5) stops d... c fits.
        assert_eq!(admit(&ids, &s), vec![1, 3, 4, 6]);
        let mut critical = runs.clone();
        critical[7].priority = 0;
        let ids: Vec<(usize, &Run)> = critical.iter().enumerate().collect();
        assert_eq!(admit(&ids, &s), vec![7, 1, 3, 4]);
    }

    #[test]
    fn phase_table() {
        let s = MigrationSettings::default();
        let cases = [
            (run(Phase::Scheduling, "a", 0.0), 1.0, Step::Stay),
            (
                run(Phase::Scheduling, "a", 0.0),
                8.0,
                Step::To(Phase::Scheduled),
            ),
            (
                Run {
                    target: None,
                    ..run(Phase::Scheduling, "a", 0.0)
                },
                299.0,
                Step::Stay,
            ),
            (
                Run {
                    target: None,
                    ..run(Phase::Scheduling, "a", 0.0)
                },
                300.0,
                Step::Fail(
                    "target pod is unschedulable: migration timed out waiting for a target node"
                        .into(),
                ),
            ),
            (
                run(Phase::Scheduled, "a", 0.0),
                0.0,
                Step::To(Phase::PreparingTarget),
            ),
            (
                run(Phase::PreparingTarget, "a", 0.0),
                2.0,
                Step::To(Phase::TargetReady),
            ),
            (
                run(Phase::TargetReady, "a", 0.0),
                0.0,
                Step::To(Phase::Running),
            ),
            (run(Phase::Running, "a", 0.0), 10.5, Step::Stay),
            (
                run(Phase::Running, "a", 0.0),
                11.0,
                Step::To(Phase::Succeeded),
            ),
            (
                Run {
                    transfer_secs: 5000.0,
                    ..run(Phase::Running, "a", 0.0)
                },
                1350.0,
                Step::Fail(
                    "Live migration is not completed after 1350 seconds and has been aborted"
                        .into(),
                ),
            ),
            (
                Run {
                    fail_in: Some(Phase::PreparingTarget),
                    ..run(Phase::PreparingTarget, "a", 0.0)
                },
                0.0,
                Step::Fail("injected failure in phase PreparingTarget".into()),
            ),
            (run(Phase::Succeeded, "a", 0.0), 100.0, Step::Stay),
        ];
        for (r, now, want) in cases {
            assert_eq!(advance(&r, now, &s), want, "{:?} at {now}", r.phase);
        }
    }

    #[test]
    fn durations_scale_with_memory_sharing_and_dirty_rate() {
        let s = MigrationSettings::default();
        // 8 GiB at 1024 MiB/s alone, x1.2 dirty rate.
        assert!((transfer_secs(8.0 * GIB, 1, &s) - 9.6).abs() < 1e-9);
        assert!((transfer_secs(8.0 * GIB, 2, &s) - 19.2).abs() < 1e-9);
        let capped = MigrationSettings {
            bandwidth_mib_per_s: 64.0,
            ..s.clone()
        };
        assert!((transfer_secs(8.0 * GIB, 1, &capped) - 153.6).abs() < 1e-9);
        assert_eq!(completion_budget(8.0 * GIB, &s), 1350.0);
    }
}
