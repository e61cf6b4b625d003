//! What the cluster-facing kinds share: KubeVirt's default migration limits, how often they look at
//! the cluster while they wait, their retry policy, and how a migration is named after the workflow
//! that makes it.

use drover_workflows::RetryPolicy;
use drover_workflows::sdk::{Kind, Step};

/// KubeVirt's default `parallelMigrationsPerCluster`.
pub fn default_cluster_limit() -> u32 {
    5
}

/// KubeVirt's default `parallelOutboundMigrationsPerNode`.
pub fn default_node_limit() -> u32 {
    2
}

/// How often the maintenance workflows look at the cluster while they wait, in ms.
pub fn default_poll_ms() -> u64 {
    1000
}

/// Retries of the cluster-facing steps: the API server's 409/429/5xx and the like.
pub fn cluster_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        ..RetryPolicy::default()
    }
}

/// `steps`, each retried as the cluster-facing steps are.
pub fn cluster_steps<K: Kind>(steps: Vec<Step<K>>) -> Vec<Step<K>> {
    steps
        .into_iter()
        .map(|s| s.retry(cluster_retry()))
        .collect()
}

/// A migration's name: derived from the workflow id, so every attempt (a new child) has its own
/// and a re-run of `start` finds the one it made. Kubernetes names are at most 63 characters.
pub fn migration_name(workflow_id: &str, vmi: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workflow_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let prefix: String = vmi.chars().take(40).collect();
    format!("{prefix}-drover-{:012x}", h & 0xffff_ffff_ffff)
}
